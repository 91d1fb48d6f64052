"""Evaluate trained weights: solverkit test --net NET --weights MODEL.npz [--iterations K]

Runs the TEST phase of the net K times (default: one pass over its TEST data) and prints
each averaged output as ``Test net output #<i>: <name> = <value>``.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import ConfigError, SnapshotError
from ..net import Net
from ..solvers.solver import batches_per_pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", required=True, metavar="NET", help="net spec (YAML)")
    parser.add_argument("--weights", required=True, metavar="MODEL",
                        help="model file (<prefix>_iter_<N>.model.npz)")
    parser.add_argument("--iterations", type=int, metavar="K",
                        help="TEST batches to average (default: one pass over the TEST data)")


def load_weights(net: Net, path: str) -> None:
    """Copy a model file's arrays (keys ``<layer>/<index>``) into the net's parameters,
    matching layers by name; a missing key or another shape is an error naming the layer."""
    try:
        with np.load(path, allow_pickle=False) as model:
            arrays = {key: model[key] for key in model.files if key != "__meta__"}
    except FileNotFoundError:
        raise SnapshotError("model file not found", file=str(path)) from None
    except (OSError, ValueError) as err:
        raise SnapshotError(f"not a readable model file (.npz): {err}", file=str(path)) from None
    for param in net.learnable_params:
        saved = arrays.get(param.key)
        if saved is None:
            raise SnapshotError(f"the model file has no '{param.key}' (parameter {param.index} "
                                f"of this layer)", file=str(path), layer=param.layer)
        if saved.shape != param.blob.shape:
            raise SnapshotError(f"parameter {param.index} has shape {saved.shape} in the model "
                                f"file but {param.blob.shape} in the net", file=str(path),
                                layer=param.layer)
        np.copyto(param.blob.data, saved, casting="unsafe")


def run(args: argparse.Namespace) -> int:
    net = Net(args.net, phase="TEST", seed=0)
    try:
        load_weights(net, args.weights)
        iterations = args.iterations or batches_per_pass(net)
        if iterations is None:
            raise ConfigError("give --iterations: the TEST net has no data layer to count one "
                              "pass over its data", file=args.net)
        if iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {iterations}")
        sums: dict[str, float] = {}
        for _ in range(iterations):
            for name, value in net.forward().items():
                if isinstance(value, float):
                    sums[name] = sums.get(name, 0.0) + value
    finally:
        net.close()
    for i, (name, value) in enumerate(sums.items()):
        print(f"Test net output #{i}: {name} = {value / iterations:.6g}")
    return 0
