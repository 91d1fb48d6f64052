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
    return NetSummary(net.name, net.phase, rows, total, learnable, list(net.input_blobs),
                      list(net.outputs))


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
    lines.append(f"  outputs: {', '.join(summary.outputs) or 'none'}")
    return "\n".join(lines)


def phases_to_check(spec, test_interval: int | None = None) -> list[str]:
    """The phases a run builds: TRAIN always; TEST when the solver tests (``test_interval > 0``)
    or, with no solver, when some layer's include/exclude rule names a phase."""
    if test_interval is not None:
        return ["TRAIN", "TEST"] if test_interval > 0 else ["TRAIN"]
    phase_rules = any(rule.phase is not None for layer in spec.layers
                      for rule in [*layer.include, *layer.exclude])
    return ["TRAIN", "TEST"] if phase_rules else ["TRAIN"]
