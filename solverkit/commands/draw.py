"""Draw the layer graph of a net: Graphviz DOT, rendered to SVG/PNG/PDF when `dot` is installed.

Layers are boxes, blobs are edges labelled with their shapes. Without Graphviz, a
rendered format falls back to writing the .dot file beside it, with a note on how to
render it, and exits 0.

``--values`` runs one forward and one backward pass and labels each edge with the blob's
values and gradient, each layer with its parameters' values and gradients (``-o FILE.txt``
lists them as plain text). ``--input NAME=V1,V2,...`` sets an input (the others are drawn
from a standard normal with seed 0); ``--weights MODEL`` loads trained weights. Inputs get
gradients as if ``force_backward`` were set; without a loss, every output gets gradient 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..net import Net
from ..runs import file_operation
from ..files import check_output, write_atomic
from ..reports.graph import write_graph
from ..reports.values import build_for_values, compute_values, values_dot, values_text
from . import add_state_arguments, stages_of


def add_arguments(parser) -> None:
    parser.add_argument("--net", required=True, metavar="NET.yaml", help="the net spec")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="net.dot (DOT text), or net.svg / net.png / net.pdf (rendered); "
                             "with --values also net.txt (a plain listing)")
    add_state_arguments(parser)
    parser.add_argument("--phase", default="TRAIN", choices=["TRAIN", "TEST"],
                        help="which phase's layers to draw (default TRAIN)")
    parser.add_argument("--values", action="store_true",
                        help="one forward and backward pass: label blobs and parameters with "
                             "their values and gradients")
    parser.add_argument("--input", dest="inputs", nargs="+", action="extend", default=[],
                        metavar="NAME=V1,V2,...", help="with --values: an input's values")
    parser.add_argument("--weights", metavar="MODEL", help="with --values: load these weights")


def _parse_inputs(items: list[str]) -> dict[str, np.ndarray]:
    inputs = {}
    for text in items:
        name, sep, values = text.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--input takes NAME=V1,V2,..., got '{text}'", field="--input")
        try:
            inputs[name.strip()] = np.array([float(v) for v in values.split(",")])
        except ValueError:
            raise ConfigError(f"--input {name}: not a list of numbers: '{values}'",
                              field="--input") from None
    return inputs


def run(args) -> int:
    if not args.values and (args.inputs or args.weights):
        raise ConfigError("--input and --weights go with --values", field="--values")
    suffix = Path(args.output).suffix.lower()
    if suffix == ".txt" and not args.values:
        raise ConfigError("a .txt listing shows values: add --values (or write .dot)",
                          field="-o")
    inputs = _parse_inputs(args.inputs)
    # the listing or graph replaces an earlier one, never the files it is drawn from
    check_output(args.output, inputs=[args.net, args.weights], force=True)
    stages, level = stages_of(args), args.level or 0
    net = (build_for_values(args.net, args.phase, stages, level) if args.values else
           Net(args.net, phase=args.phase, seed=0, stages=stages, level=level))
    try:
        text = None
        if args.values:
            if args.weights:
                net.load(args.weights)
            drawn = compute_values(net, inputs)
            if suffix == ".txt":
                write_atomic(args.output, values_text(net, drawn), operation="write the listing")
                print(f"wrote {args.output} (values and gradients)")
                return 0
            text = values_dot(net)
        with file_operation("write the graph", args.output):
            result = write_graph(net, args.output, text=text)
    finally:
        net.close()
    if result.note:
        print(f"solverkit: note: {result.note}", file=sys.stderr)
    print(f"wrote {result.path} ({'rendered by Graphviz' if result.rendered else 'DOT'})")
    return 0
