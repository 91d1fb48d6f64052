"""Commands that write never overwrite one of their own inputs, and replace an existing
file only with --force (the message names it); what they write has the umask's mode."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from solverkit.cli import main

BROKEN = Path(__file__).parent / "broken"


@pytest.fixture
def cli(monkeypatch, tmp_path, capsys):
    """main(args) in tmp_path: (status, stderr)."""
    monkeypatch.chdir(tmp_path)

    def call(*args):
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            status = main([str(a) for a in args])
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        return status, capsys.readouterr().err
    return call


@pytest.fixture
def mlp(tmp_path):
    """mlp.prototxt (a Caffe net) and its weights w.model.npz."""
    net_path = tmp_path / "mlp.prototxt"
    net_path.write_text((BROKEN / "caffe_good_net.prototxt").read_text())
    net = sk.Net(net_path, phase="TEST", seed=0)
    net.save(tmp_path / "w.model.npz")
    net.close()
    return net_path, tmp_path / "w.model.npz"


def test_export_never_replaces_the_net_it_reads(mlp, tmp_path):
    """The .prototxt written beside mlp.caffemodel would be mlp.prototxt: refused, even
    with --force, and the net is untouched."""
    net_path, weights = mlp
    before = net_path.read_bytes()
    for extra in ([], ["--force"]):
        done = subprocess.run(
            [sys.executable, "-m", "solverkit", "export", "--net", "mlp.prototxt", "--weights",
             "w.model.npz", "-o", "mlp.caffemodel", *extra], cwd=tmp_path,
            capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "mlp.prototxt" in done.stderr and "also an input" in done.stderr
        assert net_path.read_bytes() == before and not (tmp_path / "mlp.caffemodel").exists()


def test_export_replaces_an_existing_file_only_with_force(mlp, tmp_path, cli):
    (tmp_path / "out").mkdir()
    old = os.umask(0o027)
    try:
        status, _ = cli("export", "--net", "mlp.prototxt", "--weights", "w.model.npz", "-o",
                        "out/deploy.caffemodel")
    finally:
        os.umask(old)
    assert status == 0
    for written in ("out/deploy.caffemodel", "out/deploy.prototxt"):
        assert stat.S_IMODE((tmp_path / written).stat().st_mode) == 0o640
    (tmp_path / "out/deploy.caffemodel").unlink()          # only the prototxt is still there
    status, err = cli("export", "--net", "mlp.prototxt", "--weights", "w.model.npz", "-o",
                      "out/deploy.caffemodel")
    assert status == 2 and "out/deploy.prototxt" in err and "--force" in err
    assert not (tmp_path / "out/deploy.caffemodel").exists()
    assert cli("export", "--net", "mlp.prototxt", "--weights", "w.model.npz", "-o",
               "out/deploy.caffemodel", "--force")[0] == 0
    status, err = cli("export", "--net", "mlp.prototxt", "--weights", "w.model.npz", "-o",
                      "w.model.npz", "--force")
    assert status == 2 and "also an input" in err


def test_import_caffe_never_replaces_its_input(mlp, tmp_path, cli):
    net_path, _ = mlp
    before = net_path.read_bytes()
    link = tmp_path / "same.yaml"
    link.symlink_to(net_path)                   # the same file under another name
    status, err = cli("import-caffe", "mlp.prototxt", "-o", "same.yaml", "--force")
    assert status == 2 and "also an input" in err and net_path.read_bytes() == before
    assert cli("import-caffe", "mlp.prototxt", "-o", "mlp.yaml")[0] == 0
    status, err = cli("import-caffe", "mlp.prototxt", "-o", "mlp.yaml")
    assert status == 2 and "mlp.yaml" in err and "already exists" in err
    assert cli("import-caffe", "mlp.prototxt", "-o", "mlp.yaml", "--force")[0] == 0


def test_compute_image_mean_never_replaces_its_list(tmp_path, cli):
    pytest.importorskip("PIL")
    from PIL import Image
    for i in range(2):
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    listing = tmp_path / "list.txt"
    listing.write_text("0.png 0\n1.png 1\n")
    status, err = cli("compute-image-mean", "list.txt", "-o", "list.txt", "--force")
    assert status == 2 and "also an input" in err and listing.read_text().startswith("0.png")
    assert cli("compute-image-mean", "list.txt", "-o", "mean.binaryproto")[0] == 0
    status, err = cli("compute-image-mean", "list.txt", "-o", "mean.binaryproto")
    assert status == 2 and "mean.binaryproto" in err and "--force" in err
    assert cli("compute-image-mean", "list.txt", "-o", "mean.binaryproto", "--force")[0] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_predict_never_writes_over_an_input(mlp, tmp_path, cli):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 4, 4), np.float32))
    status, err = cli("predict", "--net", "mlp.prototxt", "--weights", "w.model.npz", "x.npy",
                      "-o", "x.npy", "--force")
    assert status == 2 and "also an input" in err
    assert np.load(tmp_path / "x.npy").shape == (2, 1, 4, 4)
