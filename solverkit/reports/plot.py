"""Training curves from the CSV logs a run writes (columns iter,phase,name,value,lr,seconds).

One figure, panels stacked over a shared iteration axis: every TRAIN output (the raw
per-iteration value, faint, and its trailing moving average), then one panel per TEST
output, then the learning rate. ``EVENT`` rows mark points on the test curves: the best
value (``best/<output>``, a star) and the test that stopped training early
(``early_stop/<output>``, a cross, and a dotted line across every panel). Several logs
overlay, one colour per file, labelled by file name, which is how runs with different
optimizers are compared. matplotlib (the ``plot`` extra) is imported only here, and
drawn without pyplot (no global state, no GUI).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, SolverkitError
from ..files import LIMITS, read_text

LOG_HEADER = ["iter", "phase", "name", "value", "lr", "seconds"]


@dataclass
class Series:
    """One output of one phase: iterations and values in file order."""

    iters: np.ndarray
    values: np.ndarray


@dataclass
class TrainingLog:
    """The rows of one CSV log, grouped by (phase, name), and the rate by iteration."""

    path: Path
    train: dict[str, Series] = field(default_factory=dict)
    test: dict[str, Series] = field(default_factory=dict)
    lr: Series = field(default_factory=lambda: Series(np.zeros(0), np.zeros(0)))
    events: dict[str, Series] = field(default_factory=dict)   # best/<output>, early_stop/…


def read_log(path) -> TrainingLog:
    """Parse a solverkit CSV log; a missing file or malformed row is a DataError naming it."""
    path = Path(path)
    rows: dict[tuple[str, str], tuple[list, list]] = {}
    rates: dict[int, float] = {}
    text = read_text(path, what="log file", limit=LIMITS["log"], error=DataError)
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()         # a row still being written by a running solver
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != LOG_HEADER:
        raise DataError(f"not a solverkit training log: the header must be "
                        f"'{','.join(LOG_HEADER)}', got '{','.join(header or [])}'",
                        file=str(path), line=1)
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            iteration, phase, name, value, lr = (int(row[0]), row[1], row[2],
                                                 float(row[3]), float(row[4]))
        except (ValueError, IndexError):
            raise DataError(f"malformed row {','.join(row)!r}: expected "
                            f"{','.join(LOG_HEADER)}", file=str(path),
                            line=line) from None
        if phase not in ("TRAIN", "TEST", "EVENT"):
            raise DataError(f"phase must be TRAIN, TEST or EVENT, got {phase!r}",
                            file=str(path), line=line)
        iters, values = rows.setdefault((phase, name), ([], []))
        iters.append(iteration)
        values.append(value)
        if phase == "TRAIN":
            rates[iteration] = lr
    if not rows:
        raise DataError("the log has no rows yet", file=str(path))
    log = TrainingLog(path)
    for (phase, name), (iters, values) in rows.items():
        series = Series(np.asarray(iters), np.asarray(values, dtype=np.float64))
        {"TRAIN": log.train, "TEST": log.test, "EVENT": log.events}[phase][name] = series
    if rates:
        order = sorted(rates)
        log.lr = Series(np.asarray(order), np.asarray([rates[i] for i in order]))
    return log


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of the last ``window`` values (fewer at the start), as ``average_loss``."""
    window = max(int(window), 1)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _labels(logs: list[TrainingLog]) -> list[str]:
    """File names, or the paths where two logs share a name."""
    names = [log.path.name for log in logs]
    return [str(log.path) if names.count(log.path.name) > 1 else name
            for log, name in zip(logs, names)]


def _matplotlib_figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SolverkitError("plotting needs matplotlib, the 'plot' extra: "
                             "pip install 'solverkit[plot]'") from None
    return Figure, FigureCanvasAgg


def plot_logs(logs: list[TrainingLog], smooth: int | None = None):
    """A matplotlib Figure of ``logs``: train outputs, each test output, learning rate.

    ``smooth`` is the moving-average window of the train curves (default: 2% of the
    longest run, at least 1). Returns the Figure; ``save_figure`` writes it.
    """
    Figure, FigureCanvasAgg = _matplotlib_figure()
    test_names = list(dict.fromkeys(name for log in logs for name in log.test))
    panels = 2 + len(test_names)
    figure = Figure(figsize=(8, 2.6 * panels), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    train_ax, test_axes, lr_ax = axes[0], dict(zip(test_names, axes[1:-1])), axes[-1]
    longest = max((len(s.iters) for log in logs for s in log.train.values()), default=1)
    window = smooth if smooth is not None else max(1, longest // 50)
    colors = [f"C{i % 10}" for i in range(len(logs))]
    for log, label, color in zip(logs, _labels(logs), colors):
        for style, (name, series) in zip(["-", "--", ":", "-."] * 8, log.train.items()):
            train_ax.plot(series.iters, series.values, color=color, alpha=0.25, linewidth=0.8,
                          linestyle=style, label=f"{label}: {name} (raw)")
            train_ax.plot(series.iters, trailing_mean(series.values, window), color=color,
                          linestyle=style, label=f"{label}: {name} (mean of {window})")
        for name, series in log.test.items():
            test_axes[name].plot(series.iters, series.values, color=color, marker="o",
                                 markersize=3, label=label)
        for event, series in log.events.items():
            kind, _, name = event.partition("/")
            if name not in test_axes or not len(series.iters):
                continue
            if kind == "best":      # the last best is the best of the run
                test_axes[name].plot(series.iters[-1:], series.values[-1:], color=color,
                                     marker="*", markersize=14, linestyle="none",
                                     label=f"{label}: best {series.values[-1]:.4g} "
                                           f"at {series.iters[-1]}")
            elif kind == "early_stop":
                test_axes[name].plot(series.iters[-1:], series.values[-1:], color=color,
                                     marker="X", markersize=10, linestyle="none",
                                     label=f"{label}: early stop at {series.iters[-1]}")
                for ax in axes:
                    ax.axvline(series.iters[-1], color=color, linestyle=":", linewidth=1)
        if len(log.lr.iters):
            lr_ax.plot(log.lr.iters, log.lr.values, color=color, label=label)
    train_ax.set_title("train outputs")
    for name, ax in test_axes.items():
        ax.set_title(f"test: {name}")
    lr_ax.set_title("learning rate")
    rates = np.concatenate([log.lr.values for log in logs])
    if len(rates) and rates.min() > 0 and rates.max() / rates.min() > 10:
        lr_ax.set_yscale("log")
    lr_ax.set_xlabel("iteration")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    return figure


def save_figure(figure, path) -> Path:
    """Write ``figure`` in the format of the suffix (.png, .svg, .pdf)."""
    path = Path(path)
    suffix = path.suffix.lower()
    formats = (".png", ".svg", ".pdf")
    if suffix not in formats:
        raise SolverkitError(f"cannot write a plot as '{path.suffix}'; use one of "
                             f"{', '.join(formats)}", file=str(path), field="-o")
    if not path.parent.exists():
        raise SolverkitError("the output folder does not exist", file=str(path.parent),
                             field="-o")
    figure.savefig(path, dpi=100)
    return path
