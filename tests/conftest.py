"""Shared fixtures: tiny nets built from layer lists, YAML files in tmp_path, a seeded rng."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit import blas

# the product libraries this machine has: numpy's BLAS, oneDNN's matmul where it loads,
# and MKL with the mkl extra
BLAS_BACKENDS = ["numpy"] + [name for name in ("dnnl", "mkl") if blas.available(name)]
blas.set_backend(os.environ.get(blas.VARIABLE, "auto"))


@pytest.fixture(params=BLAS_BACKENDS)
def blas_backend(request, monkeypatch):
    """Run the test once per product library (then choose from the environment again);
    MKL and oneDNN take even the small products and vector steps of tests."""
    monkeypatch.setattr(blas, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(blas, "MIN_AXPBY_ELEMENTS", 0)
    blas.set_backend(request.param)
    yield request.param
    blas.set_backend(os.environ.get(blas.VARIABLE, "auto"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _make_net(*layers, phase="TRAIN", dtype="float64", seed=0, **net_fields) -> sk.Net:
    """A Net from layer entries (dicts in the YAML form), float64 unless told otherwise."""
    spec = {"name": "test", "dtype": dtype, **net_fields, "layers": list(layers)}
    return sk.Net(spec, phase=phase, seed=seed)


def _input_layer(**shapes) -> dict:
    """``input_layer(x=(2, 3), label=(2,))``: one Input layer with a top per keyword."""
    return {"name": "input", "type": "Input", "top": list(shapes),
            "shape": [list(s) for s in shapes.values()]}


@pytest.fixture
def make_net():
    """``make_net(layer, layer, ..., phase=..., dtype=..., seed=...)`` -> Net (float64 default)."""
    return _make_net


@pytest.fixture
def input_layer():
    """``input_layer(x=(2, 3), label=(2,))`` -> the Input layer entry."""
    return _input_layer


@pytest.fixture
def write_net(tmp_path):
    """Write a net spec (a dict, or YAML text) to ``tmp_path/<name>`` and return the path."""

    def write(spec, name="net.yaml"):
        path = tmp_path / name
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
        return path

    return write
