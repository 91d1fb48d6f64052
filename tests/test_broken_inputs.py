"""The broken-input corpus (tests/broken/cases.yaml): every user mistake gives exit status 2,
one message naming the file, line, layer and field, and no traceback; a non-finite result
gives status 1 naming the layer; a run that cannot learn is a warning (status 0).

Each case runs in a folder of its own that holds (links to) the files of tests/broken, the
case's own ``files`` and whatever its ``setup`` makes (a FIFO, a symlink loop, a read-only
or tiny file system, a held lock, a model with a NaN weight, an earlier run). Most cases
call ``solverkit.cli.main`` in-process; those marked ``subprocess: true`` also run as real
processes, to show the exit status and the absence of a traceback end to end.
"""

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit.cli import main

BROKEN = Path(__file__).parent / "broken"
CASES = yaml.safe_load((BROKEN / "cases.yaml").read_text())
CLASSES = ("reader", "value", "plugin", "size", "nonfinite", "warning", "cli", "environment",
           "run")


def _content(spec) -> str:
    """A file's text: given, repeated pieces, or an existing file of tests/broken edited."""
    if isinstance(spec, str):
        return spec
    if "alias_chain" in spec:       # each alias one level deeper than the one before
        count = spec["alias_chain"]
        return "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n"
                                           for i in range(1, count)) + f"layers: *a{count - 1}\n"
    if "repeat" in spec:
        return "".join(text * count for text, count in spec["repeat"])
    text = (BROKEN / spec["base"]).read_text()
    for old, new in spec.get("replace", []):
        assert old in text, (spec["base"], old)
        text = text.replace(old, new, 1)
    return text + spec.get("append", "")


def _mount_tmpfs(folder: Path, options: str, stack: contextlib.ExitStack) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    stack.callback(subprocess.run, ["umount", "-l", str(folder)], check=False)


def _prepare(case: dict, folder: Path, stack: contextlib.ExitStack) -> None:
    for path in BROKEN.iterdir():
        if path.is_file():
            (folder / path.name).symlink_to(path)
    for name, spec in case.get("files", {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(_content(spec))
    for action in case.get("setup", []):
        (kind, arg), = action.items()
        if kind == "fifo":
            os.mkfifo(folder / arg)
        elif kind == "symlink":
            os.symlink(arg[1], folder / arg[0])
        elif kind == "readonly":
            _mount_tmpfs(folder / arg, "ro,size=1m", stack)
        elif kind == "tiny":        # a file system with room for a log but not a snapshot
            _mount_tmpfs(folder / arg, "size=48k", stack)
        elif kind == "lock":        # another run holding the prefix
            fd = os.open(folder / f"{arg}.lock", os.O_RDWR | os.O_CREAT)
            os.write(fd, json.dumps({"pid": 424242, "run_id": "other"}).encode())
            fcntl.flock(fd, fcntl.LOCK_EX)
            stack.callback(os.close, fd)
        elif kind == "model":       # weights of a net, one of them set to NaN or infinity
            net = sk.Net(folder / arg["net"], phase="TEST", seed=0)
            for key, value in arg.get("set", {}).items():
                layer, index = key.split("/")
                net.params[layer][int(index)].data.reshape(-1)[0] = float(value)
            (folder / arg["path"]).parent.mkdir(parents=True, exist_ok=True)
            net.save(folder / arg["path"])
            net.close()
        elif kind == "run":         # an earlier command that must succeed
            with _quiet_logging(), contextlib.chdir(folder):
                assert main(arg) == 0, arg
        else:
            raise AssertionError(f"unknown setup {kind}")


@contextlib.contextmanager
def _quiet_logging():
    """main() points the root logger at the current stdout; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _check(case: dict, status: int, out: str, err: str, seconds: float) -> None:
    text = out + err
    assert "Traceback" not in text, text
    assert status == case.get("status", 2), (case["id"], status, text)
    if status == 2:
        lines = [line for line in err.splitlines() if line.startswith("solverkit: error: ")]
    elif status == 1:
        lines = [line for line in err.splitlines() if line.startswith("solverkit: ")
                 and " failed: " in line]
    else:
        lines = [text]
    assert len(lines) == 1, (case["id"], err)
    assert "error: solverkit:" not in lines[0]
    for expected in case.get("expect", []):
        assert expected in lines[0], f"{case['id']}: {expected!r} not in {lines[0]!r}"
    for expected in case.get("output", []):       # warnings and notes beside the error
        assert expected in text, f"{case['id']}: {expected!r} not in {text!r}"
    for rejected in case.get("reject", []):
        assert rejected not in text, f"{case['id']}: {rejected!r} in {text!r}"
    assert seconds < case.get("max_seconds", 60), (case["id"], seconds)


def test_the_corpus_is_large_and_covers_every_class():
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 150 and len(set(ids)) == len(ids)
    classes = {case.get("class") for case in CASES}
    assert set(CLASSES) <= classes, set(CLASSES) - classes
    assert {case.get("status", 2) for case in CASES} == {0, 1, 2}


def test_the_unbroken_inputs_pass(monkeypatch, capsys):
    """The broken files are variants of these: each fails for its own mistake only."""
    monkeypatch.chdir(BROKEN)
    with _quiet_logging():
        assert main(["check", "--net", "good_net.yaml"]) == 0
        assert main(["check", "--solver", "good_solver.yaml"]) == 0
        assert main(["check", "--solver", "data_solver.yaml"]) == 0
        assert main(["check", "--net", "caffe_good_net.prototxt"]) == 0
        assert main(["test", "--net", "caffe_good_net.prototxt", "--weights",
                     "caffe_good.caffemodel", "--iterations", "1"]) == 0


def _alarm(signum, frame):
    raise TimeoutError("the case hangs")


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_broken_input_in_process(case, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    with contextlib.ExitStack() as stack:
        _prepare(case, folder, stack)
        capsys.readouterr()
        monkeypatch.chdir(folder)
        monkeypatch.syspath_prepend(str(folder))            # plugin modules of the case
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(30)            # a hang fails the case instead of the suite
        start = time.perf_counter()
        try:
            with _quiet_logging():
                try:
                    status = main(case["args"])
                except SystemExit as exit_:         # --help
                    status = exit_.code or 0
        finally:
            seconds = time.perf_counter() - start
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        captured = capsys.readouterr()
        _check(case, status, captured.out, captured.err, seconds)
        written = [p for p in folder.glob("unused*") if not p.is_symlink()]
        assert not written              # nothing written on a failure


@pytest.mark.slow
def test_broken_inputs_as_processes(tmp_path):
    cases = [case for case in CASES if case.get("subprocess")]
    assert len(cases) >= 10
    with contextlib.ExitStack() as stack:
        processes = []
        for case in cases:
            folder = tmp_path / case["id"]
            folder.mkdir()
            _prepare(case, folder, stack)
            start = time.perf_counter()
            processes.append((case, start, subprocess.Popen(
                [sys.executable, "-m", "solverkit", *case["args"]], cwd=folder,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                    [str(folder), os.environ.get("PYTHONPATH", "")])})))
        for case, start, process in processes:
            out, err = process.communicate(timeout=120)
            # the processes share the cores: their times are checked in-process only
            _check({**case, "max_seconds": 120}, process.returncode, out, err,
                   time.perf_counter() - start)


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.chdir(BROKEN)
    done = subprocess.run([sys.executable, "-m", "solverkit", "check", "--net",
                           "unknown_field_net.yaml", "--debug"], capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert "weight_filer" in done.stderr


def test_a_nan_model_is_never_accurate(tmp_path):
    """An Accuracy over NaN scores is 0 (never 1, as when NaN compared as 'not higher')."""
    net = sk.Net(BROKEN / "data_net.yaml", phase="TEST", seed=0)
    net.params["ip1"][0].data[...] = np.nan
    outputs = net.forward()
    assert outputs["acc"] == 0.0 and np.isnan(outputs["loss"])
    net.close()
