"""Intra-op threads: a layer's copies and element-wise passes, split into blocks, on all cores.

numpy releases the GIL inside its array loops, so the work outside BLAS (im2col, col2im,
pooling, activations, the update rules) runs in parallel when it is cut into independent
blocks of samples, channels or parameters and handed to a few threads, as PyTorch's
intra-op threads do. BLAS products keep their own threads, as many (see the policy
below); the two never run at once.

Every block writes its own outputs with exactly the operations a single thread would run,
so results are bitwise the same for any number of threads (resume stays exact).

The count is ``set_num_threads(n)``, else the first of the environment variables
``SOLVERKIT_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` that is set, else
the cores this process may run on, divided among the ranks under an MPI launcher.

The thread policy (one count, three pools, one pool at work at a time):

- **One count for every pool.** The count above is given to solverkit's own threads, to
  numpy's OpenBLAS, to MKL when solverkit's products use it (``blas``) and to oneDNN's
  OpenMP threads (set around each call and put back after it, ``dnnl``). numpy sizes its
  OpenBLAS pool at import; solverkit resizes it once, through OpenBLAS's own
  ``openblas_set_num_threads``, to the count in force when solverkit first uses its
  threads, so that an MPI rank's BLAS gets its share of the cores and not all of them.
  Later ``set_num_threads`` calls leave OpenBLAS's pool as it is: a product's rounding
  depends on OpenBLAS's thread count, and a net's results must not depend on solverkit's.
- **Products and convolutions share one library pool where oneDNN runs.** With oneDNN
  loaded, the large float32 products go to its matmul (``blas``), on the same OpenMP
  threads as the convolutions; numpy's OpenBLAS is left the small products, which it runs
  on the calling thread (under its own threading threshold), so its pool stays asleep.
- **One pool at work at a time.** BLAS products and oneDNN primitives are called from the
  calling thread only, never from inside ``parallel_for``; ``parallel_for`` returns only
  when all its blocks are done. So solverkit's threads wait (blocked on a queue, not
  spinning) while a product or a convolution runs, and the library's threads are idle
  while solverkit's run.
- **Nothing spins long after its work.** A library pool busy-waits a while after each call
  before its threads sleep; the next pool would find its cores taken. Each wait is cut
  short before the library reads it, at load: ``OPENBLAS_THREAD_TIMEOUT=16`` (2^16 cycles,
  some 25 µs, set as ``solverkit`` is imported, before numpy), ``GOMP_SPINCOUNT=10000``
  for oneDNN's libgomp (set while ``dnnl`` loads it only, so other libraries' OpenMP keeps
  its own setting) and ``KMP_BLOCKTIME=1`` (1 ms) for MKL's OpenMP. A value the user set
  is kept. ``OMP_WAIT_POLICY=PASSIVE`` is not used: it makes every oneDNN call wake
  sleeping threads, slower for the back-to-back primitives of one layer.
"""

from __future__ import annotations

import ctypes
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


# numpy's own OpenBLAS build (scipy-openblas, 64-bit integers) and a plain OpenBLAS name
# their thread-count functions differently: (set, get) pairs, the first found is used
OPENBLAS_FUNCTIONS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)
_openblas_functions: tuple | None = None
_openblas_sized = False


def _openblas():
    """(set, get) of the OpenBLAS this process has loaded (numpy's), else None."""
    global _openblas_functions
    if _openblas_functions is None:
        _openblas_functions = ()
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                paths = {line.split()[-1] for line in maps
                         if "openblas" in line.lower() and ".so" in line}
        except OSError:                 # not Linux: numpy's pool keeps its import size
            paths = set()
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            for set_name, get_name in OPENBLAS_FUNCTIONS:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    _openblas_functions = (setter, getter)
                    break
            if _openblas_functions:
                break
    return _openblas_functions or None


def openblas_threads() -> int | None:
    """The size of numpy's OpenBLAS pool, or None when numpy does not use OpenBLAS."""
    functions = _openblas()
    return functions[1]() if functions else None


def _size_openblas_once(n: int) -> None:
    """numpy's OpenBLAS pool to ``n`` threads, the first time only (see the policy above)."""
    global _openblas_sized
    if not _openblas_sized:
        _openblas_sized = True
        functions = _openblas()
        if functions and functions[1]() != n:
            functions[0](n)


def available_cores() -> int:
    """The cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def num_threads() -> int:
    """How many threads element-wise work is split over."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
        _size_openblas_once(_threads)
    return _threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1: everything on the calling thread), and as many in MKL's pool
    when solverkit uses MKL; oneDNN takes the count at its next call; numpy's OpenBLAS
    takes it only if this comes before any other use of the threads (see the policy)."""
    global _threads, _pool
    if int(n) < 1:
        raise ValueError(f"the number of threads must be at least 1, got {n}")
    with _pool_lock:
        _threads = int(n)
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
    _size_openblas_once(_threads)
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
