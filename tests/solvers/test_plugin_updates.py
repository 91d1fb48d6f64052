"""An update rule and an lr policy from a plugin module (tests/plugin_updates.py), used
from YAML and through ``--set``, listed by ``schema`` and ``check``, resumed exactly."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from solver_data import blobs_classification, classifier_net, write_arrays

import solverkit as sk

TESTS = Path(__file__).resolve().parents[1]
SOLVER_TESTS = TESTS / "solvers"


def run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), str(SOLVER_TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "solverkit", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    x, y = blobs_classification(60, seed=3)
    write_arrays(tmp_path / "train.npz", x[:40], y[:40])
    write_arrays(tmp_path / "test.npz", x[40:], y[40:])
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(
        classifier_net("train.npz", "test.npz", batch_size=10), sort_keys=False))
    (tmp_path / "plugged.yaml").write_text(
        "net: net.yaml\nplugins: [plugin_updates]\ntype: SignSGD\nscale: 0.5\n"
        "lr_policy: halving\nstepsize: 2\nbase_lr: 0.01\nmax_iter: 6\nrandom_seed: 4\n")
    (tmp_path / "plain.yaml").write_text(
        "net: net.yaml\nplugins: [plugin_updates]\nbase_lr: 0.01\nmax_iter: 6\n"
        "lr_policy: halving\nstepsize: 2\nrandom_seed: 4\n")
    return tmp_path


def test_the_plugin_rule_and_policy_train_from_yaml(files):
    solver = sk.Solver(files / "plugged.yaml", progress=False)
    assert [solver.rate(it) for it in range(5)] == [0.01, 0.01, 0.005, 0.005, 0.0025]
    for it in range(3):
        before = [p.blob.data.copy() for p in solver.updater.params]
        solver.step(1)
        for param, w in zip(solver.updater.params, before):     # diff: this step's gradient
            expected = w - solver.rate(it) * 0.5 * np.sign(param.blob.diff)
            np.testing.assert_array_equal(param.blob.data, expected)
            assert not np.array_equal(param.blob.data, w)


def test_a_field_the_plugin_rule_does_not_use_is_an_error(files):
    text = (files / "plugged.yaml").read_text() + "momentum2: 0.9\n"
    (files / "bad.yaml").write_text(text)
    with pytest.raises(sk.ConfigError, match="SignSGD does not use momentum2") as err:
        sk.load_solver_spec(files / "bad.yaml")
    assert err.value.field == "momentum2"
    (files / "bad.yaml").write_text(text.replace("type: SignSGD", "type: SignSDG"))
    with pytest.raises(sk.ConfigError, match="did you mean 'SignSGD'"):
        sk.load_solver_spec(files / "bad.yaml")


def test_set_type_and_resume_exactly_from_the_command_line(files):
    straight = run("train", "--solver", "plain.yaml", "--set", "type=SignSGD", "scale=0.5",
                   "snapshot_prefix=straight/run", "--quiet", cwd=files)
    assert straight.returncode == 0, straight.stderr
    first = run("train", "--solver", "plain.yaml", "--set", "type=SignSGD", "scale=0.5",
                "max_iter=3", "snapshot_prefix=resumed/run", "--quiet", cwd=files)
    assert first.returncode == 0, first.stderr
    resumed = run("train", "--solver", "plain.yaml", "--set", "type=SignSGD", "scale=0.5",
                  "snapshot_prefix=resumed/run", "--resume", "latest", "--quiet", cwd=files)
    assert resumed.returncode == 0, resumed.stderr
    a = np.load(files / "straight" / "run_iter_6.model.npz")
    b = np.load(files / "resumed" / "run_iter_6.model.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        if key != "__meta__":
            np.testing.assert_array_equal(a[key], b[key])
    with np.load(files / "straight" / "run_iter_6.solverstate.npz") as state:
        assert json.loads(str(state["__meta__"]))["type"] == "SignSGD"
    with open(files / "straight" / "run_log.csv", newline="") as log:
        rates = {int(row["iter"]): float(row["lr"]) for row in csv.DictReader(log)}
    assert [rates[it] for it in range(6)] == [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025]
    sgd = np.load(files / "resumed" / "run_iter_3.model.npz")       # not SGD's weights
    plain = run("train", "--solver", "plain.yaml", "--set", "max_iter=3",
                "snapshot_prefix=sgd/run", "--quiet", cwd=files)
    assert plain.returncode == 0, plain.stderr
    other = np.load(files / "sgd" / "run_iter_3.model.npz")
    assert any(not np.array_equal(sgd[k], other[k]) for k in sgd.files if k != "__meta__")


def test_schema_and_check_list_the_plugin_rule_and_policy(files):
    done = run("schema", "-o", "schemas", "--plugins", "plugin_updates", cwd=files)
    assert done.returncode == 0, done.stderr
    schema = json.loads((files / "schemas" / "solver.schema.json").read_text())
    assert "SignSGD" in schema["properties"]["type"]["enum"]
    assert "halving" in schema["properties"]["lr_policy"]["enum"]
    assert "SignSGD (1.0)" in schema["properties"]["scale"]["description"]
    checked = run("check", "--solver", "plugged.yaml", cwd=files)
    assert checked.returncode == 0, checked.stderr
    assert "SignSGD" in checked.stdout and "halving" in checked.stdout
    assert "scale" in checked.stdout


def test_a_policy_with_state_observes_tests_and_resumes_exactly(files):
    fields = ["lr_policy=halve_on_stall", "patience=1", "base_lr=2.0", "test_interval=2",
              "max_iter=8", "type=SGD", "stepsize="]
    solver = sk.Solver(files / "plain.yaml", overrides=[*fields, "snapshot_prefix=a/run"],
                       progress=False)
    policy = solver.schedule.policy
    rates = []
    for _ in range(8):
        solver.step(1)
        rates.append(solver.rate())
    assert policy.factor < 1 and rates[-1] == 2.0 * policy.factor     # a base_lr this big stalls
    assert min(rates) < max(rates)
    solver.close()

    first = sk.Solver(files / "plain.yaml", overrides=[*fields, "snapshot_prefix=b/run"],
                      progress=False)
    first.step(4)
    path = first.snapshot()
    first.close()
    resumed = sk.Solver(files / "plain.yaml", overrides=[*fields, "snapshot_prefix=b/run"],
                        progress=False)
    resumed.restore(path)
    assert resumed.schedule.get_state() == first.schedule.get_state()
    resumed.step(4)
    assert resumed.schedule.get_state() == policy.get_state()
    for a, b in zip(resumed.updater.params, solver.updater.params):
        np.testing.assert_array_equal(a.blob.data, b.blob.data)
    resumed.close()


def test_a_policy_field_is_checked_like_a_type_field(files):
    with pytest.raises(sk.ConfigError, match="halve_on_stall does not use stepsize") as err:
        sk.load_solver_spec(files / "plain.yaml", ["lr_policy=halve_on_stall"])
    assert err.value.field == "stepsize"
    spec = sk.load_solver_spec(files / "plain.yaml", {"lr_policy": "halve_on_stall",
                                                      "stepsize": None})
    assert spec.patience == 1 and spec.stepsize is None


def test_a_spec_of_a_plugin_type_pickles(files):
    import pickle
    spec = sk.load_solver_spec(files / "plugged.yaml")
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and type(again) is type(spec)
    assert (again.scale, again.stepsize, again.momentum) == (0.5, 2, None)
    assert again.line_of("scale") == spec.line_of("scale") == 4
