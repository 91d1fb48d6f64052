"""Data-parallel training over MPI: the world of ranks, broadcasts, one Allreduce per step.

``mpirun -n K solverkit train ...`` starts K processes (ranks). Each rank holds the whole
net, runs forward/backward on its own share of the global batch, and the gradients are
averaged before the update (Caffe's multi-GPU scheme, PyTorch's DistributedDataParallel):

    g = (1/K) Σ_r g_r            g_r: the gradient rank r accumulated over iter_size

so every rank applies the same update to the same parameters and stays identical.

Nothing here costs anything when unused: the launcher is recognised from the environment
variables it sets (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ...) *before* mpi4py is
imported, and with one rank (or no launcher) ``world()`` is a plain single-rank world whose
collectives are no-ops. ``SOLVERKIT_MPI=off`` makes every rank train on its own.

An exception on one rank must not leave the others waiting forever in a collective:
``abort_on_error`` (a decorator for the solver's entry points) prints the message with the
rank and calls ``MPI_Abort``, which ends every rank; the launcher exits non-zero.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import traceback

import numpy as np

from .errors import NonFiniteError, SolverkitError
from .launcher import OPT_OUT_VARIABLE, SIZE_VARIABLES, launcher_size  # noqa: F401
from .layers.base import DataLayer
from .runs import os_error

_world: World | None = None
logger = logging.getLogger("solverkit")


def world() -> World:
    """The world of ranks this process belongs to (created once; size 1 without MPI)."""
    global _world
    if _world is None:
        expected = launcher_size()
        _world = World(_mpi_comm(expected) if expected > 1 else None)
        if not _world.is_root:      # rank 0 speaks for the run; the others report errors only
            logger.setLevel(logging.ERROR)
    return _world


def _mpi_comm(expected: int):
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise SolverkitError(
            f"started by an MPI launcher with {expected} processes, but mpi4py cannot be "
            f"imported ({err}); install the 'mpi' extra: pip install 'solverkit[mpi]' "
            f"(or set {OPT_OUT_VARIABLE}=off to train one independent run per process)",
            field="mpi") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        # The classic mix-up: Open MPI's mpirun starting processes linked against MPICH (or
        # the reverse) gives K singleton worlds that would each train and write snapshots.
        raise SolverkitError(
            f"the MPI launcher started {expected} processes but mpi4py's MPI library sees a "
            f"world of {comm.Get_size()}: mpirun and mpi4py come from different MPI "
            f"implementations; use the mpirun of the MPI mpi4py uses (python -c 'from "
            f"mpi4py import MPI; print(MPI.Get_library_version())' names it)", field="mpi")
    return comm


class World:
    """Ranks ``0 .. size-1`` of one training run; rank 0 (the root) is the one that writes.

    With ``comm=None`` it is the single-rank world: every collective returns its input.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size})"

    # ------------------------------------------------------------ collectives
    def broadcast(self, value):
        """Rank 0's ``value`` (a small Python object: a seed, a state dict) on every rank."""
        if not self.distributed:
            return value
        return self.comm.bcast(value, root=0)

    def broadcast_arrays(self, arrays, what: str = "arrays") -> None:
        """Overwrite ``arrays`` (a list, same order on every rank) in place with rank 0's.

        The shapes and dtypes are compared first; a rank whose list differs (another net
        file, another solver type) makes every rank raise the same error instead of
        hanging or silently mixing. Arrays of one dtype travel in one flat message.
        """
        if not self.distributed:
            return
        arrays = list(arrays)
        layout = [(tuple(a.shape), a.dtype.str) for a in arrays]
        root_layout = self.comm.bcast(layout, root=0)
        differs = self.comm.allreduce(int(layout != root_layout), op=_mpi().MAX)
        if differs:
            ranks = self.comm.allgather(layout != root_layout)
            bad = [rank for rank, flag in enumerate(ranks) if flag]
            raise SolverkitError(f"the {what} of rank(s) {bad} differ from rank 0's "
                                 f"(shapes, dtypes or count): every rank must build the same "
                                 f"net and solver", field="mpi")
        for dtype in sorted({a.dtype.str for a in arrays}):
            group = [a for a in arrays if a.dtype.str == dtype]
            flat = np.concatenate([a.ravel() for a in group]) if self.is_root else \
                np.empty(sum(a.size for a in group), dtype=np.dtype(dtype))
            self.comm.Bcast(flat, root=0)
            offset = 0
            for a in group:
                a[...] = flat[offset:offset + a.size].reshape(a.shape)
                offset += a.size

    def average(self, values) -> np.ndarray:
        """The mean over ranks of a vector of numbers (e.g. one test pass's outputs)."""
        values = np.array(values, dtype=np.float64).ravel()
        if self.distributed:
            self.comm.Allreduce(_mpi().IN_PLACE, values, op=_mpi().SUM)
            values /= self.size
        return values

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on at least one."""
        if not self.distributed:
            return bool(flag)
        return bool(self.comm.allreduce(int(bool(flag)), op=_mpi().MAX))

    def barrier(self) -> None:
        if self.distributed:
            self.comm.Barrier()

    # ------------------------------------------------------------ failure
    def abort(self, err: BaseException) -> None:
        """Print ``err`` (with this rank) on stderr and end every rank: ``MPI_Abort``.

        The exit status follows the CLI: 2 for a user mistake, 1 for a non-finite loss or a
        crash, 130 for Ctrl-C.
        """
        where = f"rank {self.rank} of {self.size}"
        if isinstance(err, SolverkitError):
            code, text = 2, f"solverkit: error ({where}): {err}"
        elif isinstance(err, NonFiniteError):
            code, text = 1, f"solverkit: training failed ({where}): {err}"
        elif isinstance(err, OSError):      # the file system refused: a user's matter
            code, text = 2, f"solverkit: error ({where}): {os_error(err, 'read or write a file')}"
        elif isinstance(err, KeyboardInterrupt):
            code, text = 130, f"solverkit: interrupted ({where})"
        else:
            code = 1
            text = "".join(traceback.format_exception(err)) + f"solverkit: crashed ({where})"
        sys.stdout.flush()
        print(text, file=sys.stderr, flush=True)
        # the launcher forwards each rank's stderr asynchronously and stops forwarding when
        # it kills the ranks: give the message a moment to get out first
        time.sleep(0.5)
        self.comm.Abort(code)
        # MPICH's MPI_Abort may return once the launcher is told; never go on from here
        os._exit(code)


def abort_if_distributed(status: int) -> int:
    """``status``, or under MPI with ``status != 0``: end every rank with it (``MPI_Abort``).

    For a caller that already printed why (the CLI): exiting one rank normally would leave
    the others waiting in their next collective.
    """
    if status and _world is not None and _world.distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        _world.comm.Abort(status)
        os._exit(status)
    return status


def abort_on_error(method):
    """Decorate a solver entry point: under MPI an exception escaping it ends every rank.

    Without a launcher (or with one rank) the method is called as is; the check is the
    world's, once it exists, else an environment lookup (no import).
    """
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        alone = not _world.distributed if _world is not None else launcher_size() <= 1
        if alone:
            return method(*args, **kwargs)
        try:
            return method(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as err:
            current = world()
            if not current.distributed:
                raise
            current.abort(err)
            raise
    return wrapper


def _mpi():
    from mpi4py import MPI
    return MPI


class GradientAllreduce:
    """Average parameter gradients (and a few scalars) over all ranks: one Allreduce a step.

    One flat buffer of the net's dtype is allocated once, laid out as

        [ diff of param 0 | diff of param 1 | ... | data of state blobs | extra scalars ]

    Each call copies the diffs in, sums over ranks in place, divides by K and copies back,
    so ``diff ← (1/K) Σ_r diff_r``. *State blobs* are parameters the solver never updates
    but layers change (BatchNorm's running statistics): averaging their data keeps every
    rank's model identical. The *extra* slots carry per-rank numbers along at no extra
    latency (the train outputs, or a flag: a mean > 0 means some rank raised it).
    """

    def __init__(self, world: World, blobs, state_blobs=(), num_extra: int = 0):
        self.world = world
        self.blobs = list(blobs)
        self.state_blobs = list(state_blobs)
        self.num_extra = int(num_extra)
        dtypes = {blob.dtype for blob in self.blobs + self.state_blobs}
        assert len(dtypes) <= 1, f"one dtype per net, got {dtypes}"
        self.dtype = dtypes.pop() if dtypes else np.dtype(np.float64)
        sizes = [blob.count for blob in self.blobs + self.state_blobs]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(int)
        self.buffer = np.zeros(int(self.offsets[-1]) + self.num_extra, dtype=self.dtype)

    def __call__(self, extra=()) -> np.ndarray:
        """Average in place; returns the averaged ``extra`` values (float64)."""
        extra = np.asarray(extra, dtype=np.float64).ravel()
        assert extra.size == self.num_extra, (extra.size, self.num_extra)
        if not self.world.distributed:
            return extra
        segments = [blob.diff for blob in self.blobs] + [blob.data for blob in self.state_blobs]
        for array, start, stop in zip(segments, self.offsets[:-1], self.offsets[1:]):
            self.buffer[start:stop] = array.ravel()
        self.buffer[self.offsets[-1]:] = extra
        self.world.comm.Allreduce(_mpi().IN_PLACE, self.buffer, op=_mpi().SUM)
        self.buffer *= 1.0 / self.world.size
        for array, start, stop in zip(segments, self.offsets[:-1], self.offsets[1:]):
            array[...] = self.buffer[start:stop].reshape(array.shape)
        return self.buffer[self.offsets[-1]:].astype(np.float64)


def decorrelate_generators(generators, rank: int) -> None:
    """Give rank ``rank`` its own stream in every Generator of ``generators`` (in place).

    All ranks build their nets from one ``random_seed``, so without this every rank's
    Dropout would draw the same masks for different samples. Rank 0 keeps its generators
    (those a single process would use); rank r > 0 reseeds each one from a number drawn
    from a copy of it and r, so its stream depends on the generator's state and r only.
    Data layers are not passed here: they share one stream (``Data.set_shard``).
    """
    if rank == 0:
        return
    for generator in generators:
        bit_generator = generator.bit_generator
        base = int(_copy_generator(generator).integers(2**63))
        reseeded = type(bit_generator)(np.random.SeedSequence([base, rank]))
        bit_generator.state = reseeded.state


def _copy_generator(generator: np.random.Generator) -> np.random.Generator:
    copy = np.random.Generator(type(generator.bit_generator)())
    copy.bit_generator.state = generator.bit_generator.state
    return copy


def shard_data(net, world: World) -> None:
    """Every data layer of ``net`` serves rank ``world.rank``'s slice of a ``world.size``
    times larger batch, drawn from the one seeded stream all ranks share."""
    for layer in net.layers:
        if isinstance(layer, DataLayer):
            layer.set_shard(world.rank, world.size)
