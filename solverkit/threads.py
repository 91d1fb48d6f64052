"""Intra-op threads: a layer's copies and element-wise passes, split into blocks, on all cores.

numpy releases the GIL inside its array loops, so the work outside BLAS (im2col, col2im,
pooling, activations, the update rules) runs in parallel when it is cut into independent
blocks of samples, channels or parameters and handed to a few threads, as PyTorch's
intra-op threads do. BLAS products keep their own threads (MKL's follow this count, see
blas.py); the two never run at once.

Every block writes its own outputs with exactly the operations a single thread would run,
so results are bitwise the same for any number of threads (resume stays exact).

The count is ``set_num_threads(n)``, else the first of the environment variables
``SOLVERKIT_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` that is set, else
the cores this process may run on, divided among the ranks under an MPI launcher.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .launcher import launcher_size

ENVIRONMENT_VARIABLES = ("SOLVERKIT_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# A thread's hand-off costs some 20–40 µs: a job gets one thread per this many array
# elements at most (so a pass of fewer than twice as many runs on the calling thread).
ELEMENTS_PER_THREAD = 1 << 18

_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_inside = threading.local()
_followers: list[Callable[[int], None]] = []    # told of every new count (MKL's pool)


def _default_threads() -> int:
    for name in ENVIRONMENT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, available_cores() // launcher_size())


def available_cores() -> int:
    """The cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def num_threads() -> int:
    """How many threads element-wise work is split over."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1: everything on the calling thread); MKL's products too, when
    solverkit uses MKL (numpy's own BLAS sizes its pool once, at import)."""
    global _threads, _pool
    if int(n) < 1:
        raise ValueError(f"the number of threads must be at least 1, got {n}")
    with _pool_lock:
        _threads = int(n)
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
    for follow in _followers:
        follow(_threads)


def follow_thread_count(follow: Callable[[int], None]) -> None:
    """Call ``follow(n)`` on every ``set_num_threads(n)``: a library whose own pool should
    use solverkit's count registers here (``blas`` does, for MKL)."""
    _followers.append(follow)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="solverkit")
        return _pool


def _run_group(fn: Callable, group: Sequence) -> None:
    _inside.active = True
    try:
        for item in group:
            fn(item)
    finally:
        _inside.active = False


def parallel_for(fn: Callable, items: Iterable, elements: int | None = None) -> None:
    """``fn(item)`` for every item, the items split into one contiguous run per thread.

    The calling thread runs the first run. ``elements`` (the size of the whole job) bounds
    the threads to one per ELEMENTS_PER_THREAD elements, so small jobs stay on the calling
    thread. Calls from inside a worker run serially, so nested use cannot deadlock. The
    first exception of any item is raised here.
    """
    items = list(items)
    threads = min(num_threads(), len(items))
    if elements is not None:
        threads = min(threads, elements // ELEMENTS_PER_THREAD)
    if threads <= 1 or getattr(_inside, "active", False):
        for item in items:
            fn(item)
        return
    bounds = [len(items) * t // threads for t in range(threads + 1)]
    groups = [items[bounds[t]:bounds[t + 1]] for t in range(threads)]
    futures = [_executor(num_threads() - 1).submit(_run_group, fn, group) for group in groups[1:]]
    try:
        _run_group(fn, groups[0])
    finally:
        for future in futures:
            future.result()


def blocks(count: int, bytes_each: int, block_bytes: int) -> list[slice]:
    """``count`` items of ``bytes_each`` bytes in contiguous blocks of at most about
    ``block_bytes`` (blocks that stay in a core's cache), as many as a multiple of the
    thread count so that every thread gets the same share."""
    pieces = -(-count * max(1, bytes_each) // max(1, block_bytes))        # ceil
    per_thread = -(-pieces // num_threads())
    return split(count, per_thread * num_threads())


def split(count: int, pieces: int | None = None) -> list[slice]:
    """``count`` indices cut into ``pieces`` (default: one per thread) contiguous slices."""
    pieces = max(1, min(count, num_threads() if pieces is None else pieces))
    bounds = [count * p // pieces for p in range(pieces + 1)]
    return [slice(bounds[p], bounds[p + 1]) for p in range(pieces)]


def copyto(target, source) -> None:
    """``np.copyto(target, source)`` with the first axis split over the threads (for the
    transposing copies between layouts, which are memory-bound and slow on one core)."""
    parallel_for(lambda part: np.copyto(target[part], source[part]), split(len(target)),
                 elements=target.size)
