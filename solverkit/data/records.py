"""Sources read one record at a time (image files, database records), with ``skip_bad``.

A ``RecordSource`` decodes sample ``index`` with ``read(index) -> (pixels, label)``; a
record that cannot be decoded raises ``DataError``. Without ``skip_bad`` that error stops
training, naming the record. With it, the bad record is replaced in its batch by the next
good record of the source (cyclically): batches stay full, and since the replacement
depends only on the data, a resumed run reads exactly what an uninterrupted one did. The
first bad record is reported in a warning, and the count when the source is closed.

The records of a batch are decoded by ``workers`` threads at once (``use_workers``): the
batch is cut into that many runs of consecutive samples, the calling thread decodes the
first and a pool the others, each writing its own rows of the batch. Pillow decodes with
the GIL released, and so do file reads, LMDB's reads and numpy's copies, so the threads
run in parallel. Which record lands in which row does not depend on the threads (the
replacement of a bad record depends only on the data), so any count gives the same
batches, and a batch with bad records fails with the error of its first bad one.

With ``use_workers(count, "processes")`` the runs are decoded by ``count`` worker
processes instead (``decode_pool``), each writing its rows into a block of shared memory;
a source that can be rebuilt in a worker says how in ``recipe()``. Pillow's per-image
Python code holds the GIL, so threads take turns on it while processes run side by side:
for small images that code is most of the work. Everything else is as with threads: the
same runs, the same rows, the same first error, the same records skipped, so threads and
processes give the same batches. ``"auto"`` picks processes for two or more workers
over many small records (see ``worker_kind``).
"""

from __future__ import annotations

import abc
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import threads
from ..errors import DataError
from ..launcher import launcher_size
from . import decode_pool
from .samples import PendingTake, Samples, check_label_values

logger = logging.getLogger("solverkit")

# the most decoding workers a source starts by default, however many cores there are
MAX_DEFAULT_WORKERS = 8


WORKER_TYPES = ("auto", "threads", "processes")

# ``worker_type: auto`` decodes in processes records of at most this many bytes (a 3 x 128
# x 128 uint8 image is 48 KiB) from sources of at least this many records
PROCESS_MAX_SAMPLE_BYTES = 64 << 10
PROCESS_MIN_RECORDS = 1000


def default_workers() -> int:
    """Decoding workers when a layer does not say: one per core this process may use
    (its share under an MPI launcher), at most ``MAX_DEFAULT_WORKERS``."""
    return max(1, min(MAX_DEFAULT_WORKERS, threads.available_cores() // launcher_size()))


class RecordSource(Samples):
    """Samples of ``sample_shape`` decoded one by one; see the module docstring."""

    streamed = True

    def __init__(self, name: str, *, skip_bad: bool = False):
        self.name = name
        self.skip_bad = skip_bad
        self.bad: set[int] = set()      # records found undecodable (skip_bad)
        self._reported = 0
        self._warned = False            # the first bad record has been named
        self._lock = threading.Lock()
        self.workers = 1
        self.processes = False          # decode in worker processes, not threads
        self._pool: ThreadPoolExecutor | None = None
        self._decode_pool: decode_pool.DecodePool | None = None

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
    def read_ahead(self) -> int:
        """Batches a prefetch thread keeps begun: with worker processes, two per worker
        (each worker then has two batches' worth of its runs queued, as PyTorch's
        DataLoader keeps ``prefetch_factor`` = 2 batches per worker), else 1."""
        return 2 * self.workers if self.processes else 1

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the decoding worker processes running now (none with
        threads, or before the first batch)."""
        return [] if self._decode_pool is None else self._decode_pool.pids

    @property
    def skipped(self) -> int:
        """Records skipped so far because they could not be decoded."""
        return len(self.bad)

    def use_workers(self, count: int, kind: str = "auto") -> None:
        """Decode each batch with ``count`` workers (1: the calling thread alone), threads
        or processes (``kind``: ``"threads"``, ``"processes"``, or ``"auto"``: see
        ``worker_kind``)."""
        count = max(1, int(count))
        processes = worker_kind(count, kind, self) == "processes"
        if (count, processes) != (self.workers, self.processes):
            self._stop_pool()
            self.workers, self.processes = count, processes

    def recipe(self) -> tuple[str, str, dict, dict] | None:
        """How a worker process rebuilds this source: (module, class name, settings of
        JSON types, plain numpy arrays), given to ``from_recipe``; None when it cannot."""
        return None

    @classmethod
    def from_recipe(cls, settings: dict, arrays: dict) -> RecordSource:
        """The source a ``recipe()`` describes (in a worker process)."""
        raise NotImplementedError

    def decode_rows(self, indices, out, labels, sources, found: list) -> None:
        """Decode records ``indices`` (or, with ``skip_bad``, their replacements) into the
        rows of ``out``, their labels into ``labels`` and the records read into
        ``sources``; records found bad for the first time are added to ``found`` as
        (index, message). Stops at the first bad record without ``skip_bad``."""
        for k in range(len(indices)):
            sources[k], pixels, labels[k] = self._good(int(indices[k]), found)
            if pixels.shape != self.sample_shape:
                raise self.shape_error(int(sources[k]), pixels.shape)
            out[k] = pixels

    def take(self, indices):
        if self.processes:
            pending = self.start_take(indices)
            try:
                data, labels = pending.result()
                return data.copy(), labels.copy()
            finally:
                pending.release()
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.sample_shape), dtype=self.dtype)
        labels = np.empty(len(indices), dtype=np.float64)
        sources = np.empty(len(indices), dtype=np.int64)
        count = max(1, min(self.workers, len(indices)))
        bounds = [len(indices) * part // count for part in range(count + 1)]
        runs = list(zip(bounds[:-1], bounds[1:]))           # (start, stop) of each thread
        failures: list[BaseException | None] = [None] * len(runs)
        found: list[list] = [[] for _ in runs]      # records found bad, per thread

        def fill(run: int) -> None:
            start, stop = runs[run]
            try:
                self.decode_rows(indices[start:stop], out[start:stop], labels[start:stop],
                                 sources[start:stop], found[run])
            except BaseException as error:      # noqa: BLE001 (raised below, in order)
                failures[run] = error

        if len(runs) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers - 1,
                                                thread_name_prefix="solverkit-decode")
            pending = [self._pool.submit(fill, run) for run in range(1, len(runs))]
            fill(0)
            for job in pending:         # every row written before the batch is used
                job.result()
        else:
            fill(0)
        return self._conclude(out, labels, sources, found, failures)

    def start_take(self, indices) -> PendingTake:
        if not self.processes:
            return super().start_take(indices)
        if self._decode_pool is not None and self._decode_pool.failed:
            self._decode_pool = None        # its error was raised; a new pool starts
        if self._decode_pool is None:
            self._decode_pool = decode_pool.DecodePool(
                self.recipe(), count=self.workers, sample_shape=self.sample_shape,
                dtype=self.dtype, title=self.title)
        return _PooledTake(self, self._decode_pool.submit(indices))

    def _conclude(self, out, labels, sources, found: list[list], failures: list):
        """The batch decoded in runs: the first bad record named (once), the first run's
        error raised, labels read with the records checked."""
        self._warn_first([bad for part in found for bad in part])
        for error in failures:          # the first bad sample of the batch speaks
            if error is not None:
                raise error
        if self.labels is None:        # labels read with the records: check them here
            check_label_values(labels, self.title, self.label_type, self.num_classes,
                               lambda k: self.where(int(sources[k])))
        return out, labels

    def shape_error(self, index: int, shape) -> DataError:
        return DataError(f"{self.where(index)} has shape {tuple(shape)} but the source's "
                         f"samples have shape {self.sample_shape}", field="source")

    def _good(self, index: int, found: list):
        """(index, pixels, label) of record ``index`` or, with ``skip_bad``, of the first
        good record after it (cyclically); records found bad for the first time are added
        to ``found`` as (index, message)."""
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
                    new = candidate not in self.bad
                    self.bad.add(candidate)
                if new:
                    found.append((candidate, err.message))
                continue
            return candidate, pixels, label
        raise DataError(f"{self.title}: none of its {size} records can be read",
                        field="source")

    def _warn_first(self, found: list) -> None:
        """Name the first bad record in a warning, once: the lowest of those the first
        batch with bad records found, whichever thread found them first."""
        if found and not self._warned:
            self._warned = True
            index, message = min(found)
            logger.warning("%s: skipping %s: %s; further bad records are skipped and "
                           "counted", self.title, self.where(index), message)

    def first_good(self) -> tuple[int, np.ndarray]:
        """The first readable record (for the sample shape), honouring ``skip_bad``."""
        found: list = []
        try:
            index, pixels, _ = self._good(0, found)
        finally:
            self._warn_first(found)
        return index, pixels

    def report(self) -> None:
        """Log how many records were skipped (once per new count)."""
        with self._lock:
            count, new = len(self.bad), len(self.bad) != self._reported
            self._reported = count
        if count and new:
            logger.warning("%s: %d bad record(s) skipped", self.title, count)

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._decode_pool is not None:
            self._decode_pool.close()
            self._decode_pool = None

    def close(self) -> None:
        """Report the records skipped and end the decoding threads or processes (a later
        ``take`` starts them again)."""
        self._stop_pool()
        self.report()


class _PooledTake(PendingTake):
    """A batch being decoded by a source's worker processes."""

    def __init__(self, source: RecordSource, ticket: decode_pool.Ticket):
        self.source = source
        self.ticket = ticket

    def result(self):
        pixels, labels, sources, answers = self.ticket.result()
        source = self.source
        with source._lock:
            found = [[(index, message) for index, message in answer["found"]
                      if index not in source.bad] for answer in answers]
            for part in found:
                source.bad.update(index for index, _ in part)
        failures = [None if "error" not in answer else
                    DataError(answer["error"]["message"], field=answer["error"]["field"])
                    for answer in answers]
        return source._conclude(pixels, labels, sources, found, failures)

    def release(self) -> None:
        self.ticket.release()


def worker_kind(count: int, kind: str, source: RecordSource) -> str:
    """``"threads"`` or ``"processes"``: what decodes the batches of ``source`` for a
    layer that asks for ``count`` workers of ``kind``.

    ``"auto"`` is processes when all of: two workers or more; records of at most
    ``PROCESS_MAX_SAMPLE_BYTES`` decoded (small images, where Pillow's per-image Python
    code, which holds the GIL, is most of the work; a large image is mostly decoded with
    the GIL released, and threads then keep up with less memory); at least
    ``PROCESS_MIN_RECORDS`` records (fewer are decoded by threads in less time than
    worker processes take to start); a platform with the shared memory the pool uses
    (Linux) and a source that can be rebuilt in a worker. The measurements behind the
    rule are in docs/data.md."""
    if kind not in WORKER_TYPES:
        raise DataError(f"worker_type '{kind}' is not one of {', '.join(WORKER_TYPES)}",
                        field="worker_type")
    possible = decode_pool.available() and source.recipe() is not None
    if kind == "processes" and not possible:
        why = ("this platform cannot share batch memory with worker processes (it needs "
               "Linux's memfd_create)" if not decode_pool.available() else
               f"{source.title} cannot be read in worker processes")
        raise DataError(f"worker_type: processes: {why}; use threads", field="worker_type")
    if kind == "auto":
        small = (int(np.prod(source.sample_shape)) * np.dtype(source.dtype).itemsize
                 <= PROCESS_MAX_SAMPLE_BYTES)
        many = len(source) >= PROCESS_MIN_RECORDS
        return "processes" if count > 1 and possible and small and many else "threads"
    return kind
