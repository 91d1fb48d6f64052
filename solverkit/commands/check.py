"""Check a net (and a solver) spec: build every phase and print layers, top shapes, parameters.

Building the nets validates every field, every shape and every data source path; with
--solver, the solver spec is validated too and its settings are shown with the defaults
filled in, with the learning rate at a few iterations. The net may come from the solver's
'net:' field.
"""

from __future__ import annotations

from .. import compute_libraries
from ..errors import ConfigError
from ..net import Net
from ..runs import check_prefix_folder
from ..solvers import Solver
from ..spec.net import load_net_spec
from ..spec.solver import parse_overrides
from ..reports.summary import (
    format_net_summary,
    format_solver_summary,
    phases_to_check,
    summarize_net,
)
from . import add_state_arguments, stages_of


def add_arguments(parser) -> None:
    parser.add_argument("--net", metavar="NET.yaml",
                        help="the net spec (optional with a solver whose 'net:' names it)")
    parser.add_argument("--solver", metavar="SOLVER.yaml", help="the solver spec (optional)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="override solver fields, as for train")
    add_state_arguments(parser)


def run(args) -> int:
    if args.solver is None:
        if args.overrides:
            raise ConfigError("--set overrides solver fields: give --solver too", field="--set")
        if args.net is None:
            raise ConfigError("give --net (and optionally --solver)", field="--net")
        return _check_net(args.net, stages_of(args), args.level or 0)
    solver = Solver(args.solver, net=args.net, overrides=args.overrides, progress=False,
                    stages=stages_of(args), level=args.level)
    try:
        check_prefix_folder(solver.snapshot_prefix, create=False)   # training could write
        nets = [solver.net] + (solver.test_nets if solver.spec.test_interval > 0 else [])
        print("\n\n".join(format_net_summary(summarize_net(net)) for net in nets))
        print()
        print(format_solver_summary(solver.spec, solver.rate,
                                    overridden=set(parse_overrides(args.overrides)),
                                    test_iter=solver.test_iter,
                                    snapshot_prefix=solver.snapshot_prefix))
    finally:
        solver.close()
    print(f"\n{compute_libraries.summary()}")
    print(f"{solver.net_source}, {args.solver}: OK")
    return 0


def _check_net(path, stages=(), level=0) -> int:
    spec = load_net_spec(path)
    blocks = []
    for phase in phases_to_check(spec):
        net = Net(spec, phase=phase, seed=0, stages=stages, level=level)
        try:
            blocks.append(format_net_summary(summarize_net(net)))
        finally:
            net.close()
    print("\n\n".join(blocks))
    print(f"\n{compute_libraries.summary()}")
    print(f"{path}: OK")
    return 0
