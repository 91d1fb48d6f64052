"""``solverkit train`` and ``solverkit test`` end to end, in a subprocess."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SOLVER_TESTS = Path(__file__).parent / "solvers"
sys.path.insert(0, str(SOLVER_TESTS))
from solver_data import blobs_classification, classifier_net, write_arrays

import solverkit as sk
from solverkit.snapshot import atomic_write_npz


def run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SOLVER_TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "solverkit", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def files(tmp_path):
    x, y = blobs_classification(90, seed=3)
    write_arrays(tmp_path / "train.npz", x[:60], y[:60])
    write_arrays(tmp_path / "test.npz", x[60:], y[60:])
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(
        classifier_net("train.npz", "test.npz", batch_size=10), sort_keys=False))
    (tmp_path / "solver.yaml").write_text(
        "net: net.yaml\ntype: SGD\nbase_lr: 0.1\nmomentum: 0.9\nmax_iter: 20\n"
        "test_interval: 10\ndisplay: 5\nrandom_seed: 7\n")
    return tmp_path


def test_train_prints_final_test_outputs_and_writes_the_log(files):
    result = run("train", "--solver", "solver.yaml", cwd=files)
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("Test net output")]
    with open(files / "solver_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    final = [r for r in rows if r["phase"] == "TEST" and r["iter"] == "20"]
    assert printed == [f"Test net output #{i}: {r['name']} = {float(r['value']):.6g}"
                       for i, r in enumerate(final)]
    assert [r["name"] for r in final] == ["loss", "accuracy"]
    assert float(final[1]["value"]) > 0.8
    assert "Iteration 15" in result.stdout


def test_set_overrides_are_typed_and_repeatable(files):
    result = run("train", "--solver", "solver.yaml", "--net", "net.yaml", "--quiet",
                 "--set", "type=Adam", "base_lr=0.001", "--set", "max_iter=3", cwd=files)
    assert result.returncode == 0, result.stderr
    with open(files / "solver_log.csv", newline="") as f:
        train = [r for r in csv.DictReader(f) if r["phase"] == "TRAIN"]
    assert [int(r["iter"]) for r in train] == [0, 1, 2]
    assert {float(r["lr"]) for r in train} == {0.001}
    assert "Iteration" not in result.stdout        # --quiet: results only


@pytest.mark.parametrize("args, words", [
    (["--set", "momentm=0.5"], "did you mean 'momentum'?"),
    (["--set", "type=AdaGrad"], "AdaGrad does not use momentum"),
    (["--net", "missing.yaml"], "missing.yaml"),
])
def test_user_mistakes_exit_2_with_one_line(files, args, words):
    result = run("train", "--solver", "solver.yaml", *args, cwd=files)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert words in result.stderr


def test_diverging_training_exits_1_naming_iteration_and_layer(files):
    result = run("train", "--solver", "solver.yaml", "--quiet", "--set", "base_lr=1e30",
                 cwd=files)
    assert result.returncode == 1
    assert re.search(r"iteration [1-9]\d*: the loss is (nan|inf).*layer 'ip[12]'",
                     result.stderr), result.stderr


def test_test_command_evaluates_a_model_file(files):
    net_file = files / "net.yaml"
    solver = sk.Solver(files / "solver.yaml", overrides={"max_iter": 5, "test_interval": 0,
                                                         "snapshot_prefix": str(files / "py")})
    solver.step(5)
    expected = solver.test()
    solver.net.save(files / "model.npz")
    result = run("test", "--net", net_file, "--weights", "model.npz", cwd=files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Test net output #{i}: {name} = {value:.6g}" for i, (name, value) in
        enumerate(expected.items())]
    atomic_write_npz(files / "partial.npz", {"ip1/0": solver.net.params["ip1"][0].data},
                     {"kind": "model"})
    result = run("test", "--net", net_file, "--weights", "partial.npz", "--iterations", "1",
                 cwd=files)
    assert result.returncode == 2
    assert "layer 'ip1'" in result.stderr and "parameter 1 is missing" in result.stderr


def test_a_missing_net_named_by_the_solver_names_the_solver_file_and_line(tmp_path):
    (tmp_path / "solver.yaml").write_text("base_lr: 0.1\nmax_iter: 1\nnet: nets/missing.yaml\n")
    result = run("train", "--solver", "solver.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "solver.yaml:3" in result.stderr and "field 'net'" in result.stderr
    assert "missing.yaml" in result.stderr
