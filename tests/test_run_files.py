"""RunFiles names every file of a run; the best snapshot is one atomic pair; logs are cut in
place, never rewritten; a run that fails on a configuration error leaves nothing behind."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import solverkit as sk
from solverkit import runs as runs_module  # where run logs are opened
from solverkit.runs import RunFiles, claim_prefix
from solverkit.snapshot import atomic_write_npz, file_sha256, read_npz

NET = {"name": "tiny", "layers": [
    {"name": "data", "type": "Data", "top": ["data", "label"], "include": {"phase": "TRAIN"},
     "source": "builtin:digits/train", "batch_size": 16, "transform": {"scale": 0.0625}},
    {"name": "data", "type": "Data", "top": ["data", "label"], "include": {"phase": "TEST"},
     "source": "builtin:digits/test", "batch_size": 60, "transform": {"scale": 0.0625}},
    {"name": "ip1", "type": "InnerProduct", "bottom": "data", "top": "ip1", "num_output": 10,
     "weight_filler": {"type": "xavier"}},
    {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip1", "label"], "top": "loss"},
]}


def _run(folder: Path, **fields) -> Path:
    (folder / "net.yaml").write_text(yaml.safe_dump(NET))
    solver = {"net": "net.yaml", "base_lr": 0.05, "max_iter": 6, "test_interval": 2,
              "test_iter": 1, "random_seed": 1, "snapshot_prefix": str(folder / "out/run"),
              **fields}
    path = folder / "solver.yaml"
    path.write_text(yaml.safe_dump(solver))
    return path


def _cli(folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "solverkit", *args], cwd=folder,
                          capture_output=True, text=True, timeout=120, check=False)


def test_run_files_names_every_file_of_a_run(tmp_path):
    files = RunFiles(tmp_path / "out" / "run")
    assert files.log.name == "run_log.csv" and files.debug_log.name == "run_debug.csv"
    assert files.labels.name == "run_labels.txt" and files.lock.name == "run.lock"
    assert files.tensorboard.name == "run_tensorboard"
    assert files.model(12).name == "run_iter_12.model.npz"
    assert files.state(12).name == "run_iter_12.solverstate.npz"
    assert files.named_model("best").name == "run_best.model.npz"
    assert files.named_state("best").name == "run_best.solverstate.npz"
    assert files.existing() == []


def test_only_the_runs_own_temporaries_are_left_overs(tmp_path):
    """A claim removes what a killed run on its prefix left, never the temporary file of a
    live run on another prefix that starts alike (run_a beside run)."""
    files = RunFiles(tmp_path / "run")
    ours = [tmp_path / ".run_iter_5.model.npz.k3j_x9.tmp", tmp_path / ".run_labels.txt.a1.tmp",
            tmp_path / ".run_best.pair.0f0f.tmp"]
    theirs = [tmp_path / ".run_a_iter_5.model.npz.k3j_x9.tmp", tmp_path / ".run_a_log.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"")
    assert files.temporaries() == sorted(ours)
    claim_prefix(files.prefix).release()
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


def test_the_labels_file_is_a_file_of_the_run(tmp_path):
    """A prefix holding only an earlier run's labels is in use; --overwrite removes them."""
    files = RunFiles(tmp_path / "run")
    files.labels.write_text("cat\ndog\n")
    other = tmp_path / "run_other_labels.txt"           # another prefix's: not ours
    other.write_text("x\n")
    assert files.existing() == [files.labels]
    with pytest.raises(sk.SolverkitError, match="run_labels.txt"):
        claim_prefix(files.prefix).release()
    claim_prefix(files.prefix, fresh="overwrite").release()
    assert not files.labels.exists() and other.exists()


def test_a_resumed_debug_log_is_cut_in_place_not_rewritten(tmp_path, monkeypatch):
    solver_path = _run(tmp_path, debug_info=True, snapshot=3)
    sk.Solver(solver_path, progress=False).solve()
    files = RunFiles(tmp_path / "out/run")
    before = files.debug_log.read_bytes()
    inode = files.debug_log.stat().st_ino
    opened = []
    real_open = open

    def spy(path, mode="r", *args, **kwargs):
        opened.append((Path(path).name, mode))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runs_module, "open", spy, raising=False)
    resumed = sk.Solver(solver_path, progress=False)
    resumed.claim_prefix("keep")
    resumed.restore(files.state(3))
    resumed.solve()
    resumed.close()
    assert ("run_debug.csv", "w") not in opened and ("run_debug.csv", "a") in opened
    after = files.debug_log.read_bytes()
    kept = before[:before.index(b"\n4,")]    # rows of iterations 0-3 (written after 3)
    assert after.startswith(kept) and files.debug_log.stat().st_ino == inode
    assert after == before                   # the same run: the same rows again


def _pair_is_whole(files: RunFiles) -> bool:
    """The named best state and model are one matching pair (True), or absent (False)."""
    state, model = files.named_state("best"), files.named_model("best")
    if not os.path.lexists(state):
        assert not os.path.lexists(model)
        return False
    real_state, real_model = Path(os.path.realpath(state)), Path(os.path.realpath(model))
    assert real_state.parent == real_model.parent           # one folder: one pair
    _, meta = read_npz(real_state, "solverstate")
    beside = real_state.parent / meta["model_file"]
    assert beside == real_model and file_sha256(beside) == meta["model_sha256"]
    return True


def test_sigkill_during_best_snapshots_always_leaves_a_matching_pair(tmp_path):
    """Training writes a new best pair almost every iteration; it is killed (SIGKILL) at
    random instants, again and again: the named pair always matches, and resumes."""
    solver_path = _run(tmp_path, max_iter=100000, test_interval=1,
                       snapshot_best={"output": "loss", "mode": "min"})
    files = RunFiles(tmp_path / "out/run")
    rng = random.Random(7)
    kills, switches, seen = 0, 0, set()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline or kills < 4:
        pid = os.fork()
        if pid == 0:                                    # the child trains until killed
            try:
                solver = sk.Solver(solver_path, progress=False)
                solver.claim_prefix("keep")             # an earlier child's files stay
                solver.solve()
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.3, 0.9))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        if _pair_is_whole(files):
            current = files.current_pair("best").name
            switches += current not in seen
            seen.add(current)
        assert kills < 30
    assert switches >= 2, (kills, switches)
    # the killed children's leftovers go when the prefix is claimed again
    claim_prefix(files.prefix, fresh="keep").release()
    assert files.temporaries() == [] and files.pair_folders("best") == [
        files.current_pair("best")]
    _, meta = read_npz(os.path.realpath(files.named_state("best")), "solverstate")
    resumed = sk.Solver(solver_path, progress=False)
    resumed.claim_prefix("keep")
    resumed.restore(files.named_state("best"))
    assert resumed.iter == meta["iter"]
    resumed.close()


def test_the_best_pair_replaces_a_pair_of_plain_files(tmp_path):
    """Best files of an older version (two plain files) become the linked pair."""
    solver_path = _run(tmp_path, snapshot_best={"output": "loss", "mode": "min"})
    sk.Solver(solver_path, progress=False).solve()
    files = RunFiles(tmp_path / "out/run")
    assert _pair_is_whole(files)
    state, model = files.named_state("best"), files.named_model("best")
    arrays, meta = read_npz(os.path.realpath(state), "solverstate")
    real_model = Path(os.path.realpath(model))
    state.unlink()
    model.unlink()
    shutil.copy(real_model, model)
    atomic_write_npz(state, arrays, {**meta, "model_file": model.name})
    shutil.rmtree(files.current_pair("best"))
    files.named_pair("best").unlink()
    resumed = sk.Solver(solver_path, progress=False)
    resumed.claim_prefix("keep")
    resumed.restore(files.named_state("best"))      # plain files still resume
    resumed.spec.max_iter = 12
    resumed.solve()
    resumed.close()
    assert files.named_state("best").is_symlink() and _pair_is_whole(files)


def test_a_configuration_error_during_the_run_leaves_no_run_files(tmp_path):
    """snapshot_best watching an output the test net lacks: exit 2 naming the solver file
    and the field, and no log left behind, so the corrected run is not refused."""
    _run(tmp_path, snapshot_best={"output": "acuracy"}, debug_info=True)
    done = _cli(tmp_path, "train", "--solver", "solver.yaml")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "solver.yaml" in done.stderr and "snapshot_best" in done.stderr
    assert RunFiles(tmp_path / "out/run").existing() == []
    _run(tmp_path, snapshot_best={"output": "loss", "mode": "min"})
    again = _cli(tmp_path, "train", "--solver", "solver.yaml")
    assert again.returncode == 0, again.stderr
