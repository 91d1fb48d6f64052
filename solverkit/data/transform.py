"""Caffe's DataTransformer, vectorised over a batch: crop, mirror, then ``(x - mean) * scale``.

For a batch x (B, C, H, W) in its stored dtype and crop size c (0: no crop):

    y[b, k, i, j] = (x[b, k, h_b + i, w'_b(j)] - mean_file[k, h_b + i, w'_b(j)]
                     - mean_value[k]) * scale

with ``w'_b(j) = w_b + j``, or ``w_b + c - 1 - j`` when sample b is mirrored. In TRAIN the
offsets (h_b, w_b) are drawn uniformly per sample and each sample is mirrored with
probability 1/2; in TEST the crop is centred (``(H - c) // 2`` as Caffe) and nothing is
mirrored. The mean file is full size and is indexed at the uncropped position, as Caffe's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import DataError
from ..files import LIMITS, load_npy, load_npz, read_bytes


class Transform:
    """The transform of one Data layer for samples of ``sample_shape`` (without N).

    ``draw(rng, count)`` takes the random choices for ``count`` samples (TRAIN only);
    ``apply(x, choices)`` maps a raw batch to the net's dtype.
    """

    def __init__(self, *, sample_shape: tuple[int, ...], dtype, train: bool, scale: float = 1.0,
                 mean_value=(), mean: np.ndarray | None = None, crop_size: int = 0,
                 mirror: bool = False):
        self.sample_shape = tuple(sample_shape)
        self.dtype = np.dtype(dtype)
        self.train = train
        self.scale = float(scale)
        self.crop_size = int(crop_size)
        self.mirror = bool(mirror)
        spatial = self.crop_size > 0 or self.mirror
        if spatial and len(self.sample_shape) < 2:
            raise DataError(f"crop_size and mirror need image samples (C, H, W); these samples "
                            f"have shape {self.sample_shape}",
                            field="transform.crop_size" if self.crop_size else "transform.mirror")
        height, width = self.sample_shape[-2:] if len(self.sample_shape) >= 2 else (0, 0)
        if self.crop_size and self.crop_size > min(height, width):
            raise DataError(f"crop_size {self.crop_size} is larger than the images "
                            f"({height}x{width})", field="transform.crop_size")
        self.mean_value = self._channel_means(mean_value)
        if mean is not None and mean.shape != self.sample_shape:
            raise DataError(f"the mean file holds shape {mean.shape} but samples have shape "
                            f"{self.sample_shape}", field="transform.mean_file")
        self.mean = None if mean is None else mean.astype(self.dtype)

    def _channel_means(self, values) -> np.ndarray | None:
        values = list(values or ())
        if not values:
            return None
        channels = self.sample_shape[0] if self.sample_shape else 1
        if len(values) not in (1, channels):
            raise DataError(f"mean_value has {len(values)} values; give one, or one per channel "
                            f"({channels})", field="transform.mean_value")
        # shaped to broadcast over (B, C, ...): one value per channel (axis 1)
        trailing = (1,) * max(len(self.sample_shape) - 1, 0)
        return np.asarray(values, dtype=self.dtype).reshape(len(values), *trailing)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one transformed sample."""
        if not self.crop_size:
            return self.sample_shape
        return (*self.sample_shape[:-2], self.crop_size, self.crop_size)

    @property
    def is_random(self) -> bool:
        return self.train and (self.mirror or self.crop_size > 0)

    def draw(self, rng: np.random.Generator, count: int):
        """Random choices for ``count`` samples: (h offsets, w offsets, mirror flags) or None."""
        if not self.is_random:
            return None
        flip = rng.integers(0, 2, size=count).astype(bool) if self.mirror else None
        if self.crop_size:
            height, width = self.sample_shape[-2:]
            h_off = rng.integers(0, height - self.crop_size + 1, size=count)
            w_off = rng.integers(0, width - self.crop_size + 1, size=count)
        else:
            h_off = w_off = None
        return h_off, w_off, flip

    def apply(self, x: np.ndarray, choices=None, out: np.ndarray | None = None) -> np.ndarray:
        """Transform a raw batch (B, *sample_shape) into (B, *output_shape) of the net's dtype,
        written into ``out`` when it is an array of that shape and dtype (a batch given back
        for reuse), else into a new array.

        The window is cut from the stored values (uint8 images: a quarter of the bytes of
        float32), then converted; with a mean file, which is indexed at the uncropped
        position, the mean is subtracted first. Either order gives the same numbers.
        """
        if self.mean is not None:
            full = x.astype(self.dtype, copy=True)
            full -= self.mean
            window = self._window(full, choices)
        else:
            window = self._window(x, choices)
        shape = (len(x), *self.output_shape)
        if out is None or out.shape != shape or out.dtype != self.dtype \
                or not out.flags.c_contiguous:
            out = np.empty(shape, dtype=self.dtype)
        np.copyto(out, window, casting="unsafe")
        if self.mean_value is not None:
            out -= self.mean_value
        if self.scale != 1.0:
            out *= self.scale
        return out

    def _window(self, x: np.ndarray, choices) -> np.ndarray:
        """Each sample's crop window, mirrored where drawn so (a view when nothing is
        random)."""
        if choices is not None:
            return self._crop_and_mirror(x, *choices)
        if not self.crop_size:
            return x
        height, width = self.sample_shape[-2:]
        top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        return x[..., top:top + self.crop_size, left:left + self.crop_size]

    def _crop_and_mirror(self, x, h_off, w_off, flip) -> np.ndarray:
        """Every sample's own window in one gather per direction: the windows of all
        offsets are a strided view of the batch (no copy), indexed by (sample, h, w); a
        mirrored window is the window of the column-reversed batch that starts at
        ``width - size - w``."""
        batch = x.shape[0]
        height, width = x.shape[-2:]
        size_h = self.crop_size or height
        size_w = self.crop_size or width
        lead = x.reshape(batch, -1, height, width)
        h_off = np.zeros(batch, np.int64) if h_off is None else np.asarray(h_off)
        w_off = np.zeros(batch, np.int64) if w_off is None else np.asarray(w_off)
        flip = np.zeros(batch, bool) if flip is None else np.asarray(flip, bool)
        out = np.empty((batch, lead.shape[1], size_h, size_w), dtype=x.dtype)
        for mirrored, view in ((False, lead), (True, lead[..., ::-1])):
            chosen = np.flatnonzero(flip == mirrored)
            if chosen.size:
                windows = sliding_window_view(view, (size_h, size_w), axis=(2, 3))
                left = width - size_w - w_off[chosen] if mirrored else w_off[chosen]
                out[chosen] = windows[chosen, :, h_off[chosen], left]
        return out.reshape(*x.shape[:-2], size_h, size_w)


def load_mean_file(path: Path) -> np.ndarray:
    """A mean image: ``.npy`` (C, H, W) or (1, C, H, W), ``.npz`` (its one array, or ``mean``),
    or Caffe's ``.binaryproto`` (a BlobProto as written by ``compute_image_mean``)."""
    name = path.name.lower()
    try:
        if name.endswith(".binaryproto"):
            mean = _read_blob_proto(path)
        elif name.endswith(".npz"):
            archive = load_npz(path, what="mean file", limit=LIMITS["array"], error=DataError)
            keys = list(archive)
            if "mean" in keys:
                mean = archive["mean"]
            elif len(keys) == 1:
                mean = archive[keys[0]]
            else:
                raise DataError(f"'{path}' holds {len(keys)} arrays ({', '.join(keys)}); "
                                f"name the mean image 'mean'", field="transform.mean_file")
        else:
            mean = load_npy(path, what="mean file", limit=LIMITS["array"], error=DataError)
    except DataError as err:
        err.field = err.field or "transform.mean_file"
        raise
    mean = np.asarray(mean)
    if mean.dtype.kind not in "biuf":
        raise DataError(f"mean file '{path}' is not numeric", field="transform.mean_file")
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    return mean


def _read_blob_proto(path: Path) -> np.ndarray:
    """Caffe's BlobProto (legacy num/channels/height/width or ``shape``), as float32."""
    from ..caffe.messages import decode_blobproto
    try:
        data = read_bytes(path, what="mean file", limit=LIMITS["binaryproto"], error=DataError)
        stored = decode_blobproto(data, file=str(path))
        with np.errstate(over="ignore", invalid="ignore"):
            mean = stored.astype(np.float32)
        if not np.isfinite(mean).all():
            raise DataError("it holds NaN, infinity or values beyond float32's range",
                            file=str(path))
        return mean
    except DataError as err:
        if err.message.startswith("cannot read the mean file"):
            raise err.located(field="transform.mean_file") from None
        raise DataError(f"cannot read the mean file: {err.message}", file=str(path),
                        field="transform.mean_file") from None
