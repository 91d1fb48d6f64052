"""Evaluate trained weights: solverkit test --net NET --weights MODEL.npz [--iterations K]

Runs the TEST phase of the net K times (default: one pass over its TEST data) and prints
each averaged output as ``Test net output #<i>: <name> = <value>``, with the solver's own
test loop (``average_test_outputs``). Under an MPI launcher
each rank tests its slice of every batch (as in training), the outputs are averaged over
the ranks, and rank 0 prints them.
"""

from __future__ import annotations

import argparse

from .. import parallel
from ..errors import ConfigError
from ..net import Net
from ..solvers.solver import average_test_outputs, batches_per_pass
from . import add_state_arguments, stages_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--net", required=True, metavar="NET", help="net spec (YAML)")
    parser.add_argument("--weights", required=True, metavar="MODEL",
                        help="model file (<prefix>_iter_<N>.model.npz)")
    parser.add_argument("--iterations", type=int, metavar="K",
                        help="TEST batches to average (default: one pass over the TEST data)")
    add_state_arguments(parser)


@parallel.abort_on_error
def run(args: argparse.Namespace) -> int:
    world = parallel.world()
    net = Net(args.net, phase="TEST", seed=0, stages=stages_of(args), level=args.level or 0)
    try:
        net.load(args.weights, allow_extra=True)   # a TRAIN-only layer's weights may be there
        if world.distributed:
            parallel.shard_data(net, world)
        # --iterations 0 is a mistake, not a request for the default
        iterations = (args.iterations if args.iterations is not None
                      else batches_per_pass(net))
        if iterations is None:
            raise ConfigError("give --iterations: the TEST net has no data layer to count one "
                              "pass over its data", file=args.net)
        if iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {iterations}")
        results = average_test_outputs(net, iterations, world, f"{args.weights}: ")
    finally:
        net.close()
    if world.is_root:
        for i, (name, value) in enumerate(results.items()):
            print(f"Test net output #{i}: {name} = {value:.6g}")
    return 0
