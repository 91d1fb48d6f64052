"""Eltwise, Softmax, ArgMax, Reduction: values against hand-computed numbers and numpy."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit import ConfigError, ShapeError
from solverkit.gradient_check import check_layer_gradients, layer_net


def _run(layer: dict, inputs: dict) -> sk.Net:
    net = layer_net(layer, inputs)
    net.forward()
    return net


def test_lecture_circuit_from_eltwise(make_net, input_layer):
    """f(x, y, z) = (x + y)·z at (-2, 5, -4): f = -12, df/dx = df/dy = z = -4, df/dz = x + y = 3."""
    net = make_net(
        input_layer(x=(1,), y=(1,), z=(1,)),
        {"name": "q", "type": "Eltwise", "bottom": ["x", "y"], "top": "q", "operation": "SUM"},
        {"name": "f", "type": "Eltwise", "bottom": ["q", "z"], "top": "f", "operation": "PROD"})
    out = net.forward(x=[-2.0], y=[5.0], z=[-4.0])
    assert out == {"f": -12.0}
    net.backward(f=1.0)
    assert net.blobs["x"].diff.tolist() == [-4.0]
    assert net.blobs["y"].diff.tolist() == [-4.0]
    assert net.blobs["z"].diff.tolist() == [3.0]
    assert net.blobs["q"].diff.tolist() == [-4.0]


def test_eltwise_sum_prod_max_values(make_net, input_layer):
    a, b = np.array([[1.0, -2, 3]]), np.array([[4.0, 5, -6]])
    for fields, expected in (({"coeff": [2, -1]}, 2 * a - b),
                             ({"operation": "PROD"}, a * b),
                             ({"operation": "MAX"}, np.maximum(a, b))):
        net = make_net(input_layer(a=(1, 3), b=(1, 3)),
                       {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                        **fields})
        np.testing.assert_array_equal(net.forward(a=a, b=b)["y"], expected)


def test_eltwise_max_routes_gradient_to_the_winner(make_net, input_layer):
    net = make_net(input_layer(a=(4,), b=(4,)),
                   {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                    "operation": "MAX"})
    net.forward(a=[1.0, 5, -1, 2], b=[3.0, 0, -2, 7])
    net.backward(y=[10.0, 20, 30, 40])
    assert net.blobs["a"].diff.tolist() == [0, 20, 30, 0]
    assert net.blobs["b"].diff.tolist() == [10, 0, 0, 40]


def test_eltwise_sum_in_place_gives_each_bottom_its_coefficient(make_net, input_layer):
    net = make_net(input_layer(a=(2,), b=(2,)),
                   {"name": "copy", "type": "Flatten", "bottom": "a", "top": "h", "axis": 0},
                   {"name": "e", "type": "Eltwise", "bottom": ["h", "b"], "top": "h",
                    "coeff": [2, 3]})
    assert net.forward(a=[1.0, 2], b=[3.0, 4])["h"].tolist() == [11, 16]
    net.backward(h=[1.0, 1.0])
    assert net.blobs["a"].diff.tolist() == [2, 2]
    assert net.blobs["b"].diff.tolist() == [3, 3]


def test_eltwise_coeff_errors(make_net, input_layer):
    with pytest.raises(ShapeError, match="coeff only applies to operation SUM") as err:
        make_net(input_layer(a=(2,), b=(2,)),
                 {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                  "operation": "MAX", "coeff": [1, 2]})
    assert err.value.layer == "e" and err.value.field == "coeff"
    with pytest.raises(ShapeError, match=r"one value per bottom \(2\), got 3"):
        make_net(input_layer(a=(2,), b=(2,)),
                 {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                  "coeff": [1, 2, 3]})


def test_softmax_values(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3)),
                   {"name": "sm", "type": "Softmax", "bottom": "x", "top": "p"})
    p = net.forward(x=[[0.0, np.log(2), np.log(3)], [1000.0, 1000.0, 1000.0]])["p"]
    np.testing.assert_allclose(p, [[1 / 6, 2 / 6, 3 / 6], [1 / 3, 1 / 3, 1 / 3]])
    # dx = p ⊙ (dy − Σ dy·p); with dy = one-hot of class 2 on row 0: p2·(e2 − p)
    net.backward(p=[[0.0, 0, 1], [0, 0, 0]])
    np.testing.assert_allclose(net.blobs["x"].diff[0],
                               [-3 / 6 * 1 / 6, -3 / 6 * 2 / 6, 3 / 6 * (1 - 3 / 6)])


def test_softmax_axis(make_net, input_layer):
    net = make_net(input_layer(x=(1, 2, 2)),
                   {"name": "sm", "type": "Softmax", "bottom": "x", "top": "p", "axis": 2})
    p = net.forward(x=[[[0.0, np.log(3)], [np.log(4), 0]]])["p"]
    np.testing.assert_allclose(p, [[[1 / 4, 3 / 4], [4 / 5, 1 / 5]]])


def test_argmax_per_sample_with_values():
    x = np.array([[[0.1, 0.9, 0.3]], [[0.7, 0.2, 0.5]]])            # (2, 1, 3)
    net = _run({"name": "am", "type": "ArgMax", "bottom": "x", "top": "y", "top_k": 2,
                "out_max_val": True}, {"x": x})
    y = net.blobs["y"].data
    assert y.shape == (2, 2, 2)
    np.testing.assert_array_equal(y[:, 0], [[1, 2], [0, 2]])
    np.testing.assert_allclose(y[:, 1], [[0.9, 0.3], [0.7, 0.5]])


def test_argmax_two_axes_pads_to_three_and_ties_pick_the_larger_index():
    net = _run({"name": "am", "type": "ArgMax", "bottom": "x", "top": "y"},
               {"x": np.array([[1.0, 5.0, 5.0, 0.0], [2.0, 2.0, 1.0, 0.0]])})
    assert net.blobs["y"].shape == (2, 1, 1)
    np.testing.assert_array_equal(net.blobs["y"].data.ravel(), [2, 1])


def test_argmax_along_an_axis(rng):
    x = rng.normal(size=(2, 5, 3))
    net = _run({"name": "am", "type": "ArgMax", "bottom": "x", "top": "y", "axis": 1,
                "top_k": 2}, {"x": x})
    expected = np.argsort(-x, axis=1)[:, :2]
    np.testing.assert_array_equal(net.blobs["y"].data, expected)
    net = _run({"name": "am", "type": "ArgMax", "bottom": "x", "top": "y", "axis": -1,
                "out_max_val": True}, {"x": x})
    np.testing.assert_allclose(net.blobs["y"].data, x.max(axis=-1, keepdims=True))


def test_argmax_top_k_too_large():
    with pytest.raises(ConfigError, match="top_k"):
        layer_net({"name": "am", "type": "ArgMax", "bottom": "x", "top": "y", "top_k": 4},
                  {"x": np.zeros((2, 3))})


@pytest.mark.parametrize("operation,reference", [
    ("SUM", lambda x: x.sum(axis=(1, 2))),
    ("ASUM", lambda x: np.abs(x).sum(axis=(1, 2))),
    ("SUMSQ", lambda x: (x ** 2).sum(axis=(1, 2))),
    ("MEAN", lambda x: x.mean(axis=(1, 2))),
])
def test_reduction(rng, operation, reference):
    x = rng.uniform(0.2, 1.0, (2, 3, 4)) * rng.choice([-1, 1], (2, 3, 4))
    layer = {"name": "r", "type": "Reduction", "bottom": "x", "top": "y",
             "operation": operation, "axis": 1, "coeff": -1.5}
    net = _run(layer, {"x": x})
    np.testing.assert_allclose(net.blobs["y"].data, -1.5 * reference(x))
    check_layer_gradients(layer, {"x": x})


def test_reduction_default_axis_gives_a_scalar(rng):
    x = rng.normal(size=(2, 3))
    net = _run({"name": "r", "type": "Reduction", "bottom": "x", "top": "y"}, {"x": x})
    assert net.blobs["y"].shape == ()
    assert float(net.blobs["y"].data) == pytest.approx(x.sum())
