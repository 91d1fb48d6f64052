"""The answer of a sweep: one row per setting from its trials' CSV logs, best first.

For each trial, from the TEST rows of its log for the metric: ``final`` (the last test),
``best`` (the highest under ``mode max``, the lowest under ``min``) and the iteration of
the best; ``seconds`` is the training time of the log's last row. Each setting's row
holds the mean and the standard deviation over its seeds (the sample deviation, ``ddof=1``;
0 for one seed). Rows are sorted by the mean final value, best first; a setting with a
diverged or failed trial comes last and says so.

**Does the best beat the second?** Yes when the two mean final values differ by more than
the sum of their standard deviations (the seed spreads do not overlap), else it is "within
the seed spread". With one seed there is no spread, and the line says so.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import SolverkitError
from ..files import LIMITS, read_text


@dataclass
class TrialResult:
    name: str
    status: str             # done, diverged, failed, running (not finished)
    final: float | None
    best: float | None
    best_iter: int | None
    seconds: float | None


@dataclass
class SettingRow:
    setting: str
    status: str
    seeds: int
    final_mean: float | None
    final_std: float | None
    best_mean: float | None
    best_std: float | None
    best_iter: float | None
    seconds: float | None


def read_log(path) -> list[dict]:
    """The rows of a CSV log (``iter, phase, name, value, lr, seconds``), typed."""
    if not Path(path).exists():
        return []
    text = read_text(path, what="CSV log", limit=LIMITS["list"])
    try:
        return [{"iter": int(row["iter"]), "phase": row["phase"], "name": row["name"],
                 "value": float(row["value"]), "seconds": float(row["seconds"] or 0)}
                for row in csv.DictReader(io.StringIO(text, newline=""))]
    except (KeyError, ValueError, TypeError) as err:
        raise SolverkitError(f"not a solverkit CSV log: {err}", file=str(path)) from None


def test_curve(rows: list[dict], metric: str) -> list[tuple[int, float]]:
    return [(row["iter"], row["value"]) for row in rows
            if row["phase"] == "TEST" and row["name"] == metric]


def trial_result(trial, metric: str, mode: str) -> TrialResult:
    status = trial.status()
    state = status["status"] if status else "unfinished"
    rows = read_log(trial.log_path)
    curve = test_curve(rows, metric)
    seconds = rows[-1]["seconds"] if rows else None
    if state != "done" or not curve:
        return TrialResult(trial.name, state if curve or state != "done" else "no tests",
                           None, None, None, seconds)
    values = np.array([v for _, v in curve])
    index = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
    return TrialResult(trial.name, state, float(values[-1]), float(values[index]),
                       curve[index][0], seconds)


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.array(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarize(sweep, trials_by_setting: list[tuple[str, list]], mode: str) -> list[SettingRow]:
    """One row per setting (``[(label, [trial, ...]), ...]``), sorted best first."""
    rows = []
    for label, trials in trials_by_setting:
        results = [trial_result(t, sweep.metric, mode) for t in trials]
        done = [r for r in results if r.status == "done"]
        bad = [r for r in results if r.status != "done"]
        status = "ok" if not bad else ", ".join(
            f"{sum(r.status == s for r in bad)} {s}"
            for s in dict.fromkeys(r.status for r in bad))
        if done:
            fm, fs = _mean_std([r.final for r in done])
            bm, bs = _mean_std([r.best for r in done])
            it = float(np.mean([r.best_iter for r in done]))
            secs = float(np.mean([r.seconds for r in done]))
        else:
            fm = fs = bm = bs = it = secs = None
        rows.append(SettingRow(label, status, len(trials), fm, fs, bm, bs, it, secs))
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda r: (r.status != "ok", r.final_mean is None,
                             sign * r.final_mean if r.final_mean is not None
                             and math.isfinite(r.final_mean) else math.inf))
    return rows


def verdict(rows: list[SettingRow], metric: str) -> str:
    """Whether the best setting beats the second beyond the seed spread (see the module)."""
    ok = [r for r in rows if r.status == "ok"]
    if len(ok) < 2:
        return "fewer than two settings finished: nothing to compare"
    first, second = ok[0], ok[1]
    gap = abs(first.final_mean - second.final_mean)
    spread = first.final_std + second.final_std
    head = (f"best: {first.setting} (final {metric} {first.final_mean:.4g} ± "
            f"{first.final_std:.2g}) vs second: {second.setting} ({second.final_mean:.4g} ± "
            f"{second.final_std:.2g})")
    if first.seeds < 2 or second.seeds < 2:
        return f"{head}: one seed each, so no spread to judge by (use --seeds 3 or more)"
    if gap > spread:
        return (f"{head}: beats it beyond the seed spread (difference {gap:.3g} > "
                f"{spread:.3g}, the sum of the stds)")
    return (f"{head}: within the seed spread (difference {gap:.3g} <= {spread:.3g}, the sum "
            f"of the stds), not a clear win")


def _pm(mean, std, digits=4) -> str:
    return "-" if mean is None else f"{mean:.{digits}g} ± {std:.2g}"


def format_rows(rows: list[SettingRow], metric: str, mode: str, fmt: str) -> str:
    """The table as ``table`` (aligned text), ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps({"metric": metric, "mode": mode, "verdict": verdict(rows, metric),
                           "settings": [asdict(r) for r in rows]}, indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(list(SettingRow.__dataclass_fields__))
        for r in rows:
            writer.writerow(["" if v is None else v for v in asdict(r).values()])
        return out.getvalue()
    header = ["setting", "seeds", f"final {metric}", f"best {metric}", "best at iter",
              "train s", "status"]
    body = [[r.setting, str(r.seeds), _pm(r.final_mean, r.final_std),
             _pm(r.best_mean, r.best_std),
             "-" if r.best_iter is None else f"{r.best_iter:.0f}",
             "-" if r.seconds is None else f"{r.seconds:.1f}", r.status] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n({mode} {metric}, best first)\n{verdict(rows, metric)}\n"


def plot(sweep, trials_by_setting, rows: list[SettingRow], path) -> None:
    """Learning curves per setting (TRAIN loss and the TEST metric: the mean over seeds with
    a min–max band) and the final metric per setting (mean, error bar = std)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SolverkitError("--plot needs matplotlib: pip install 'solverkit[plot]'",
                             field="--plot") from None
    figure, (train_ax, test_ax, bar_ax) = plt.subplots(1, 3, figsize=(16, 4.8))
    for label, trials in trials_by_setting:
        logs = [read_log(t.log_path) for t in trials]
        for ax, phase, name in ((train_ax, "TRAIN", _loss_name(logs)),
                                (test_ax, "TEST", sweep.metric)):
            curves = [{r["iter"]: r["value"] for r in log
                       if r["phase"] == phase and r["name"] == name} for log in logs]
            curves = [c for c in curves if c]
            if not curves:
                continue
            iters = sorted(set.intersection(*(set(c) for c in curves)))
            values = np.array([[c[i] for i in iters] for c in curves])
            line, = ax.plot(iters, values.mean(axis=0), label=label)
            ax.fill_between(iters, values.min(axis=0), values.max(axis=0), alpha=0.2,
                            color=line.get_color())
    train_ax.set(title="TRAIN loss (mean, min–max over seeds)", xlabel="iteration")
    if all(y > 0 for line in train_ax.get_lines() for y in line.get_ydata()):
        train_ax.set_yscale("log")       # a few spikes would flatten every other curve
    test_ax.set(title=f"TEST {sweep.metric}", xlabel="iteration")
    test_ax.legend(fontsize=7)
    done = [r for r in rows if r.final_mean is not None]
    bar_ax.errorbar([r.final_mean for r in done], range(len(done)),
                    xerr=[r.final_std for r in done], fmt="o", capsize=3)
    bar_ax.set_yticks(range(len(done)), [r.setting for r in done], fontsize=7)
    bar_ax.invert_yaxis()
    bar_ax.set(title=f"final {sweep.metric} per setting (± std)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _loss_name(logs) -> str:
    names = [r["name"] for log in logs for r in log if r["phase"] == "TRAIN"]
    return next((n for n in names if "loss" in n.lower()), names[0] if names else "loss")
