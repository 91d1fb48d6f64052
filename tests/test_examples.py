"""The shipped configs, trained through the CLI as a user would run them.

Digits: LeNet >= 98% test accuracy, the MLP >= 97%, softmax regression >= 94%; every
configs/solvers file trains the MLP to >= 95%; the apple example recovers theta = (-3, 2);
the MNIST and CIFAR-10 configs build and train on tiny files of their formats.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SOLVERS = sorted((CONFIGS / "solvers").glob("*.yaml"))
# These nets multiply small matrices, where more BLAS threads gain little and, on a busy
# machine, spin against each other for the cores (training got several times slower).
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def train(solver: Path, cwd: Path, *args: str) -> dict[str, float]:
    """``solverkit train --solver SOLVER`` in ``cwd``; the printed test outputs by name."""
    run = subprocess.run([sys.executable, "-m", "solverkit", "train", "--quiet",
                          "--solver", str(solver), *args],
                         cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = dict(re.findall(r"Test net output #\d+: (\w+) = (\S+)", run.stdout))
    assert outputs, run.stdout[-3000:]
    return {name: float(value) for name, value in outputs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("model, accuracy", [("lenet", 0.98), ("mlp", 0.97), ("logreg", 0.94)])
def test_digits_examples_reach_their_accuracy(tmp_path, model, accuracy):
    outputs = train(CONFIGS / "digits" / f"{model}_solver.yaml", tmp_path)
    assert outputs["accuracy"] >= accuracy, outputs


@pytest.mark.slow
@pytest.mark.parametrize("solver", SOLVERS, ids=[s.stem for s in SOLVERS])
def test_every_solver_file_trains_the_digits_mlp(tmp_path, solver):
    outputs = train(solver, tmp_path)
    assert outputs["accuracy"] >= 0.95, outputs


def test_solver_files_cover_every_type():
    assert {s.stem for s in SOLVERS} == {"sgd", "nesterov", "adagrad", "rmsprop", "adadelta",
                                         "adam", "adamw"}


def test_apple_example_recovers_theta(tmp_path):
    outputs = train(CONFIGS / "apple" / "apple_solver.yaml", tmp_path)
    assert abs(outputs["theta_1"] - (-3.0)) < 0.1, outputs
    assert abs(outputs["theta_2"] - 2.0) < 0.1, outputs


# ------------------------------------------------ classic configs on tiny files of their format
def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _cifar(path: Path, count: int, rng) -> None:
    labels = rng.integers(0, 10, size=(count, 1), dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
    path.write_bytes(np.hstack([labels, pixels]).tobytes())


def _copy_configs(folder: str, tmp_path: Path) -> Path:
    target = tmp_path / folder
    shutil.copytree(CONFIGS / folder, target)
    (target / "data").mkdir()
    return target


SHORT_RUN = ("--set", "max_iter=2", "test_interval=2", "test_iter=1", "display=1", "snapshot=0")


@pytest.mark.slow
def test_mnist_lenet_config_trains_on_tiny_idx_files(tmp_path):
    folder = _copy_configs("mnist", tmp_path)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 64), ("t10k", 100)):
        _idx(folder / "data" / f"{prefix}-images-idx3-ubyte",
             rng.integers(0, 256, size=(count, 28, 28)))
        _idx(folder / "data" / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=count))
    outputs = train(folder / "lenet_solver.yaml", tmp_path, *SHORT_RUN)
    assert set(outputs) == {"accuracy", "loss"} and np.isfinite(outputs["loss"])


@pytest.mark.slow
def test_cifar10_quick_config_trains_on_tiny_binary_batches(tmp_path):
    folder = _copy_configs("cifar10", tmp_path)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _cifar(folder / "data" / f"data_batch_{i}.bin", 20, rng)
    _cifar(folder / "data" / "test_batch.bin", 100, rng)
    outputs = train(folder / "cifar10_quick_solver.yaml", tmp_path, *SHORT_RUN)
    assert set(outputs) == {"accuracy", "loss"} and np.isfinite(outputs["loss"])
