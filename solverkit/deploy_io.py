"""Inputs for a deploy net from files, and its outputs as top-k classes or detections.

``read_inputs(paths, source, input_name)`` turns what a user points at into one batch:

- image files (``.png``, ``.jpg``, ``.bmp``, ...; the ``image`` extra) and folders of them
  (sorted by name): each image is decoded gray or colour by the net's channel count
  (colour in the order of the net's data: BGR as Caffe's, RGB for CIFAR-10), resized to the data layer's sample size (bilinear,
  as Caffe's OpenCV), its 0..255 mapped onto 0..``pixel_max`` (the largest value in the
  data the net was tested on: 255 for 8-bit image data, 16 for the built-in digits), then
  given the TEST data layer's transform (mean, centre crop, scale);
- ``.npy`` / ``.npz`` arrays (one sample, or N samples along axis 0) and CSV files of
  rows (one sample per row, no header): raw samples as the data layer would read them,
  so they get the same transform (``transform=False`` feeds them as they are).

A net written for deployment has no transform: images are resized to its Input's size
and keep 0..255, arrays are fed as they are, unless a :class:`Preprocess` gives what the
deploy file does not carry (mean, scale, size, channel order).

A net whose output is a ``DetectionOutput`` gives detections instead of classes:
:func:`detect` runs it batch by batch and returns one row per box.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .data import load_source
from .data.images import is_image_file, read_image
from .errors import ConfigError, DataError, ShapeError
from .files import LIMITS, read_text

ARRAY_SUFFIXES = {".npy": "npy", ".npz": "npz", ".csv": "csv"}


def expand_inputs(paths: Iterable) -> list[Path]:
    """Files as given; a folder becomes its image files (sorted), a missing path an error."""
    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not images:
                raise DataError(f"folder '{path}' holds no image files (.png, .jpg, .bmp, ...)")
            files.extend(images)
        elif path.exists():
            if not (is_image_file(path) or path.suffix.lower() in ARRAY_SUFFIXES):
                raise DataError(f"'{path}' is neither an image (.png, .jpg, .bmp, ...) nor an "
                                f"array file (.npy, .npz, .csv)")
            files.append(path)
        else:
            raise DataError(f"input '{path}' does not exist")
    return files


@dataclass(frozen=True)
class Preprocess:
    """What a deploy file does not say about its input, as OpenCV's ``blobFromImage`` takes it.

    Images are resized to ``size`` (H, W) instead of the Input's, put in ``channel_order``
    (decoded BGR; ``RGB`` swaps), then every sample becomes ``(x − mean) · scale`` with
    ``mean`` one value per channel of the net's input (in its channel order) or one for all.
    """

    mean: tuple[float, ...] | None = None
    scale: float | None = None
    size: tuple[int, int] | None = None
    channel_order: str | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.mean, self.scale, self.size, self.channel_order))

    def sample_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The Input's sample shape with ``size`` in place of its height and width."""
        if self.size is None:
            return tuple(shape)
        if len(shape) != 3:
            raise ConfigError(f"--resize applies to image inputs (C, H, W); this input takes "
                              f"samples of shape {tuple(shape)}", field="--resize")
        return (shape[0], *self.size)

    def apply(self, batch: np.ndarray) -> np.ndarray:
        if self.mean is not None:
            mean = np.asarray(self.mean, dtype=np.float32)
            if mean.size not in (1, batch.shape[1]):
                raise ConfigError(f"--mean gives {mean.size} values for samples of "
                                  f"{batch.shape[1]} channels (give one, or one per channel)",
                                  field="--mean")
            batch = batch - mean.reshape((1, -1) + (1,) * (batch.ndim - 2))
        if self.scale is not None:
            batch = batch * np.float32(self.scale)
        return batch


def read_inputs(paths: Iterable, source, input_name: str, *, transform: bool = True,
                invert: bool = False, progress=None,
                preprocess: Preprocess = Preprocess()) -> tuple[list[str], np.ndarray]:
    """(one name per sample, the batch for the Input ``input_name``) from ``paths``.

    ``source`` is the deploy ``InputSource`` (sample shape, transform, pixel range).
    ``invert`` turns images negative first (255 − v: dark ink on light paper for a net
    trained on light strokes on black). ``progress`` wraps the list of files (a tqdm bar).
    ``preprocess`` applies to a net without a transform of its own.
    """
    files = expand_inputs(paths)
    t = source.transform if transform else None
    if preprocess.given and t is not None:
        raise ConfigError(f"input '{input_name}' has the TEST transform of the net's data "
                          f"layer; --mean/--scale/--resize/--channel-order are for a deploy "
                          f"net without one")
    raw_shape = tuple(t.sample_shape) if t is not None else \
        preprocess.sample_shape(tuple(source.shape))
    if preprocess.channel_order is not None:
        source = _with_order(source, preprocess.channel_order)
    names: list[str] = []
    samples: list[np.ndarray] = []
    for path in (progress(files) if progress is not None else files):
        if is_image_file(path):
            samples.append(_image(path, raw_shape, source, input_name, invert)[None])
            names.append(str(path))
        else:
            batch = _array(path, raw_shape, input_name)
            samples.append(batch)
            names.extend(str(path) if len(batch) == 1 and _single(path) else f"{path}[{i}]"
                         for i in range(len(batch)))
    if not samples:
        raise DataError("no inputs given")
    batch = np.concatenate(samples).astype(np.float32, copy=False)
    if t is not None:
        batch = t.apply(batch)
    return names, preprocess.apply(batch)


def _with_order(source, order: str):
    """The input source with another channel order for decoded images."""
    return replace(source, channel_order=order)


def _single(path: Path) -> bool:
    return path.suffix.lower() != ".csv"


def _image(path: Path, raw_shape, source, input_name, invert: bool) -> np.ndarray:
    if len(raw_shape) != 3 or raw_shape[0] not in (1, 3):
        raise ShapeError(f"image '{path}' cannot feed input '{input_name}': it takes samples "
                         f"of shape {raw_shape}, and images give (1 or 3, H, W)")
    channels, height, width = raw_shape
    pixels = read_image(path, is_color=channels == 3, height=height, width=width)
    if invert:
        np.subtract(np.float32(255), pixels, out=pixels)
    if channels == 3 and source.channel_order == "RGB":
        pixels = np.ascontiguousarray(pixels[::-1])        # decoded as BGR
    pixel_max = source.pixel_max if source.transform is not None else None
    if pixel_max is not None and pixel_max != 255:
        pixels *= np.float32(pixel_max / 255.0)
    return pixels


def _array(path: Path, raw_shape, input_name) -> np.ndarray:
    """Samples of ``raw_shape`` from a .npy/.npz/.csv: one sample, N of them, or N flat rows."""
    fmt = ARRAY_SUFFIXES[path.suffix.lower()]
    data = load_source(str(path), format=fmt, label_column=None).data
    if data.dtype.kind not in "biuf":
        raise DataError(f"'{path}' holds {data.dtype} values, not numbers")
    size = int(np.prod(raw_shape))
    if fmt != "csv" and tuple(data.shape) == tuple(raw_shape):
        return data[None]
    if tuple(data.shape[1:]) == tuple(raw_shape):
        return data
    if data.ndim == 2 and data.shape[1] == size:
        return data.reshape(len(data), *raw_shape)
    detail = f"{data.shape[1]} values per row" if fmt == "csv" else f"shape {data.shape}"
    raise ShapeError(f"'{path}' has {detail}, but input '{input_name}' takes samples of shape "
                     f"{raw_shape} ({size} values): give one sample, N samples along the "
                     f"first axis, or N flat rows of {size}")


# ---------------------------------------------------------------- detections

DETECTION_COLUMNS = ("image", "label", "score", "xmin", "ymin", "xmax", "ymax")


def is_detector(net, blob: str) -> bool:
    """Whether ``blob`` is the top of a ``DetectionOutput`` layer of ``net``."""
    return any(layer.type == "DetectionOutput" and any(t.name == blob for t in tops)
               for layer, tops in zip(net.layers, net.tops))


def detect(net, batch: np.ndarray, blob: str, batch_size: int = 64) -> np.ndarray:
    """Every detection of ``batch`` (N, ...) by the DetectionOutput top ``blob``: (D, 7) rows
    ``[image, label, score, xmin, ymin, xmax, ymax]``, ``image`` the sample's index in the
    batch, coordinates relative to the image size; images with none have no row."""
    input_name = next(iter(net.input_blobs))
    found = []
    for start in range(0, len(batch), batch_size):
        net.forward(**{input_name: batch[start:start + batch_size]})
        rows = net.blobs[blob].data.reshape(-1, 7).astype(np.float64)
        rows = rows[rows[:, 1] >= 0]                     # an image without boxes: label -1
        rows[:, 0] += start
        found.append(rows)
    return np.concatenate(found) if found else np.zeros((0, 7))


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, values) of the k largest entries per row of (N, C); ties to the smaller class."""
    scores = probabilities.reshape(len(probabilities), -1)
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def read_labels(path) -> list[str]:
    """Class names, one per line (as Caffe's synset_words.txt); a trailing empty line ignored."""
    path = Path(path)
    text = read_text(path, what=f"labels file '{path}'", limit=LIMITS["list"], error=DataError)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"labels file '{path}' is empty", field="--labels")
    return [line.strip() for line in lines]
