"""Promises to users that no other test file pins down, grouped by topic.

Each test's docstring quotes the promise it guards. Tiny nets, in-memory data, and the CLI
called in-process (``solverkit.cli.main``) except where the process itself matters.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit.cli import main
from solverkit.snapshot import snapshot_paths


def _classification(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three separable classes in 4 features: the label is the argmax of a fixed projection."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = np.argmax(x @ np.array([[1.0, 0, -1], [0, 1, 1], [1, -1, 0], [0, 0, 1]]), axis=1)
    return x, y.astype(np.float32)


def _classifier(name: str = "tiny", train_outputs: bool = False) -> dict:
    """In-memory Data (TRAIN 40 samples, TEST 20) -> InnerProduct -> loss (+ accuracy)."""
    train, test = _classification(40, 0), _classification(20, 1)
    return {"name": name, "layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"], "include": {"phase": "TRAIN"},
         "source": train, "batch_size": 10},
        {"name": "data", "type": "Data", "top": ["data", "label"], "include": {"phase": "TEST"},
         "source": test, "batch_size": 10},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 3,
         "weight_filler": {"type": "xavier"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"},
        {"name": "accuracy", "type": "Accuracy", "bottom": ["ip", "label"], "top": "accuracy",
         **({} if train_outputs else {"include": {"phase": "TEST"}})}]}


def _solver(tmp_path, net=None, **fields) -> sk.Solver:
    spec = {"base_lr": 0.1, "max_iter": 4, "random_seed": 3,
            "snapshot_prefix": str(tmp_path / "run"), **fields}
    return sk.Solver(spec, net=net or _classifier(), progress=False)


def _log(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- blobs, shapes, dtypes

def test_parameters_are_in_caffe_order_and_shape():
    """"Parameters ... in Caffe order: [weight, bias]. InnerProduct weight is (num_output,
    fan_in); Convolution weight is (num_output, channels/group, kh, kw); bias is
    (num_output,)." and "default dtype float32"."""
    net = sk.Net({"layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [[2, 4, 5, 5]]},
        {"name": "conv", "type": "Convolution", "bottom": "x", "top": "c", "num_output": 6,
         "kernel_h": 3, "kernel_w": 2, "group": 2},
        {"name": "ip", "type": "InnerProduct", "bottom": "c", "top": "y", "num_output": 7}]})
    assert [b.shape for b in net.params["conv"]] == [(6, 2, 3, 2), (6,)]
    assert [b.shape for b in net.params["ip"]] == [(7, 6 * 3 * 4), (7,)]
    assert {b.data.dtype for blobs in net.params.values() for b in blobs} == {np.dtype("float32")}


# ---------------------------------------------------------------- net spec

def test_weight_filler_defaults_to_constant_zero_and_multipliers_to_one():
    """"Defaults as Caffe: weight_filler constant 0 unless given" and "param (per parameter:
    lr_mult default 1, decay_mult default 1 ...)"."""
    net = sk.Net({"layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [[2, 3]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2,
         "param": [{"lr_mult": 2}]}]}, seed=1)
    assert not net.params["ip"][0].data.any() and not net.params["ip"][1].data.any()
    assert [(p.lr_mult, p.decay_mult) for p in net.learnable_params] == [(2, 1), (1, 1)]


@pytest.mark.parametrize("loss_type, bottoms", [
    ("SoftmaxWithLoss", ["scores", "label"]),
    ("EuclideanLoss", ["scores", "target"]),
    ("L1Loss", ["scores", "target"]),
    ("SigmoidCrossEntropyLoss", ["scores", "target"]),
    ("HingeLoss", ["scores", "label"]),
])
def test_loss_weight_defaults_to_one_on_a_loss_layers_first_top_only(loss_type, bottoms):
    """"loss_weight (one per top; default 1 on a loss layer's first top, 0 otherwise)";
    the total loss is sum(loss_weight * top)."""
    rng = np.random.default_rng(0)
    net = sk.Net({"dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": ["scores", "label", "target"],
         "shape": [[4, 3], [4], [4, 3]]},
        {"name": "loss", "type": loss_type, "bottom": bottoms, "top": "loss"},
        {"name": "softmax", "type": "Softmax", "bottom": "scores", "top": "prob"},
        {"name": "acc", "type": "Accuracy", "bottom": ["scores", "label"], "top": "acc"}]})
    out = net.forward(scores=rng.standard_normal((4, 3)), label=[0.0, 2.0, 1.0, 1.0],
                      target=rng.uniform(0, 1, (4, 3)))
    assert out["loss"] > 0 and net.loss == out["loss"]       # prob and acc weigh nothing
    two_tops = sk.Net({"dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": ["scores", "label"], "shape": [[4, 3], [4]]},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scores", "label"],
         "top": ["loss", "prob"]}]})
    out = two_tops.forward(scores=rng.standard_normal((4, 3)), label=[0.0, 2.0, 1.0, 1.0])
    assert two_tops.loss == out["loss"]                      # not + Σ prob (= 4)


# ---------------------------------------------------------------- solver spec

@pytest.mark.parametrize("text, field", [
    ("type: AdaGrad\nmomentum: 0.5\n", "momentum"),
    ("type: RMSProp\nmomentum: 0.5\n", "momentum"),
    ("type: SGD\nmomentum2: 0.99\n", "momentum2"),
    ("type: AdaDelta\nmomentum2: 0.99\n", "momentum2"),
    ("type: Adam\nrms_decay: 0.9\n", "rms_decay"),
    ("type: AdaDelta\nrms_decay: 0.9\n", "rms_decay"),
    ("type: SGD\ndelta: 1e-8\n", "delta"),
    ("type: Nesterov\ndelta: 1e-8\n", "delta"),
    ("lr_policy: exp\ngamma: 0.9\nstepsize: 5\n", "stepsize"),
    ("lr_policy: step\ngamma: 0.9\nstepsize: 5\nstepvalue: [5]\n", "stepvalue"),
    ("lr_policy: poly\npower: 1\ngamma: 0.9\n", "gamma"),
    ("lr_policy: exp\ngamma: 0.9\npower: 1\n", "power"),
    ("lr_policy: inv\ngamma: 0.9\npower: 1\nmin_lr: 0.001\n", "min_lr"),
    ("lr_policy: cosine\nstepsize: 5\n", "stepsize"),
])
def test_unused_fields_are_errors_naming_them(text, field, tmp_path):
    """"Unused fields are errors when given: momentum with AdaGrad/RMSProp, momentum2
    outside Adam/AdamW, rms_decay outside RMSProp, delta with SGD/Nesterov,
    gamma/power/stepsize/stepvalue/min_lr with a policy that does not use them"."""
    path = tmp_path / "solver.yaml"
    path.write_text(f"base_lr: 0.1\nmax_iter: 10\n{text}")
    with pytest.raises(sk.ConfigError) as info:
        sk.load_solver_spec(path)
    assert info.value.field == field
    assert "solver.yaml" in str(info.value) and "does not use" in str(info.value)


@pytest.mark.parametrize("text, field", [
    ("lr_policy: exp\n", "gamma"),
    ("lr_policy: poly\n", "power"),
    ("lr_policy: sigmoid\ngamma: 0.1\n", "stepsize"),
    ("lr_policy: sigmoid\nstepsize: 3\n", "gamma"),
    ("lr_policy: step\nstepsize: 3\n", "gamma"),
])
def test_missing_fields_the_policy_needs_are_errors_naming_them(text, field):
    """"a missing field it needs (stepsize for step, stepvalue for multistep, …), is an
    error naming the field"."""
    with pytest.raises(sk.ConfigError) as info:
        sk.load_solver_spec(f"base_lr: 0.1\nmax_iter: 10\n{text}")
    assert info.value.field == field and f"needs {field}" in str(info.value)


@pytest.mark.parametrize("text", [
    "type: Adam\nmomentum: 0.8\nmomentum2: 0.99\ndelta: 1e-7\n",
    "type: AdamW\nmomentum2: 0.99\nweight_decay: 0.01\n",
    "type: RMSProp\nrms_decay: 0.9\ndelta: 1e-6\n",
    "type: AdaDelta\nmomentum: 0.9\ndelta: 1e-5\n",
    "type: AdaGrad\ndelta: 1e-6\n",
    "type: Nesterov\nmomentum: 0.9\n",
    "lr_policy: sigmoid\ngamma: -0.1\nstepsize: 5\n",
    "lr_policy: poly\npower: 2\n",
    "lr_policy: cosine\nmin_lr: 0.001\n",
    "lr_policy: multistep\ngamma: 0.5\nstepvalue: [2, 4]\n",
    "test_iter: 7\ntest_interval: 0\n",
])
def test_fields_the_type_or_policy_uses_are_accepted(text):
    """The other side of "a field the chosen type or policy does not use ... is an error":
    the fields each type and policy does use load, and "test_iter with test_interval: 0 is
    allowed (ignored)"."""
    spec = sk.load_solver_spec(f"base_lr: 0.1\nmax_iter: 10\n{text}")
    for line in text.strip().splitlines():
        key, value = line.split(": ")
        expected = yaml.safe_load(value)
        if key not in ("type", "lr_policy"):        # PyYAML reads 1e-7 as text
            expected = [float(v) for v in expected] if isinstance(expected, list) \
                else float(expected)
        assert getattr(spec, key) == expected


def test_test_iter_without_test_interval_runs_no_test(tmp_path):
    """"test_iter with test_interval: 0 is allowed (ignored)" — the loop runs no test
    and needs no TEST data."""
    net = {"name": "regression", "layers": [
        {"name": "input", "type": "Input", "top": ["x", "t"], "shape": [[2, 3], [2, 1]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 1},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"}]}
    solver = _solver(tmp_path, net=net, test_iter=5, max_iter=2)
    assert solver.solve() == {}
    assert {row["phase"] for row in _log(tmp_path / "run_log.csv")} == {"TRAIN"}


# ---------------------------------------------------------------- the training loop

def test_display_zero_turns_display_lines_off(tmp_path, caplog):
    """"display: 0 turns display lines off" (the default)."""
    with caplog.at_level(logging.INFO, logger="solverkit"):
        _solver(tmp_path, max_iter=3).solve()
    assert not [m for m in caplog.messages if m.startswith("Iteration") and "lr =" in m]
    assert not [m for m in caplog.messages if "Train net output" in m]
    with caplog.at_level(logging.INFO, logger="solverkit"):
        _solver(tmp_path, max_iter=3, display=1).solve()
    assert len([m for m in caplog.messages if m.startswith("Iteration") and "lr =" in m]) == 3


def test_csv_log_rows_per_output_and_phase(tmp_path):
    """CSV log: "header iter,phase,name,value,lr,seconds; one TRAIN row per train output
    every iteration ...; one TEST row per output per test; lr is rate(N)"."""
    solver = _solver(tmp_path, net=_classifier(train_outputs=True), max_iter=4,
                     test_interval=2, lr_policy="step", gamma=0.5, stepsize=1)
    solver.solve()
    with open(tmp_path / "run_log.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["iter", "phase", "name", "value", "lr", "seconds"]
    rows = _log(tmp_path / "run_log.csv")
    train = [(int(r["iter"]), r["name"]) for r in rows if r["phase"] == "TRAIN"]
    assert train == [(i, name) for i in range(4) for name in ("loss", "accuracy")]
    test = [(int(r["iter"]), r["name"]) for r in rows if r["phase"] == "TEST"]
    assert test == [(i, name) for i in (0, 2, 4) for name in ("loss", "accuracy")]
    for r in rows:
        assert float(r["lr"]) == 0.1 * 0.5 ** int(r["iter"])
    assert all(float(r["seconds"]) >= 0 for r in rows)


def test_resumed_run_drops_later_rows_and_appends(tmp_path):
    """"A resumed run drops rows with iter ≥ its start iteration and appends"."""
    _solver(tmp_path, max_iter=2, test_interval=3).solve()        # state at iteration 2
    state = snapshot_paths(str(tmp_path / "run"), 2)[1]
    longer = _solver(tmp_path, max_iter=6, test_interval=3)      # a log reaching iteration 3
    longer.step(4)
    longer.close()
    assert max(int(r["iter"]) for r in _log(tmp_path / "run_log.csv")) == 3
    resumed = _solver(tmp_path, max_iter=3, test_interval=3)
    resumed.restore(state)
    resumed.solve()
    rows = [(int(r["iter"]), r["phase"], r["name"]) for r in _log(tmp_path / "run_log.csv")]
    assert rows == [(0, "TEST", "loss"), (0, "TEST", "accuracy"), (0, "TRAIN", "loss"),
                    (1, "TRAIN", "loss"),                           # kept from the old log
                    (2, "TRAIN", "loss"), (3, "TEST", "loss"), (3, "TEST", "accuracy")]


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_non_finite_loss_writes_no_snapshot(tmp_path):
    """"A non-finite loss stops training with an error that names the iteration and the
    first layer whose output or gradient went non-finite; no snapshot is written from that
    state" (snapshot_after_train is on by default)."""
    x, y = _classification(40, 0)
    net = {"name": "regression", "layers": [
        {"name": "data", "type": "Data", "top": ["data", "target"], "source": (x, y),
         "batch_size": 10},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 1},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["ip", "target"], "top": "loss"}]}
    solver = _solver(tmp_path, net=net, base_lr=1e30, max_iter=6)
    with pytest.raises(sk.NonFiniteError, match=r"iteration 1: .*layer 'loss'"):
        solver.solve()
    assert not list(tmp_path.glob("*.npz"))


# ---------------------------------------------------------------- snapshots

def test_snapshot_files_carry_a_0d_str_json_meta(tmp_path):
    """"each npz holds __meta__, a 0-d str array of JSON"; both load with
    numpy.load(allow_pickle=False)."""
    solver = _solver(tmp_path, max_iter=1)
    solver.solve()
    for path in snapshot_paths(str(tmp_path / "run"), 1):
        with np.load(path, allow_pickle=False) as archive:
            meta = archive["__meta__"]
            assert meta.ndim == 0 and meta.dtype.kind == "U"
            assert isinstance(json.loads(str(meta)), dict)


def test_solver_state_holds_what_resume_needs(tmp_path):
    """the state holds "iteration, solver type and hyperparameters, every state array,
    the learning-rate state, the state of every random generator, every data layer's
    epoch/cursor/order, the loss-smoothing window, and the model file's name and SHA-256"."""
    solver = _solver(tmp_path, max_iter=3, average_loss=2, momentum=0.9, lr_policy="exp",
                     gamma=0.5)
    solver.step(3)
    state = solver.snapshot()
    model = state.with_name("run_iter_3.model.npz")
    with np.load(state, allow_pickle=False) as archive:
        meta = json.loads(str(archive["__meta__"]))
        arrays = {key: archive[key] for key in archive.files}
    assert (meta["iter"], meta["type"]) == (3, "SGD")
    assert meta["solver"]["momentum"] == 0.9 and meta["solver"]["gamma"] == 0.5
    assert meta["rate"] == pytest.approx(0.1 * 0.5 ** 3)
    assert len(meta["smoothed_losses"]) == 2
    assert meta["smoothed_losses"] == pytest.approx(solver.smoothed_losses)
    assert meta["model_file"] == model.name
    assert meta["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert set(meta["generators"]["TRAIN"]) == {"data", "ip", "loss"}
    for name in ("ip/0/history", "ip/1/history"):          # SGD's momentum history
        np.testing.assert_array_equal(arrays[f"update/{name}"],
                                      solver.updater.state_arrays()[name])
    assert arrays["update/ip/0/history"].any()
    assert {"data/TRAIN/data/epoch", "data/TRAIN/data/cursor", "data/TRAIN/data/order"} \
        <= set(arrays)
    assert int(arrays["data/TRAIN/data/cursor"]) == (3 * 10) % 40
    solver.close()


def test_shared_parameter_is_stored_once_under_its_first_layer(tmp_path):
    """"besides the <layer>/<index> arrays (a shared parameter stored once, under its
    first layer) ...; net.save/load use the model format"."""
    layers = [
        {"name": "input", "type": "Input", "top": ["a", "b"], "shape": [[2, 3], [2, 3]]},
        {"name": "first", "type": "InnerProduct", "bottom": "a", "top": "ya", "num_output": 2,
         "param": [{"name": "w"}], "weight_filler": {"type": "gaussian"},
         "bias_filler": {"type": "gaussian"}},
        {"name": "second", "type": "InnerProduct", "bottom": "b", "top": "yb", "num_output": 2,
         "param": [{"name": "w"}], "bias_filler": {"type": "gaussian"}}]
    net = sk.Net({"layers": layers}, seed=1)
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["__meta__", "first/0", "first/1", "second/1"]
        np.testing.assert_array_equal(archive["first/0"], net.params["second"][0].data)
    other = sk.Net({"layers": layers}, seed=2)
    other.load(tmp_path / "m.npz")
    assert other.params["first"][0] is other.params["second"][0]
    for name in ("first", "second"):
        for mine, theirs in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)


def test_resume_with_changed_settings_warns_naming_them(tmp_path, caplog):
    """Resume: "Only type and the parameter list must match; any other difference
    (hyperparameters, ..., max_iter through --set) is allowed and logged as a warning naming
    it"."""
    _solver(tmp_path, max_iter=2, test_interval=2).solve()
    state = snapshot_paths(str(tmp_path / "run"), 2)[1]
    net = _classifier()
    net["layers"][0]["batch_size"] = 8      # the TRAIN one of two layers named 'data'
    resumed = _solver(tmp_path, net=net, max_iter=3, base_lr=0.05, test_interval=2)
    with caplog.at_level(logging.WARNING, logger="solverkit"):
        resumed.restore(state)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("base_lr" in w for w in warnings) and any("max_iter" in w for w in warnings)
    assert any("layer 'data' (TRAIN) batch_size (10 -> 8)" in w for w in warnings), warnings
    assert not any("(TEST)" in w for w in warnings)
    assert resumed.iter == 2
    resumed.solve()
    assert resumed.iter == 3


# ---------------------------------------------------------------- command line

@pytest.fixture
def cli_files(tmp_path, monkeypatch):
    """A tiny classifier reading .npz files, a solver file, and a trained model, in cwd."""
    monkeypatch.chdir(tmp_path)
    for name, (x, y) in (("train", _classification(40, 0)), ("test", _classification(20, 1))):
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    spec = _classifier()
    spec["layers"][0]["source"], spec["layers"][1]["source"] = "train.npz", "test.npz"
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "solver.yaml").write_text("net: net.yaml\nbase_lr: 0.1\nmax_iter: 2\n"
                                          "random_seed: 1\n")
    assert main(["train", "--solver", "solver.yaml", "--quiet"]) == 0
    return tmp_path


def test_debug_shows_the_traceback_and_keeps_status_2(cli_files, capsys):
    """flags: "--debug (traceback on user errors)"; a user mistake "exits with
    status 2"."""
    capsys.readouterr()
    assert main(["train", "--solver", "solver.yaml", "--set", "momentm=0.9", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "did you mean 'momentum'?" in err
    assert main(["train", "--solver", "solver.yaml", "--set", "momentm=0.9"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, words", [
    (["test", "--net", "net.yaml", "--weights", "solver_iter_2.model.npz",
      "--iterations", "0"], "--iterations must be at least 1"),
    (["train", "--solver", "solver.yaml", "--allow-missing"], "--allow-missing"),
    (["train", "--solver", "solver.yaml", "--on-signal", "snapshots"], "did you mean"),
])
def test_command_line_mistakes_exit_2(cli_files, capsys, args, words):
    """a user mistake "prints one clear message ... and exits with status 2";
    "--allow-missing (with --weights)", "--on-signal snapshot|stop"."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_test_prints_caffes_wording_for_k_iterations(cli_files, capsys):
    """"train and test print each averaged TEST output as Test net output #<i>: <name>
    = <value>"; --iterations K averages K TEST batches."""
    net = sk.Net("net.yaml", phase="TEST")
    net.load("solver_iter_2.model.npz", allow_extra=True)
    outs = [net.forward() for _ in range(3)]
    net.close()
    capsys.readouterr()
    assert main(["test", "--net", "net.yaml", "--weights", "solver_iter_2.model.npz",
                 "--iterations", "3"]) == 0
    expected = [f"Test net output #{i}: {name} = {np.mean([o[name] for o in outs]):.6g}"
                for i, name in enumerate(["loss", "accuracy"])]
    assert capsys.readouterr().out.splitlines() == expected


def test_time_phase_selects_the_test_net(cli_files, capsys):
    """"draw/time --phase TRAIN|TEST" — the TEST-only Accuracy is timed only in TEST."""
    capsys.readouterr()
    assert main(["time", "--net", "net.yaml", "--iterations", "1", "--phase", "TEST"]) == 0
    test_rows = capsys.readouterr().out
    assert main(["time", "--net", "net.yaml", "--iterations", "1"]) == 0
    train_rows = capsys.readouterr().out
    assert "(TEST)" in test_rows and " Accuracy " in test_rows
    assert "(TRAIN)" in train_rows and " Accuracy " not in train_rows


def test_python_dash_m_runs_the_cli_with_its_exit_codes(cli_files):
    """"solverkit, also python -m solverkit"; exit 2 for a user mistake."""
    done = subprocess.run([sys.executable, "-m", "solverkit", "test", "--net", "net.yaml",
                           "--weights", "solver_iter_2.model.npz", "--iterations", "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Test net output #0: loss = ")
    bad = subprocess.run([sys.executable, "-m", "solverkit", "test", "--net", "nett.yaml",
                          "--weights", "x.npz"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2 and "nett.yaml" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- Python API

def test_solver_api(tmp_path):
    """"solver = sk.Solver(solver_spec_or_path, net=net_spec_or_path);
    solver.step(100); solver.solve(); solver.test(); solver.snapshot(); solver.restore(path);
    solver.iter, solver.net, solver.test_net"; "solver.test() returns {name: float}"."""
    solver = _solver(tmp_path, max_iter=3)
    assert solver.iter == 0 and solver.net.phase == "TRAIN"
    assert solver.test_net.phase == "TEST"
    assert solver.test_net.params["ip"][0] is solver.net.params["ip"][0]
    solver.step(2)
    assert solver.iter == 2
    results = solver.test()
    assert list(results) == ["loss", "accuracy"]
    assert all(type(value) is float for value in results.values())
    path = solver.snapshot()
    assert path.exists() and path.name == "run_iter_2.solverstate.npz"
    weights = solver.net.params["ip"][0].data.copy()
    solver.step(1)
    solver.restore(path)
    assert solver.iter == 2
    np.testing.assert_array_equal(solver.net.params["ip"][0].data, weights)
    final = solver.solve()
    assert solver.iter == 3 and all(type(value) is float for value in final.values())


def test_net_takes_phase_level_stages_seed_in_this_order():
    """"sk.Net(spec, phase="TRAIN", level=0, stages=(), seed=None)"."""
    spec = {"layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [[1, 2]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2,
         "weight_filler": {"type": "gaussian"}},
        {"name": "deep", "type": "ReLU", "bottom": "y", "top": "z",
         "include": {"phase": "TEST", "min_level": 2, "stage": "deploy"}}]}
    net = sk.Net(spec, "TEST", 2, ("deploy",), 5)
    assert net.layer_names == ["input", "ip", "deep"]
    assert sk.Net(spec, "TEST", 1, ("deploy",), 5).layer_names == ["input", "ip"]
    same = sk.Net(spec, phase="TEST", level=2, stages=("deploy",), seed=5)
    np.testing.assert_array_equal(same.params["ip"][0].data, net.params["ip"][0].data)
    other = sk.Net(spec, "TEST", 2, ("deploy",), 6)
    assert not np.array_equal(other.params["ip"][0].data, net.params["ip"][0].data)


def test_one_element_outputs_are_floats_others_copies():
    """"out = net.forward(data=x) # dict: output blob name -> array (or float for
    1-element)"."""
    net = sk.Net({"layers": [
        {"name": "input", "type": "Input", "top": ["x", "s"], "shape": [[2, 2], [1, 1]]},
        {"name": "relu", "type": "ReLU", "bottom": "x", "top": "y"},
        {"name": "relu_s", "type": "ReLU", "bottom": "s", "top": "t"}]})
    out = net.forward(x=[[1.0, -1.0], [2.0, 3.0]], s=[[4.0]])
    assert type(out["t"]) is float and out["t"] == 4.0
    assert isinstance(out["y"], np.ndarray) and out["y"] is not net.blobs["y"].data


# ---------------------------------------------------------------- precise points

def test_input_tops_get_diffs_data_tops_do_not():
    """"backward() computes the diff of every blob an Input layer produces ... never of
    Data tops, and of every intermediate blob on the path"."""
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    t = np.array([[0.0, 1.0], [1.0, 1.0]])
    net = sk.Net({"dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": ["x", "t"], "shape": [[2, 2], [2, 2]]},
        {"name": "relu", "type": "ReLU", "bottom": "x", "top": "y"},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["y", "t"], "top": "loss"}]})
    net.forward(x=x, t=t)
    net.backward()
    dy = (np.maximum(x, 0) - t) / 2
    np.testing.assert_allclose(net.blobs["y"].diff, dy)
    np.testing.assert_allclose(net.blobs["x"].diff, dy * (x > 0))
    np.testing.assert_allclose(net.blobs["t"].diff, -dy)

    data = sk.Net(_classifier(), phase="TRAIN", seed=0)
    try:
        data.forward()
        data.backward()
        assert data.bottom_need_backward[data.layer_names.index("ip")] == [False]
        assert not data.blobs["data"].has_diff and not data.blobs["label"].has_diff
        assert data.params["ip"][0].diff.any()
    finally:
        data.close()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_labels_travel_as_blobs_of_the_net_dtype(dtype):
    """"Labels travel as blobs of the net's dtype (as Caffe); loss and accuracy layers
    read them as integers. Input shapes may have any rank ([[N]] for labels)"."""
    net = sk.Net({**_classifier(), "dtype": dtype}, phase="TEST", seed=0)
    try:
        out = net.forward()
        label = net.blobs["label"]
        assert label.data.dtype == np.dtype(dtype) and label.shape == (10,)
        scores = net.blobs["ip"].data.astype(np.float64)
        labels = label.data.astype(int)
        shifted = scores - scores.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        assert out["loss"] == pytest.approx(-logp[np.arange(10), labels].mean(), rel=1e-5)
        assert out["accuracy"] == pytest.approx(np.mean(scores.argmax(axis=1) == labels))
    finally:
        net.close()


@pytest.mark.parametrize("loss_type", ["EuclideanLoss", "L1Loss"])
def test_pair_losses_reshape_a_column_target_never_broadcast(loss_type):
    """"EuclideanLoss/L1Loss reshape bottom[1] to bottom[0]'s shape (same count
    required), never broadcast" — (N, 1) against (N,) would broadcast to (N, N)."""
    a, b = np.array([[1.0], [2.0], [4.0]]), np.array([0.0, 2.0, 1.0])
    net = sk.Net({"dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": ["a", "b"], "shape": [[3, 1], [3]]},
        {"name": "loss", "type": loss_type, "bottom": ["a", "b"], "top": "loss"}]})
    loss = net.forward(a=a, b=b)["loss"]
    d = a[:, 0] - b
    expected = (d ** 2).sum() / 6 if loss_type == "EuclideanLoss" else np.abs(d).sum() / 3
    assert loss == pytest.approx(expected)
    net.backward()
    assert net.blobs["a"].diff.shape == (3, 1) and net.blobs["b"].diff.shape == (3,)
    grad = d / 3 if loss_type == "EuclideanLoss" else np.sign(d) / 3
    np.testing.assert_allclose(net.blobs["a"].diff[:, 0], grad)
    np.testing.assert_allclose(net.blobs["b"].diff, -grad)


def test_relative_snapshot_prefix_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    """Paths: "a relative snapshot_prefix [is relative] to the current directory"."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "solver.yaml").write_text("base_lr: 0.1\nmax_iter: 1\nsnapshot_prefix: out/run\n")
    monkeypatch.chdir(tmp_path)
    sk.Solver(folder / "solver.yaml", net=_classifier(), progress=False).solve()
    assert (tmp_path / "out" / "run_log.csv").exists()
    assert (tmp_path / "out" / "run_iter_1.model.npz").exists()
    assert not (folder / "out").exists()


def test_relative_source_and_mean_file_are_relative_to_the_net_file(tmp_path, monkeypatch):
    """Paths: "a relative source/mean_file is relative to the net file"."""
    folder = tmp_path / "nets"
    folder.mkdir()
    x = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2)
    np.savez(folder / "d.npz", x=x, y=np.array([0.0, 1.0]))
    mean = np.full((1, 2, 2), 0.5, dtype=np.float32)
    np.save(folder / "mean.npy", mean)
    (folder / "net.yaml").write_text(yaml.safe_dump({"layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"], "source": "d.npz",
         "batch_size": 2, "transform": {"mean_file": "mean.npy", "scale": 2.0}}]}))
    monkeypatch.chdir(tmp_path)
    net = sk.Net("nets/net.yaml", phase="TEST")
    try:
        np.testing.assert_allclose(net.forward()["data"], (x - mean) * 2.0)
    finally:
        net.close()
