"""Draw the layer graph of a net: Graphviz DOT, rendered to SVG/PNG/PDF when `dot` is installed.

Layers are boxes, blobs are edges labelled with their shapes. Without Graphviz, a
rendered format falls back to writing the .dot file beside it, with a note on how to
render it, and exits 0.
"""

from __future__ import annotations

import sys

from ..net import Net
from ..runs import file_operation
from ..tools.graph import write_graph
from . import add_state_arguments, stages_of


def add_arguments(parser) -> None:
    parser.add_argument("--net", required=True, metavar="NET.yaml", help="the net spec")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="net.dot (DOT text), or net.svg / net.png / net.pdf (rendered)")
    add_state_arguments(parser)
    parser.add_argument("--phase", default="TRAIN", choices=["TRAIN", "TEST"],
                        help="which phase's layers to draw (default TRAIN)")


def run(args) -> int:
    net = Net(args.net, phase=args.phase, seed=0, stages=stages_of(args), level=args.level or 0)
    try:
        with file_operation("write the graph", args.output):
            result = write_graph(net, args.output)
    finally:
        net.close()
    if result.note:
        print(f"solverkit: note: {result.note}", file=sys.stderr)
    print(f"wrote {result.path} ({'rendered by Graphviz' if result.rendered else 'DOT'})")
    return 0
