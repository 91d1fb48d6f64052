"""Per-layer forward and backward times of a net, as ``caffe time`` measures them.

Each layer's ``forward`` and ``backward`` are wrapped with a clock for the run (the net's
own ``forward()``/``backward()`` drive them, so fan-out sums and in-place work happen as
in training); after ``warmup`` unrecorded iterations, the mean over ``iterations`` passes
is reported. The gap between the measured whole pass and the sum of the layers is the
net's own bookkeeping (fan-out diff sums, input copies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..net import Net
from .summary import format_table


@dataclass
class LayerTiming:
    """Mean milliseconds of one layer per pass."""

    index: int          # position in the net
    name: str
    type: str
    forward_ms: float
    backward_ms: float

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms


@dataclass
class TimingReport:
    """Per-layer means, and the measured means of whole forward and backward passes."""

    net: str
    phase: str
    iterations: int
    warmup: int
    layers: list[LayerTiming]
    forward_ms: float           # wall time of net.forward(), mean
    backward_ms: float          # wall time of net.backward(), mean

    @property
    def layer_total_ms(self) -> float:
        return sum(t.total_ms for t in self.layers)

    def sorted(self) -> list[LayerTiming]:
        """Slowest layer first."""
        return sorted(self.layers, key=lambda t: (-t.total_ms, t.index))


def random_inputs(net: Net, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An array for every Input blob, in its declared shape.

    A blob a layer reads as class labels (a bottom that gets no gradient, of a layer that
    knows its ``classes``: SoftmaxWithLoss, Accuracy) gets integers in ``[0, classes)``;
    indices into an ``Embed`` table integers in ``[0, input_dim)``; another bottom that gets
    no gradient zeros (a valid label for any classifier); everything else standard normal.
    """
    readers: dict[str, tuple] = {}
    for layer, lspec in zip(net.layers, net.layer_specs):
        for b_index, name in enumerate(lspec.bottom):
            readers.setdefault(name, (layer, b_index))
    inputs = {}
    for name, blob in net.input_blobs.items():
        shape = blob.shape
        reader = readers.get(name)
        if reader is None:
            inputs[name] = rng.standard_normal(shape)
            continue
        layer, b_index = reader
        classes = getattr(layer, "classes", None)
        input_dim = getattr(layer.params, "input_dim", None)
        if b_index > 0 and not layer.allow_backward_to(b_index) and isinstance(classes, int):
            inputs[name] = rng.integers(0, classes, size=shape)
        elif b_index == 0 and isinstance(input_dim, int) and input_dim > 0:
            inputs[name] = rng.integers(0, input_dim, size=shape)
        elif not layer.allow_backward_to(b_index):
            inputs[name] = np.zeros(shape)
        else:
            inputs[name] = rng.standard_normal(shape)
    return inputs


def _clocked(method, totals: np.ndarray, index: int, recording: list[bool]):
    def timed(*args):
        start = time.perf_counter()
        result = method(*args)
        if recording[0]:
            totals[index] += time.perf_counter() - start
        return result
    return timed


# entry points by which a net runs a layer's forward together with the next layer's (a
# fused in-place ReLU): their time counts as the first layer's forward
PAIRED_FORWARDS = ("forward_with_relu",)


def time_net(net: Net, iterations: int = 50, warmup: int = 5, seed: int = 0) -> TimingReport:
    """Time ``iterations`` forward+backward passes of ``net`` after ``warmup`` passes.

    Input blobs are filled with ``random_inputs`` once; Data layers read their batches as
    in training. The backward pass starts from the loss tops; a net without losses seeds
    each output's diff with ones, so every layer that can run backward does.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    inputs = random_inputs(net, np.random.default_rng(seed))
    count = len(net.layers)
    forward_s, backward_s = np.zeros(count), np.zeros(count)
    recording = [False]
    wrapped = []
    for i, layer in enumerate(net.layers):
        names = ["forward", "backward", *(name for name in PAIRED_FORWARDS
                                          if hasattr(layer, name))]
        for name in names:
            totals = backward_s if name == "backward" else forward_s
            setattr(layer, name, _clocked(getattr(layer, name), totals, i, recording))
        wrapped.append((layer, names))
    try:
        net.forward(**inputs)
        seeds = {} if net.loss_weights else {
            name: np.ones(net.blobs[name].shape) for name in net.outputs}
        pass_forward = pass_backward = 0.0
        for it in range(warmup + iterations):
            recording[0] = it >= warmup
            net.clear_param_diffs()
            start = time.perf_counter()
            net.forward()
            middle = time.perf_counter()
            net.backward(**seeds)
            end = time.perf_counter()
            if recording[0]:
                pass_forward += middle - start
                pass_backward += end - middle
    finally:
        for layer, names in wrapped:
            for name in names:
                delattr(layer, name)
    scale = 1000.0 / iterations
    rows = [LayerTiming(i, layer.name, lspec.type, forward_s[i] * scale, backward_s[i] * scale)
            for i, (layer, lspec) in enumerate(zip(net.layers, net.layer_specs))]
    return TimingReport(net.name, net.phase, iterations, warmup, rows,
                        pass_forward * scale, pass_backward * scale)


def format_timing(report: TimingReport) -> str:
    """The table ``solverkit time`` prints: slowest layer first, share of the layer total."""
    total = report.layer_total_ms
    header = ["#", "layer", "type", "forward ms", "backward ms", "total ms", "share"]
    rows = [[str(t.index), t.name, t.type, f"{t.forward_ms:.3f}", f"{t.backward_ms:.3f}",
             f"{t.total_ms:.3f}", f"{100 * t.total_ms / total:.1f}%" if total > 0 else "-"]
            for t in report.sorted()]
    forward = sum(t.forward_ms for t in report.layers)
    backward = sum(t.backward_ms for t in report.layers)
    rows.append(["", "total", "", f"{forward:.3f}", f"{backward:.3f}", f"{total:.3f}",
                 "100.0%" if total > 0 else "-"])
    return "\n".join([
        (f"net '{report.net}' ({report.phase}): mean of {report.iterations} iterations after "
         f"{report.warmup} warm-up"),
        format_table(header, rows, right={0, 3, 4, 5, 6}),
        (f"  measured passes: forward {report.forward_ms:.3f} ms, backward "
         f"{report.backward_ms:.3f} ms, forward-backward "
         f"{report.forward_ms + report.backward_ms:.3f} ms")])
