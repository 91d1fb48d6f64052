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
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
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
