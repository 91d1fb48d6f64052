"""An LSTM net from a Caffe prototxt learns a sequence task with ``solverkit train`` and
resumes bit-exactly (the task: say at each step which symbol came one step earlier)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

STEPS, STREAMS, SYMBOLS, CHUNKS = 6, 8, 3, 10

NET = f"""\
name: "echo"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "cont" top: "label"
        hdf5_data_param {{ source: "train.txt" batch_size: {STEPS} }} }}
layer {{ name: "lstm1" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm1"
        recurrent_param {{ num_output: 8
          weight_filler {{ type: "uniform" min: -0.3 max: 0.3 }}
          bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "lstm1" top: "ip1"
        inner_product_param {{ num_output: {SYMBOLS} axis: 2
          weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss"
        softmax_param {{ axis: 2 }} loss_param {{ ignore_label: -1 }} }}
"""

SOLVER = """\
net: "echo.prototxt"
type: "Adam"
base_lr: 0.05
lr_policy: "fixed"
max_iter: {max_iter}
display: 0
snapshot: 40
snapshot_prefix: "snap/echo"
random_seed: 3
"""


def write_task(folder):
    """One-hot symbols; the label at step t is the symbol at t−1 (ignored at a sequence's
    first step, where cont is 0)."""
    rng = np.random.default_rng(0)
    symbols = rng.integers(0, SYMBOLS, (CHUNKS * STEPS, STREAMS))
    data = np.eye(SYMBOLS)[symbols].astype(np.float32)
    cont = np.ones((CHUNKS * STEPS, STREAMS), np.float32)
    cont[::STEPS] = 0
    label = np.roll(symbols, 1, axis=0).astype(np.float32)
    label[::STEPS] = -1
    with h5py.File(folder / "train.h5", "w") as f:
        f["data"], f["cont"], f["label"] = data, cont, label
    (folder / "train.txt").write_text("train.h5\n")
    (folder / "echo.prototxt").write_text(NET)


def train(folder, solver, *extra):
    (folder / solver).write_text(SOLVER.format(max_iter=80))
    result = subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver", solver,
                             *extra], cwd=folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_an_lstm_learns_to_echo_and_resumes_bit_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for folder in (straight, resumed):
        folder.mkdir()
        write_task(folder)
    train(straight, "solver.prototxt")
    # the same run stopped at 40 (its snapshot) and continued from there
    (resumed / "solver.prototxt").write_text(SOLVER.format(max_iter=40))
    first = subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver",
                            "solver.prototxt"], cwd=resumed, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    train(resumed, "solver.prototxt", "--resume", "snap/echo_iter_40.solverstate.npz")
    a = np.load(straight / "snap/echo_iter_80.model.npz", allow_pickle=False)
    b = np.load(resumed / "snap/echo_iter_80.model.npz", allow_pickle=False)
    keys = [k for k in a.files if not k.startswith("__")]
    assert {"lstm1/0", "lstm1/1", "lstm1/2"} <= set(keys)
    for key in keys:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    log = (straight / "snap/echo_log.csv").read_text().splitlines()
    losses = [float(row.split(",")[3]) for row in log[1:] if ",TRAIN,loss," in row]
    assert np.mean(losses[:5]) > 0.9 and np.mean(losses[-5:]) < 0.3, (losses[:5], losses[-5:])
