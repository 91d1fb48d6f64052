"""Data-parallel training under ``mpirun -n 2`` equals one process with a twice larger batch."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest

from .tiny_problem import CASES, STEPS, batchnorm_solver, run_cases

HERE = Path(__file__).resolve().parent


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_two_ranks_with_batch_b_equal_one_process_with_batch_2b(mpirun, tmp_path, monkeypatch):
    result = mpirun(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(HERE)!r})
        from solverkit import parallel
        from tiny_problem import run_cases
        record = run_cases(batch_size=4, prefix="mpi_")
        np.savez(f"rank{{parallel.world().rank}}.npz", **record)
    """, timeout=120)
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(tmp_path)
    reference = run_cases(batch_size=8, prefix="ref_")
    assert len(reference) == len(CASES) * (STEPS * 4 + 2)     # 4 parameter blobs, 2 test outputs
    for rank in (0, 1):
        with np.load(tmp_path / f"rank{rank}.npz", allow_pickle=False) as saved:
            assert sorted(saved.files) == sorted(reference)
            for key, expected in reference.items():
                np.testing.assert_allclose(saved[key], expected, rtol=0, atol=1e-5, err_msg=key)
    # the parameters do move, or the comparison above would prove little
    assert not np.allclose(reference["sgd/0/ip1/0"], reference[f"sgd/{STEPS - 1}/ip1/0"])
    for name in CASES:
        # one CSV log, written by rank 0 alone, with the averaged (global-batch) outputs
        mpi_rows = _rows(tmp_path / f"mpi_{name}_log.csv")
        ref_rows = _rows(tmp_path / f"ref_{name}_log.csv")
        assert len(mpi_rows) == len(ref_rows)
        for mine, theirs in zip(mpi_rows[1:], ref_rows[1:]):
            assert mine[:3] == theirs[:3]
            assert float(mine[3]) == pytest.approx(float(theirs[3]), abs=1e-9)


def _write_cli_problem(folder: Path, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
    np.savez(folder / "data.npz", x=x, y=y)
    (folder / "net.yaml").write_text(f"""
name: tiny
layers:
  - {{name: data, type: Data, top: [x, label], source: data.npz, batch_size: {batch_size}}}
  - {{name: ip, type: InnerProduct, bottom: x, top: ip, num_output: 3,
     weight_filler: {{type: constant, value: 1}}}}
  - {{name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}}
""")
    (folder / "solver.yaml").write_text("base_lr: 0.1\nmax_iter: 50\nrandom_seed: 1\n"
                                        "snapshot_after_train: false\n")


@pytest.mark.parametrize("bad, status, message", [
    ("overflow", 1, "iteration 0: the loss is"),          # finite data, infinite scores
    ("label", 2, "label"),                                 # a label the net has no class for
])
def test_a_failure_on_one_rank_ends_the_whole_run(mpirun, tmp_path, bad, status, message):
    """Only rank 1's slice of the first step is bad: rank 0 is already waiting in the
    Allreduce when rank 1 fails, and both must end at once with rank 1's message."""
    x, y = np.ones((16, 4), np.float32), np.arange(16) % 3
    if bad == "overflow":
        x[4] = 3e38                       # batch 4 per rank: sample 4 is rank 1's, step 0
    else:
        y[5] = 7
    _write_cli_problem(tmp_path, x, y, batch_size=4)
    start = time.monotonic()
    result = mpirun(["-m", "solverkit", "train", "--net", "net.yaml", "--solver", "solver.yaml"],
                    timeout=60)
    elapsed = time.monotonic() - start
    assert result.returncode == status, result.stderr
    assert "rank 1 of 2" in result.stderr and message in result.stderr
    assert "rank 0 of 2" not in result.stderr
    assert "Optimization done" not in result.stdout
    assert elapsed < 20



def test_batchnorm_statistics_are_averaged_over_ranks(mpirun, tmp_path, monkeypatch):
    """Each rank's BatchNorm adds the mean of its own slice to the running sum; averaged in
    the step's Allreduce, that is the mean of the global batch (as one process with 2B would
    add), and every rank keeps the same statistics and parameters."""
    result = mpirun(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(HERE)!r})
        from solverkit import parallel
        from tiny_problem import batchnorm_solver

        solver = batchnorm_solver(batch_size=4)
        solver.step(1)
        first = [blob.data.copy() for blob in solver.net.params["bn"]]
        solver.step(2)
        record = {{p.key: p.blob.data for p in solver.net.learnable_params}}
        record.update({{f"first/{{i}}": value for i, value in enumerate(first)}})
        np.savez(f"rank{{parallel.world().rank}}.npz", **record)
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(tmp_path)
    single = batchnorm_solver(batch_size=8)
    single.step(1)
    mean_sum, _, count = (blob.data for blob in single.net.params["bn"])
    with np.load(tmp_path / "rank0.npz") as rank0, np.load(tmp_path / "rank1.npz") as rank1:
        assert sorted(rank0.files) == sorted(rank1.files)
        for key in rank0.files:
            assert np.array_equal(rank0[key], rank1[key]), key
        np.testing.assert_allclose(rank0["first/0"], mean_sum, rtol=0, atol=1e-12)
        np.testing.assert_allclose(rank0["first/2"], count, rtol=0, atol=1e-12)


def test_a_command_line_error_on_one_rank_ends_every_rank(mpirun, tmp_path):
    """An error the CLI reports (here: rank 1's --weights file is missing) after MPI started:
    rank 0 is training, waiting in the Allreduce; the CLI's exit ends it too."""
    x, y = np.ones((16, 4), np.float32), np.arange(16) % 3
    _write_cli_problem(tmp_path, x, y, batch_size=4)
    result = mpirun("""
        import sys
        from solverkit import parallel
        from solverkit.cli import main
        command = ["train", "--net", "net.yaml", "--solver", "solver.yaml"]
        if parallel.world().rank == 1:
            command += ["--weights", "missing.model.npz"]
        sys.exit(main(command))
    """, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "missing.model.npz" in result.stderr
    assert "Optimization done" not in result.stdout


def _test_outputs(stdout: str) -> list[tuple[str, float]]:
    """The ``Test net output #i: name = value`` lines of ``solverkit test``."""
    lines = [line.split(": ", 1)[1] for line in stdout.splitlines()
             if line.startswith("Test net output #")]
    return [(name, float(value)) for name, value in (line.split(" = ") for line in lines)]


def test_solverkit_test_shards_the_data_and_prints_once(mpirun, tmp_path):
    """Under mpirun each rank tests its slice of every batch and rank 0 prints the outputs
    averaged over ranks: 2 ranks with batch 6 test what one process with batch 12 does."""
    import subprocess
    import sys

    import solverkit as sk

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 4)).astype(np.float32), rng.integers(0, 3, 24)
    _write_cli_problem(tmp_path, x, y, batch_size=6)
    net = sk.Net(str(tmp_path / "net.yaml"), phase="TEST")
    net.params["ip"][0].data[...] = rng.normal(size=(3, 4))
    net.save(tmp_path / "model.npz")
    net.close()
    command = ["-m", "solverkit", "test", "--net", "net.yaml", "--weights", "model.npz"]

    def alone(*extra):
        done = subprocess.run([sys.executable, *command, *extra], cwd=tmp_path,
                              capture_output=True, text=True, check=True)
        return _test_outputs(done.stdout)

    for extra in ([], ["--iterations", "1"]):
        result = mpirun(command + extra, timeout=60)
        assert result.returncode == 0, result.stderr
        shown = _test_outputs(result.stdout)
        assert [name for name, _ in shown] == ["loss"]             # printed by rank 0 alone
        if extra:       # the first 12 samples (6 per rank), not each rank's first 6
            first_6 = alone(*extra)[0][1]
            (tmp_path / "net.yaml").write_text(
                (tmp_path / "net.yaml").read_text().replace("batch_size: 6", "batch_size: 12"))
            expected = alone(*extra)[0][1]
            assert shown[0][1] != pytest.approx(first_6, rel=1e-3)
        else:           # one pass over the 24 samples either way
            expected = alone()[0][1]
        assert shown[0][1] == pytest.approx(expected, rel=1e-5)
