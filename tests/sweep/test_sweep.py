"""``solverkit sweep`` end to end: runs equal to lone runs, the table from the logs, reruns,
a killed sweep resumed, a diverging trial, random draws, Optuna's storage, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from solverkit import cli
from solverkit.sweep import plan_sweep

ROOT = Path(__file__).resolve().parents[2]
SOLVER = ROOT / "configs" / "digits" / "mlp_solver.yaml"
# a handful of iterations, tests at 4 and 8 (and 0), snapshots every 4 (so a killed trial
# resumes from the middle)
FIXED = ["max_iter=8", "test_interval=4", "snapshot=4", "display=0"]
GRID = ["--grid", "type=SGD,Nesterov", "--grid", "base_lr=0.05,0.01"]


def sweep_command(prefix, *extra):
    return [sys.executable, "-m", "solverkit", "sweep", "--solver", str(SOLVER),
            "--set", *FIXED, *GRID, "--seeds", "2", "--jobs", "2", "--prefix", str(prefix),
            *map(str, extra)]


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def final_weights(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "run_iter_8.model.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "__meta__"}


def tree_state(folder: Path) -> dict[str, tuple]:
    """Every file under ``folder`` with its modification time and SHA-256."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns,
                                          hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted sweep: 2 types x 2 rates x 2 seeds, 2 jobs."""
    prefix = tmp_path_factory.mktemp("sweep") / "grid"
    done = run(sweep_command(prefix))
    assert done.returncode == 0, done.stderr
    return prefix, done.stdout


def trial_folders(prefix: Path) -> list[Path]:
    return sorted(p for p in prefix.iterdir() if p.is_dir())


@pytest.mark.slow
def test_every_trial_equals_the_same_run_alone(finished, tmp_path):
    prefix, _ = finished
    manifest = json.loads((prefix / "sweep.json").read_text())
    folders = trial_folders(prefix)
    assert len(folders) == 8 == len(manifest["trials"])
    seen = set()
    for folder in folders:
        setting, seed = folder.name.split("@seed")
        fields = dict(part.split("=") for part in setting.split(","))
        random_seed = 1 + int(seed)         # the solver file's random_seed is 1
        seen.add((fields["type"], fields["base_lr"], random_seed))
        overrides = [*FIXED, f"type={fields['type']}", f"base_lr={fields['base_lr']}",
                     f"random_seed={random_seed}", f"snapshot_prefix={tmp_path / folder.name}"]
        if folder.name == folders[0].name:      # one through the command itself
            done = run([sys.executable, "-m", "solverkit", "train", "--solver", str(SOLVER),
                        "--set", *overrides])
            assert done.returncode == 0, done.stderr
        else:
            solver = sk.Solver(str(SOLVER), overrides=overrides, progress=False)
            solver.solve()
            solver.close()
        with np.load(f"{tmp_path / folder.name}_iter_8.model.npz", allow_pickle=False) as data:
            alone = {k: data[k] for k in data.files if k != "__meta__"}
        swept = final_weights(folder)
        assert alone.keys() == swept.keys()
        for key in alone:
            np.testing.assert_array_equal(alone[key], swept[key], err_msg=f"{folder.name} {key}")
    assert len(seen) == 8


@pytest.mark.slow
def test_table_is_the_mean_and_std_of_the_logs_and_a_rerun_changes_nothing(finished, tmp_path):
    pytest.importorskip("matplotlib")
    prefix, table = finished
    before = tree_state(prefix)
    again = run(sweep_command(prefix, "--format", "json", "--plot", tmp_path / "sweep.png"))
    assert again.returncode == 0, again.stderr
    assert tree_state(prefix) == before
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    answer = json.loads(again.stdout)
    assert answer["metric"] == "accuracy" and answer["mode"] == "max"
    rows = answer["settings"]
    assert len(rows) == 4
    for row in rows:
        finals, bests, best_iters = [], [], []
        for seed in range(2):
            name = row["setting"] + f"@seed{seed}"
            with open(prefix / name / "run_log.csv", newline="") as handle:
                tests = [(int(r["iter"]), float(r["value"])) for r in csv.DictReader(handle)
                         if r["phase"] == "TEST" and r["name"] == "accuracy"]
            assert [it for it, _ in tests] == [0, 4, 8]
            values = [v for _, v in tests]
            finals.append(values[-1])
            bests.append(max(values))
            best_iters.append(tests[values.index(max(values))][0])
        assert row["final_mean"] == pytest.approx(np.mean(finals), abs=1e-12)
        assert row["final_std"] == pytest.approx(np.std(finals, ddof=1), abs=1e-12)
        assert row["best_mean"] == pytest.approx(np.mean(bests), abs=1e-12)
        assert row["best_std"] == pytest.approx(np.std(bests, ddof=1), abs=1e-12)
        assert row["best_iter"] == pytest.approx(np.mean(best_iters))
        assert row["status"] == "ok" and row["seeds"] == 2
    means = [row["final_mean"] for row in rows]
    assert means == sorted(means, reverse=True)
    first, second = rows[0], rows[1]
    beats = first["final_mean"] - second["final_mean"] > first["final_std"] + second["final_std"]
    assert ("beats it beyond the seed spread" in answer["verdict"]) == beats
    # the table printed first holds the same rows in the same order
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[2:6]] == [row["setting"] for row in rows]


def logged_tests(folder: Path) -> list[tuple[str, str, str]]:
    with open(folder / "run_log.csv", newline="") as handle:
        return [(r["iter"], r["name"], r["value"]) for r in csv.DictReader(handle)
                if r["phase"] == "TEST"]


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_uninterrupted_result(finished, tmp_path):
    prefix, _ = finished
    killed = tmp_path / "killed"
    command = [*sweep_command(killed), "--seeds", "1"]      # the seed-0 half of `finished`
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(killed.glob("*/run_iter_4.solverstate.npz")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(list(killed.glob("*/status.json"))) < 4        # stopped part way
    again = run(command)
    assert again.returncode == 0, again.stderr
    resumed = trial_folders(killed)
    assert [f.name for f in resumed] == [f.name for f in trial_folders(prefix)
                                         if f.name.endswith("@seed0")]
    for folder in resumed:
        theirs, ours = final_weights(prefix / folder.name), final_weights(folder)
        for key in theirs:
            np.testing.assert_array_equal(theirs[key], ours[key], err_msg=folder.name)
        assert logged_tests(folder) == logged_tests(prefix / folder.name)


def test_a_diverging_trial_is_reported_and_the_others_finish(tmp_path, capsys):
    status = cli.main(["sweep", "--solver", str(SOLVER), "--set", *FIXED, "--grid",
                       "base_lr=0.05,10000", "--prefix", str(tmp_path / "d"), "--format", "json"])
    out, err = capsys.readouterr()
    assert status == 1, err
    assert "diverged" in err
    rows = {row["setting"]: row for row in json.loads(out)["settings"]}
    assert rows["base_lr=0.05"]["status"] == "ok"
    assert rows["base_lr=0.05"]["final_mean"] > 0.3
    assert rows["base_lr=10000"]["status"] == "1 diverged"
    assert rows["base_lr=10000"]["final_mean"] is None
    status = json.loads((tmp_path / "d" / "base_lr=10000@seed0" / "status.json").read_text())
    assert status["status"] == "diverged" and status["returncode"] == 1
    assert "non-finite" in (tmp_path / "d" / "base_lr=10000@seed0" / "train.log").read_text()


@pytest.mark.slow
def test_ctrl_c_stops_every_trial_with_a_snapshot(tmp_path):
    prefix = tmp_path / "c"
    process = subprocess.Popen(
        [sys.executable, "-m", "solverkit", "sweep", "--solver", str(SOLVER), "--set",
         "max_iter=100000", "test_interval=50", "display=0", "--grid", "base_lr=0.05,0.01",
         "--jobs", "2", "--prefix", str(prefix)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    logs = [prefix / "base_lr=0.05@seed0" / "run_log.csv", prefix / "base_lr=0.01@seed0" /
            "run_log.csv"]
    while not all(log.exists() and "TEST" in log.read_text() for log in logs):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)          # the sweep only: it passes the signal on
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "sweep stopped" in err
    for log in logs:
        assert list(log.parent.glob("run_iter_*.solverstate.npz"))
        assert not (log.parent / "status.json").exists()
        assert "Stopped by SIGINT" in (log.parent / "train.log").read_text()
    assert out.count("1 unfinished") == 2


def test_random_search_draws_the_same_settings_for_the_same_seed(tmp_path):
    ranges = ["4", "base_lr=log(1e-4,1e-1)", "momentum=uniform(0.5,0.99)",
              "type=choice(SGD,Nesterov)"]

    def settings(seed):
        return plan_sweep(SOLVER, random_args=ranges, draw_seed=seed,
                          prefix=tmp_path / "r").settings

    first = settings(3)
    assert first == settings(3)
    assert first != settings(4)
    assert len(first) == 4
    for setting in first:
        assert 1e-4 <= setting["base_lr"] <= 1e-1
        assert 0.5 <= setting["momentum"] <= 0.99
        assert setting["type"] in ("SGD", "Nesterov")
    assert not (tmp_path / "r").exists()            # planning starts nothing


@pytest.mark.slow
def test_an_optuna_search_resumes_from_its_storage(tmp_path, capsys):
    pytest.importorskip("optuna")
    import optuna

    prefix = tmp_path / "o"

    def search(count):
        status = cli.main(["sweep", "--solver", str(SOLVER), "--set", "max_iter=4",
                           "test_interval=2", "display=0", "--random", "base_lr=log(1e-3,1e-1)",
                           "--optuna", str(count), "--prefix", str(prefix), "--format", "json"])
        out, err = capsys.readouterr()
        assert status == 0, err
        study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{prefix}/optuna.db")
        return json.loads(out), study

    _, study = search(1)
    assert len(study.trials) == 1
    before = tree_state(prefix)
    answer, study = search(2)                       # one more trial, the first one kept
    assert len(study.trials) == 2
    assert all(t.user_attrs.get("outcome") in ("done", "pruned") for t in study.trials)
    assert {name: state for name, state in tree_state(prefix).items()
            if name in before and name.endswith(".model.npz")} == {
        name: state for name, state in before.items() if name.endswith(".model.npz")}
    assert len(answer["settings"]) == len({t.params["base_lr"] for t in study.trials})
    settled = tree_state(prefix)
    _, study = search(2)                            # done: nothing runs
    assert len(study.trials) == 2
    assert {k: v for k, v in tree_state(prefix).items() if k != "optuna.db"} == {
        k: v for k, v in settled.items() if k != "optuna.db"}


@pytest.mark.parametrize("arguments, words", [
    (["--grid", "base_rl=0.1,0.2"], "did you mean 'base_lr'?"),
    (["--grid", "base_lr="], "has no values"),
    (["--grid", "base_lr=0.1,fast"], "base_lr"),
    (["--random", "2", "base_lr=log(0.1,0.001)"], "low 0.1 > high 0.001"),
    (["--random", "2", "base_lr=uniform(1,0.5)"], "low 1 > high 0.5"),
    (["--grid", "base_lr=0.1", "--jobs", "0"], "--jobs must be at least 1"),
    (["--grid", "type=SGD,Adamm"], "did you mean 'Adam'?"),
    (["--grid", "type=SGD,AdaGrad"], "momentum"),      # AdaGrad has no momentum: trial 2
    ([], "nothing to sweep"),
    (["--grid", "random_seed=1,2"], "--seeds"),
    (["--grid", "base_lr=0.1", "--metric", "acuracy"], "did you mean 'accuracy'?"),
])
def test_bad_input_is_one_message_exit_2_before_any_trial(tmp_path, capsys, arguments, words):
    prefix = tmp_path / "bad"
    status = cli.main(["sweep", "--solver", str(SOLVER), "--prefix", str(prefix), *arguments])
    err = capsys.readouterr().err
    assert status == 2
    assert words in err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert not prefix.exists()


def test_a_changed_grid_under_the_same_prefix_is_refused_with_the_difference(tmp_path, capsys):
    prefix = tmp_path / "p"
    prefix.mkdir()
    sweep = plan_sweep(SOLVER, fixed=FIXED, grid_items=["type=SGD,Nesterov"], prefix=prefix)
    from solverkit.sweep import claim_folder
    claim_folder(sweep)
    manifest = (prefix / "sweep.json").read_bytes()
    status = cli.main(["sweep", "--solver", str(SOLVER), "--set", *FIXED, "--grid",
                       "type=SGD,Adam", "--prefix", str(prefix)])
    err = capsys.readouterr().err
    assert status == 2
    assert 'grid type: ["SGD", "Nesterov"] before, ["SGD", "Adam"] now' in err
    assert (prefix / "sweep.json").read_bytes() == manifest
    assert not [p for p in prefix.iterdir() if p.is_dir()]


def test_a_failed_trial_is_tried_again_on_a_rerun(tmp_path, capsys):
    fcntl = pytest.importorskip("fcntl")
    prefix = tmp_path / "f"
    folder = prefix / "base_lr=0.05@seed0"
    folder.mkdir(parents=True)
    command = ["sweep", "--solver", str(SOLVER), "--set", *FIXED, "--grid", "base_lr=0.05",
               "--prefix", str(prefix), "--format", "json", "--overwrite"]
    with open(folder / "run.lock", "w") as lock:      # another run holds the trial's prefix
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert cli.main(command) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["settings"][0]["status"] == "1 failed"
    assert json.loads((folder / "status.json").read_text())["returncode"] == 2
    assert "in use by another run" in (folder / "train.log").read_text()
    assert cli.main(command[:-1]) == 0                 # the lock is gone: it runs now
    out, _ = capsys.readouterr()
    assert json.loads(out)["settings"][0]["status"] == "ok"
    assert json.loads((folder / "status.json").read_text())["status"] == "done"


def test_overwrite_removes_the_earlier_sweeps_trials_only(tmp_path):
    from solverkit.sweep import claim_folder
    prefix = tmp_path / "w"
    old = plan_sweep(SOLVER, fixed=FIXED, grid_items=["type=SGD,Nesterov"], prefix=prefix)
    claim_folder(old)
    for trial in old.trials:
        trial.folder.mkdir()
        (trial.folder / "run_log.csv").write_text("iter,phase,name,value,lr,seconds\n")
    (prefix / "notes.txt").write_text("mine")
    new = plan_sweep(SOLVER, fixed=FIXED, grid_items=["type=SGD,Adam"], prefix=prefix)
    claim_folder(new, overwrite=True)
    assert not any(p.is_dir() for p in prefix.iterdir())
    assert (prefix / "notes.txt").read_text() == "mine"
    assert json.loads((prefix / "sweep.json").read_text())["grid"] == {"type": ["SGD", "Adam"]}
