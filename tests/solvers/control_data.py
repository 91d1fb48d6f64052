"""A tiny classifier whose test accuracy rises and then falls, with stages for a
validation test, a test on the training set and deployment, all in one net file.

The training data is 20 batches with the true labels, then 20 batches with the labels
rotated by one: the net first learns the clusters, then unlearns them. ``FixedData``
reads in order, so every run sees the same batches.
"""

from __future__ import annotations

import csv

import numpy as np
import yaml
from solver_data import blobs_classification, write_arrays

BATCH = 10


def make_data(folder):
    x, y = blobs_classification(500, seed=3)
    good_x, good_y = x[:200], y[:200]
    bad_x, bad_y = x[200:400], (y[200:400] + 1) % 3
    train = write_arrays(folder / "train.npz", np.concatenate([good_x, bad_x]),
                         np.concatenate([good_y, bad_y]))
    test = write_arrays(folder / "test.npz", x[400:], y[400:])
    return train, test


def staged_net(train: str, test: str) -> dict:
    """TRAIN reads the training set; TEST with stage ``val`` the test set, with stage
    ``train-eval`` the training set (its first, correctly labelled half); stage ``deploy``
    takes an Input blob and ends in probabilities instead of the loss."""
    no_deploy = {"not_stage": "deploy"}
    return {"name": "staged", "dtype": "float64", "plugins": ["solver_data"], "layers": [
        {"name": "data", "type": "FixedData", "top": ["data", "label"], "source": train,
         "batch_size": BATCH, "include": {"phase": "TRAIN", **no_deploy}},
        {"name": "data", "type": "FixedData", "top": ["data", "label"], "source": test,
         "batch_size": BATCH, "include": {"phase": "TEST", "stage": "val"}},
        {"name": "data", "type": "FixedData", "top": ["data", "label"], "source": train,
         "batch_size": BATCH, "include": {"phase": "TEST", "stage": "train-eval"}},
        {"name": "data", "type": "Input", "top": "data", "shape": [[BATCH, 4]],
         "include": {"stage": "deploy"}},
        {"name": "ip1", "type": "InnerProduct", "bottom": "data", "top": "ip1",
         "num_output": 8, "weight_filler": {"type": "gaussian", "std": 0.3}},
        {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2",
         "num_output": 3, "weight_filler": {"type": "gaussian", "std": 0.3}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss",
         "exclude": {"stage": "deploy"}},
        {"name": "accuracy", "type": "Accuracy", "bottom": ["ip2", "label"],
         "top": "accuracy", "include": {"phase": "TEST", **no_deploy}},
        {"name": "prob", "type": "Softmax", "bottom": "ip2", "top": "prob",
         "include": {"stage": "deploy"}},
    ]}


def write_run(folder, **solver_fields) -> tuple:
    """net.yaml and solver.yaml in ``folder``; returns their paths."""
    train, test = make_data(folder)
    net_path = folder / "net.yaml"
    net_path.write_text(yaml.safe_dump(staged_net(train, test)))
    solver = {"net": "net.yaml", "base_lr": 0.3, "max_iter": 40, "test_interval": 4,
              "test_iter": 10, "test_state": {"stage": "val"}, "random_seed": 1,
              "snapshot_prefix": str(folder / "run"), **solver_fields}
    solver_path = folder / "solver.yaml"
    solver_path.write_text(yaml.safe_dump(solver))
    return net_path, solver_path


def log_rows(path, without_seconds: bool = True) -> list[list[str]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [row[:5] for row in rows] if without_seconds else rows


def series_of(path, name: str, phase: str = "TEST") -> list[tuple[int, float]]:
    return [(int(r[0]), float(r[3])) for r in log_rows(path) if r[1] == phase and r[2] == name]
