"""A net's graph with the numbers that flow: one forward and one backward, written down.

``compute_values`` runs the pass: inputs the caller gives are copied in, the other
``Input`` blobs are drawn from a standard normal distribution (``default_rng(0)``), data
layers read their first batch. The net is built with ``force_backward``, so every input and
every blob on the way gets its gradient. With a loss, the backward pass starts from the loss
(``∂loss/∂loss = loss_weight``, as training does); without one, every output gets the
gradient 1 (``∂f/∂f = 1``, where backpropagation starts).

A blob of at most ``SMALL`` elements is shown whole; a larger one as its shape, mean,
min/max and L2 norm. ``values_text`` lists blobs and parameters one per line (the
``.txt`` form, easy to read and to parse); ``values_dot`` labels the layer graph's edges
with them (Graphviz DOT).
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..net import Net
from ..spec import load_net_spec
from .graph import _quote, net_edges
from .summary import format_shape

SMALL = 16


def build_for_values(source, phase: str = "TRAIN", stages=(), level: int = 0) -> Net:
    """The net of ``source`` with ``force_backward`` on (inputs get their gradients)."""
    spec = load_net_spec(source)
    spec = spec.model_copy(update={"force_backward": True})
    return Net(spec, phase=phase, seed=0, stages=stages, level=level)


def compute_values(net: Net, inputs: dict[str, np.ndarray]) -> list[str]:
    """Forward and backward once; returns the names of the inputs that were drawn at random."""
    rng = np.random.default_rng(0)
    feed, drawn = {}, []
    for name, blob in net.input_blobs.items():
        if name in inputs:
            value = np.asarray(inputs[name], dtype=net.dtype)
            if value.size != blob.count:
                sample = int(np.prod(blob.shape[1:])) if len(blob.shape) > 1 else 1
                if len(blob.shape) == 0 or value.size % sample:
                    raise ShapeError(f"--input {name}: {value.size} values do not fill the "
                                     f"shape {format_shape(blob.shape)} (nor whole samples "
                                     f"of {sample})", file=net.spec.file, field="--input")
                feed[name] = value.reshape((value.size // sample, *blob.shape[1:]))
            else:
                feed[name] = value.reshape(blob.shape)
        else:
            feed[name] = rng.standard_normal(blob.shape).astype(net.dtype)
            drawn.append(name)
    unknown = [name for name in inputs if name not in net.input_blobs]
    if unknown:
        net.set_input(unknown[0], inputs[unknown[0]])      # the error with did-you-mean
    net.forward(**feed)
    net.clear_param_diffs()
    if net.loss_weights:
        net.backward()
    else:
        net.backward(**{name: np.ones(net.blobs[name].shape, net.dtype)
                        for name in net.outputs})
    return drawn


def _numbers(array: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in np.ravel(array)) + "]"


def describe(array: np.ndarray | None) -> str:
    """All values of a small array, else ``shape …, mean …, min …, max …, norm …``."""
    if array is None:
        return "-"
    array = np.asarray(array, dtype=np.float64)
    if array.size <= SMALL:
        return _numbers(array)
    return (f"mean {array.mean():.6g}, min {array.min():.6g}, max {array.max():.6g}, "
            f"norm {np.sqrt(np.square(array).sum()):.6g}")


def _gradient_blobs(net: Net) -> set[str]:
    """The blobs whose diff the backward pass computed."""
    found = set(net.outputs) if not net.loss_weights else {b.name for b, _ in net.loss_weights}
    for position, lspec in enumerate(net.layer_specs):
        for index, name in enumerate(lspec.bottom):
            if net.bottom_need_backward[position][index]:
                found.add(name)
    return found


def blob_lines(net: Net) -> list[tuple[str, str]]:
    """``(kind + name, text)`` for every blob in the order it is made, then every param."""
    with_grad = _gradient_blobs(net)
    lines, seen = [], set()
    for lspec in net.layer_specs:
        for name in lspec.top:
            if name in seen:
                continue
            seen.add(name)
            blob = net.blobs[name]
            grad = blob.diff if name in with_grad else None
            lines.append((f"blob {name}", f"shape {format_shape(blob.shape)}  value "
                          f"{describe(blob.data)}  grad {describe(grad)}"))
    for layer, blobs in net.params.items():
        for index, blob in enumerate(blobs):
            lines.append((f"param {layer}/{index}", f"shape {format_shape(blob.shape)}  value "
                          f"{describe(blob.data)}  grad {describe(blob.diff)}"))
    return lines


def values_text(net: Net, drawn: list[str]) -> str:
    """The plain-text listing: layers with their bottoms and tops, then one line per blob
    and per parameter (``blob q: shape (1) value [3] grad [-4]``)."""
    start = ("backward from the loss" if net.loss_weights
             else "no loss: every output's gradient is 1")
    lines = [f"# {net.name} ({net.phase}): one forward and one backward; {start}"]
    if drawn:
        lines.append(f"# inputs drawn from a standard normal (seed 0): {', '.join(drawn)}")
    for lspec in net.layer_specs:
        lines.append(f"layer {lspec.name} ({lspec.type}): {', '.join(lspec.bottom) or '-'} -> "
                     f"{', '.join(lspec.top) or '-'}")
    lines += [f"{name}: {text}" for name, text in blob_lines(net)]
    return "\n".join(lines) + "\n"


def values_dot(net: Net) -> str:
    """The layer graph with each edge labelled by its blob's values and gradient, and each
    layer box listing its parameters' values and gradients."""
    texts = dict(blob_lines(net))
    lines = [f"digraph {_quote(f'{net.name} ({net.phase}) values')} {{",
             "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor="#dbe8f5", '
             'fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for layer, lspec in zip(net.layers, net.layer_specs):
        label = [f"{layer.name}", lspec.type]
        for index, _ in enumerate(net.params.get(layer.name, [])):
            label.append(f"{layer.name}/{index}: {texts[f'param {layer.name}/{index}']}")
        lines.append(f"  {_quote(layer.name)} [label={_quote(chr(10).join(label))}];")
    for name in net.outputs:
        lines.append(f"  {_quote('output:' + name)} [label={_quote(name)}, shape=ellipse, "
                     f"style=solid];")
    for edge in net_edges(net):
        text = texts[f"blob {edge.blob}"].replace("  value ", "\nvalue ").replace(
            "  grad ", "\ngrad ")
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} "
                     f"[label={_quote(edge.blob + chr(10) + text)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
