"""ELU, PReLU, AbsVal, Power, Exp, Log, BNLL, Clip, Swish: values, gradients, in place."""

from __future__ import annotations

import numpy as np
import pytest

from solverkit.errors import ConfigError
from solverkit.gradient_check import check_layer_gradients, layer_net


def _away_from_zero(rng, shape, low=0.1, high=2.0):
    """Values of both signs with |x| in [low, high]: no kink within a finite-difference step."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


def _forward(layer: dict, x: np.ndarray) -> np.ndarray:
    net = layer_net({"name": "act", "bottom": "x", "top": "y", **layer}, {"x": x})
    net.forward()
    return net.blobs["y"].data.copy()


def _in_place_check(layer: dict, x: np.ndarray) -> None:
    """Gradients with the layer working in place on the output of an identity Power layer."""
    check_layer_gradients({"name": "copy", "type": "Power", "bottom": "x", "top": "h"},
                          {"x": x},
                          extra_layers=[{"name": "act", "bottom": "h", "top": "h", **layer}])


CASES = [
    ({"type": "ELU"}, lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    ({"type": "ELU", "alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    ({"type": "AbsVal"}, np.abs),
    ({"type": "Power", "power": 2.0, "scale": 0.5, "shift": 3.0}, lambda x: (3 + 0.5 * x) ** 2),
    ({"type": "Power", "power": -1.5, "scale": 2.0, "shift": 5.0},
     lambda x: (5 + 2 * x) ** -1.5),
    ({"type": "Power", "power": 0.5, "shift": 4.0}, lambda x: np.sqrt(4 + x)),
    ({"type": "Power", "power": 1.0, "scale": -3.0, "shift": 1.0}, lambda x: 1 - 3 * x),
    ({"type": "Power", "power": 3.0}, lambda x: x ** 3),
    ({"type": "Exp"}, np.exp),
    ({"type": "Exp", "base": 2.0, "scale": 0.5, "shift": 1.0}, lambda x: 2.0 ** (1 + 0.5 * x)),
    ({"type": "Log", "shift": 3.0}, lambda x: np.log(3 + x)),
    ({"type": "Log", "base": 10.0, "scale": 2.0, "shift": 5.0}, lambda x: np.log10(5 + 2 * x)),
    ({"type": "BNLL"}, lambda x: np.log1p(np.exp(x))),
    ({"type": "Clip", "min": -0.5, "max": 1.0}, lambda x: np.minimum(np.maximum(x, -0.5), 1.0)),
    ({"type": "Swish"}, lambda x: x / (1 + np.exp(-x))),
    ({"type": "Swish", "beta": 2.5}, lambda x: x / (1 + np.exp(-2.5 * x))),
]
IDS = [f"{layer['type']}{i}" for i, (layer, _) in enumerate(CASES)]


@pytest.mark.parametrize("layer,reference", CASES, ids=IDS)
def test_forward_matches_formula(rng, layer, reference):
    x = _away_from_zero(rng, (2, 3, 4))
    np.testing.assert_allclose(_forward(layer, x), reference(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layer,reference", CASES, ids=IDS)
def test_gradient(rng, layer, reference):
    x = _away_from_zero(rng, (2, 3, 4))
    if layer["type"] == "Clip":      # keep clear of the clip points too
        x = np.where(np.abs(x + 0.5) < 0.05, x - 0.2, x)
        x = np.where(np.abs(x - 1.0) < 0.05, x + 0.2, x)
    check_layer_gradients({"name": "act", "bottom": "x", "top": "y", **layer}, {"x": x})


@pytest.mark.parametrize("layer,reference",
                         [c for c in CASES if c[0]["type"] != "AbsVal"],
                         ids=[i for i, c in zip(IDS, CASES) if c[0]["type"] != "AbsVal"])
def test_in_place_gives_the_same_gradient(rng, layer, reference):
    x = _away_from_zero(rng, (2, 3, 4), low=0.3)
    if layer["type"] == "Clip":
        x = np.where(np.abs(x - 1.0) < 0.05, x + 0.2, x)
    _in_place_check(layer, x)


def test_absval_refuses_in_place():
    with pytest.raises(ConfigError, match="in place"):
        layer_net({"name": "abs", "type": "AbsVal", "bottom": "x", "top": "x"},
                  {"x": np.ones((2, 2))})


def test_bnll_is_finite_for_extreme_inputs():
    x = np.array([[-100.0, -40.0, 0.0, 40.0, 100.0, 1000.0]])
    y = _forward({"type": "BNLL"}, x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, [[np.exp(-100), np.log1p(np.exp(-40)), np.log(2),
                                    40 + np.log1p(np.exp(-40)), 100, 1000]], rtol=1e-12)
    net = layer_net({"name": "act", "type": "BNLL", "bottom": "x", "top": "y"}, {"x": x})
    net.forward()
    net.backward(y=np.ones_like(x))
    np.testing.assert_allclose(net.blobs["x"].diff, 1 / (1 + np.exp(-x)), rtol=1e-12)


def test_exp_and_log_reject_a_bad_base():
    for kind in ("Exp", "Log"):
        with pytest.raises(ConfigError, match="base"):
            layer_net({"name": "act", "type": kind, "bottom": "x", "top": "y", "base": 0.0},
                      {"x": np.ones((1, 2))})


def test_clip_needs_min_below_max():
    with pytest.raises(ConfigError, match="min"):
        layer_net({"name": "act", "type": "Clip", "bottom": "x", "top": "y", "min": 2, "max": 1},
                  {"x": np.ones((1, 2))})


# ---------------------------------------------------------------- PReLU
def test_prelu_default_slope_and_forward(rng):
    x = _away_from_zero(rng, (2, 3, 2, 2))
    net = layer_net({"name": "prelu", "type": "PReLU", "bottom": "x", "top": "y"}, {"x": x})
    slope = net.params["prelu"][0]
    np.testing.assert_array_equal(slope.data, [0.25, 0.25, 0.25])
    slope.data[...] = [0.1, -0.2, 0.5]
    net.forward()
    a = np.array([0.1, -0.2, 0.5])[None, :, None, None]
    np.testing.assert_allclose(net.blobs["y"].data, np.where(x > 0, x, a * x))


def test_prelu_channel_shared_has_one_slope(rng):
    x = _away_from_zero(rng, (2, 3, 2))
    net = layer_net({"name": "prelu", "type": "PReLU", "bottom": "x", "top": "y",
                     "channel_shared": True, "filler": {"type": "constant", "value": 0.3}},
                    {"x": x})
    assert net.params["prelu"][0].shape == (1,)
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, np.where(x > 0, x, 0.3 * x))


@pytest.mark.parametrize("fields,shape", [
    ({}, (3, 2, 2, 2)),
    ({"channel_shared": True}, (3, 2, 2, 2)),
    ({"filler": {"type": "uniform", "min": -0.5, "max": 0.5}}, (4, 3)),
])
def test_prelu_gradient(rng, fields, shape):
    layer = {"type": "PReLU", **fields}
    x = _away_from_zero(rng, shape)
    check_layer_gradients({"name": "act", "bottom": "x", "top": "y", **layer}, {"x": x})
    _in_place_check(layer, x)
