"""Snapshots and exact resume, mostly through the CLI in a subprocess."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from solverkit.snapshot import latest_snapshot, read_npz

NET = """
name: tiny
layers:
  - {name: data, type: Data, top: [data, label], include: {phase: TRAIN},
     source: "builtin:digits/train", batch_size: 16, shuffle: true, transform: {scale: 0.0625}}
  - {name: data, type: Data, top: [data, label], include: {phase: TEST},
     source: "builtin:digits/test", batch_size: 40, shuffle: true, transform: {scale: 0.0625}}
  - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 24,
     weight_filler: {type: xavier}, bias_filler: {type: constant, value: 0.1}}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - {name: drop1, type: Dropout, bottom: ip1, top: ip1, dropout_ratio: 0.3}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 10,
     weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
  - {name: acc, type: Accuracy, bottom: [ip2, label], top: acc, include: {phase: TEST}}
"""

SOLVERS = {
    "SGD": "momentum: 0.9\nlr_policy: step\nstepsize: 7\ngamma: 0.5\nweight_decay: 0.001",
    "Nesterov": "momentum: 0.9\nlr_policy: inv\ngamma: 0.01\npower: 0.75",
    "AdaGrad": "weight_decay: 0.001\nregularization_type: L1",
    "RMSProp": "rms_decay: 0.9",
    "AdaDelta": "momentum: 0.95",
    "Adam": "lr_policy: exp\ngamma: 0.99",
    "AdamW": "weight_decay: 0.01",
}
BASE_LR = {"SGD": 0.05, "Nesterov": 0.05, "AdaGrad": 0.05, "RMSProp": 0.005,
           "AdaDelta": 1.0, "Adam": 0.005, "AdamW": 0.005}


def _write(folder: Path, kind: str, max_iter: int, extra: str = "", prefix: str = "out/run"):
    (folder / "net.yaml").write_text(NET)
    text = (f"net: net.yaml\ntype: {kind}\nbase_lr: {BASE_LR[kind]}\nmax_iter: {max_iter}\n"
            f"test_interval: 5\nsnapshot: 0\nrandom_seed: 7\nsnapshot_prefix: {prefix}\n"
            f"{SOLVERS[kind]}\n{extra}\n")
    fields = {}     # a key given again (in extra) replaces the earlier line: keys are unique
    for line in text.splitlines():
        if line.strip():
            fields[line.split(":", 1)[0]] = line
    (folder / "solver.yaml").write_text("\n".join(fields.values()) + "\n")


def _cli(folder: Path, *args, check=True):
    done = subprocess.run([sys.executable, "-m", "solverkit", "--quiet", *args], cwd=folder,
                          capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files if k != "__meta__"}


def _log(path: Path) -> list[tuple]:
    with open(path, newline="") as handle:
        return [tuple(row[:5]) for row in csv.reader(handle)]   # all but seconds


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SOLVERS))
def test_resume_is_bit_exact_for_every_solver_type(tmp_path, kind):
    straight, split = tmp_path / "straight", tmp_path / "split"
    straight.mkdir()
    split.mkdir()
    _write(straight, kind, 20)
    _cli(straight, "train", "--solver", "solver.yaml")
    _write(split, kind, 10)
    _cli(split, "train", "--solver", "solver.yaml")
    _write(split, kind, 20)
    resumed = _cli(split, "train", "--solver", "solver.yaml", "--resume",
                   "out/run_iter_10.solverstate.npz")
    a = _params(straight / "out/run_iter_20.model.npz")
    b = _params(split / "out/run_iter_20.model.npz")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert _log(straight / "out/run_log.csv") == _log(split / "out/run_log.csv")
    assert "max_iter" in resumed.stdout + resumed.stderr    # the change is reported


def test_python_api_snapshot_restore_matches_straight_run(tmp_path):
    (tmp_path / "net.yaml").write_text(NET)
    spec = {"net": str(tmp_path / "net.yaml"), "type": "Adam", "base_lr": 0.01, "max_iter": 12,
            "random_seed": 1, "snapshot_prefix": str(tmp_path / "api")}
    straight = sk.Solver(spec)
    straight.step(12)
    first = sk.Solver(spec)
    first.step(6)
    state = first.snapshot()
    first.close()
    second = sk.Solver(spec)
    second.restore(state)
    assert second.iter == 6
    second.step(6)
    for p, q in zip(straight.net.learnable_params, second.net.learnable_params):
        assert np.array_equal(p.blob.data, q.blob.data), p.key
    straight.close()
    second.close()


def test_snapshot_files_hold_what_spec_says(tmp_path):
    _write(tmp_path, "SGD", 6, "snapshot: 3")
    _cli(tmp_path, "train", "--solver", "solver.yaml")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.npz")) == [
        "run_iter_3.model.npz", "run_iter_3.solverstate.npz",
        "run_iter_6.model.npz", "run_iter_6.solverstate.npz"]
    params, _ = read_npz(out / "run_iter_6.model.npz", "model")
    assert set(params) == {"ip1/0", "ip1/1", "ip2/0", "ip2/1"}
    arrays, state = read_npz(out / "run_iter_6.solverstate.npz", "solverstate")
    assert state["iter"] == 6 and state["type"] == "SGD"
    assert state["model_file"] == "run_iter_6.model.npz"
    assert any(k.startswith("update/ip1/0/") for k in arrays)          # momentum history
    assert {"data/TRAIN/data/order", "data/TRAIN/data/cursor"} <= set(arrays)
    assert "drop1" in state["generators"]["TRAIN"]


def test_latest_skips_incomplete_and_stray_files(tmp_path):
    _write(tmp_path, "SGD", 6, "snapshot: 3")
    _cli(tmp_path, "train", "--solver", "solver.yaml")
    out = tmp_path / "out"
    assert latest_snapshot(str(out / "run")).name == "run_iter_6.solverstate.npz"
    # a stray temporary file and a truncated newer state must not be picked
    (out / ".run_iter_9.solverstate.npz.abc.tmp").write_bytes(b"partial")
    data = (out / "run_iter_6.solverstate.npz").read_bytes()
    (out / "run_iter_9.solverstate.npz").write_bytes(data[: len(data) // 2])
    # a newer state whose model file is missing is incomplete too
    model_3 = out / "run_iter_3.model.npz"
    os.replace(model_3, out / "moved.npz")
    os.replace(out / "run_iter_6.solverstate.npz", out / "run_iter_6.solverstate.bak")
    assert latest_snapshot(str(out / "run")) is None
    os.replace(out / "moved.npz", model_3)
    os.replace(out / "run_iter_6.solverstate.bak", out / "run_iter_6.solverstate.npz")
    assert latest_snapshot(str(out / "run")).name == "run_iter_6.solverstate.npz"
    _write(tmp_path, "SGD", 8, "snapshot: 3")
    done = _cli(tmp_path, "train", "--solver", "solver.yaml", "--resume", "latest")
    assert "Test net output" in done.stdout
    # named directly, the truncated file is a clear error
    bad = _cli(tmp_path, "train", "--solver", "solver.yaml", "--resume",
               "out/run_iter_9.solverstate.npz", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "run_iter_9.solverstate.npz" in bad.stderr and "corrupt" in bad.stderr


@pytest.mark.parametrize("case", ["model_as_state", "state_as_weights", "corrupt_model",
                                  "type_mismatch", "net_mismatch", "both_flags", "missing"])
def test_bad_resume_is_a_clear_error(tmp_path, case):
    _write(tmp_path, "SGD", 4, "snapshot: 4")
    _cli(tmp_path, "train", "--solver", "solver.yaml")
    state, model = "out/run_iter_4.solverstate.npz", "out/run_iter_4.model.npz"
    args = ["train", "--solver", "solver.yaml", "--resume", state]
    expect = [state]
    if case == "model_as_state":
        args[-1], expect = model, ["model file", "--weights"]
    elif case == "state_as_weights":
        args[-2:], expect = ["--weights", state], ["solverstate", "--resume"]
    elif case == "corrupt_model":
        path = tmp_path / model
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        expect = ["SHA-256", "run_iter_4.model.npz"]
    elif case == "type_mismatch":
        args += ["--set", "type=Nesterov"]
        expect = ["SGD", "Nesterov", "--weights"]
    elif case == "net_mismatch":
        (tmp_path / "net.yaml").write_text(NET.replace("num_output: 24", "num_output: 25"))
        expect = ["ip1/0", "--weights"]
    elif case == "both_flags":
        args += ["--weights", model]
        expect = ["--resume", "--weights"]
    elif case == "missing":
        args[-1], expect = "out/nope.solverstate.npz", ["nope.solverstate.npz", "not found"]
    done = _cli(tmp_path, *args, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for text in expect:
        assert text in done.stderr, (text, done.stderr)


def test_weights_fine_tuning(tmp_path):
    _write(tmp_path, "SGD", 4, "snapshot: 4")
    _cli(tmp_path, "train", "--solver", "solver.yaml")
    model = tmp_path / "out/run_iter_4.model.npz"
    trained = _params(model)
    # a fresh solver from those weights starts at iteration 0 with the weights
    net = sk.Net(tmp_path / "net.yaml", phase="TEST")
    net.load(model)
    assert np.array_equal(net.params["ip1"][0].data, trained["ip1/0"])
    # a new head: missing weights are an error unless allowed
    (tmp_path / "head.yaml").write_text(NET.replace("name: ip2", "name: ip2new"))
    bad = _cli(tmp_path, "train", "--solver", "solver.yaml", "--net", "head.yaml",
               "--weights", str(model), "--set", "snapshot_prefix=out/head", check=False)
    assert bad.returncode == 2 and "ip2new" in bad.stderr and "--allow-missing" in bad.stderr
    good = _cli(tmp_path, "train", "--solver", "solver.yaml", "--net", "head.yaml",
                "--weights", str(model), "--allow-missing", "--set", "max_iter=1",
                "snapshot_prefix=out/ft")
    assert "Test net output" in good.stdout
    # a shape mismatch names the layer
    (tmp_path / "wide.yaml").write_text(NET.replace("num_output: 24", "num_output: 30"))
    bad = _cli(tmp_path, "train", "--solver", "solver.yaml", "--net", "wide.yaml",
               "--weights", str(model), "--set", "snapshot_prefix=out/wide", check=False)
    assert bad.returncode == 2 and "ip1" in bad.stderr and "shape" in bad.stderr


def _start_long_run(folder: Path, snapshot: int):
    _write(folder, "SGD", 100000, f"snapshot: {snapshot}\ntest_interval: 0")
    return subprocess.Popen([sys.executable, "-m", "solverkit", "--quiet", "train", "--solver",
                             "solver.yaml"], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_rows(log: Path, rows: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{log} did not reach {rows} rows")


@pytest.mark.slow
def test_sigint_snapshots_and_resume_reproduces_the_straight_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    proc = _start_long_run(run, 0)
    _wait_for_rows(run / "out/run_log.csv", 30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Resume with:" in out
    state = latest_snapshot(str(run / "out/run"))
    stopped_at = int(read_npz(state, "solverstate")[1]["iter"])
    assert stopped_at > 0
    target = stopped_at + 5
    _cli(run, "train", "--solver", "solver.yaml", "--resume", "latest", "--set",
         f"max_iter={target}")
    straight = tmp_path / "straight"
    straight.mkdir()
    _write(straight, "SGD", target, "snapshot: 0\ntest_interval: 0")
    _cli(straight, "train", "--solver", "solver.yaml")
    a = _params(run / f"out/run_iter_{target}.model.npz")
    b = _params(straight / f"out/run_iter_{target}.model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_never_leaves_a_broken_snapshot(tmp_path):
    rng = np.random.default_rng(0)
    proc = None
    for round_ in range(3):
        proc = _start_long_run(tmp_path, 2)
        _wait_for_rows(tmp_path / "out/run_log.csv", 4 + round_)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.kill()
        proc.communicate(timeout=30)
        for path in (tmp_path / "out").glob("*.npz"):      # never a half file under a final name
            with np.load(path, allow_pickle=False) as archive:
                assert "__meta__" in archive.files
    assert latest_snapshot(str(tmp_path / "out/run")) is not None
    state = latest_snapshot(str(tmp_path / "out/run"))
    resume_at = int(read_npz(state, "solverstate")[1]["iter"])
    done = _cli(tmp_path, "train", "--solver", "solver.yaml", "--resume", "latest", "--set",
                f"max_iter={resume_at + 2}")
    assert done.returncode == 0


def test_sigterm_with_on_signal_stop_writes_nothing(tmp_path):
    _write(tmp_path, "SGD", 100000, "snapshot: 0\ntest_interval: 0")
    proc = subprocess.Popen([sys.executable, "-m", "solverkit", "--quiet", "train", "--solver",
                             "solver.yaml", "--on-signal", "stop"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(tmp_path / "out/run_log.csv", 5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "no snapshot written" in out
    assert not list((tmp_path / "out").glob("*.npz"))
