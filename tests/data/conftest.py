"""Fixtures for the data tests: Data-layer nets that are always closed, and a check that
no prefetch thread outlives its test."""

from __future__ import annotations

import threading

import pytest

import solverkit as sk


@pytest.fixture(autouse=True)
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    # the compute threads (solverkit_N, started by the first large operation) live on
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
              and not t.name.startswith("solverkit_")]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def data_net():
    """``data_net(phase="TRAIN", seed=0, dtype="float32", top=("data", "label"), **fields)``:
    a net of one Data layer; closed at the end of the test."""
    nets = []

    def make(phase="TRAIN", seed=0, dtype="float32", top=("data", "label"), **fields):
        layer = {"name": "data", "type": "Data", "top": list(top), **fields}
        net = sk.Net({"name": "data_test", "dtype": dtype, "layers": [layer]},
                     phase=phase, seed=seed)
        nets.append(net)
        return net

    yield make
    for net in nets:
        net.close()


def _take(net, count):
    data, labels = [], []
    for _ in range(count):
        out = net.forward()
        data.append(out["data"])
        labels.append(out.get("label"))
    return data, labels


@pytest.fixture
def take():
    """``take(net, count)``: ``count`` forwards of a Data-only net -> (data list, label list)."""
    return _take


def _resume_matches(folder, net: dict, iters: int = 12, split_at: int = 5) -> None:
    """Train ``net`` (a dict) ``iters`` iterations straight, and ``split_at`` then resumed to
    ``iters`` through the CLI; the final weights must be identical."""
    import subprocess
    import sys

    import numpy as np
    import yaml

    (folder / "net.yaml").write_text(yaml.safe_dump(net))

    def train(name, max_iter, *extra):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({
            "net": "net.yaml", "base_lr": 0.02, "momentum": 0.9, "max_iter": max_iter,
            "snapshot": split_at, "random_seed": 2, "snapshot_prefix": name}))
        done = subprocess.run([sys.executable, "-m", "solverkit", "--quiet", "train", "--solver",
                               f"{name}.yaml", *extra], cwd=folder, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr

    train("straight", iters)
    train("split", split_at)
    train("split", iters, "--resume", f"split_iter_{split_at}.solverstate.npz")
    with np.load(folder / f"straight_iter_{iters}.model.npz") as a, \
            np.load(folder / f"split_iter_{iters}.model.npz") as b:
        assert set(a.files) == set(b.files)
        for key in a.files:
            if key != "__meta__":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture
def resume_matches():
    """``resume_matches(folder, net_dict, iters=12, split_at=5)``: straight == resumed."""
    return _resume_matches
