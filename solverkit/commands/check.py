"""Check a net (and a solver) spec: build every phase and print layers, top shapes, parameters.

Building the nets validates every field, every shape and every data source path; with
--solver, the solver spec is validated too and its settings are shown with the defaults
filled in, with the learning rate at a few iterations.
"""

from __future__ import annotations

from ..net import Net
from ..spec.net import load_net_spec
from ..tools.summary import format_net_summary, phases_to_check, summarize_net


def add_arguments(parser) -> None:
    parser.add_argument("--net", required=True, metavar="NET.yaml", help="the net spec")
    parser.add_argument("--solver", metavar="SOLVER.yaml", help="the solver spec (optional)")


def run(args) -> int:
    spec = load_net_spec(args.net)
    blocks = []
    for phase in phases_to_check(spec):
        net = Net(spec, phase=phase, seed=0)
        try:
            blocks.append(format_net_summary(summarize_net(net)))
        finally:
            net.close()
    print("\n\n".join(blocks))
    print(f"\n{args.net}: OK")
    return 0
