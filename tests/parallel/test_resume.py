"""Snapshots under ``mpirun -n 2``: a resumed 2-rank run equals the uninterrupted one exactly,
Dropout included; another number of ranks is refused unless the flag accepts it."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from .conftest import mpi_env

NET = """
name: tiny_dropout
layers:
  - {name: data, type: Data, top: [x, label], source: data.npz, batch_size: 4, shuffle: true}
  - {name: ip1, type: InnerProduct, bottom: x, top: ip1, num_output: 16,
     weight_filler: {type: xavier}}
  - {name: relu, type: ReLU, bottom: ip1, top: ip1}
  - {name: drop, type: Dropout, bottom: ip1, top: ip1, dropout_ratio: 0.5}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 3,
     weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
"""
SOLVER = """
type: Adam
base_lr: 0.01
max_iter: 8
snapshot: 4
random_seed: 3
"""


def _train(mpirun, *args):
    result = mpirun(["-m", "solverkit", "train", "--net", "net.yaml", "--solver", "solver.yaml",
                     *args], timeout=90)
    assert result.returncode == 0, result.stderr
    return result


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files if key != "__meta__"}


def straight_model_ip1(folder):
    return _arrays(folder / "straight/run_iter_8.model.npz")["ip1/0"]


def _losses(path):
    with open(path, newline="") as f:
        return [row[:4] for row in csv.reader(f)]


@pytest.mark.slow
def test_resume_under_two_ranks_equals_the_uninterrupted_run(mpirun, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(40, 5)).astype(np.float32),
             y=rng.integers(0, 3, 40))
    (tmp_path / "net.yaml").write_text(NET)
    (tmp_path / "solver.yaml").write_text(SOLVER)

    _train(mpirun, "--set", "snapshot_prefix=straight/run")
    _train(mpirun, "--set", "snapshot_prefix=split/run", "max_iter=4")
    _train(mpirun, "--set", "snapshot_prefix=split/run", "--resume", "latest")

    for kind in ("model", "solverstate"):
        straight = _arrays(tmp_path / f"straight/run_iter_8.{kind}.npz")
        resumed = _arrays(tmp_path / f"split/run_iter_8.{kind}.npz")
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert np.array_equal(straight[key], resumed[key]), (kind, key)
    halfway = _arrays(tmp_path / "straight/run_iter_4.model.npz")
    assert not np.array_equal(halfway["ip1/0"], straight_model_ip1(tmp_path))     # it trained
    # the logged losses (rank 0's log, averaged over ranks) agree row by row
    assert _losses(tmp_path / "straight/run_log.csv") == _losses(tmp_path / "split/run_log.csv")

    # the same state in one process: refused, then accepted with the flag
    command = [sys.executable, "-m", "solverkit", "train", "--net", "net.yaml", "--solver",
               "solver.yaml", "--set", "snapshot_prefix=one/run",
               "--resume", "split/run_iter_4.solverstate.npz"]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                             env=mpi_env(), timeout=60, check=False)
    assert refused.returncode == 2
    assert "written by 2 MPI rank(s) but this run has 1" in refused.stderr
    assert "--allow-world-size-change" in refused.stderr and "Traceback" not in refused.stderr
    accepted = subprocess.run([*command, "--allow-world-size-change"], capture_output=True,
                              text=True, cwd=tmp_path, env=mpi_env(), timeout=60, check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "one/run_iter_8.model.npz").exists()


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_one_iteration(mpirun, tmp_path):
    """SIGTERM to rank 1 alone: the stop travels in the next Allreduce, rank 0 stops after
    the same iteration, writes the snapshot and both exit 0 (no rank left in a collective)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(40, 5)).astype(np.float32),
             y=rng.integers(0, 3, 40))
    (tmp_path / "net.yaml").write_text(NET)
    (tmp_path / "solver.yaml").write_text(SOLVER.replace("max_iter: 8", "max_iter: 1000000"))
    launcher = """
        import os, signal, sys, threading, time
        from solverkit import parallel
        from solverkit.cli import main

        def terminate_when_training():      # rank 0's log exists from the first iteration on
            while not os.path.exists("solver_log.csv"):
                time.sleep(0.05)
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)

        if parallel.world().rank == 1:
            threading.Thread(target=terminate_when_training, daemon=True).start()
        sys.exit(main(["train", "--net", "net.yaml", "--solver", "solver.yaml"]))
    """
    result = mpirun(launcher, timeout=90)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("Stopped by")]
    assert len(lines) == 1 and lines[0].startswith("Stopped by SIGTERM at iteration ")
    iteration = int(lines[0].split()[5].rstrip(";"))
    assert 0 < iteration < 1000000
    assert (tmp_path / f"solver_iter_{iteration}.solverstate.npz").exists()


@pytest.mark.slow
def test_sighup_to_one_rank_makes_every_rank_snapshot_and_go_on(mpirun, tmp_path):
    """SIGHUP to rank 1 alone: every rank snapshots after the same iteration (no rank left
    in a collective) and training ends with the weights of a run resumed from that snapshot
    (under MPI a snapshot re-keys the random streams, as a resume from it does)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(40, 5)).astype(np.float32),
             y=rng.integers(0, 3, 40))
    (tmp_path / "net.yaml").write_text(NET)
    (tmp_path / "solver.yaml").write_text(SOLVER.replace("max_iter: 8", "max_iter: 1500")
                                          .replace("snapshot: 4", "snapshot: 0"))
    launcher = """
        import os, signal, sys, threading, time
        from solverkit import parallel
        from solverkit.cli import main

        def hang_up_when_training():
            while not os.path.exists("solver_log.csv"):
                time.sleep(0.02)
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGHUP)

        if parallel.world().rank == 1:
            threading.Thread(target=hang_up_when_training, daemon=True).start()
        sys.exit(main(["train", "--net", "net.yaml", "--solver", "solver.yaml"]))
    """
    result = mpirun(launcher, timeout=120)
    assert result.returncode == 0, result.stderr
    states = sorted(p.name for p in tmp_path.glob("solver_iter_*.solverstate.npz"))
    assert len(states) == 2 and "solver_iter_1500.solverstate.npz" in states, states
    signal_state = next(name for name in states if name != "solver_iter_1500.solverstate.npz")
    _train(mpirun, "--resume", signal_state, "--set", f"snapshot_prefix={tmp_path / 'plain'}")
    with np.load(tmp_path / "solver_iter_1500.model.npz") as a, \
            np.load(tmp_path / "plain_iter_1500.model.npz") as b:
        for key in a.files:
            if key != "__meta__":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
