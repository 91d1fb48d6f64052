"""ReLU, Sigmoid, TanH: forward values and gradients against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest

X = np.array([[-3.0, -0.5, 0.0, 0.25, 4.0]])


def _net(make_net, input_layer, layer_type, in_place=False, **fields):
    if in_place:
        return make_net(input_layer(x=X.shape),
                        {"name": "copy", "type": "Flatten", "bottom": "x", "top": "y"},
                        {"name": "act", "type": layer_type, "bottom": "y", "top": "y", **fields})
    return make_net(input_layer(x=X.shape),
                    {"name": "act", "type": layer_type, "bottom": "x", "top": "y", **fields})


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu(make_net, input_layer, slope, in_place):
    net = _net(make_net, input_layer, "ReLU", in_place, negative_slope=slope)
    y = net.forward(x=X)["y"]
    np.testing.assert_allclose(y, [[-3 * slope, -0.5 * slope, 0, 0.25, 4]])
    net.backward(y=np.full(X.shape, 2.0))
    np.testing.assert_allclose(net.blobs["x"].diff, [[2 * slope, 2 * slope, 2 * slope, 2, 2]])


@pytest.mark.parametrize("in_place", [False, True])
def test_sigmoid_gradient_is_sigma_times_one_minus_sigma(make_net, input_layer, in_place):
    net = _net(make_net, input_layer, "Sigmoid", in_place)
    sigma = 1 / (1 + np.exp(-X))
    np.testing.assert_allclose(net.forward(x=X)["y"], sigma, rtol=1e-12)
    net.backward(y=np.ones(X.shape))
    np.testing.assert_allclose(net.blobs["x"].diff, sigma * (1 - sigma), rtol=1e-12)
    assert net.blobs["x"].diff[0, 2] == 0.25                  # σ(0)(1 − σ(0))


def test_sigmoid_saturates_without_overflow(make_net, input_layer):
    net = make_net(input_layer(x=(2,)),
                   {"name": "act", "type": "Sigmoid", "bottom": "x", "top": "y"}, dtype="float32")
    with np.errstate(all="raise"):
        y = net.forward(x=[-1000.0, 1000.0])["y"]
    assert y.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("in_place", [False, True])
def test_tanh(make_net, input_layer, in_place):
    net = _net(make_net, input_layer, "TanH", in_place)
    t = (np.exp(X) - np.exp(-X)) / (np.exp(X) + np.exp(-X))
    np.testing.assert_allclose(net.forward(x=X)["y"], t, rtol=1e-12)
    net.backward(y=np.full(X.shape, 3.0))
    np.testing.assert_allclose(net.blobs["x"].diff, 3 * (1 - t * t), rtol=1e-12)
