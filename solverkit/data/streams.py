"""Array files too large to hold in memory, read a batch at a time: ``.npy`` and HDF5.

A batch's samples are sorted, and each run of consecutive samples is one read (a shuffled
batch is up to ``batch_size`` small reads; an unshuffled one is a single read). Only the
labels (one value per sample) are held in memory. Used for files above
``sources.STREAM_MIN_BYTES`` or with ``stream: true``; smaller files are read whole, which is
faster and checks every value up front.

npy: the header is read by ``numpy.load(mmap_mode="r")`` (which maps the file without
reading it), and rows are then read into the batch with positioned reads rather than
through the mapping, so pages read once do not stay in the process's resident memory.
"""

from __future__ import annotations

import abc
import threading
import tokenize
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError, did_you_mean
from .samples import Samples


def runs(indices: np.ndarray):
    """The sorted distinct ``indices`` as (start, stop) runs of consecutive values, and
    for each requested index its position among the distinct ones."""
    unique, inverse = np.unique(indices, return_inverse=True)
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    starts = unique[np.r_[0, breaks]]
    stops = unique[np.r_[breaks - 1, unique.size - 1]] + 1
    return list(zip(starts.tolist(), stops.tolist())), unique.size, inverse


class _ArrayStream(Samples):
    """Shared by the npy and HDF5 streams: label handling and per-batch checks."""

    streamed = True

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype,
                 labels: np.ndarray | None):
        self.name = name
        self._shape = tuple(shape)
        self._file_dtype = np.dtype(dtype)                  # as stored (maybe big-endian)
        self._dtype = self._file_dtype.newbyteorder("=")    # as served
        self.labels = labels

    def __len__(self) -> int:
        return self._shape[0]

    @property
    def sample_shape(self):
        return self._shape[1:]

    @property
    def dtype(self):
        return self._dtype

    @property
    def has_labels(self):
        return self.labels is not None

    def take(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        spans, count, inverse = runs(indices)
        rows = np.empty((count, *self._shape[1:]), dtype=self._file_dtype)
        self._read(spans, rows)
        if rows.dtype != self._dtype:
            rows = rows.astype(self._dtype)
        data = rows[inverse] if count != indices.size or np.any(np.diff(indices) < 0) else rows
        if self._dtype.kind == "f":
            bad = ~np.isfinite(data.reshape(len(indices), -1)).all(axis=1)
            if np.any(bad):
                raise DataError(f"{self.title}: sample {int(indices[np.argmax(bad)])} contains "
                                f"NaN or infinite values", field="source")
        labels = None if self.labels is None else self.labels[indices]
        return data, labels

    @abc.abstractmethod
    def _read(self, spans, rows: np.ndarray) -> None:
        """Fill ``rows`` with the samples of the (start, stop) ``spans``, in order."""


class NpyStream(_ArrayStream):
    """A C-ordered ``.npy`` file (any numeric dtype), rows read on demand."""

    def __init__(self, path: Path, labels: np.ndarray | None, name: str):
        try:
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as err:
            raise DataError(f"cannot read '{path}' as .npy: {err}", field="source") from None
        if any(issubclass(w.category, UserWarning) and "header" in str(w.message)
               for w in warned):   # numpy read its header only with a fix-up (Python 2)
            raise DataError(f"cannot read '{path}' as .npy: a header numpy reads only with a "
                            f"warning; save it again", field="source")
        if mapped.ndim == 0 or mapped.dtype.kind not in "biuf":
            raise DataError(f"'{path}': the data must be a numeric array with one sample per "
                            f"row, not {mapped.dtype} of shape {mapped.shape}", field="source")
        if not mapped.flags.c_contiguous:
            raise DataError(f"'{path}' is stored in Fortran order; save it C-ordered "
                            f"(numpy.ascontiguousarray) to stream it, or set stream: false",
                            field="source")
        if 0 in mapped.shape[1:]:
            raise DataError(f"'{path}': its samples hold no values (shape {mapped.shape})",
                            field="source")
        super().__init__(name, mapped.shape, mapped.dtype, labels)
        self.path = path
        self._offset = int(mapped.offset)
        self._row_bytes = int(np.prod(mapped.shape[1:], dtype=np.int64)) * mapped.dtype.itemsize
        del mapped
        self._file = None
        self._lock = threading.Lock()

    def _read(self, spans, rows):
        raw = rows.view(np.uint8).reshape(-1) if rows.size else None
        with self._lock:
            if self._file is None:
                try:
                    self._file = open(self.path, "rb", buffering=0)     # noqa: SIM115
                except OSError as err:
                    raise DataError(f"cannot open '{self.path}': {err.strerror or err}",
                                    field="source") from None
            position = 0
            for start, stop in spans:
                size = (stop - start) * self._row_bytes
                self._file.seek(self._offset + start * self._row_bytes)
                got = self._file.readinto(memoryview(raw)[position:position + size])
                if got != size:
                    raise DataError(f"'{self.path}' is shorter than its header says "
                                    f"(truncated?)", field="source")
                position += size

    def close(self):
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Hdf5Stream(_ArrayStream):
    """A dataset of an HDF5 file, read by hyperslabs (HDF5 reads only the chunks needed)."""

    def __init__(self, path: Path, x_key: str, y_key: str, name: str):
        import h5py
        self.path, self.x_key = path, x_key
        try:
            with h5py.File(path, "r") as handle:
                keys = list(handle.keys())
                if x_key not in keys:
                    raise DataError(f"'{path}' has no dataset '{x_key}'"
                                    f"{did_you_mean(x_key, keys)}; datasets: "
                                    f"{', '.join(keys) or 'none'} (set x_key)", field="x_key")
                data = handle[x_key]
                shape, dtype = data.shape, data.dtype
                labels = np.asarray(handle[y_key][()]) if y_key in keys else None
        except OSError as err:
            raise DataError(f"cannot read '{path}' as HDF5: {err}", field="source") from None
        if len(shape) == 0 or dtype.kind not in "biuf":
            raise DataError(f"'{path}': dataset '{x_key}' must be numeric with one sample per "
                            f"row, not {dtype} of shape {shape}", field="source")
        super().__init__(name, shape, dtype, labels)
        self._file = None
        self._lock = threading.Lock()

    def _read(self, spans, rows):
        import h5py
        with self._lock:
            if self._file is None:
                try:
                    self._file = h5py.File(self.path, "r")
                except OSError as err:
                    raise DataError(f"cannot open '{self.path}': {err}",
                                    field="source") from None
            data = self._file[self.x_key]
            position = 0
            for start, stop in spans:
                data.read_direct(rows, np.s_[start:stop], np.s_[position:position + stop - start])
                position += stop - start

    def close(self):
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
