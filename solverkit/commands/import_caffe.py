"""Convert Caffe files: import-caffe FILE.prototxt -o OUT.yaml | import-caffe --weights X.caffemodel -o OUT.model.npz

A prototxt net or solver (detected from its fields) becomes the YAML spec that builds the
same net or solver; a .caffemodel becomes a solverkit model file. With --net, the weights
are checked against that net (names and shapes, as --weights does) and stored with its
shapes; without it, Caffe's legacy 4-D blob shapes are reduced to the usual ones
(InnerProduct weights 2-D, biases and per-channel blobs 1-D). An existing OUT is kept
unless --force is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..files import check_output, write_atomic

logger = logging.getLogger("solverkit")


def add_arguments(parser) -> None:
    parser.add_argument("prototxt", nargs="?", metavar="FILE.prototxt",
                        help="a Caffe net or solver in text format")
    parser.add_argument("--weights", metavar="X.caffemodel",
                        help="convert Caffe weights instead of a prototxt")
    parser.add_argument("--net", metavar="NET",
                        help="with --weights: the net (YAML or prototxt) to check them against")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --weights and --net: leave the net's layers the file lacks "
                             "as initialised, ignore file layers the net lacks")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="OUT.yaml for a prototxt, OUT.model.npz for weights")
    parser.add_argument("--force", action="store_true", help="overwrite an existing OUT")


def run(args) -> int:
    if (args.prototxt is None) == (args.weights is None):
        raise ConfigError("give a FILE.prototxt or --weights X.caffemodel (one of them)",
                          field="--weights")
    if args.net and not args.weights:
        raise ConfigError("--net goes with --weights", field="--net")
    out = check_output(args.output, inputs=(args.prototxt, args.weights, args.net),
                       force=args.force, option="--output", error=ConfigError)
    if args.weights:
        return _weights(args, out)
    return _prototxt(args.prototxt, out)


def _prototxt(path: str, out: Path) -> int:
    from ..caffe.prototxt import net_text_source, prototxt_kind, solver_text_source
    from ..spec.net import load_net_spec
    from ..spec.solver import load_solver_spec
    if prototxt_kind(path) == "net":
        raw = load_net_spec(path).to_dict()
        base = Path(path).resolve().parent
        for layer in raw["layers"]:                 # data files, seen from OUT's folder
            for key in PATH_FIELDS:
                if key in layer:
                    layer[key] = _rebased(layer[key], base, out)
            if "mean_file" in layer.get("transform", {}):
                layer["transform"]["mean_file"] = _rebased(layer["transform"]["mean_file"],
                                                           base, out)
        kind = "net"
    else:
        load_solver_spec(path)                 # every field checked before anything is written
        raw = dict(solver_text_source(path).raw)
        for key in ("net", "train_net"):
            if key in raw:
                raw[key] = _relative(raw[key], out)
        if "test_net" in raw:
            raw["test_net"] = [_relative(p, out) for p in raw["test_net"]]
        kind = "solver"
    if kind == "net":
        net_text_source(path)                  # the same notes as when the file is used
    text = f"# converted from the Caffe {kind} {path}\n" + yaml.safe_dump(
        raw, sort_keys=False, default_flow_style=None, width=100)
    write_atomic(out, text, operation=f"write the {kind} spec")
    logger.info("Wrote the %s spec %s", kind, out)
    return 0


PATH_FIELDS = ("source", "label_source", "root_folder")


def _rebased(value, base: Path, out: Path):
    """A relative path of the net (or a list of them) made relative to OUT's folder."""
    if isinstance(value, list):
        return [_rebased(v, base, out) for v in value]
    if not isinstance(value, str) or not value or value.startswith("builtin:") \
            or os.path.isabs(value) or not (base / value).exists():
        return value
    return _relative(str(base / value), out)


def _relative(path: str, out: Path) -> str:
    """A path the solver names, as seen from the output file's folder."""
    try:
        return os.path.relpath(path, out.resolve().parent)
    except ValueError:                          # another drive (Windows)
        return path


def _weights(args, out: Path) -> int:
    from ..caffe.weights import natural_shape, read_caffemodel
    from ..snapshot import FORMAT_VERSION, atomic_write_npz, save_model
    if args.net:
        from ..net import Net
        net = Net(args.net, phase="TEST", seed=0)
        skipped = net.load(args.weights, allow_missing=args.allow_missing)
        if skipped:
            logger.info("Layers without weights in %s (left as initialised): %s",
                        args.weights, ", ".join(skipped))
        save_model(net, out, {"converted_from": str(args.weights)})
    else:
        if args.allow_missing:
            raise ConfigError("--allow-missing goes with --net", field="--allow-missing")
        arrays = {}
        for layer in read_caffemodel(args.weights):
            for j, blob in enumerate(layer.blobs):
                arrays[f"{layer.name}/{j}"] = blob.reshape(natural_shape(layer, j)).astype(
                    "float32", copy=False)
        meta = {"kind": "model", "format": FORMAT_VERSION, "net": Path(args.weights).stem,
                "dtype": "float32", "parameters": {k: list(v.shape) for k, v in arrays.items()},
                "converted_from": str(args.weights)}
        atomic_write_npz(out, arrays, meta)
    logger.info("Wrote the model file %s", out)
    return 0
