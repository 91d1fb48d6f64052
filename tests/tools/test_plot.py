"""`solverkit plot`: panels for train outputs, each test output and the rate; logs overlay."""

import subprocess
import sys

import numpy as np
import pytest

from solverkit.cli import main
from solverkit.reports.plot import plot_logs, read_log, trailing_mean

pytest.importorskip("matplotlib")


def write_log(path, iterations=120, test_every=40, base_lr=0.01):
    lines = ["iter,phase,name,value,lr,seconds"]
    for it in range(iterations):
        lr = base_lr * (1 + 1e-3 * it) ** -0.75
        lines.append(f"{it},TRAIN,loss,{2.0 * np.exp(-it / 50) + 0.05 * (it % 3):.6f},{lr},0.1")
        if it % test_every == 0:
            lines.append(f"{it},TEST,accuracy,{it / iterations:.4f},{lr},0.1")
            lines.append(f"{it},TEST,loss,{2.0 * np.exp(-it / 60):.4f},{lr},0.1")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_log_groups_rows(tmp_path):
    log = read_log(write_log(tmp_path / "run_log.csv"))
    assert set(log.train) == {"loss"} and set(log.test) == {"accuracy", "loss"}
    assert list(log.test["accuracy"].iters) == [0, 40, 80]
    assert len(log.lr.iters) == 120 and log.lr.values[0] == 0.01


def test_trailing_mean_averages_the_last_window_values():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert np.allclose(trailing_mean(values, 2), [1.0, 1.5, 2.5, 3.5, 4.5])
    assert np.allclose(trailing_mean(values, 1), values)


def test_two_logs_overlay_in_four_panels(tmp_path):
    logs = [read_log(write_log(tmp_path / "sgd_log.csv")),
            read_log(write_log(tmp_path / "adam_log.csv", base_lr=0.001))]
    figure = plot_logs(logs, smooth=10)
    train, accuracy, test_loss, lr = figure.axes            # train, one per test output, lr
    assert len(train.get_lines()) == 2 * 2                  # raw and smoothed, per log
    smoothed = train.get_lines()[1].get_ydata()
    raw = logs[0].train["loss"].values
    assert np.isclose(smoothed[50], raw[41:51].mean())
    assert len(accuracy.get_lines()) == len(test_loss.get_lines()) == len(lr.get_lines()) == 2
    assert accuracy.get_title() == "test: accuracy"
    labels = [line.get_label() for line in lr.get_lines()]
    assert labels == ["sgd_log.csv", "adam_log.csv"]
    assert lr.get_yscale() == "log"                         # the rates span 10x


def test_plot_command_writes_a_png(tmp_path, capsys):
    out = tmp_path / "curves.png"
    log = write_log(tmp_path / "run_log.csv")
    assert main(["plot", str(log), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
    from matplotlib.image import imread
    height, width = imread(out).shape[:2]
    assert width == 800 and height == 4 * 260               # 8 in wide, 2.6 in per panel


def test_a_row_still_being_written_is_ignored(tmp_path):
    path = write_log(tmp_path / "live_log.csv", iterations=10)
    with path.open("a") as handle:
        handle.write("10,TRAIN,lo")                       # the solver is mid-write
    log = read_log(path)
    assert list(log.train["loss"].iters) == list(range(10))


def test_without_matplotlib_the_message_names_the_extra(tmp_path, monkeypatch, capsys):
    log = write_log(tmp_path / "run_log.csv", iterations=5)
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)          # import fails
    assert main(["plot", str(log), "-o", str(tmp_path / "c.png")]) == 2
    assert "pip install 'solverkit[plot]'" in capsys.readouterr().err


def test_matplotlib_is_imported_only_when_plotting():
    code = ("import sys, solverkit.cli, solverkit.reports.plot; "
            "solverkit.cli.build_parser(); print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_best_and_early_stop_points_are_marked_on_the_test_curves(tmp_path):
    path = write_log(tmp_path / "run_log.csv")
    with open(path, "a") as handle:
        handle.write("0,EVENT,best/accuracy,0.0,0.01,0.1\n40,EVENT,best/accuracy,0.3333,0.01,0.1\n"
                     "80,EVENT,early_stop/loss,0.5,0.01,0.1\n")
    log = read_log(path)
    assert list(log.events["best/accuracy"].iters) == [0, 40]
    figure = plot_logs([log])
    _, accuracy, test_loss, _ = figure.axes
    best = [line for line in accuracy.get_lines() if line.get_marker() == "*"]
    assert len(best) == 1 and list(best[0].get_xdata()) == [40]
    assert list(best[0].get_ydata()) == [0.3333]
    stop = [line for line in test_loss.get_lines() if line.get_marker() == "X"]
    assert len(stop) == 1 and list(stop[0].get_xdata()) == [80]
    # the early stop is a vertical line on every panel
    for ax in figure.axes:
        assert any(list(line.get_xdata()) == [80, 80] for line in ax.get_lines())
