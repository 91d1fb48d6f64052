"""Caffe's WindowData layer: batches of image windows (R-CNN fine-tuning), foreground and
background sampled at a fixed ratio, each window cropped with context and warped to a square.

The window file (``source``) repeats, per image::

    # 0                      image index
    /path/to/image.jpg       path (``root_folder`` is prepended)
    3                        channels
    480                      height
    640                      width
    2                        number of windows
    15 0.82 10 20 200 300    class overlap x1 y1 x2 y2   (inclusive pixel corners)
    0 0.10 0 0 50 60

A window with ``overlap >= fg_threshold`` is foreground (its class must be > 0); one with
``overlap < bg_threshold`` is background (class and overlap become 0); the rest are not
used. Each batch is ``batch_size − ⌊batch_size·fg_fraction⌋`` background windows, then the
foreground ones, each drawn uniformly at random. A window is grown so that after warping to
``crop_size`` × ``crop_size`` it has ``context_pad`` pixels of context on each side
(``crop_mode: square`` first makes it square), clipped to the image, resized bilinearly, and
placed where the unclipped window would have put it (the rest of the crop stays 0); then
``(pixel − mean) · scale``. ``mirror`` flips a window with probability ½. Images are read
with the ``image`` extra (colour as BGR).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..data import images, load_mean_file, resolve_paths
from ..errors import DataError, SnapshotError
from ..registry import register_layer
from ..spec.net import LayerParams
from .base import DataLayer
from .data import TransformSpec
from .hdf5 import read_list_file

WINDOW_FILE_LIMIT = 256 << 20          # bytes of a window file


def _round(value: float) -> int:
    """C's ``round``: halves away from zero."""
    return int(np.sign(value) * np.floor(abs(value) + 0.5))


class Windows:
    """The parsed window file: image paths and sizes, foreground and background windows.

    ``foreground``/``background`` are (K, 6) int-valued arrays of
    ``[image index, class, x1, y1, x2, y2]``.
    """

    def __init__(self, path: Path, root_folder: str, fg_threshold: float,
                 bg_threshold: float):
        lines = read_list_file(path, what="window file", limit=WINDOW_FILE_LIMIT)
        tokens = [(token, number) for number, line in enumerate(lines, 1)
                  for token in line.split()]
        self.path = path
        self.images: dict[int, tuple[str, int, int, int]] = {}
        fg, bg = [], []
        position = 0

        def take(kind, what):
            nonlocal position
            if position >= len(tokens):
                raise DataError(f"the window file ends where {what} should be", file=str(path))
            token, line = tokens[position]
            position += 1
            try:
                return kind(token)
            except ValueError:
                raise DataError(f"line {line}: {what} must be {kind.__name__}, got "
                                f"'{token}'", file=str(path)) from None

        while position < len(tokens):
            mark, line = tokens[position]
            if mark != "#":
                raise DataError(f"line {line}: expected '# image_index', got '{mark}'",
                                file=str(path))
            position += 1
            index = take(int, "the image index")
            image_path = root_folder + take(str, "the image path")
            channels, height, width = (take(int, "channels"), take(int, "height"),
                                       take(int, "width"))
            if channels not in (1, 3) or height <= 0 or width <= 0:
                raise DataError(f"line {line}: image {index} has {channels} channels, "
                                f"{height}x{width}; channels must be 1 or 3 and the size "
                                f"positive", file=str(path))
            self.images[index] = (image_path, channels, height, width)
            for _ in range(take(int, "the number of windows")):
                label, overlap = take(int, "a window's class"), take(float, "its overlap")
                x1, y1, x2, y2 = (take(int, "a window corner") for _ in range(4))
                if overlap >= fg_threshold:
                    if label <= 0:
                        raise DataError(f"image {index}: a foreground window (overlap "
                                        f"{overlap:g}) has class {label}; classes of objects "
                                        f"start at 1", file=str(path))
                    fg.append((index, label, x1, y1, x2, y2))
                elif overlap < bg_threshold:
                    bg.append((index, 0, x1, y1, x2, y2))
        if not self.images:
            raise DataError("the window file is empty", file=str(path))
        self.foreground = np.array(fg, dtype=np.int64).reshape(-1, 6)
        self.background = np.array(bg, dtype=np.int64).reshape(-1, 6)
        self.channels = {c for _, c, _, _ in self.images.values()}


def crop_geometry(window, image_h: int, image_w: int, crop_size: int, context_pad: int,
                  square: bool, mirror: bool):
    """Caffe's window arithmetic: ``(x1, y1, x2, y2)`` of the region read from the image,
    the ``(height, width)`` it is resized to, and the ``(pad_h, pad_w)`` of its place in the
    crop (float32 arithmetic, as Caffe's ``Dtype``)."""
    x1, y1, x2, y2 = (int(v) for v in window)
    if context_pad <= 0 and not square:
        return (x1, y1, x2, y2), (crop_size, crop_size), (0, 0)
    f = np.float32
    context_scale = f(crop_size) / f(crop_size - 2 * context_pad)
    half_h, half_w = f(y2 - y1 + 1) / f(2), f(x2 - x1 + 1) / f(2)
    center_x, center_y = f(x1) + half_w, f(y1) + half_h
    if square:
        half_h = half_w = max(half_h, half_w)
    x1 = _round(center_x - half_w * context_scale)
    x2 = _round(center_x + half_w * context_scale)
    y1 = _round(center_y - half_h * context_scale)
    y2 = _round(center_y + half_h * context_scale)
    unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
    pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
    pad_x2, pad_y2 = max(0, x2 - image_w + 1), max(0, y2 - image_h + 1)
    x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
    scale_x, scale_y = f(crop_size) / f(unclipped_w), f(crop_size) / f(unclipped_h)
    width = _round(f(x2 - x1 + 1) * scale_x)
    height = _round(f(y2 - y1 + 1) * scale_y)
    pad_x1, pad_x2 = _round(f(pad_x1) * scale_x), _round(f(pad_x2) * scale_x)
    pad_h = _round(f(pad_y1) * scale_y)
    pad_w = pad_x2 if mirror else pad_x1
    height = min(height, crop_size - pad_h)       # rounding may overshoot the crop
    width = min(width, crop_size - pad_w)
    return (x1, y1, x2, y2), (height, width), (pad_h, pad_w)


@register_layer("WindowData")
class WindowData(DataLayer):
    """Windows of images (R-CNN fine-tuning): data (batch_size, C, crop_size, crop_size) and
    label (batch_size,). The window file repeats per image ``# index``, the image path,
    channels, height, width, the number of windows, then one ``class overlap x1 y1 x2 y2``
    line per window. Windows with ``overlap >= fg_threshold`` are objects, those below
    ``bg_threshold`` background (class 0); each batch holds ``⌊batch_size·fg_fraction⌋``
    objects after the background ones, drawn at random, grown by ``context_pad``
    (``crop_mode: square``: squared first), clipped, warped bilinearly, optionally mirrored,
    then ``(pixel − mean)·scale``. ``transform`` gives ``crop_size`` (required), ``mirror``,
    ``mean_file``/``mean_value`` and ``scale``; images come through the ``image`` extra.
    """

    class Params(LayerParams):
        source: str = Field(description="the window file (format above)")
        batch_size: int = Field(gt=0)
        fg_threshold: float = Field(0.5, description="overlap from which a window is an object")
        bg_threshold: float = Field(0.5, description="overlap below which it is background")
        fg_fraction: float = Field(0.25, ge=0, le=1, description="share of objects in a batch")
        context_pad: int = Field(0, ge=0, description="pixels of context around each window "
                                                       "in the warped crop")
        crop_mode: Literal["warp", "square"] = Field(
            "warp", description="warp the window, or first the tightest square around it")
        cache_images: bool = Field(False, description="keep decoded images in memory")
        root_folder: str = Field("", description="prepended to the window file's image paths")
        transform: TransformSpec = Field(default_factory=TransformSpec,
                                         description="crop_size (required), mirror, mean, scale")

    min_tops, max_tops = 1, 2

    def setup(self, bottom, top):
        p = self.params
        t = p.transform
        if t.crop_size <= 0:
            raise DataError("WindowData needs transform.crop_size > 0 (the size windows are "
                            "warped to)", field="transform.crop_size")
        if 2 * p.context_pad >= t.crop_size:
            raise DataError(f"context_pad {p.context_pad} leaves nothing of a "
                            f"{t.crop_size}-pixel crop", field="context_pad")
        source = resolve_paths(p.source, self.base_dir, "source")[0]
        root = p.root_folder
        if root and not Path(root).is_absolute() and self.base_dir is not None \
                and (Path(self.base_dir) / root).exists():
            root = str(Path(self.base_dir) / root) + ("/" if root.endswith("/") else "")
        self.windows = Windows(source, root, p.fg_threshold, p.bg_threshold)
        if len(self.windows.channels) != 1:
            raise DataError(f"the images have different channel counts "
                            f"{sorted(self.windows.channels)}", file=str(source))
        self.channels = self.windows.channels.pop()
        self.num_fg = int(np.float32(p.batch_size) * np.float32(p.fg_fraction))
        if self.num_fg and not len(self.windows.foreground):
            raise DataError("no foreground windows (overlap >= fg_threshold) to sample",
                            file=str(source), field="fg_threshold")
        if p.batch_size - self.num_fg and not len(self.windows.background):
            raise DataError("no background windows (overlap < bg_threshold) to sample",
                            file=str(source), field="bg_threshold")
        self.mean = None
        if t.mean_file is not None:
            path = resolve_paths(t.mean_file, self.base_dir, "transform.mean_file")[0]
            mean = np.asarray(load_mean_file(path), dtype=np.float32)
            self.mean = mean.reshape(mean.shape[-3:]) if mean.ndim >= 3 else mean[None]
        elif t.mean_value:
            if len(t.mean_value) not in (1, self.channels):
                raise DataError(f"give 1 mean_value or {self.channels}",
                                field="transform.mean_value")
            self.mean_values = np.resize(np.asarray(t.mean_value, np.float32), self.channels)
        self.generator = self.rng.spawn(1)[0]
        self.cache: dict[int, np.ndarray] = {}

    def reshape(self, bottom, top):
        size = self.params.transform.crop_size
        top[0].reshape((self.params.batch_size, self.channels, size, size))
        if len(top) == 2:
            top[1].reshape((self.params.batch_size,))

    def _image(self, index: int) -> np.ndarray:
        if index in self.cache:
            return self.cache[index]
        path, channels, _, _ = self.windows.images[index]
        pixels = images.load_image_u8(path, is_color=channels == 3)
        if self.params.cache_images:
            self.cache[index] = pixels
        return pixels

    def sample(self) -> list[tuple[np.ndarray, bool]]:
        """The batch's windows (background first) and whether each is mirrored."""
        chosen = []
        mirror = self.params.transform.mirror
        counts = (self.params.batch_size - self.num_fg, self.num_fg)
        for pool, count in zip((self.windows.background, self.windows.foreground), counts):
            for _ in range(count):
                window = pool[int(self.generator.integers(len(pool)))]
                chosen.append((window, bool(mirror and self.generator.integers(2))))
        return chosen

    def crop(self, window, flip: bool) -> np.ndarray:
        """One window as a (C, crop_size, crop_size) float32 crop, mean and scale applied."""
        p, t = self.params, self.params.transform
        pixels = self._image(int(window[0]))
        _, image_h, image_w = pixels.shape
        (x1, y1, x2, y2), (height, width), (pad_h, pad_w) = crop_geometry(
            window[2:], image_h, image_w, t.crop_size, p.context_pad,
            p.crop_mode == "square", flip)
        if not (0 <= x1 <= x2 < image_w and 0 <= y1 <= y2 < image_h):
            raise DataError(f"a window ({x1}, {y1}, {x2}, {y2}) lies outside its "
                            f"{image_w}x{image_h} image {self.windows.images[int(window[0])][0]}",
                            file=str(self.windows.path), layer=self.name)
        region = images.resize_u8(pixels[:, y1:y2 + 1, x1:x2 + 1], height, width)
        if flip:
            region = region[:, :, ::-1]
        out = np.zeros((self.channels, t.crop_size, t.crop_size), np.float32)
        place = (slice(None), slice(pad_h, pad_h + height), slice(pad_w, pad_w + width))
        values = region.astype(np.float32)
        if self.mean is not None:
            offset = (self.mean.shape[-1] - t.crop_size) // 2
            values = values - self.mean[:, offset + pad_h:offset + pad_h + height,
                                        offset + pad_w:offset + pad_w + width]
        elif t.mean_value:
            values = values - self.mean_values[:, None, None]
        out[place] = values * np.float32(t.scale)
        return out

    def forward(self, bottom, top):
        for item, (window, flip) in enumerate(self.sample()):
            top[0].data[item] = self.crop(window, flip)
            if len(top) == 2:
                top[1].data[item] = window[1]

    # ----- the DataLayer contract: random draws only, so the position is the generator's
    @property
    def batch_size(self) -> int:
        return self.params.batch_size

    def get_state(self) -> dict[str, np.ndarray]:
        return {"rng": np.array(json.dumps(self.generator.bit_generator.state))}

    def set_state(self, state: dict) -> None:
        try:
            self.generator.bit_generator.state = json.loads(str(state["rng"]))
        except (KeyError, ValueError, TypeError) as err:
            raise SnapshotError(f"the saved generator state of layer '{self.name}' is invalid: "
                                f"{err}", layer=self.name) from None
