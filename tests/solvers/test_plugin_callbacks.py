"""A callback from a plugin module (tests/plugin_callbacks.py, SPEC §14's CountTests) named
in a solver spec's ``callbacks:``: run from the command line, its hooks called in the
loop's order, its state saved in every solver state and resumed exactly, its mistakes
reported as user errors, listed by ``schema``."""

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

SOLVER = """\
net: net.yaml
plugins: [plugin_callbacks]
base_lr: 0.05
max_iter: 6
test_interval: 2
test_iter: 2
snapshot: 3
random_seed: 4
callbacks:
  - {type: CountTests, every: 2}
  - {type: RecordHooks, path: hooks.txt}
"""


def run(*args, cwd, extra_path=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [*map(str, extra_path), str(TESTS), str(SOLVER_TESTS), os.environ.get("PYTHONPATH", "")])}
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
    (tmp_path / "s.yaml").write_text(SOLVER)
    return tmp_path


def meta(path: Path) -> dict:
    with np.load(path) as state:
        return json.loads(str(state["__meta__"]))


def test_a_yaml_callback_runs_from_the_cli_and_sees_every_hook(files):
    done = run("train", "--solver", "s.yaml", "--set", "snapshot_prefix=out/run", "--quiet",
               cwd=files)
    assert done.returncode == 0, done.stderr
    hooks = (files / "hooks.txt").read_text().splitlines()
    # one iteration: the periodic test, its start (as Caffe calls on_start after testing),
    # the gradients, the update (solver.iter counts it once it is made), its end
    assert hooks[:6] == ["on_train_start", "on_test_end 0", "on_iteration_start 0",
                         "on_gradients_ready 0 ['loss'] None", "before_update 0 0",
                         "on_step_end 0 ['loss'] 1"]
    assert hooks[hooks.index("on_iteration_start 2") - 1] == "on_test_end 2"
    at_3 = hooks.index("before_snapshot 3 periodic")
    assert hooks[at_3 - 1] == "on_step_end 2 ['loss'] 3"
    assert hooks[at_3 + 1] == "on_snapshot run_iter_3.solverstate.npz"
    assert hooks[-3:] == ["on_snapshot run_iter_6.solverstate.npz", "on_test_end 6",
                          "on_train_end"]
    # tests at 0, 2 and 4 before the snapshot at 3 and 6 (the final test follows the snapshot)
    assert meta(files / "out" / "run_iter_3.solverstate.npz")["callbacks"]["CountTests"] == \
        {"count": 2}
    assert meta(files / "out" / "run_iter_6.solverstate.npz")["callbacks"]["CountTests"] == \
        {"count": 3}


def test_its_state_resumes_exactly(files):
    straight = run("train", "--solver", "s.yaml", "--set", "snapshot_prefix=straight/run",
                   "--quiet", cwd=files)
    assert straight.returncode == 0, straight.stderr
    first = run("train", "--solver", "s.yaml", "--set", "max_iter=3",
                "snapshot_prefix=resumed/run", "--quiet", cwd=files)
    assert first.returncode == 0, first.stderr
    # the state of iteration 3 says 2 tests (0 and 2); the resumed run counts on from it
    resumed = run("train", "--solver", "s.yaml", "--set", "snapshot_prefix=resumed/run",
                  "--resume", "latest", "--quiet", cwd=files)
    assert resumed.returncode == 0, resumed.stderr
    a = meta(files / "straight" / "run_iter_6.solverstate.npz")
    b = meta(files / "resumed" / "run_iter_6.solverstate.npz")
    assert a["callbacks"] == b["callbacks"] and a["callbacks"]["CountTests"] == {"count": 3}
    x = np.load(files / "straight" / "run_iter_6.model.npz")
    y = np.load(files / "resumed" / "run_iter_6.model.npz")
    for key in x.files:
        if key != "__meta__":
            np.testing.assert_array_equal(x[key], y[key])


def test_the_solver_constructs_it_from_its_params_and_restores_it(files, monkeypatch):
    monkeypatch.chdir(files)        # RecordHooks writes hooks.txt in the working folder
    solver = sk.Solver(files / "s.yaml", overrides={"snapshot_prefix": str(files / "p/run")},
                       progress=False)
    counter = next(c for c in solver.callbacks if c.type == "CountTests")
    assert counter.params.every == 2 and counter.name == "CountTests"
    assert solver.spec.callbacks[0].model_dump() == {"type": "CountTests", "every": 2}
    solver.step(3)
    assert counter.count == 2
    path = solver.snapshot()
    solver.close()
    again = sk.Solver(files / "s.yaml", overrides={"snapshot_prefix": str(files / "p/run")},
                      progress=False)
    again.restore(path)
    assert next(c for c in again.callbacks if c.type == "CountTests").count == 2
    again.close()


@pytest.mark.parametrize(("entry", "message"), [
    ("{type: CountTest}", "field 'callbacks[0].type': unknown callback type 'CountTest' "
                          "(did you mean 'CountTests'?)"),
    ("{type: CountTests, evry: 2}", "field 'callbacks[0].evry': unknown field 'evry' "
                                    "(did you mean 'every'?)"),
    ("{type: CountTests, every: two}", "field 'callbacks[0].every'"),
    ("{every: 2}", "field 'callbacks[0].type': required field is missing"),
])
def test_a_wrong_entry_is_a_user_error_naming_the_file_and_field(files, entry, message):
    (files / "bad.yaml").write_text(SOLVER.replace("{type: CountTests, every: 2}", entry))
    done = run("train", "--solver", "bad.yaml", cwd=files)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("solverkit: error: bad.yaml:10: ")
    assert message in done.stderr


def test_a_name_clashing_with_a_builtin_callback_names_both(files):
    (files / "clash.py").write_text(
        "from solverkit import Callback, register_callback\n\n"
        "@register_callback('EarlyStop')\nclass MyStop(Callback):\n    pass\n")
    (files / "bad.yaml").write_text(SOLVER.replace("[plugin_callbacks]", "[clash]"))
    done = run("train", "--solver", "bad.yaml", cwd=files, extra_path=[files])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "'EarlyStop' is registered twice" in done.stderr
    assert "solverkit.solvers.callbacks.EarlyStop" in done.stderr and "clash.MyStop" in done.stderr


def test_schema_lists_the_registered_callbacks(files):
    done = run("schema", "-o", "schemas", "--plugins", "plugin_callbacks", cwd=files)
    assert done.returncode == 0, done.stderr
    schema = json.loads((files / "schemas" / "solver.schema.json").read_text())
    mapping = schema["properties"]["callbacks"]["items"]["discriminator"]["mapping"]
    assert {"CountTests", "EarlyStop", "BestSnapshot", "KeepLast"} <= set(mapping)
    counts = schema["$defs"]["CountTestsCallback"]["properties"]
    assert counts["every"]["default"] == 1 and counts["type"]["const"] == "CountTests"
