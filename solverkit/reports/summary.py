"""What ``solverkit check`` shows: one row per layer of a built net, and parameter counts.

A row is the layer's name and type, its bottoms and tops, the shapes of its tops (as the
net inferred them when it was built) and the number of values in its parameters. A
parameter shared with an earlier layer (``param: [{name: w}]``) is counted once in the
total and marked ``*`` on the layers that borrow it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..net import Net


@dataclass
class LayerRow:
    """One line of the summary table."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    top_shapes: list[tuple[int, ...]]
    param_count: int           # values in this layer's parameter blobs
    shared: bool               # some of them belong to an earlier layer


@dataclass
class NetSummary:
    """A built net in rows, and its totals."""

    name: str
    phase: str
    rows: list[LayerRow]
    param_count: int           # unique parameter values (shared blobs once)
    learnable_count: int       # of those, the ones the solver updates (lr_mult != 0)
    inputs: list[str]
    outputs: list[str]
    sources: list[str]         # one line per data layer: its source, samples, batches


def format_shape(shape) -> str:
    """``64x1x8x8``; a 0-d blob (a loss) reads ``scalar``."""
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def summarize_net(net: Net) -> NetSummary:
    """The rows and totals of ``net`` (already built, so its shapes are known)."""
    rows = []
    seen: set[int] = set()
    total = 0
    for layer, lspec, top in zip(net.layers, net.layer_specs, net.tops):
        count = 0
        shared = False
        for blob in layer.blobs:
            count += blob.count
            if id(blob) in seen:
                shared = True
            else:
                seen.add(id(blob))
                total += blob.count
        rows.append(LayerRow(layer.name, lspec.type, list(lspec.bottom), list(lspec.top),
                             [blob.shape for blob in top], count, shared))
    learnable = sum(p.blob.count for p in net.learnable_params if p.lr_mult != 0)
    sources = []
    for layer in net.layers:
        samples = getattr(layer, "num_samples", None)      # data layers read a source
        if samples is not None:
            source = getattr(layer.params, "source", None)
            named = source if isinstance(source, str) else "arrays"
            fmt = getattr(getattr(layer, "dataset", None), "source_format", "")
            sources.append(f"'{layer.name}' reads {named}: {samples:,} samples, "
                           f"{layer.batches_per_epoch:,} batches per epoch"
                           + (f" ({fmt} format)" if fmt else ""))
    return NetSummary(net.name, net.phase, rows, total, learnable, list(net.input_blobs),
                      list(net.outputs), sources)


def format_table(header: list[str], rows: list[list[str]], right: set[int] = frozenset(),
                 indent: str = "  ") -> str:
    """Columns padded to their widest cell; ``right`` holds the indices of numeric columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def format_net_summary(summary: NetSummary) -> str:
    """The table ``solverkit check`` prints for one phase, with the totals under it."""
    header = ["layer", "type", "bottoms -> tops", "top shapes", "params"]
    rows = []
    for row in summary.rows:
        flow = f"{', '.join(row.bottoms)} -> {', '.join(row.tops)}".strip()
        shapes = ", ".join(format_shape(s) for s in row.top_shapes)
        params = f"{row.param_count:,}{'*' if row.shared else ''}" if row.param_count else "-"
        rows.append([row.name, row.type, flow, shapes, params])
    lines = [f"{summary.phase} net '{summary.name}': {len(summary.rows)} layers",
             format_table(header, rows, right={4})]
    if any(row.shared for row in summary.rows):
        lines.append("  * parameters shared with an earlier layer (counted once in the total)")
    frozen = summary.param_count - summary.learnable_count
    lines.append(f"  total parameters: {summary.param_count:,}"
                 + (f" ({frozen:,} not updated: lr_mult 0 or fixed)" if frozen else ""))
    if summary.inputs:
        lines.append(f"  inputs: {', '.join(summary.inputs)}")
    lines += [f"  data {line}" for line in summary.sources]
    lines.append(f"  outputs: {', '.join(summary.outputs) or 'none'}")
    return "\n".join(lines)


def phases_to_check(spec) -> list[str]:
    """The phases worth building for a net without a solver: TRAIN, and TEST when some
    layer's include/exclude rule names a phase (otherwise TEST has the same layers)."""
    phase_rules = any(rule.phase is not None for layer in spec.layers
                      for rule in [*layer.include, *layer.exclude])
    return ["TRAIN", "TEST"] if phase_rules else ["TRAIN"]


def rate_checkpoints(spec) -> list[int]:
    """Iterations worth showing the learning rate at: the start, the end of warm-up, both
    sides of each step (the first four for ``step``), the quarters of the run and its last
    update (``max_iter - 1``)."""
    last = max(spec.max_iter - 1, 0)
    points = {0, last, *(spec.max_iter * q // 4 for q in (1, 2, 3))}
    if spec.warmup_iter:
        points |= {spec.warmup_iter - 1, spec.warmup_iter}
    if spec.lr_policy == "sigmoid":
        points |= {spec.stepsize - 1, spec.stepsize}
    if spec.lr_policy == "step":            # around the first few steps
        steps = range(spec.stepsize, min(spec.max_iter, 4 * spec.stepsize) + 1, spec.stepsize)
        points |= {v for s in steps for v in (s - 1, s)}
    if spec.lr_policy == "multistep":
        points |= {v for s in spec.stepvalue for v in (s - 1, s)}
    return sorted(p for p in points if 0 <= p <= last)


def format_solver_summary(spec, rate, overridden=(), test_iter: int | None = None,
                          snapshot_prefix: str | None = None) -> str:
    """The solver's settings, each marked as given in the file, by ``--set`` or a default,
    and ``rate(it)`` at ``rate_checkpoints``. Fields the type and policy do not use are left
    out (the spec holds None for them)."""
    rows = []
    for name, value, given in spec.given_fields():
        if name == "snapshot_prefix" and value is None and snapshot_prefix is not None:
            value, origin = snapshot_prefix, "default: the solver file without extension"
        elif name == "test_iter" and value is None:
            if spec.test_interval == 0:
                continue
            value, origin = test_iter, "default: one pass over the TEST data"
        elif value is None:
            continue
        else:
            origin = "--set" if name in overridden else "file" if given else "default"
        rows.append([name, str(value), origin])
    checkpoints = rate_checkpoints(spec)
    rate_rows = [[f"{it:,}", f"{rate(it):.6g}"] for it in checkpoints]
    title = f"solver{f' {spec.file}' if spec.file else ''}: type {spec.type}"
    lines = [f"{title}, lr_policy {spec.lr_policy}",
             format_table(["field", "value", "from"], rows),
             "learning rate (before each parameter's lr_mult):",
             format_table(["iteration", "rate"], rate_rows, right={0, 1})]
    return "\n".join(lines)
