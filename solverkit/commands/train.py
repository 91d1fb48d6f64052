"""Train a net with a solver: solverkit train --net NET --solver SOLVER [--set key=value ...]

Prints each final averaged TEST output as ``Test net output #<i>: <name> = <value>``.
"""

from __future__ import annotations

import argparse

from ..solvers import Solver


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solver", required=True, metavar="SOLVER",
                        help="solver spec (YAML)")
    parser.add_argument("--net", metavar="NET",
                        help="net spec (YAML); wins over the solver spec's 'net:'")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE",
                        help="override solver fields, e.g. --set type=Adam base_lr=0.001 "
                             "(repeatable)")


def run(args: argparse.Namespace) -> int:
    solver = Solver(args.solver, net=args.net, overrides=args.overrides,
                    progress=False if args.quiet else None)
    results = solver.solve()
    if not solver.world.is_root:    # under mpirun, rank 0 prints the run's results
        return 0
    for i, (name, value) in enumerate(results.items()):
        print(f"Test net output #{i}: {name} = {value:.6g}")
    return 0
