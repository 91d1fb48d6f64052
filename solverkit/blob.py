"""Blob: an array of data and the gradient of the total loss with respect to it."""

from __future__ import annotations

import math

import numpy as np

# Blob arrays start on a cache line: oneDNN then reads and writes them in place instead of
# copying each into a buffer of its own first (see dnnl._Tensor).
ALIGNMENT = 64


def aligned_zeros(shape, dtype) -> np.ndarray:
    """Zeros of ``shape`` and ``dtype`` whose first element is ``ALIGNMENT``-byte aligned."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(int(s) for s in shape) * dtype.itemsize
    try:
        raw = np.zeros(nbytes + ALIGNMENT, np.uint8)
    except ValueError:
        return np.zeros(shape, dtype)   # numpy's own words for a size it cannot hold
    offset = (-raw.ctypes.data) % ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned_copy(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` whose first element is ``ALIGNMENT``-byte aligned."""
    copy = aligned_zeros(array.shape, array.dtype)
    np.copyto(copy, array)
    return copy


def freeze_array(array: np.ndarray) -> None:
    """Make ``array`` and every array it is a view of read-only: no writable array over its
    memory is left (``is_frozen`` then holds)."""
    while isinstance(array, np.ndarray):
        array.flags.writeable = False
        array = array.base


def is_frozen(array: np.ndarray) -> bool:
    """Whether nothing can write ``array``'s values: it is read-only, and so is every array
    it is a view of (a read-only view of a writable array may still change)."""
    while isinstance(array, np.ndarray):
        if array.flags.writeable:
            return False
        array = array.base
    return array is None


class Blob:
    """``data`` and ``diff`` of one shape (NCHW for images), as Caffe's Blob.

    A blob may *share data* with another (``Blob.sharing(source)``): the net uses
    that to give each consumer of a fanned-out blob its own ``diff`` while the
    data stays one array. ``diff`` is allocated lazily, on first use.

    ``clear_diff()`` zeroes the diff lazily: the next read of ``diff`` sees zeros, while
    ``diff_for_accumulation()`` lets a layer write its gradient straight over the stale
    values instead (the solver clears every parameter diff each iteration; this saves a
    pass of zeroing and a pass of adding over every weight).
    """

    __slots__ = ("_data", "_diff", "_diff_cleared", "_source", "dtype", "name")

    def __init__(self, shape=(), dtype=np.float32, name: str = ""):
        self.name = name
        self.dtype = np.dtype(dtype)
        self._data = aligned_zeros(tuple(int(s) for s in shape), self.dtype)
        self._diff = None
        self._source: Blob | None = None
        self._diff_cleared = False

    @classmethod
    def sharing(cls, source: Blob, name: str = "") -> Blob:
        """A blob whose data *is* ``source``'s data (always, across reshapes) with its own diff."""
        blob = cls.__new__(cls)
        blob.name = name or source.name
        blob.dtype = source.dtype
        blob._data = None
        blob._diff = None
        blob._source = source
        blob._diff_cleared = False
        return blob

    @property
    def data(self) -> np.ndarray:
        return self._source.data if self._source is not None else self._data

    @data.setter
    def data(self, value) -> None:
        if self._source is not None:
            self._source.data = value
            return
        value = np.asarray(value, dtype=self.dtype)
        self._data = value
        if self._diff is not None and self._diff.shape != value.shape:
            self._diff = None

    @property
    def diff(self) -> np.ndarray:
        shape = self.shape
        if self._diff is None or self._diff.shape != shape:
            self._diff = aligned_zeros(shape, self.dtype)
        elif self._diff_cleared:
            self._diff.fill(0)
        self._diff_cleared = False
        return self._diff

    @diff.setter
    def diff(self, value) -> None:
        value = np.asarray(value, dtype=self.dtype)
        assert value.shape == self.shape, (self.name, value.shape, self.shape)
        self._diff = value
        self._diff_cleared = False

    def clear_diff(self) -> None:
        """Zero the diff lazily (see the class docstring); nothing is written now."""
        self._diff_cleared = True

    def diff_for_accumulation(self) -> tuple[np.ndarray, bool]:
        """``(diff, overwrite)`` for a gradient ``g`` to add into the diff: when ``overwrite``
        the diff was cleared and the caller must write ``g`` over every element (``out=``);
        otherwise it adds ``diff += g``. Either way the diff then holds the sum."""
        cleared = self._diff_cleared and self._diff is not None and self._diff.shape == self.shape
        if not cleared:
            return self.diff, False
        self._diff_cleared = False
        return self._diff, True

    @property
    def has_diff(self) -> bool:
        """Whether a diff with values exists (allocated and not lazily cleared)."""
        return self._diff is not None and not self._diff_cleared

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def count(self) -> int:
        return int(self.data.size)

    @property
    def num(self) -> int:
        """Caffe's legacy axis 0 (1 when the blob has fewer axes); likewise the next three."""
        return self._legacy_axis(0)

    @property
    def channels(self) -> int:
        return self._legacy_axis(1)

    @property
    def height(self) -> int:
        return self._legacy_axis(2)

    @property
    def width(self) -> int:
        return self._legacy_axis(3)

    def _legacy_axis(self, axis: int) -> int:
        shape = self.shape
        if len(shape) > 4:
            raise ValueError(f"blob {self.name!r} has {len(shape)} axes; num/channels/height/"
                             f"width exist only for up to 4 (read .shape)")
        return int(shape[axis]) if axis < len(shape) else 1

    def reshape(self, *shape) -> None:
        """Give the blob a new shape, ``reshape((n, c))`` or ``reshape(n, c)`` (pycaffe's form);
        the contents are reallocated (zeros) only if it changes."""
        if len(shape) == 1 and np.ndim(shape[0]) == 1:
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if self._source is not None:
            self._source.reshape(shape)
            return
        if self._data.shape != shape:
            self._data = aligned_zeros(shape, self.dtype)

    def use_memory(self, buffer: np.ndarray) -> None:
        """Hold the data (its shape kept, its values not) in the first bytes of ``buffer``
        (a 1-d uint8 array, aligned like ``aligned_zeros``'), which other blobs may use too;
        a reshape to another shape gives the blob an array of its own again."""
        if self._source is not None:
            self._source.use_memory(buffer)
            return
        nbytes = self._data.nbytes
        if buffer.nbytes < nbytes:
            raise ValueError(f"a buffer of {buffer.nbytes} bytes cannot hold blob "
                             f"{self.name!r} ({nbytes} bytes)")
        self._data = buffer[:nbytes].view(self.dtype).reshape(self._data.shape)

    def use_diff_memory(self, buffer: np.ndarray) -> None:
        """Hold the diff (of the blob's shape; its values are whatever the buffer holds)
        in the first bytes of ``buffer`` (as ``use_memory``), which other blobs' diffs use
        at other times; a reshape gives the blob a diff of its own again on next use."""
        shape, nbytes = self.shape, self.data.nbytes
        if buffer.nbytes < nbytes:
            raise ValueError(f"a buffer of {buffer.nbytes} bytes cannot hold the diff of "
                             f"blob {self.name!r} ({nbytes} bytes)")
        self._diff = buffer[:nbytes].view(self.dtype).reshape(shape)
        self._diff_cleared = False

    def release_diff(self) -> None:
        """Forget the diff array: the next use allocates one of its own (zeros)."""
        self._diff = None
        self._diff_cleared = False

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={self.shape}, dtype={self.dtype})"
