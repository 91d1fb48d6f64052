"""The batch feeder: batches in a seeded order, prepared ahead on a background thread when a
core is spare for it, else made by the training thread as it asks.

The stream of samples is Caffe's: the samples of an epoch in ``order`` (a new random
permutation at the start of every epoch when shuffling, else 0..N-1); a batch that
reaches the end of the epoch takes the rest of its samples from the start of the next
one (it wraps), so every batch is full and every sample appears exactly once per epoch.

Where the stream stands is a ``Position``: epoch, cursor (next sample within ``order``),
``order``, and the state of the feeder's own Generator (which draws the permutations and
the random crops and mirrors). A batch is a pure function of the position it starts
from, so restoring a position reproduces the following batches exactly. The position the
feeder reports is that of the next batch the *consumer* will get: batches prepared ahead
but not consumed are thrown away on ``set_state``, and their work is redone.

With ``num_ranks = K`` (data-parallel training) each step draws ``K * batch_size`` samples
from the one stream, and rank r keeps the r-th slice: K ranks together see exactly what
one process with a K-times larger batch would.

The prefetch thread begins the source's ``read_ahead`` batches (``Samples.start_take``)
before it finishes the oldest: a source decoding in worker processes decodes those while
the thread transforms one. They are drawn in stream order, so the batches are the same.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import weakref
from collections import deque
from dataclasses import dataclass

import numpy as np

from .. import threads
from ..errors import DataError, SnapshotError
from ..launcher import launcher_size
from .samples import PendingTake, Samples
from .transform import Transform

# batches prepared ahead by default, when a core is spare (Caffe's default prefetch)
AUTO_PREFETCH = 4

# batches given back for reuse that are kept (one is in use at a time; one more covers
# a consumer that gives back before the producer takes)
SPARE_BATCHES = 2


def spare_core() -> bool:
    """Whether this process has a core its compute threads leave free (solverkit's thread
    count, times the ranks an MPI launcher started, is below the cores it may run on).

    For a source in memory, making a batch is CPU work only. Without a free core a
    prefetch thread cannot overlap it with compute: it takes the CPU and the GIL from the
    training thread and adds hand-offs, which costs a small step more than making the
    batch in the step itself.
    """
    return threads.available_cores() > threads.num_threads() * launcher_size()


@dataclass(frozen=True, eq=False)
class Position:
    """Where a sample stream stands (immutable: ``order`` arrays are never written to)."""

    epoch: int                 # epochs begun so far, minus one
    cursor: int                # index into ``order`` of the next sample, 0 <= cursor < N
    order: np.ndarray          # (N,) sample indices of the current epoch
    rng_state: dict            # the Generator's bit_generator.state


class _Stream:
    """A mutable Position with a live Generator: what one producer works on."""

    def __init__(self, position: Position, shuffle: bool):
        self.epoch = position.epoch
        self.cursor = position.cursor
        self.order = position.order
        self.shuffle = shuffle
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = position.rng_state

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` sample indices, wrapping into the next epoch(s)."""
        size = len(self.order)
        parts = []
        while count:
            k = min(count, size - self.cursor)
            parts.append(self.order[self.cursor:self.cursor + k])
            self.cursor += k
            count -= k
            if self.cursor == size:
                self.epoch += 1
                self.cursor = 0
                if self.shuffle:
                    self.order = self.rng.permutation(size)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def position(self) -> Position:
        return Position(self.epoch, self.cursor, self.order, self.rng.bit_generator.state)


@dataclass(frozen=True, eq=False)
class _Producer:
    """What turns a stream position into a batch; holds no reference to the feeder, so a
    forgotten feeder can be collected (and its thread stopped by a finalizer)."""

    dataset: Samples
    transform: Transform
    batch_size: int
    shuffle: bool
    label_dtype: np.dtype
    rank: int
    num_ranks: int
    spare: queue.SimpleQueue        # batches the consumer gave back (``BatchFeeder.recycle``)

    def batch(self, stream: _Stream):
        """(data, labels or None, the position after this batch)."""
        return self.finish(self.start(stream))

    def start(self, stream: _Stream) -> _Started:
        """Draw the next batch's samples and random choices and begin reading them."""
        indices = stream.take(self.batch_size * self.num_ranks)
        choices = self.transform.draw(stream.rng, len(indices))
        if self.num_ranks > 1:
            mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
            indices = indices[mine]
            choices = None if choices is None else tuple(
                None if c is None else c[mine] for c in choices)
        return _Started(self.dataset.start_take(indices), choices, stream.position())

    def finish(self, started: _Started):
        """(data, labels or None, the position after the batch) of a started batch."""
        try:
            raw, labels = started.reading.result()
            try:
                reuse = self.spare.get_nowait()
            except queue.Empty:
                reuse = None
            data = self.transform.apply(raw, started.choices, out=reuse)
            if labels is not None:
                labels = labels.astype(self.label_dtype)
        finally:
            started.reading.release()
        return data, labels, started.position


@dataclass(frozen=True, eq=False)
class _Started:
    """A batch whose reading has begun: the source's pending take, the transform's random
    choices, and the stream position after the batch."""

    reading: PendingTake
    choices: tuple | None
    position: Position


class _Failure:
    """An exception raised on the producer thread, delivered in the batch queue."""

    def __init__(self, error: BaseException):
        self.error = error


def _produce(producer: _Producer, stream: _Stream, out: queue.Queue, stop: threading.Event):
    """The producer thread: fill ``out`` until ``stop`` is set; a failure is queued too.
    The source's ``read_ahead`` batches are begun before the oldest is finished, so a
    source decoding in other processes decodes the next batches while this thread
    transforms one."""
    started: deque[_Started] = deque()
    ahead = max(1, producer.dataset.read_ahead)
    try:
        while not stop.is_set():
            while len(started) < ahead:
                started.append(producer.start(stream))
            if not _put(out, producer.finish(started.popleft()), stop):
                return
    except BaseException as error:  # noqa: BLE001 (delivered to the consumer, raised there)
        _put(out, _Failure(error), stop)
    finally:
        for batch in started:       # begun, never used: their reads are dropped
            batch.reading.release()


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class BatchFeeder:
    """Batches of ``batch_size`` samples of ``dataset``, transformed, in a seeded order.

    ``next()`` -> ``(data (B, *transform.output_shape), labels (B,) or None)``.
    ``prefetch`` batches are prepared ahead on a thread (0: in the caller's thread). The
    default, None, is ``AUTO_PREFETCH`` when a core is spare (see ``spare_core``), else 0.
    ``rng`` is the feeder's own Generator: it draws the epoch permutations and the random
    crops/mirrors, and its state is part of ``get_state()``.
    """

    def __init__(self, dataset: Samples, batch_size: int, transform: Transform, *,
                 shuffle: bool, rng: np.random.Generator, label_dtype=np.float32,
                 prefetch: int | None = None, name: str = "data"):
        self.name = name
        self.prefetch = None if prefetch is None else int(prefetch)
        self._producer = _Producer(dataset, transform, int(batch_size), bool(shuffle),
                                   np.dtype(label_dtype), 0, 1, queue.SimpleQueue())
        self._check_batch_size()
        size = len(dataset)
        order = rng.permutation(size) if shuffle else np.arange(size)
        self._position = Position(0, 0, order, rng.bit_generator.state)
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._queue: queue.Queue | None = None
        self._finalizer = None
        self._stream: _Stream | None = None     # the caller's own stream (no thread)

    # ------------------------------------------------------------ facts
    @property
    def num_samples(self) -> int:
        return len(self._producer.dataset)

    @property
    def batch_size(self) -> int:
        return self._producer.batch_size

    @property
    def batches_per_epoch(self) -> int:
        """Steps for one pass over the data: ``ceil(N / (batch_size * num_ranks))``."""
        p = self._producer
        return math.ceil(self.num_samples / (p.batch_size * p.num_ranks))

    @property
    def epoch(self) -> int:
        return self._position.epoch

    def _check_batch_size(self) -> None:
        p = self._producer
        if p.batch_size * p.num_ranks > self.num_samples:
            ranks = f" x {p.num_ranks} ranks" if p.num_ranks > 1 else ""
            raise DataError(f"batch_size {p.batch_size}{ranks} is larger than the data set "
                            f"{p.dataset.title} ({self.num_samples} samples)",
                            field="batch_size")

    # ------------------------------------------------------------ batches
    def next(self):
        """The next batch: ``(data, labels)``; labels are None for a source without labels."""
        if self._thread is None and self._stream is None:    # (re)starting: which way?
            depth = self.depth
            if depth > 0:
                self._start(depth)
            else:
                self._stream = _Stream(self._position, self._producer.shuffle)
        if self._stream is not None:
            try:
                data, labels, self._position = self._producer.batch(self._stream)
            except BaseException:
                self._stream = None         # a retry starts again from the last position
                raise
            return data, labels
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    self._halt()
                    raise RuntimeError(f"the data thread of layer '{self.name}' stopped") from None
        if isinstance(item, _Failure):
            self._halt()
            raise item.error
        data, labels, self._position = item
        return data, labels

    def recycle(self, data: np.ndarray) -> None:
        """Give back the data of a batch ``next()`` returned, once it has been copied: a
        later batch is written into it. A new array of a large batch costs a page fault
        per 4 KiB on every batch (more than converting the batch itself); a reused one
        does not. The caller must not read ``data`` afterwards."""
        if self._producer.spare.qsize() < SPARE_BATCHES:
            self._producer.spare.put(data)

    @property
    def depth(self) -> int:
        """Batches the thread prepares ahead; 0: batches are made by ``next()`` itself."""
        if self.prefetch is not None:
            return max(0, self.prefetch)
        # reading and decoding files waits on the disk and (Pillow, LMDB, file reads)
        # releases the GIL, so it overlaps compute even without a spare core
        return AUTO_PREFETCH if spare_core() or self._producer.dataset.streamed else 0

    def _start(self, depth: int) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=depth)
        stream = _Stream(self._position, self._producer.shuffle)
        self._thread = threading.Thread(target=_produce, name=f"solverkit-data-{self.name}",
                                        args=(self._producer, stream, self._queue, self._stop),
                                        daemon=True)
        self._finalizer = weakref.finalize(self, self._stop.set)
        self._thread.start()

    def _halt(self) -> None:
        """Stop the thread and drop what it prepared; the next batch restarts from the
        consumer's position."""
        self._stream = None
        if self._thread is None:
            return
        self._stop.set()
        while not self._queue.empty():      # wakes a producer blocked on a full queue
            self._queue.get_nowait()
        self._thread.join()
        self._finalizer.detach()
        self._thread = self._stop = self._queue = self._finalizer = None

    def close(self) -> None:
        """End the prefetch thread (it restarts if ``next()`` is called again)."""
        self._halt()

    # ------------------------------------------------------------ position
    def get_state(self) -> dict[str, np.ndarray]:
        """The position of the next batch ``next()`` returns, as arrays an npz can hold:
        ``epoch``, ``cursor`` (int64 scalars), ``order`` (N,) int64, ``rng`` (JSON str)."""
        pos = self._position
        return {"epoch": np.array(pos.epoch, dtype=np.int64),
                "cursor": np.array(pos.cursor, dtype=np.int64),
                "order": np.array(pos.order, dtype=np.int64),
                "rng": np.array(json.dumps(pos.rng_state))}

    def set_state(self, state: dict) -> None:
        """Continue from a position ``get_state()`` returned (prefetched batches are dropped)."""
        missing = {"epoch", "cursor", "order", "rng"} - set(state)
        if missing:
            raise SnapshotError(f"the data position of layer '{self.name}' lacks "
                                f"{', '.join(sorted(missing))}", layer=self.name)
        order = np.asarray(state["order"], dtype=np.int64)
        size = self.num_samples
        if order.shape != (size,) or not np.array_equal(np.sort(order), np.arange(size)):
            raise SnapshotError(f"the saved data position of layer '{self.name}' is for "
                                f"{order.size} samples, but its source now has {size}",
                                layer=self.name)
        cursor, epoch = int(state["cursor"]), int(state["epoch"])
        if not 0 <= cursor < size or epoch < 0:
            raise SnapshotError(f"the saved data position of layer '{self.name}' is invalid "
                                f"(epoch {epoch}, cursor {cursor})", layer=self.name)
        try:
            rng_state = json.loads(str(state["rng"]))
            np.random.default_rng().bit_generator.state = rng_state
        except (ValueError, TypeError, KeyError) as err:
            raise SnapshotError(f"the saved generator state of layer '{self.name}' is invalid: "
                                f"{err}", layer=self.name) from None
        self._halt()
        self._position = Position(epoch, cursor, order, rng_state)

    def set_shard(self, rank: int, num_ranks: int) -> None:
        """Serve rank ``rank`` of ``num_ranks``: its slice of every ``num_ranks``-times larger
        step of the one stream (data-parallel training)."""
        if not 0 <= rank < num_ranks:
            raise ValueError(f"rank {rank} is outside 0..{num_ranks - 1}")
        self._halt()
        p = self._producer
        self._producer = _Producer(p.dataset, p.transform, p.batch_size, p.shuffle,
                                   p.label_dtype, int(rank), int(num_ranks), p.spare)
        self._check_batch_size()
