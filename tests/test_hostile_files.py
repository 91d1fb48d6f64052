"""A FIFO, a symlink to /dev/zero and an oversized (sparse) file given to the command line
as each kind of file a user names: one message naming the file, exit status 2, at once.

Without the bounded reader a FIFO hangs the command and /dev/zero is read until the
memory is gone; an oversized file is refused by its size before a byte of it is read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solverkit.cli import main
from solverkit.files import LIMITS

BROKEN = Path(__file__).parent / "broken"

IMAGE_NET = """name: images
layers:
  - {name: data, type: ImageData, top: [data, label], source: hostile.txt, batch_size: 2}
  - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 2}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip1, label], top: loss}
"""

# kind: (the hostile file's name, the command line, the cap it is held to)
KINDS = {
    "yaml_spec": ("hostile_net.yaml", ["check", "--net", "hostile_net.yaml"], "spec"),
    "prototxt": ("hostile_net.prototxt", ["check", "--net", "hostile_net.prototxt"], "spec"),
    "caffemodel": ("hostile.caffemodel", ["test", "--net", "caffe_good_net.prototxt",
                                          "--weights", "hostile.caffemodel",
                                          "--iterations", "1"], "caffemodel"),
    "npz_weights": ("hostile.model.npz", ["test", "--net", "caffe_good_net.prototxt",
                                          "--weights", "hostile.model.npz",
                                          "--iterations", "1"], "model"),
    "list_file": ("hostile.txt", ["check", "--net", "image_net.yaml"], "list"),
}
HOSTILE = {
    "fifo": "FIFO (named pipe), not a regular file",
    "dev_zero": "a device, not a regular file",
    "oversized": "bytes, more than the",
}
CASES = [(kind, hostile) for kind in KINDS for hostile in HOSTILE]


def _prepare(folder: Path, kind: str, hostile: str) -> list[str]:
    name, args, cap = KINDS[kind]
    (folder / "caffe_good_net.prototxt").symlink_to(BROKEN / "caffe_good_net.prototxt")
    (folder / "image_net.yaml").write_text(IMAGE_NET)
    path = folder / name
    if hostile == "fifo":
        os.mkfifo(path)
    elif hostile == "dev_zero":
        path.symlink_to("/dev/zero")
    else:               # sparse: as large as it says, without the disk space
        with open(path, "wb") as handle:
            handle.truncate(LIMITS[cap] + 1)
    return args


def _check(kind: str, hostile: str, status: int, err: str, seconds: float) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (kind, hostile, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("solverkit: error: "), err
    assert KINDS[kind][0] in lines[0] and HOSTILE[hostile] in lines[0], lines[0]
    if hostile == "oversized":
        assert f"{LIMITS[KINDS[kind][2]]:,}" in lines[0]
    assert seconds < 5, (kind, hostile, seconds)


def _alarm(signum, frame):
    raise TimeoutError("the command hangs on the file")


@pytest.mark.parametrize(("kind", "hostile"), CASES)
def test_hostile_file_in_process(kind, hostile, tmp_path, monkeypatch, capsys):
    args = _prepare(tmp_path, kind, hostile)
    monkeypatch.chdir(tmp_path)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    start = time.perf_counter()
    try:
        status = main(args)
    finally:
        seconds = time.perf_counter() - start
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        root.handlers[:] = handlers
        root.setLevel(level)
    _check(kind, hostile, status, capsys.readouterr().err, seconds)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "hostile"), CASES)
def test_hostile_file_as_a_process(kind, hostile, tmp_path):
    args = _prepare(tmp_path, kind, hostile)
    start = time.perf_counter()
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = subprocess.run([sys.executable, "-m", "solverkit", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30, check=False)
        _check(kind, hostile, done.returncode, done.stderr, time.perf_counter() - start)
        return
    pytest.fail(f"{kind} given as a {hostile}: the command hung (killed after 30 s)")
