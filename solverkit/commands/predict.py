"""Classify inputs with a trained net: solverkit predict --net NET --weights MODEL INPUT...

INPUT: image files (PNG, JPEG, BMP; the 'image' extra), folders of them (sorted), .npy/.npz
arrays or CSV rows. A train/test net is used in its deploy form (TEST phase, data layers
as inputs, Softmax probabilities instead of the loss); images get the TEST data layer's
transform, or for a deploy net --mean/--scale/--resize/--channel-order. Prints the top-k
classes of each input with their probabilities, or for a detector (output from a
DetectionOutput layer) each detection: input, label, score and box.
"""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np

from ..deploy_io import (
    DETECTION_COLUMNS,
    Preprocess,
    detect,
    is_detector,
    read_inputs,
    read_labels,
    top_k,
)
from ..errors import ConfigError, NonFiniteError
from ..export import load_deploy_net, write_output
from ..files import check_output

FORMATS = ("table", "csv", "json")
PROGRESS_MIN_FILES = 20       # a progress bar only for lists this long


def add_arguments(parser) -> None:
    parser.add_argument("--net", required=True, metavar="NET", help="net spec (train/test or deploy)")
    parser.add_argument("--weights", required=True, metavar="MODEL", help="model file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders of images, .npy/.npz arrays, CSV rows")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="classes shown per input (default 5)")
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line")
    parser.add_argument("--batch-size", type=int, default=64, metavar="B",
                        help="samples per forward pass (default 64)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument("--output-blob", metavar="BLOB",
                        help="the output holding the scores (default: 'prob', or the only one)")
    parser.add_argument("--no-transform", action="store_true",
                        help="feed arrays and CSV rows as they are (no TEST transform)")
    parser.add_argument("--invert", action="store_true",
                        help="images negative first (dark ink on light paper for a net "
                             "trained on light strokes on black, such as the digits)")
    parser.add_argument("--mean", metavar="B,G,R",
                        help="subtract from each channel of a deploy net's input, in the "
                             "net's channel order (one value, or one per channel)")
    parser.add_argument("--scale", type=float, metavar="S",
                        help="multiply a deploy net's input by S after the mean")
    parser.add_argument("--resize", metavar="H,W",
                        help="resize images to H,W (or W: square) instead of the Input's size")
    parser.add_argument("--channel-order", choices=("BGR", "RGB"),
                        help="colour order of a deploy net's input (default BGR, Caffe's)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the results to FILE")
    parser.add_argument("--force", action="store_true", help="overwrite an existing -o FILE")


def run(args) -> int:
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}", field="--top-k")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}",
                          field="--batch-size")
    inputs = (args.net, args.weights, args.labels, *args.inputs)
    if args.output:                 # refused before any work, and never one of the inputs
        check_output(args.output, inputs=inputs, force=args.force, error=ConfigError)
    labels = read_labels(args.labels) if args.labels else None
    preprocess = _preprocess(args)
    net, deployment = load_deploy_net(args.net, args.weights, outputs_only=True)
    try:
        if len(net.input_blobs) != 1:
            raise ConfigError(f"predict feeds nets with one input; this one has "
                              f"{len(net.input_blobs)} ({', '.join(net.input_blobs)})",
                              file=args.net)
        input_name = next(iter(net.input_blobs))
        source = deployment.inputs[input_name]
        progress = None
        if not args.quiet and sys.stderr.isatty() and len(args.inputs) >= 1:
            def progress(files):
                if len(files) < PROGRESS_MIN_FILES:
                    return files
                from tqdm import tqdm
                return tqdm(files, unit="file", desc="reading", dynamic_ncols=True)
        names, batch = read_inputs(args.inputs, source, input_name,
                                   transform=not args.no_transform, invert=args.invert,
                                   progress=progress, preprocess=preprocess)
        expected = preprocess.sample_shape(tuple(net.input_blobs[input_name].shape[1:]))
        if tuple(batch.shape[1:]) != expected:
            raise ConfigError(f"the inputs give samples of shape {tuple(batch.shape[1:])} but "
                              f"input '{input_name}' takes {expected}", file=args.net)
        blob = _output_blob(net, args.output_blob)
        if is_detector(net, blob):
            found = detect(net, batch, blob, batch_size=args.batch_size)
            bad = ~np.isfinite(found).all(axis=1)
            if bad.any():
                image = int(found[bad][0, 0])
                _check_finite(net, np.full((image + 1, 1), np.nan), batch, input_name)
        else:
            scores = net.predict(batch, batch_size=args.batch_size)[blob]
            _check_finite(net, scores, batch, input_name)
    finally:
        net.close()
    if is_detector(net, blob):
        text = DETECTION_FORMATTERS[args.format](names, found, labels)
        _write(args, text, inputs)
        return 0
    classes, probs = top_k(scores, args.top_k)
    if labels is not None and len(labels) < scores.reshape(len(scores), -1).shape[1]:
        raise ConfigError(f"labels file '{args.labels}' names {len(labels)} classes but the "
                          f"net's output '{blob}' has {scores.reshape(len(scores), -1).shape[1]}",
                          field="--labels")
    text = FORMATTERS[args.format](names, classes, probs, labels)
    _write(args, text, inputs)
    return 0


def _write(args, text: str, inputs) -> None:
    if args.output:
        write_output(args.output, text.encode("utf-8"), force=args.force, inputs=inputs)
    else:
        sys.stdout.write(text)


def _numbers(text: str, field: str, kind=float) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{field} takes comma-separated numbers, got '{text}'",
                          field=field) from None
    return values


def _preprocess(args) -> Preprocess:
    """--mean, --scale, --resize and --channel-order as a Preprocess (checked)."""
    mean = _numbers(args.mean, "--mean") if args.mean is not None else None
    if mean is not None and not all(np.isfinite(mean)):
        raise ConfigError(f"--mean must be finite numbers, got '{args.mean}'", field="--mean")
    if args.scale is not None and not (np.isfinite(args.scale) and args.scale != 0):
        raise ConfigError(f"--scale must be a finite non-zero number, got {args.scale}",
                          field="--scale")
    size = None
    if args.resize is not None:
        size = _numbers(args.resize, "--resize", int)
        if len(size) == 1:
            size = (size[0], size[0])
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"--resize takes H,W (or one size for a square) of positive "
                              f"integers, got '{args.resize}'", field="--resize")
    return Preprocess(mean=mean, scale=args.scale, size=size,
                      channel_order=args.channel_order)

def _output_blob(net, wanted) -> str:
    if wanted is not None:
        if wanted not in net.outputs:
            raise ConfigError(f"'{wanted}' is not an output of the deploy net; outputs: "
                              f"{', '.join(net.outputs)}", field="--output-blob")
        return wanted
    if len(net.outputs) == 1:
        return net.outputs[0]
    if "prob" in net.outputs:
        return "prob"
    raise ConfigError(f"the deploy net has several outputs ({', '.join(net.outputs)}); choose "
                      f"one with --output-blob", field="--output-blob")


def _check_finite(net, scores, batch, input_name) -> None:
    """Name the first layer that makes a sample's output non-finite (rows of ``scores``
    are samples; a non-finite row ends in a NonFiniteError)."""
    bad = ~np.isfinite(scores.reshape(len(scores), -1)).all(axis=1)
    if not bad.any():
        return
    first = int(np.argmax(bad))
    net.forward(**{input_name: batch[first:first + 1]})
    where = net.find_nonfinite() or "an output"
    raise NonFiniteError(f"sample {first} gives a non-finite result: first in {where}")


def _label(labels, cls: int):
    return labels[cls] if labels is not None else None


def _table(names, classes, probs, labels) -> str:
    lines = []
    for name, row, values in zip(names, classes, probs):
        lines.append(name)
        for cls, p in zip(row, values):
            label = _label(labels, int(cls))
            lines.append(f"  {p:.4f}  {int(cls):>4}" + (f"  {label}" if label is not None else ""))
    return "\n".join(lines) + "\n"


def _csv(names, classes, probs, labels) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["input", "rank", "class", "label", "prob"])
    for name, row, values in zip(names, classes, probs):
        for rank, (cls, p) in enumerate(zip(row, values), 1):
            label = _label(labels, int(cls))
            writer.writerow([name, rank, int(cls), "" if label is None else label,
                             f"{float(p):.6g}"])
    return out.getvalue()


def _json(names, classes, probs, labels) -> str:
    predictions = [{"input": name,
                    "top": [{"class": int(cls), "label": _label(labels, int(cls)),
                             "prob": float(p)} for cls, p in zip(row, values)]}
                   for name, row, values in zip(names, classes, probs)]
    return json.dumps({"predictions": predictions}, indent=2) + "\n"


FORMATTERS = {"table": _table, "csv": _csv, "json": _json}


def _detection_rows(names, found, labels):
    """(input, label, name, score, xmin, ymin, xmax, ymax) per detection."""
    for image, label, score, *box in found:
        label = int(label)
        yield (names[int(image)], label, _label_or_none(labels, label), float(score),
               *(float(v) for v in box))


def _label_or_none(labels, label: int):
    return labels[label] if labels is not None and 0 <= label < len(labels) else None


def _detections_table(names, found, labels) -> str:
    lines = []
    by_input: dict[str, list] = {name: [] for name in names}
    for row in _detection_rows(names, found, labels):
        by_input[row[0]].append(row)
    for name, rows in by_input.items():
        lines.append(f"{name}: {len(rows)} detection{'s' if len(rows) != 1 else ''}")
        for _, label, text, score, *box in rows:
            coords = " ".join(f"{v:.4f}" for v in box)
            lines.append(f"  {score:.4f}  {label:>4}  {coords}" + (f"  {text}" if text else ""))
    return "\n".join(lines) + "\n"


def _detections_csv(names, found, labels) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["input", "label", "name", "score", *DETECTION_COLUMNS[3:]])
    for name, label, text, score, *box in _detection_rows(names, found, labels):
        writer.writerow([name, label, "" if text is None else text, f"{score:.6g}",
                         *(f"{v:.6g}" for v in box)])
    return out.getvalue()


def _detections_json(names, found, labels) -> str:
    detections = [{"input": name, "label": label, "name": text, "score": score,
                   "box": dict(zip(DETECTION_COLUMNS[3:], box))}
                  for name, label, text, score, *box in _detection_rows(names, found, labels)]
    return json.dumps({"detections": detections}, indent=2) + "\n"


DETECTION_FORMATTERS = {"table": _detections_table, "csv": _detections_csv,
                        "json": _detections_json}
