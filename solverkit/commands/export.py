"""Export a trained net: solverkit export --net NET --weights MODEL -o OUT.onnx|OUT.caffemodel

The format follows from OUT's suffix, by the registered exporters: .onnx (the 'onnx'
extra), .caffemodel (with the deploy net beside it as .prototxt), or a plugin's. A train/test net is exported in its deploy form (TEST
phase, data layers as inputs with a free batch dimension, no losses or metrics, Softmax
probabilities named 'prob').
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..export import export_model


def add_arguments(parser) -> None:
    parser.add_argument("--net", required=True, metavar="NET", help="net spec (train/test or deploy)")
    parser.add_argument("--weights", required=True, metavar="MODEL", help="model file")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="the file to write; its suffix picks the format: OUT.onnx, "
                             "OUT.caffemodel, or a plugin exporter's")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing OUT (never the net or weights read)")


def run(args) -> int:
    out = Path(args.output)
    if not out.parent.exists():
        raise ConfigError(f"folder '{out.parent}' does not exist")
    for path in export_model(args.net, args.weights, out, force=args.force):
        print(f"wrote {path}")
    return 0
