"""InnerProduct and Embed: values against hand-computed numbers and numpy, numeric gradients."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit import ConfigError
from solverkit.gradient_check import check_layer_gradients, layer_net


def _run(layer: dict, inputs: dict) -> sk.Net:
    net = layer_net(layer, inputs)
    net.forward()
    return net


def test_inner_product_forward(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3)),
                   {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y",
                    "num_output": 2})
    w, b = net.params["ip"]
    assert w.shape == (2, 3) and b.shape == (2,)
    w.data[...] = [[1, 0, -1], [2, 1, 0]]
    b.data[...] = [0.5, -1]
    y = net.forward(x=[[1, 2, 3], [0, -1, 4]])["y"]
    assert y.tolist() == [[1 - 3 + 0.5, 2 + 2 - 1], [-4 + 0.5, -1 - 1]]


def test_inner_product_axis_and_transpose(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3, 2)),
                   {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y",
                    "num_output": 4, "axis": 2, "transpose": True, "bias_term": False,
                    "weight_filler": {"type": "gaussian"}})
    (w,) = net.params["ip"]
    assert w.shape == (2, 4)                 # transpose stores (fan_in, num_output)
    x = np.arange(12.0).reshape(2, 3, 2)
    y = net.forward(x=x)["y"]
    assert y.shape == (2, 3, 4)
    np.testing.assert_allclose(y, np.einsum("nsi,io->nso", x, w.data))


def test_embed_looks_up_rows_and_adds_bias(rng):
    index = np.array([[3.0, 0.0, 3.0], [1.0, 4.0, 2.0]])
    net = layer_net({"name": "emb", "type": "Embed", "bottom": "i", "top": "y",
                     "input_dim": 5, "num_output": 4, "weight_filler": {"type": "gaussian"},
                     "bias_filler": {"type": "gaussian"}}, {"i": index})
    weight, bias = net.params["emb"]
    assert weight.shape == (5, 4) and bias.shape == (4,)
    net.forward()
    expected = weight.data[index.astype(int)] + bias.data
    np.testing.assert_allclose(net.blobs["y"].data, expected)
    assert net.blobs["y"].shape == (2, 3, 4)
    net.clear_param_diffs()
    dy = rng.normal(size=(2, 3, 4))
    net.backward(y=dy)
    expected_dw = np.zeros((5, 4))
    for n in range(2):
        for t in range(3):
            expected_dw[int(index[n, t])] += dy[n, t]
    np.testing.assert_allclose(weight.diff, expected_dw)          # index 3 twice: summed
    np.testing.assert_allclose(bias.diff, dy.sum(axis=(0, 1)))


@pytest.mark.parametrize("bias_term", [True, False])
def test_embed_gradient(bias_term):
    check_layer_gradients({"name": "emb", "type": "Embed", "bottom": "i", "top": "y",
                           "input_dim": 4, "num_output": 3, "bias_term": bias_term,
                           "weight_filler": {"type": "gaussian"}},
                          {"i": np.array([2.0, 0.0, 2.0, 3.0])})


@pytest.mark.parametrize("bad", [5.0, -1.0, 1.5])
def test_embed_rejects_bad_indices(bad):
    net = layer_net({"name": "emb", "type": "Embed", "bottom": "i", "top": "y",
                     "input_dim": 5, "num_output": 2}, {"i": np.array([0.0, bad])})
    with pytest.raises(ConfigError, match="0..4") as info:
        net.forward()
    assert info.value.layer == "emb"
