"""Blob: an array of data and the gradient of the total loss with respect to it."""

from __future__ import annotations

import numpy as np


class Blob:
    """``data`` and ``diff`` of one shape (NCHW for images), as Caffe's Blob.

    A blob may *share data* with another (``Blob.sharing(source)``): the net uses
    that to give each consumer of a fanned-out blob its own ``diff`` while the
    data stays one array. ``diff`` is allocated lazily, on first use.
    """

    __slots__ = ("name", "dtype", "_data", "_diff", "_source")

    def __init__(self, shape=(), dtype=np.float32, name: str = ""):
        self.name = name
        self.dtype = np.dtype(dtype)
        self._data = np.zeros(tuple(int(s) for s in shape), dtype=self.dtype)
        self._diff = None
        self._source: Blob | None = None

    @classmethod
    def sharing(cls, source: Blob, name: str = "") -> Blob:
        """A blob whose data *is* ``source``'s data (always, across reshapes) with its own diff."""
        blob = cls.__new__(cls)
        blob.name = name or source.name
        blob.dtype = source.dtype
        blob._data = None
        blob._diff = None
        blob._source = source
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
            self._diff = np.zeros(shape, dtype=self.dtype)
        return self._diff

    @diff.setter
    def diff(self, value) -> None:
        value = np.asarray(value, dtype=self.dtype)
        assert value.shape == self.shape, (self.name, value.shape, self.shape)
        self._diff = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def count(self) -> int:
        return int(self.data.size)

    def reshape(self, shape) -> None:
        """Give the blob a new shape; the contents are reallocated (zeros) only if it changes."""
        shape = tuple(int(s) for s in shape)
        if self._source is not None:
            self._source.reshape(shape)
            return
        if self._data.shape != shape:
            self._data = np.zeros(shape, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={self.shape}, dtype={self.dtype})"
