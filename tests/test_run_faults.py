"""Faults around a run's files: kills during a resume's log rewrite, two runs on one prefix,
a fresh run over an earlier one, run ids, a read-only or full file system, file modes and
stale temporaries. Every check is on the files themselves (bytes, modes, loadability)."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from solverkit import runs, snapshot
from solverkit.cli import main

BROKEN = Path(__file__).parent / "broken"
HEADER = "iter,phase,name,value,lr,seconds"


def _folder(tmp_path: Path, **fields) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(BROKEN / "data_net.yaml", folder / "net.yaml")
    spec = {"net": "net.yaml", "base_lr": 0.1, "momentum": 0.9, "random_seed": 3,
            "max_iter": 6, "snapshot": 2, "snapshot_prefix": "out/run", **fields}
    (folder / "solver.yaml").write_text("".join(f"{k}: {v}\n" for k, v in spec.items()))
    return folder


def _cli(folder: Path, *args, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "solverkit", "--quiet", *args], cwd=folder,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _state_meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["__meta__"]))


def _every_snapshot_loads(folder: Path, prefix: str = "out/run") -> list[Path]:
    """Every state of the prefix restores into a fresh solver (its model checked by SHA)."""
    states = sorted(folder.glob(f"{prefix}_iter_*.solverstate.npz"))
    for state in states:
        solver = sk.Solver(folder / "solver.yaml", progress=False,
                           overrides=[f"snapshot_prefix={folder / 'elsewhere'}"])
        solver.restore(state)
        assert solver.iter == int(state.name.split("_iter_")[1].split(".")[0])
        solver.close()
    return states


# ------------------------------------------------------------------ the log on resume
def test_the_log_is_cut_in_place_and_keeps_its_rows(tmp_path):
    log = tmp_path / "run_log.csv"
    rows = [f"{i},TRAIN,loss,{i / 10},0.1,{i}.0\n" for i in range(10)]
    log.write_text(HEADER + "\n" + "".join(rows) + "10,TRAIN,lo")     # a kill cut the last row
    assert runs.keep_log_rows_before(log, 12, HEADER)
    assert log.read_text() == HEADER + "\n" + "".join(rows)               # the half row goes
    assert runs.keep_log_rows_before(log, 4, HEADER)
    assert log.read_text() == HEADER + "\n" + "".join(rows[:4])
    log.write_text("not,a,log\n1,2\n")
    assert not runs.keep_log_rows_before(log, 4, HEADER)
    assert log.read_text() == "not,a,log\n1,2\n"          # left alone: the caller starts anew


@pytest.mark.slow
def test_sigkill_during_the_resume_log_rewrite_never_loses_a_row(tmp_path):
    """20 resumes killed at random moments (start-up, cutting the log, appending): the rows
    before the resumed iteration are always there, byte for byte."""
    folder = _folder(tmp_path, max_iter=4)
    _cli(folder, "train", "--solver", "solver.yaml")
    log = folder / "out/run_log.csv"
    lines = log.read_text().splitlines(keepends=True)
    before = [line for line in lines[1:] if int(line.split(",")[0]) < 2]
    after = [line for line in lines[1:] if int(line.split(",")[0]) >= 2]
    # 200,000 rows before iteration 2 (a long run's history): the cut has real work to do
    padding = [f"1,TRAIN,pad{i},0.5,0.1,1.0\n" for i in range(200_000)]
    kept = lines[0] + "".join(before + padding)
    log.write_text(kept + "".join(after))
    state = folder / "out/run_iter_2.solverstate.npz"
    rng = random.Random(0)
    start = time.perf_counter()
    _cli(folder, "train", "--solver", "solver.yaml", "--resume", str(state),
         "--set", "max_iter=40", "snapshot=0")
    full = time.perf_counter() - start
    assert log.read_text().startswith(kept)
    for _ in range(20):
        process = subprocess.Popen(
            [sys.executable, "-m", "solverkit", "--quiet", "train", "--solver", "solver.yaml",
             "--resume", str(state), "--set", "max_iter=40", "snapshot=0"], cwd=folder,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full))
        process.send_signal(signal.SIGKILL)
        process.wait()
        with open(log) as handle:
            assert handle.read(len(kept)) == kept       # every earlier row, byte for byte


# ------------------------------------------------------------------ one run, one prefix
@pytest.mark.slow
def test_a_second_run_on_a_locked_prefix_is_refused(tmp_path):
    folder = _folder(tmp_path, max_iter=10_000_000, snapshot=0)
    first = subprocess.Popen([sys.executable, "-m", "solverkit", "--quiet", "train", "--solver",
                              "solver.yaml"], cwd=folder, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while runs.read_record(folder / "out/run").get("pid") != first.pid:
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = _cli(folder, "train", "--solver", "solver.yaml", "--overwrite", check=False)
    assert second.returncode == 2
    assert f"in use by another run (PID {first.pid})" in second.stderr
    first.send_signal(signal.SIGINT)                 # the first run snapshots and ends well
    _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    states = _every_snapshot_loads(folder)
    assert len(states) == 1
    # the lock went with the first run: the prefix can be resumed now
    _cli(folder, "train", "--solver", "solver.yaml", "--resume", "latest",
         "--set", f"max_iter={_state_meta(states[0])['iter'] + 1}")


def test_a_fresh_run_over_an_earlier_one_is_refused_and_overwrite_starts_over(tmp_path):
    folder = _folder(tmp_path)
    _cli(folder, "train", "--solver", "solver.yaml")
    old = sorted(p.name for p in (folder / "out").iterdir())
    assert "run_iter_6.solverstate.npz" in old and "run_log.csv" in old
    old_log = (folder / "out/run_log.csv").read_text()
    old_id = _state_meta(folder / "out/run_iter_6.solverstate.npz")["run_id"]
    refused = _cli(folder, "train", "--solver", "solver.yaml", "--set", "max_iter=3", check=False)
    assert refused.returncode == 2 and "already holds the files of an earlier run" in refused.stderr
    assert sorted(p.name for p in (folder / "out").iterdir()) == old       # nothing touched
    assert (folder / "out/run_log.csv").read_text() == old_log
    _cli(folder, "train", "--solver", "solver.yaml", "--set", "max_iter=3", "--overwrite")
    now = sorted(p.name for p in (folder / "out").iterdir() if not p.name.endswith(".lock"))
    assert now == ["run_iter_2.model.npz", "run_iter_2.solverstate.npz", "run_iter_3.model.npz",
                   "run_iter_3.solverstate.npz", "run_log.csv"]
    rows = (folder / "out/run_log.csv").read_text().splitlines()[1:]
    assert max(int(row.split(",")[0]) for row in rows) == 2                # the new run only
    new_id = _state_meta(folder / "out/run_iter_3.solverstate.npz")["run_id"]
    assert new_id != old_id and runs.read_record(folder / "out/run")["run_id"] == new_id


def test_latest_never_takes_another_runs_snapshot(tmp_path):
    folder = _folder(tmp_path)
    _cli(folder, "train", "--solver", "solver.yaml", "--set", "max_iter=4")
    # another run's complete snapshot, at a higher iteration, under this prefix's names
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    shutil.rmtree(other / "out")
    _cli(other, "train", "--solver", "solver.yaml", "--set", "max_iter=8", "snapshot=8")
    for suffix in ("model.npz", "solverstate.npz"):
        shutil.copy(other / f"out/run_iter_8.{suffix}", folder / f"out/run_iter_8.{suffix}")
    assert snapshot.latest_snapshot(str(folder / "out/run")) == \
        folder / "out/run_iter_4.solverstate.npz"
    resumed = _cli(folder, "train", "--solver", "solver.yaml", "--resume", "latest",
                   "--set", "max_iter=5")
    assert "run_iter_5.model.npz" in resumed.stdout


def test_latest_names_the_damaged_snapshot_it_skips(tmp_path):
    folder = _folder(tmp_path)
    _cli(folder, "train", "--solver", "solver.yaml", "--set", "max_iter=4")
    model = folder / "out/run_iter_4.model.npz"
    model.write_bytes(model.read_bytes()[:-10])                 # damaged after the fact
    done = subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver", "solver.yaml",
                           "--resume", "latest", "--set", "max_iter=5"], cwd=folder,
                          capture_output=True, text=True, timeout=120, check=True)
    assert ("--resume latest: skipped out/run_iter_4.solverstate.npz (its model file "
            "run_iter_4.model.npz does not match it)") in done.stdout
    assert "Resumed from out/run_iter_2.solverstate.npz at iteration 2" in done.stdout


# ------------------------------------------------------------------ the file system
def _mount(folder: Path, options: str):
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the injected-ENOSPC test covers the code)")


@pytest.mark.slow
def test_a_full_file_system_stops_with_a_message_and_keeps_the_earlier_snapshots(tmp_path):
    folder = _folder(tmp_path, max_iter=12, snapshot=1)
    # ~0.5 MB per snapshot (4000 outputs): a 1.6 MB file system fills after a few
    (folder / "net.yaml").write_text((BROKEN / "data_net.yaml").read_text().replace(
        "num_output: 10", "num_output: 1000"))
    _mount(folder / "out", "size=1600k")
    try:
        done = _cli(folder, "train", "--solver", "solver.yaml", check=False)
        assert done.returncode == 2, done.stderr
        assert "no space left on the device" in done.stderr
        assert ("cannot write the snapshot" in done.stderr and "out/run_iter_" in done.stderr) \
            or "cannot write the training log" in done.stderr, done.stderr
        assert _every_snapshot_loads(folder)
        assert not [p for p in (folder / "out").iterdir() if p.name.endswith(".tmp")]
        runs.claim_prefix(folder / "out/run", fresh="keep").release()    # not left locked
    finally:
        subprocess.run(["umount", "-l", str(folder / "out")], check=False)


@pytest.mark.slow
def test_a_read_only_folder_is_refused_before_any_work_and_keeps_the_snapshots(tmp_path):
    folder = _folder(tmp_path)
    _mount(folder / "out", "size=8m")
    try:
        _cli(folder, "train", "--solver", "solver.yaml")
        subprocess.run(["mount", "-o", "remount,ro", str(folder / "out")], check=True)
        done = _cli(folder, "train", "--solver", "solver.yaml", "--resume", "latest",
                    "--set", "max_iter=10", check=False)
        assert done.returncode == 2
        assert "the file system is read-only" in done.stderr and "out" in done.stderr
        checked = _cli(folder, "check", "--solver", "solver.yaml", check=False)
        assert checked.returncode == 2 and "read-only" in checked.stderr
        assert len(_every_snapshot_loads(folder)) == 3
    finally:
        subprocess.run(["umount", "-l", str(folder / "out")], check=False)


def test_an_injected_enospc_keeps_every_earlier_snapshot(tmp_path, monkeypatch, capsys):
    """Without a small file system: the third snapshot file's write fails with ENOSPC."""
    folder = _folder(tmp_path)
    monkeypatch.chdir(folder)
    real_fsync = os.fsync

    def fsync(fd):              # the disk fills while the iteration-4 model is written
        if ".run_iter_4.model.npz." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(snapshot.os, "fsync", fsync)
    import logging
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        assert main(["--quiet", "train", "--solver", "solver.yaml"]) == 2
    finally:
        root.handlers[:] = handlers
    err = capsys.readouterr().err
    assert "cannot write the snapshot: no space left on the device" in err
    assert "Traceback" not in err
    monkeypatch.setattr(snapshot.os, "fsync", real_fsync)
    assert [p.name for p in _every_snapshot_loads(folder)] == ["run_iter_2.solverstate.npz"]
    assert not list((folder / "out").glob(".*.tmp"))


def test_snapshots_respect_the_umask_and_stale_temporaries_go(tmp_path, monkeypatch):
    folder = _folder(tmp_path, max_iter=2)
    (folder / "out").mkdir()
    stale = folder / "out/.run_iter_4.model.npz.x1y2.tmp"
    stale.write_bytes(b"half a snapshot")
    other = folder / "out/.another_iter_4.model.npz.x1y2.tmp"       # not this prefix's
    other.write_bytes(b"")
    previous = os.umask(0o027)
    try:
        done = _cli(folder, "train", "--solver", "solver.yaml")
    finally:
        os.umask(previous)
    assert "removed out/.run_iter_4.model.npz.x1y2.tmp" in done.stdout + done.stderr
    assert not stale.exists() and other.exists()
    for path in (folder / "out").glob("run_*"):
        assert path.stat().st_mode & 0o777 == 0o640, path


@pytest.mark.slow
def test_ctrl_c_while_starting_prints_no_traceback(tmp_path):
    """SIGINT while the modules load (or the net is built) ends with one line, no traceback.
    (Before solverkit's own code runs at all, in the interpreter's start-up, Python's
    default applies.)"""
    folder = _folder(tmp_path)
    for delay in (0.12, 0.2, 0.3, 0.45, 0.6):
        process = subprocess.Popen([sys.executable, "-m", "solverkit", "check", "--solver",
                                    "solver.yaml"], cwd=folder, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
        assert "Traceback" not in err, (delay, err)
        if process.returncode != 0 and not err.strip():
            # on a loaded machine the signal can come before the interpreter has set up its
            # own handler: the process is killed by it and prints nothing at all
            assert process.returncode == -signal.SIGINT, (delay, process.returncode)
        elif process.returncode != 0:
            assert err.strip().splitlines()[-1] == "solverkit: interrupted", (delay, err)
