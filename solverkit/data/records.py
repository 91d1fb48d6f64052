"""Sources read one record at a time (image files, database records), with ``skip_bad``.

A ``RecordSource`` decodes sample ``index`` with ``read(index) -> (pixels, label)``; a
record that cannot be decoded raises ``DataError``. Without ``skip_bad`` that error stops
training, naming the record. With it, the bad record is replaced in its batch by the next
good record of the source (cyclically): batches stay full, and since the replacement
depends only on the data, a resumed run reads exactly what an uninterrupted one did. The
first bad record is reported in a warning, and the count when the source is closed.
"""

from __future__ import annotations

import abc
import logging
import threading

import numpy as np

from ..errors import DataError
from .samples import Samples, check_label_values

logger = logging.getLogger("solverkit")


class RecordSource(Samples):
    """Samples of ``sample_shape`` decoded one by one; see the module docstring."""

    streamed = True

    def __init__(self, name: str, *, skip_bad: bool = False):
        self.name = name
        self.skip_bad = skip_bad
        self.bad: set[int] = set()      # records found undecodable (skip_bad)
        self._reported = 0
        self._lock = threading.Lock()

    @abc.abstractmethod
    def read(self, index: int) -> tuple[np.ndarray, int | float]:
        """Record ``index``: (pixels of ``sample_shape``, label); DataError when bad."""

    @abc.abstractmethod
    def where(self, index: int) -> str:
        """How messages name record ``index`` (a file and list line, a database key)."""

    @property
    def has_labels(self):
        return True

    @property
    def skipped(self) -> int:
        """Records skipped so far because they could not be decoded."""
        return len(self.bad)

    def take(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.sample_shape), dtype=self.dtype)
        labels = np.empty(len(indices), dtype=np.float64)
        sources = np.empty(len(indices), dtype=np.int64)
        for k, index in enumerate(indices.tolist()):
            sources[k], pixels, labels[k] = self._good(index)
            if pixels.shape != self.sample_shape:
                raise self.shape_error(int(sources[k]), pixels.shape)
            out[k] = pixels
        if self.labels is None:        # labels read with the records: check them here
            check_label_values(labels, self.title, self.label_type, self.num_classes,
                               lambda k: self.where(int(sources[k])))
        return out, labels

    def shape_error(self, index: int, shape) -> DataError:
        return DataError(f"{self.where(index)} has shape {tuple(shape)} but the source's "
                         f"samples have shape {self.sample_shape}", field="source")

    def _good(self, index: int):
        """(index, pixels, label) of record ``index`` or, with ``skip_bad``, of the first
        good record after it (cyclically)."""
        size = len(self)
        for step in range(size):
            candidate = (index + step) % size
            if candidate in self.bad:
                continue
            try:
                pixels, label = self.read(candidate)
            except DataError as err:
                if not self.skip_bad:
                    raise DataError(f"{err.message}; set skip_bad: true to skip bad records",
                                    field=err.field or "source") from None
                with self._lock:
                    first = not self.bad
                    self.bad.add(candidate)
                if first:
                    logger.warning("%s: skipping %s: %s; further bad records are skipped and "
                                   "counted", self.title, self.where(candidate), err.message)
                continue
            return candidate, pixels, label
        raise DataError(f"{self.title}: none of its {size} records can be read",
                        field="source")

    def first_good(self) -> tuple[int, np.ndarray]:
        """The first readable record (for the sample shape), honouring ``skip_bad``."""
        index, pixels, _ = self._good(0)
        return index, pixels

    def report(self) -> None:
        """Log how many records were skipped (once per new count)."""
        with self._lock:
            count, new = len(self.bad), len(self.bad) != self._reported
            self._reported = count
        if count and new:
            logger.warning("%s: %d bad record(s) skipped", self.title, count)

    def close(self) -> None:
        self.report()
