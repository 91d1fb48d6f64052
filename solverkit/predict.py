"""Inputs for a deploy net from files, and top-k classes from its outputs.

``read_inputs(paths, source, input_shape)`` turns what a user points at into one batch:

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
and keep 0..255, arrays are fed as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .data import load_source
from .data.images import is_image_file, read_image
from .errors import DataError, ShapeError
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


def read_inputs(paths: Iterable, source, input_name: str, *, transform: bool = True,
                invert: bool = False, progress=None) -> tuple[list[str], np.ndarray]:
    """(one name per sample, the batch for the Input ``input_name``) from ``paths``.

    ``source`` is the deploy ``InputSource`` (sample shape, transform, pixel range).
    ``invert`` turns images negative first (255 − v: dark ink on light paper for a net
    trained on light strokes on black). ``progress`` wraps the list of files (a tqdm bar).
    """
    files = expand_inputs(paths)
    t = source.transform if transform else None
    raw_shape = tuple(t.sample_shape) if t is not None else tuple(source.shape)
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
    return names, batch


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
