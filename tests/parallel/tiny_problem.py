"""A small float64 classifier trained from in-memory arrays, built the same way by the
pytest process (one rank) and by the ranks of an ``mpirun`` (imported from a script).

No random layers, so K ranks with batch B and one process with batch K·B must agree.
"""

from __future__ import annotations

import numpy as np

import solverkit as sk

STEPS = 8                 # crosses epoch boundaries (48 samples, global batch 8 or 16)
CASES = {                 # name -> (solver type, iter_size)
    "sgd": ("SGD", 1),
    "sgd_iter2": ("SGD", 2),
    "adam": ("Adam", 1),
    "adam_iter2": ("Adam", 2),
}


def arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (x[:, 0] + x[:, 1] ** 2 > 0.5).astype(np.int64) + (x[:, 2] > 0.8)
    return x, y


def net_spec(batch_size: int, dropout: bool = False) -> dict:
    hidden = [{"name": "relu", "type": "ReLU", "bottom": "ip1", "top": "ip1"}]
    if dropout:
        hidden.append({"name": "drop", "type": "Dropout", "bottom": "ip1", "top": "ip1",
                       "dropout_ratio": 0.3})
    return {"name": "tiny", "dtype": "float64", "layers": [
        {"name": "data", "type": "Data", "top": ["x", "label"], "include": {"phase": "TRAIN"},
         "source": arrays(48, 1), "batch_size": batch_size, "shuffle": True},
        {"name": "data", "type": "Data", "top": ["x", "label"], "include": {"phase": "TEST"},
         "source": arrays(32, 2), "batch_size": batch_size},
        {"name": "ip1", "type": "InnerProduct", "bottom": "x", "top": "ip1", "num_output": 8,
         "weight_filler": {"type": "gaussian", "std": 0.5}},
        *hidden,
        {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2", "num_output": 3,
         "weight_filler": {"type": "xavier"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"},
        {"name": "accuracy", "type": "Accuracy", "bottom": ["ip2", "label"], "top": "accuracy",
         "include": {"phase": "TEST"}},
    ]}


def make_solver(kind: str, iter_size: int, batch_size: int, prefix: str, **fields) -> sk.Solver:
    spec = {"type": kind, "base_lr": 0.05 if kind == "SGD" else 0.01, "lr_policy": "step",
            "gamma": 0.5, "stepsize": 3, "weight_decay": 0.001, "iter_size": iter_size,
            "max_iter": STEPS, "random_seed": 5, "test_interval": 4, "test_iter": 2,
            "test_initialization": False, "snapshot_prefix": prefix, **fields}
    if kind == "SGD":
        spec["momentum"] = 0.9
    return sk.Solver(spec, net=net_spec(batch_size), progress=False)


def run_cases(batch_size: int, prefix: str) -> dict[str, np.ndarray]:
    """Every case for STEPS steps: the parameters after each step and the final test."""
    record = {}
    for name, (kind, iter_size) in CASES.items():
        solver = make_solver(kind, iter_size, batch_size, f"{prefix}{name}")
        for step in range(STEPS):
            solver.step(1)
            for param in solver.net.learnable_params:
                record[f"{name}/{step}/{param.key}"] = param.blob.data.copy()
        for output, value in solver.test().items():
            record[f"{name}/test/{output}"] = np.array(value)
        solver.close()
    return record


def batchnorm_solver(batch_size: int) -> sk.Solver:
    """SGD on InnerProduct -> BatchNorm -> InnerProduct (batch statistics in TRAIN)."""
    net = net_spec(batch_size)
    net["layers"].insert(3, {"name": "bn", "type": "BatchNorm", "bottom": "ip1", "top": "ip1"})
    spec = {"base_lr": 0.1, "max_iter": 3, "random_seed": 2, "snapshot_prefix": "bn"}
    return sk.Solver(spec, net=net, progress=False)
