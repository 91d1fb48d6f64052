"""Training control: best and last-N snapshots, early stopping, the plateau policy, several
test nets by stage, SIGHUP, debug_info, callbacks and TensorBoard event files."""

import math
import os
import signal
import sys

import numpy as np
import pytest
import yaml
from control_data import BATCH, log_rows, series_of, write_run

import solverkit as sk
from solverkit.errors import ConfigError
from solverkit.runs import RunFiles
from solverkit.snapshot import read_npz


def _env() -> dict:
    """The environment of a CLI run that finds the test's plugin layer."""
    here = os.path.dirname(__file__)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [here, *filter(None, [os.environ.get("PYTHONPATH")])])}


def _model(path) -> dict:
    arrays, _ = read_npz(path, "model")
    return arrays


def _same_models(a, b):
    one, two = _model(a), _model(b)
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def _test_accuracy(net_path, model, stage="val", batches=10) -> float:
    """The TEST accuracy of ``model``, computed as the solver averages it."""
    net = sk.Net(net_path, phase="TEST", stages=(stage,), seed=0)
    net.load(model, allow_extra=True)
    total = sum(net.forward()["accuracy"] for _ in range(batches))
    net.close()
    return total / batches


# ------------------------------------------------------------------ best snapshot
def test_the_best_snapshot_keeps_the_peak_weights_and_resume_tracks_the_same_best(tmp_path):
    net_path, solver_path = write_run(tmp_path, snapshot_best={"output": "accuracy"},
                                      snapshot=8)
    sk.Solver(solver_path, progress=False).solve()
    accuracy = series_of(tmp_path / "run_log.csv", "accuracy")
    best_value = max(v for _, v in accuracy)
    best_iter = next(it for it, v in accuracy if v == best_value)   # the first peak
    assert 0 < best_iter < accuracy[-1][0] and accuracy[-1][1] < best_value   # rose, fell
    assert _test_accuracy(net_path, tmp_path / "run_best.model.npz") == best_value
    _, meta = read_npz(tmp_path / "run_best.solverstate.npz", "solverstate")
    assert meta["iter"] == best_iter
    assert meta["callbacks"]["snapshot_best"] == {"output": "accuracy", "mode": "max",
                                                  "value": best_value, "iter": best_iter}
    events = [r for r in log_rows(tmp_path / "run_log.csv") if r[1] == "EVENT"]
    assert events[-1][:4] == [str(best_iter), "EVENT", "best/accuracy", repr(best_value)]

    # interrupted after the peak, resumed: the same best, the same log
    other = tmp_path / "again"
    other.mkdir()
    _, again = write_run(other, snapshot_best={"output": "accuracy"}, snapshot=8)
    first = sk.Solver(again, progress=False)
    first.step(16)
    first.close()
    (other / "run_best.model.npz").rename(other / "kept_best.model.npz")   # resume must not
    resumed = sk.Solver(again, progress=False)                            # need it
    resumed.restore(other / "run_iter_16.solverstate.npz")
    resumed.solve()
    assert not (other / "run_best.model.npz").exists()    # nothing beat the peak after 16
    _same_models(other / "kept_best.model.npz", tmp_path / "run_best.model.npz")
    assert log_rows(other / "run_log.csv") == log_rows(tmp_path / "run_log.csv")


def test_resuming_from_the_best_state_does_not_repeat_its_test(tmp_path):
    _, solver_path = write_run(tmp_path, snapshot_best={"output": "accuracy"},
                               early_stop={"output": "accuracy", "mode": "max", "patience": 3})
    straight = sk.Solver(solver_path, progress=False)
    straight.solve()
    rows = log_rows(tmp_path / "run_log.csv")
    resumed = sk.Solver(solver_path, progress=False)
    resumed.restore(tmp_path / "run_best.solverstate.npz")
    resumed.solve()
    assert log_rows(tmp_path / "run_log.csv") == rows
    assert resumed.iter == straight.iter and resumed.stop_reason == straight.stop_reason


def test_a_watched_output_the_test_nets_lack_is_a_config_error(tmp_path):
    _, solver_path = write_run(tmp_path, snapshot_best={"output": "acuracy"})
    solver = sk.Solver(solver_path, progress=False)
    with pytest.raises(ConfigError, match=r"snapshot_best.*no output 'acuracy'.*'accuracy'"):
        solver.solve()
    for name, field in (("early_stop", {"early_stop": {"output": "loss"}}),
                        ("plateau", {"lr_policy": "plateau", "plateau": {"output": "loss"}})):
        with pytest.raises(ConfigError, match=f"'{name}': {name} watches test outputs"):
            sk.Solver(write_run(tmp_path, test_interval=0, **field)[1])


@pytest.mark.parametrize("fields, field", [
    ({"snapshot_best": {"output": "acuracy"}}, "snapshot_best.output"),
    ({"early_stop": {"output": "los", "patience": 2}}, "early_stop.output"),
    ({"lr_policy": "plateau", "plateau": {"output": "los"}}, "plateau.output")])
def test_a_misnamed_watched_output_stops_before_the_first_iteration_and_leaves_no_files(
        tmp_path, fields, field):
    import subprocess
    _, solver_path = write_run(tmp_path, test_initialization=False, **fields)
    solver = sk.Solver(solver_path, progress=False)
    with pytest.raises(ConfigError, match=f"field '{field}'.*did you mean"):
        solver.step(1)
    assert solver.iter == 0                     # refused before the first iteration
    solver.close()
    done = subprocess.run([sys.executable, "-m", "solverkit", "--quiet", "train", "--solver",
                           str(solver_path)], capture_output=True, text=True, timeout=120,
                          check=False, env=_env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "solver.yaml" in lines[0] and f"field '{field}'" in lines[0]
    assert "did you mean" in lines[0]
    # a run stopped by a configuration error leaves no run files (the lock is no run file:
    # it stays, as after every run, and the corrected rerun takes it)
    assert not RunFiles(tmp_path / "run").existing()
    assert not (tmp_path / "run_log.csv").exists()


# ------------------------------------------------------------------ retention
def _iterations(folder, kind="solverstate") -> list[int]:
    return sorted(int(p.name.split("_iter_")[1].split(".")[0])
                  for p in folder.glob(f"run_iter_*.{kind}.npz"))


def test_retention_keeps_the_last_n_periodic_and_every_signal_snapshot(tmp_path):
    _, solver_path = write_run(tmp_path, snapshot=4, snapshot_keep=2, max_iter=30,
                               snapshot_best={"output": "accuracy"})
    solver = sk.Solver(solver_path, progress=False)

    class Hangup(sk.Callback):
        def on_step_end(self, it, outputs):
            if it == 5:
                os.kill(os.getpid(), signal.SIGHUP)

    previous = signal.signal(signal.SIGHUP, lambda signum, frame: solver.request_stop(signum))
    try:
        solver.add_callback(Hangup())
        solver.solve()
    finally:
        signal.signal(signal.SIGHUP, previous)
    # 6: the SIGHUP snapshot; 24, 28: the last two periodic ones; 30: the final one
    assert _iterations(tmp_path) == _iterations(tmp_path, "model") == [7, 24, 28, 30]
    assert (tmp_path / "run_best.model.npz").exists()


@pytest.mark.slow
def _wait_for_a_new_row(log, states, process, timeout=120.0):
    """Until the run has logged an iteration past the state it resumed from."""
    import time
    start = states[-1] if states else -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            last = log.read_text().rstrip("\n").rsplit("\n", 1)[-1].split(",")[0]
        except FileNotFoundError:
            last = ""
        if last.isdigit() and int(last) > start:
            return
        time.sleep(0.02)


def test_retention_never_leaves_fewer_than_n_complete_snapshots_when_killed(tmp_path):
    import random
    import subprocess
    import time

    _, solver_path = write_run(tmp_path, snapshot=3, snapshot_keep=2, max_iter=10**7,
                               test_interval=0, display=0)
    rng = random.Random(19)
    newest = 0
    for _round in range(20):
        command = [sys.executable, "-m", "solverkit", "--quiet", "train", "--solver",
                   str(solver_path)]
        if _iterations(tmp_path):
            command += ["--resume", "latest"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=_env())
        # the kill lands at a random instant of training, however long start-up takes
        _wait_for_a_new_row(tmp_path / "run_log.csv", _iterations(tmp_path), process)
        time.sleep(rng.uniform(0.0, 0.6))
        process.kill()
        process.wait()
        states = _iterations(tmp_path)
        if not states:
            continue
        newest = max(newest, states[-1])
        # every remaining state resumes (its model is complete and matches it)
        for it in states:
            solver = sk.Solver(solver_path, progress=False)
            solver.restore(tmp_path / f"run_iter_{it}.solverstate.npz")
            assert solver.iter == it
            solver.close()
        assert len(states) >= min(2, states[-1] // 3), states
        assert len(states) <= 3, states    # the newest two, and one still being replaced
    assert newest >= 6


# ------------------------------------------------------------------ early stop, plateau
def _keras_plateau(values, base_lr, gamma, patience, cooldown, threshold, min_lr):
    """ReduceLROnPlateau (mode min) over the test values: the rate after each test."""
    lr, best, wait, cool, rates = base_lr, math.inf, 0, 0, []
    for value in values:
        if cool > 0:
            cool -= 1
            wait = 0
        if value < best - threshold:
            best, wait = value, 0
        elif cool == 0:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr, cool, wait = max(lr * gamma, min_lr), cooldown, 0
        rates.append(lr)
    return rates


def _keras_early_stop(values, patience, min_delta):
    """EarlyStopping (mode min): the index of the test that stops, or None."""
    best, wait = math.inf, 0
    for i, value in enumerate(values):
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return i
    return None


CONTROL = {"lr_policy": "plateau", "gamma": 0.5, "min_lr": 0.01,
           "plateau": {"output": "test1/loss", "patience": 2, "cooldown": 1,
                       "threshold": 0.01},
           "early_stop": {"output": "loss", "patience": 4, "min_delta": 0.001},
           "test_state": [{"stage": "val"}, {"stage": "train-eval"}], "test_iter": [10, 7],
           "max_iter": 60, "snapshot": 8}


def test_early_stop_and_plateau_follow_the_logged_test_outputs(tmp_path):
    _, solver_path = write_run(tmp_path, **CONTROL)
    solver = sk.Solver(solver_path, progress=False)
    solver.solve()
    rows = log_rows(tmp_path / "run_log.csv")
    tests = sorted({int(r[0]) for r in rows if r[1] == "TEST"})
    watched = [v for _, v in series_of(tmp_path / "run_log.csv", "test1/loss")]
    rates = _keras_plateau(watched, 0.3, 0.5, 2, 1, 0.01, 0.01)
    train_lr = {int(r[0]): float(r[4]) for r in rows if r[1] == "TRAIN"}
    for k, it in enumerate(tests):
        for j in range(it, tests[k + 1] if k + 1 < len(tests) else solver.iter):
            assert train_lr[j] == rates[k], (j, k)
    assert len(set(rates)) >= 3      # the rate dropped at least twice
    stop = _keras_early_stop([v for _, v in series_of(tmp_path / "run_log.csv", "loss")],
                             4, 0.001)
    assert stop is not None and solver.iter == tests[stop] < 60
    assert "early stop: loss has not improved" in solver.stop_reason
    assert (tmp_path / f"run_iter_{solver.iter}.solverstate.npz").exists()   # final snapshot

    # resumed from a periodic snapshot: identical weights and rows
    other = tmp_path / "again"
    other.mkdir()
    _, again = write_run(other, **CONTROL)
    first = sk.Solver(again, progress=False)
    first.step(24)
    first.close()
    resumed = sk.Solver(again, progress=False)
    resumed.restore(other / "run_iter_24.solverstate.npz")
    resumed.solve()
    assert resumed.iter == solver.iter
    assert log_rows(other / "run_log.csv") == rows
    _same_models(other / f"run_iter_{solver.iter}.model.npz",
                 tmp_path / f"run_iter_{solver.iter}.model.npz")


def test_early_stop_from_the_command_line_says_why(tmp_path):
    import subprocess
    _, solver_path = write_run(tmp_path, **CONTROL)
    done = subprocess.run([sys.executable, "-m", "solverkit", "--quiet", "train", "--solver",
                           str(solver_path)], capture_output=True, text=True, timeout=120,
                          check=False, env=_env())
    assert done.returncode == 0, done.stderr
    assert "Stopped early at iteration" in done.stdout and "snapshot written" in done.stdout
    assert "early stop: loss has not improved" in done.stdout


# ------------------------------------------------------------------ test nets, stages
def test_two_test_nets_by_stage_and_one_file_for_train_test_and_deploy(tmp_path):
    import subprocess
    net_path, solver_path = write_run(
        tmp_path, test_state=[{"stage": "val"}, {"stage": "train-eval"}],
        test_iter=[10, 40], max_iter=12)
    results = sk.Solver(solver_path, progress=False).solve()
    assert set(results) == {"loss", "accuracy", "test1/loss", "test1/accuracy"}
    final = tmp_path / "run_iter_12.model.npz"
    # the second test net measured the whole training set
    with np.load(tmp_path / "train.npz") as arrays:
        x, y = arrays["x"], arrays["y"]
    weights = _model(final)
    hidden = np.maximum(x @ weights["ip1/0"].T + weights["ip1/1"], 0)
    scores = hidden @ weights["ip2/0"].T + weights["ip2/1"]
    by_batch = (scores.argmax(axis=1) == y).reshape(-1, BATCH).mean(axis=1)
    assert results["test1/accuracy"] == pytest.approx(by_batch.mean(), abs=1e-12)
    assert results["accuracy"] == _test_accuracy(net_path, final)
    logged = {r[2] for r in log_rows(tmp_path / "run_log.csv") if r[1] == "TEST"}
    assert logged == set(results)
    # solverkit test with --stage reads the same net file
    done = subprocess.run([sys.executable, "-m", "solverkit", "test", "--net", str(net_path),
                           "--weights", str(final), "--stage", "train-eval"],
                          capture_output=True, text=True, timeout=60, check=False, env=_env())
    assert done.returncode == 0, done.stderr
    assert f"accuracy = {results['test1/accuracy']:.6g}" in done.stdout
    # deploy: the Input blob in, probabilities out, no labels needed
    deploy = sk.Net(net_path, phase="TEST", stages=("deploy",), seed=0)
    deploy.load(final, allow_extra=True)
    prob = deploy.forward(data=x[:BATCH])["prob"]
    expected = np.exp(scores[:BATCH] - scores[:BATCH].max(axis=1, keepdims=True))
    np.testing.assert_allclose(prob, expected / expected.sum(axis=1, keepdims=True),
                               rtol=1e-10)
    assert "loss" not in deploy.outputs


def test_train_net_and_test_net_files_with_train_state(tmp_path):
    net_path, _ = write_run(tmp_path)
    spec = yaml.safe_load(net_path.read_text())
    # the training net: by stage, the second (train-eval) data layer as TRAIN input
    spec["layers"][2]["include"] = {"stage": "from-train-eval"}
    spec["layers"][0]["include"] = {"phase": "TRAIN", "not_stage": "from-train-eval"}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(spec))
    solver = sk.Solver({"train_net": str(tmp_path / "both.yaml"), "base_lr": 0.1,
                        "max_iter": 2, "test_net": [str(net_path)], "test_iter": 2,
                        "test_interval": 1, "test_state": [{"stage": "val"}],
                        "snapshot_prefix": str(tmp_path / "tn"), "random_seed": 0},
                       progress=False, stages=["from-train-eval"])
    assert solver.net.stages == ("from-train-eval",)
    assert solver.net._spec_index[0] == 2       # the data layer its stage chose
    assert solver.solve().keys() == {"loss", "accuracy"}
    with pytest.raises(ConfigError, match="train_net and net"):
        sk.Solver({"train_net": str(net_path), "net": str(net_path), "base_lr": 0.1,
                   "max_iter": 1})
    with pytest.raises(ConfigError, match="test_state has 2 entries for 1 test nets"):
        sk.Solver({"net": str(net_path), "test_net": [str(net_path)], "base_lr": 0.1,
                   "max_iter": 1, "test_interval": 1,
                   "test_state": [{"stage": "val"}, {"stage": "val"}]})


# ------------------------------------------------------------------ SIGHUP
@pytest.mark.slow
def test_sighup_writes_a_snapshot_and_training_ends_with_the_same_weights(tmp_path):
    import subprocess
    import time
    _, solver_path = write_run(tmp_path, max_iter=400000, test_interval=0, display=0,
                               snapshot_after_train=True)
    process = subprocess.Popen([sys.executable, "-m", "solverkit", "--quiet", "train",
                                "--solver", str(solver_path), "--set", "max_iter=3000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env())
    deadline = time.time() + 60
    while not (tmp_path / "run_log.csv").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    signal_snapshots = [it for it in _iterations(tmp_path) if it != 3000]
    assert len(signal_snapshots) == 1 and 0 < signal_snapshots[0] < 3000, err
    other = tmp_path / "plain"
    other.mkdir()
    _, plain = write_run(other, max_iter=3000, test_interval=0, display=0)
    sk.Solver(plain, progress=False).solve()
    _same_models(tmp_path / "run_iter_3000.model.npz", other / "run_iter_3000.model.npz")


# ------------------------------------------------------------------ debug_info, TensorBoard
def test_debug_info_rows_and_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    _, solver_path = write_run(tmp_path, max_iter=6, debug_info=True, display=3,
                               log=["csv", "tensorboard"])
    sk.Solver(solver_path, progress=False).solve()
    import csv
    with open(tmp_path / "run_debug.csv", newline="") as handle:
        debug = list(csv.reader(handle))
    assert debug[0] == ["iter", "layer", "blob", "quantity", "value"]
    values = {(int(r[0]), r[1], r[2], r[3]): float(r[4]) for r in debug[1:]}
    for it in range(6):     # plain SGD: the update is lr times the gradient
        for layer in ("ip1", "ip2"):
            for j in (0, 1):
                diff = values[(it, layer, f"param{j}", "diff")]
                assert values[(it, layer, f"param{j}", "update")] == pytest.approx(
                    0.3 * diff, rel=1e-9)
    with np.load(tmp_path / "train.npz") as arrays:
        assert values[(0, "data", "data", "data")] == pytest.approx(
            np.abs(arrays["x"][:BATCH]).mean(), rel=1e-12)

    folder = tmp_path / "run_tensorboard"
    accumulator = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0,
                                                                   ea.HISTOGRAMS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"train/loss", "test/loss", "test/accuracy", "lr",
            "debug/ip1/param0/update"} <= set(tags)
    rows = log_rows(tmp_path / "run_log.csv")
    for phase, name in (("TRAIN", "loss"), ("TEST", "accuracy"), ("TEST", "loss")):
        expected = [(int(r[0]), np.float32(float(r[3]))) for r in rows
                    if r[1] == phase and r[2] == name]
        got = [(e.step, np.float32(e.value))
               for e in accumulator.Scalars(f"{phase.lower()}/{name}")]
        assert got == expected
    assert [e.value for e in accumulator.Scalars("lr")] == [pytest.approx(0.3)] * 6
    update = [(e.step, e.value) for e in accumulator.Scalars("debug/ip1/param0/update")]
    assert update == [(it, pytest.approx(values[(it, "ip1", "param0", "update")], rel=1e-6))
                      for it in (0, 3)]           # at display iterations
    histograms = accumulator.Histograms("params/ip1/0")
    assert [h.step for h in histograms] == [0, 3]
    assert histograms[0].histogram_value.num == 8 * 4


# ------------------------------------------------------------------ callbacks
def test_a_callback_sees_every_hook_and_can_stop_training(tmp_path):
    _, solver_path = write_run(tmp_path, snapshot=5)
    seen = []

    class Watch(sk.Callback):
        name = "watch"

        def __init__(self):
            self.steps = 0

        def on_train_start(self):
            seen.append("start")

        def on_step_end(self, it, outputs):
            self.steps += 1
            assert set(outputs) == {"loss"}
            return "enough steps" if it == 11 else None

        def on_test_end(self, it, outputs):
            seen.append(("test", it, sorted(outputs)))

        def on_snapshot(self, path):
            seen.append(("snapshot", path.name))

        def on_train_end(self):
            seen.append("end")

        def get_state(self):
            return {"steps": self.steps}

        def set_state(self, state):
            self.steps = state["steps"]

    solver = sk.Solver(solver_path, progress=False)
    watch = solver.add_callback(Watch())
    solver.solve()
    assert solver.iter == 12 and solver.stop_reason == "enough steps"
    assert seen[0] == "start" and seen[-1] == "end"
    assert ("test", 8, ["accuracy", "loss"]) in seen
    assert ("snapshot", "run_iter_10.solverstate.npz") in seen
    assert ("snapshot", "run_iter_12.solverstate.npz") in seen
    again = sk.Solver(solver_path, progress=False)
    restored = again.add_callback(Watch())
    again.restore(tmp_path / "run_iter_10.solverstate.npz")
    assert restored.steps == 10 and watch.steps == 12
    again.close()


def test_stage_flags_choose_the_layers_of_check_time_and_draw(tmp_path, capsys):
    from solverkit.cli import main
    net_path, _ = write_run(tmp_path)
    assert main(["check", "--net", str(net_path), "--stage", "deploy"]) == 0
    out = capsys.readouterr().out
    assert "prob" in out and "SoftmaxWithLoss" not in out
    assert main(["time", "--net", str(net_path), "--stage", "deploy", "--phase", "TEST",
                 "--iterations", "1", "--warmup", "0"]) == 0
    assert "prob" in capsys.readouterr().out
    dot = tmp_path / "deploy.dot"
    assert main(["draw", "--net", str(net_path), "-o", str(dot), "--stage", "val,deploy"]) == 0
    text = dot.read_text()
    assert "prob" in text and "FixedData" not in text
    assert main(["draw", "--net", str(net_path), "-o", str(dot), "--phase", "TEST",
                 "--stage", "val"]) == 0
    assert "FixedData" in dot.read_text() and "prob" not in dot.read_text()


def test_signal_effects_none_and_stop(tmp_path):
    _, solver_path = write_run(tmp_path, max_iter=8, test_interval=0)
    for on_signal, sighup, signum, end in (("none", "none", signal.SIGTERM, 8),
                                           ("none", "none", signal.SIGHUP, 8),
                                           ("snapshot", "stop", signal.SIGHUP, 5)):
        # sent after the gradients of iteration 3: acted on with those of iteration 4
        solver = sk.Solver(solver_path, progress=False)
        solver.signals.sigint_effect, solver.signals.sighup_effect = on_signal, sighup

        class Send(sk.Callback):
            def on_step_end(self, it, outputs, signum=signum, solver=solver):
                if it == 3:
                    solver.request_stop(signum)

        solver.add_callback(Send())
        solver.solve()
        assert solver.iter == end
    # SIGHUP stop writes no snapshot; the runs to the end wrote only their final one
    assert _iterations(tmp_path) == [8]


def test_overwrite_removes_the_best_snapshot_debug_log_and_event_files(tmp_path, capsys):
    from solverkit.cli import main
    _, solver_path = write_run(tmp_path, max_iter=4, snapshot_best={"output": "accuracy"},
                               debug_info=True, log=["csv", "tensorboard"])
    argv = ["--quiet", "train", "--solver", str(solver_path)]
    assert main(argv) == 0
    events = list((tmp_path / "run_tensorboard").iterdir())
    assert len(events) == 1 and (tmp_path / "run_debug.csv").exists()
    (tmp_path / "run_log.csv").unlink()
    (tmp_path / "run_iter_4.model.npz").unlink()
    (tmp_path / "run_iter_4.solverstate.npz").unlink()
    assert main(argv) == 2            # the best snapshot alone is an earlier run's file
    assert "run_best.model.npz" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert not events[0].exists() and len(list((tmp_path / "run_tensorboard").iterdir())) == 1


def test_a_caffe_solver_with_two_embedded_test_nets_trains_and_logs_both(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "caffe"))
    import caffe_texts

    path = tmp_path / "solver.prototxt"
    path.write_text(caffe_texts.SOLVER_V1_TWO_TESTS)
    solver = sk.Solver(path, overrides=[f"snapshot_prefix={tmp_path / 'caffe'}",
                                        "max_iter=4", "test_interval=2"], progress=False)
    assert [plan.stages for plan in solver.test_plans] == [("val",), ("other",)]
    assert [plan.level for plan in solver.test_plans] == [0, 1]
    assert solver.test_iters == [2, 3]
    results = solver.solve()
    assert set(results) == {"loss", "accuracy", "test1/loss"}     # only test_a has Accuracy
    logged = [(r[0], r[2]) for r in log_rows(tmp_path / "caffe_log.csv") if r[1] == "TEST"]
    assert logged == [(it, name) for it in ("0", "2", "4")
                      for name in ("loss", "accuracy", "test1/loss")]


def test_a_spec_with_training_control_fields_pickles(tmp_path):
    import pickle
    _, solver_path = write_run(tmp_path, **CONTROL, snapshot_best={"output": "accuracy"})
    spec = sk.load_solver_spec(solver_path)
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and type(again) is type(spec)
    assert again.test_state[1].stage == ["train-eval"] and again.plateau.cooldown == 1
