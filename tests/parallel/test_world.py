"""The MPI world: launcher detection, broadcasts, the one-buffer Allreduce, abort on error."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from solverkit import parallel
from solverkit.blob import Blob
from solverkit.errors import SolverkitError

from .conftest import find_mpirun, mpi_env


# ---------------------------------------------------------------- one process, no MPI
@pytest.mark.parametrize("environ, size", [
    ({}, 1),
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, 2),              # MPICH / Intel MPI / Slurm PMI-2
    ({"OMPI_COMM_WORLD_SIZE": "4"}, 4),                   # Open MPI
    ({"MPI_LOCALNRANKS": "2"}, 2),                        # Hydra, ranks on this node
    ({"PMI_SIZE": "1"}, 1),
    ({"PMI_SIZE": "2", "SOLVERKIT_MPI": "off"}, 1),       # opt out: independent runs
    ({"PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "3"}, 3),  # Slurm with PMIx
    ({"SLURM_STEP_NUM_TASKS": "3"}, 1),                   # a Slurm step is not an MPI launch
    ({"PMI_SIZE": ""}, 1),
])
def test_launcher_size_reads_the_launchers_variables(environ, size):
    assert parallel.launcher_size(environ) == size


def test_without_a_launcher_nothing_is_imported():
    code = ("import sys, solverkit, solverkit.parallel as p; w = p.world(); "
            "print(w.rank, w.size, w.distributed, 'mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env=mpi_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "False", "False"]


def test_a_launcher_without_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setattr(parallel, "_world", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.delenv("SOLVERKIT_MPI", raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # import mpi4py -> ImportError
    with pytest.raises(SolverkitError, match=r"solverkit\[mpi\]"):
        parallel.world()
    assert parallel._world is None


def test_single_rank_collectives_return_their_input():
    world = parallel.World(None)
    arrays = [np.arange(3.0)]
    world.broadcast_arrays(arrays)
    assert world.broadcast({"seed": 5}) == {"seed": 5}
    assert np.array_equal(world.average([1.0, 2.0]), [1.0, 2.0])
    assert world.any(True) and not world.any(False)
    blob = Blob((2, 2), np.float64)
    blob.diff[...] = 3.0
    reduce = parallel.GradientAllreduce(world, [blob], num_extra=2)
    assert np.array_equal(reduce([0.5, 1.0]), [0.5, 1.0])
    assert np.all(blob.diff == 3.0)


def test_decorrelated_generators_depend_on_seed_layer_and_rank_only():
    def streams(rank):
        generators = [np.random.default_rng([7, layer]) for layer in range(2)]
        parallel.decorrelate_generators(generators, rank)
        return [g.random(4) for g in generators]

    rank0, rank1, rank2 = streams(0), streams(1), streams(2)
    single = [np.random.default_rng([7, layer]).random(4) for layer in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(rank0, single))   # rank 0 = one process
    assert all(np.array_equal(a, b) for a, b in zip(rank1, streams(1)))  # reproducible
    assert not np.array_equal(rank1[0], rank0[0])
    assert not np.array_equal(rank1[0], rank2[0])
    assert not np.array_equal(rank1[0], rank1[1])


def test_mismatched_launcher_and_library_is_an_error():
    """Open MPI's launcher variables with an MPICH mpi4py: K singleton worlds, refused."""
    if find_mpirun()[0] is None:
        pytest.skip(find_mpirun()[1])
    code = "import solverkit.parallel as p; p.world()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env=mpi_env(OMPI_COMM_WORLD_SIZE="2"), timeout=60)
    assert out.returncode != 0
    assert "different MPI implementations" in out.stderr


# ---------------------------------------------------------------- two ranks
def test_collectives_on_two_ranks(mpirun, tmp_path):
    result = mpirun("""
        import numpy as np
        from solverkit import parallel
        from solverkit.blob import Blob

        world = parallel.world()
        rank, size = world.rank, world.size
        assert (size, world.distributed, world.is_root) == (2, True, rank == 0)

        # broadcast_arrays: rank 0's values everywhere, float32 and int64 mixed, in order
        arrays = [np.full((2, 3), rank + 1.0, np.float32), np.arange(4) * (rank + 1),
                  np.full(5, -rank - 1.0, np.float32)]
        world.broadcast_arrays(arrays, "parameters")
        assert np.all(arrays[0] == 1.0) and np.array_equal(arrays[1], np.arange(4))
        assert np.all(arrays[2] == -1.0) and arrays[0].dtype == np.float32

        # GradientAllreduce: diff <- mean over ranks; state data averaged; extras averaged
        weight, bias = Blob((3, 2), np.float64), Blob((3,), np.float64)
        stats = Blob((2,), np.float64)
        weight.diff[...] = np.arange(6.0).reshape(3, 2) * (rank + 1)
        bias.diff[...] = 10.0 * rank
        stats.data[...] = 4.0 * rank
        reduce = parallel.GradientAllreduce(world, [weight, bias], [stats], num_extra=2)
        buffer = reduce.buffer
        extra = reduce([1.0 + rank, float(rank == 1)])
        assert reduce.buffer is buffer and buffer.size == 6 + 3 + 2 + 2
        assert np.allclose(weight.diff, np.arange(6.0).reshape(3, 2) * 1.5)
        assert np.allclose(bias.diff, 5.0)
        assert np.allclose(stats.data, 2.0)
        assert np.allclose(extra, [1.5, 0.5])

        assert np.allclose(world.average([rank, 2.0 * rank]), [0.5, 1.0])
        assert world.any(rank == 1) and not world.any(False)
        assert world.broadcast({"seed": 11 + rank}) == {"seed": 11}

        # a rank whose arrays differ: every rank raises the same error, nobody hangs
        try:
            world.broadcast_arrays([np.zeros(3 + rank)], "parameters")
        except Exception as err:
            assert "rank(s) [1]" in str(err), err
        else:
            raise AssertionError("no error")
        world.barrier()
        open(f"ok_{rank}", "w").close()
    """)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.glob("ok_*")) == ["ok_0", "ok_1"]


def test_an_error_on_one_rank_ends_every_rank(mpirun):
    """Rank 1 fails while rank 0 waits in a collective: both end, quickly, with the message."""
    start = time.monotonic()
    result = mpirun("""
        import time
        from solverkit import parallel
        from solverkit.errors import DataError

        world = parallel.world()

        @parallel.abort_on_error
        def step():
            if world.rank == 1:
                time.sleep(0.2)
                raise DataError("label 12 out of range [0, 10)", file="bad.npz")
            world.any(False)                     # rank 0 waits here for rank 1
            print("rank 0 went on")

        step()
        print("finished", world.rank)
    """, timeout=30)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "rank 1 of 2" in result.stderr and "bad.npz: label 12 out of range" in result.stderr
    assert "finished" not in result.stdout and "went on" not in result.stdout
    assert elapsed < 20
