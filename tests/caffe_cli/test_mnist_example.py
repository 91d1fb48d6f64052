"""Caffe's examples/mnist, run as a Caffe user runs it: the tools linked into build/, the
data made by a copy of create_mnist.sh's commands, LeNet trained by train_lenet.sh's
command, resumed with --snapshot, the log read by parse_log.py's rules, the weights read
by OpenCV's Caffe importer."""

from __future__ import annotations

import csv
import datetime
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk

pytest.importorskip("lmdb")
SCRIPTS = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (SCRIPTS / "caffe").exists() or shutil.which("bash") is None,
    reason="console scripts not installed (pip install -e .) or no bash")]

CREATE_MNIST = """#!/usr/bin/env sh
# the commands of Caffe's examples/mnist/create_mnist.sh
set -e
EXAMPLE=examples/mnist
DATA=data/mnist
BUILD=build/examples/mnist
BACKEND="lmdb"
echo "Creating ${BACKEND}..."
rm -rf $EXAMPLE/mnist_train_${BACKEND}
rm -rf $EXAMPLE/mnist_test_${BACKEND}
$BUILD/convert_mnist_data.bin $DATA/train-images-idx3-ubyte \\
  $DATA/train-labels-idx1-ubyte $EXAMPLE/mnist_train_${BACKEND} --backend=${BACKEND}
$BUILD/convert_mnist_data.bin $DATA/t10k-images-idx3-ubyte \\
  $DATA/t10k-labels-idx1-ubyte $EXAMPLE/mnist_test_${BACKEND} --backend=${BACKEND}
echo "Done."
"""
TRAIN_LENET = """#!/usr/bin/env sh
set -e
./build/tools/caffe train --solver=examples/mnist/lenet_solver.prototxt $@
"""

LAYERS = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
"""
TRAIN_TEST = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 16 backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 32 backend: LMDB } }
""" + LAYERS + """
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
DEPLOY = """name: "LeNet"
layer { name: "data" type: "Input" top: "data"
  input_param { shape: { dim: 128 dim: 1 dim: 28 dim: 28 } } }
""" + LAYERS + """
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""
SOLVER = """# The train/test net protocol buffer definition
net: "examples/mnist/lenet_train_test.prototxt"
test_iter: 4
test_interval: 6
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 3
max_iter: {max_iter}
snapshot: 6
snapshot_prefix: "examples/mnist/{prefix}"
random_seed: 1
solver_mode: GPU
"""


def _idx(folder: Path, name: str, n: int, seed: int) -> None:
    """Digits-like 28x28 images: class k lights a block at its own place, in noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, 28, 28)) * 80).astype(np.uint8)
    for k in range(10):
        row, col = divmod(k, 4)
        images[labels == k, 2 + 8 * row:8 + 8 * row, 2 + 6 * col:7 + 6 * col] = 220
    (folder / f"{name}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    (folder / f"{name}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) +
                                                       labels.tobytes())


def _run(root: Path, *command: str) -> subprocess.CompletedProcess:
    done = subprocess.run(list(command), cwd=root, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# ---------------------------------------------------------------- parse_log.py's rules
GLOG_TIME = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})")


def _time(line: str) -> datetime.datetime | None:
    match = GLOG_TIME.match(line)
    if match is None:
        return None
    month, day, hour, minute, second, micro = map(int, match.groups())
    return datetime.datetime(2000, month, day, hour, minute, second, micro)


def parse_caffe_log(text: str) -> tuple[list[dict], list[dict]]:
    """Rows of train and test outputs as Caffe's tools/extra/parse_log.py builds them: the
    start is the line with 'Solving'; 'Iteration N' sets the iteration, 'lr = X' the rate,
    'Train/Test net output #k: name = X' a column of the current row; a row is complete
    when it has as many columns as the first one."""
    lines = text.splitlines()
    start = next(_time(line) for line in lines if "Solving" in line)
    iteration, rate = -1, float("nan")
    tables: dict[str, list[dict]] = {"Train": [], "Test": []}
    rows: dict[str, dict | None] = {"Train": None, "Test": None}
    for line in lines:
        found = re.search(r"Iteration (\d+)", line)
        if found:
            iteration = float(found.group(1))
        if iteration == -1:
            continue
        when = _time(line)
        if when is None:
            continue
        found = re.search(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)", line)
        if found:
            rate = float(found.group(1))
        for kind in ("Train", "Test"):
            found = re.search(kind + r" net output #(\d+): (\S+) = ([\.\deE+-]+)", line)
            row, table = rows[kind], tables[kind]
            if found:
                if not row or row["NumIters"] != iteration:
                    if row:
                        table.append(row)
                    row = {"NumIters": iteration, "Seconds": (when - start).total_seconds(),
                           "LearningRate": rate}
                row[found.group(2)] = float(found.group(3))
            if row and table and len(row) == len(table[0]):
                table.append(row)
                row = None
            rows[kind] = row
    for table in tables.values():
        if len(table) > 1:
            table[0]["LearningRate"] = table[1]["LearningRate"]
    return tables["Train"], tables["Test"]


def test_caffes_mnist_example_runs_unchanged(tmp_path):
    root = tmp_path / "caffe"
    (root / "data" / "mnist").mkdir(parents=True)
    (root / "examples" / "mnist").mkdir(parents=True)
    _idx(root / "data" / "mnist", "train", 256, 1)
    _idx(root / "data" / "mnist", "t10k", 128, 2)
    example = root / "examples" / "mnist"
    (example / "create_mnist.sh").write_text(CREATE_MNIST)
    (example / "train_lenet.sh").write_text(TRAIN_LENET)
    (example / "lenet_train_test.prototxt").write_text(TRAIN_TEST)
    (example / "lenet.prototxt").write_text(DEPLOY)
    (example / "lenet_solver.prototxt").write_text(SOLVER.format(max_iter=12, prefix="lenet"))
    (example / "split_half.prototxt").write_text(SOLVER.format(max_iter=6, prefix="split"))
    (example / "split.prototxt").write_text(SOLVER.format(max_iter=12, prefix="split"))

    _run(root, str(SCRIPTS / "solverkit"), "caffe-build-links", ".")
    _run(root, "bash", "examples/mnist/create_mnist.sh")
    assert (example / "mnist_train_lmdb" / "data.mdb").is_file()

    # train_lenet.sh, then the same training stopped at 6 and resumed with --snapshot
    straight = _run(root, "bash", "examples/mnist/train_lenet.sh")
    _run(root, "./build/tools/caffe", "train", "-solver", "examples/mnist/split_half.prototxt")
    resumed = _run(root, "./build/tools/caffe", "train",
                   "--solver=examples/mnist/split.prototxt",
                   "--snapshot=examples/mnist/split_iter_6.solverstate")
    assert "Resuming from examples/mnist/split_iter_6.solverstate" in resumed.stderr
    final = (example / "lenet_iter_12.caffemodel").read_bytes()
    assert final == (example / "split_iter_12.caffemodel").read_bytes()
    assert (example / "lenet_iter_6.solverstate").is_file()
    again = subprocess.run(["bash", "examples/mnist/train_lenet.sh"], cwd=root, text=True,
                           capture_output=True, timeout=120, check=False)
    assert again.returncode == 2        # the earlier run's files are not overwritten unasked
    assert "--snapshot=examples/mnist/lenet_iter_12.solverstate" in again.stderr

    # the log: glog lines Caffe's parser reads, with the values the CSV log holds
    log = straight.stderr
    assert "Use CPU." in log and "solver_mode" in log           # the GPU solver's one note
    assert "Snapshotting to binary proto file examples/mnist/lenet_iter_12.caffemodel" in log
    assert log.rstrip().endswith("Optimization Done.")
    train, test = parse_caffe_log(log)
    assert [row["NumIters"] for row in train] == [0, 3, 6, 9]
    assert [row["NumIters"] for row in test] == [0, 6, 12]
    assert train[2]["LearningRate"] == pytest.approx(0.01 * (1 + 0.0001 * 3) ** -0.75,
                                                     rel=1e-5)
    with open(example / "lenet_log.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["phase"] == "TEST"]
    for row in rows:
        parsed = next(r for r in test if r["NumIters"] == int(row["iter"]))
        assert parsed[row["name"]] == pytest.approx(float(row["value"]), rel=1e-5)
    assert test[-1]["accuracy"] > 0.3       # chance is 0.1

    # caffe test on the written weights, and OpenCV's importer on the same file
    scored = _run(root, "./build/tools/caffe", "test",
                  "--model=examples/mnist/lenet_train_test.prototxt",
                  "--weights=examples/mnist/lenet_iter_12.caffemodel", "--iterations=4")
    accuracy = float(re.search(r"\] accuracy = ([\d.e+-]+)", scored.stderr).group(1))
    assert accuracy == pytest.approx(test[-1]["accuracy"], abs=1e-6)
    cv2 = pytest.importorskip("cv2")
    raw = (root / "data/mnist/t10k-images-idx3-ubyte").read_bytes()[16:]
    images = np.frombuffer(raw, np.uint8).reshape(-1, 1, 28, 28).astype(np.float32) / 256
    labels = np.frombuffer((root / "data/mnist/t10k-labels-idx1-ubyte").read_bytes()[8:],
                           np.uint8)
    importer = cv2.dnn.readNetFromCaffe(str(example / "lenet.prototxt"),
                                        str(example / "lenet_iter_12.caffemodel"))
    importer.setInput(images)
    theirs = importer.forward()
    ours = sk.Net(example / "lenet.prototxt", phase="TEST")
    ours.load(example / "lenet_iter_12.caffemodel")
    mine = ours.forward(data=images)["prob"]
    np.testing.assert_allclose(theirs.reshape(mine.shape), mine, atol=1e-5)
    assert (theirs.argmax(axis=1) == labels).mean() == pytest.approx(accuracy, abs=1e-6)
