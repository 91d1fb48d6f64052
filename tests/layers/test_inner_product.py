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


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_inner_product_and_the_relu_after_it_run_as_one_in_training(blas_backend, slope, rng):
    """In a training net the product, its bias and an in-place ReLU after it are one pass;
    the values, the ReLU's and the product's gradients are those of the two layers run one
    after the other (computed here in float64 from their formulas)."""
    net = sk.Net({"name": "fused", "dtype": "float32", "force_backward": True, "layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [[8, 20]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "h", "num_output": 12,
         "weight_filler": {"type": "gaussian", "std": 0.5},
         "bias_filler": {"type": "gaussian", "std": 0.5}},
        {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h", "negative_slope": slope},
        {"name": "out", "type": "InnerProduct", "bottom": "h", "top": "y", "num_output": 3,
         "bias_term": False,
         "weight_filler": {"type": "gaussian", "std": 0.5}}]}, seed=2)
    x = rng.standard_normal((8, 20)).astype(np.float32)
    dy = rng.standard_normal((8, 3)).astype(np.float32)
    y = net.forward(x=x)["y"]
    net.backward(y=dy)
    assert net.layer("ip").last_forward == "blas + ReLU"
    (w, b), (v,) = ([blob.data.astype(np.float64) for blob in net.params[name]]
                    for name in ("ip", "out"))
    pre = x @ w.T + b
    h = np.where(pre > 0, pre, slope * pre)
    assert (pre < 0).sum() > 10
    np.testing.assert_allclose(y, h @ v.T, rtol=1e-5, atol=1e-5)
    dh = (dy @ v) * np.where(pre > 0, 1.0, slope)
    np.testing.assert_allclose(net.params["ip"][0].diff, dh.T @ x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.params["ip"][1].diff, dh.sum(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.blobs["x"].diff, dh @ w, rtol=1e-4, atol=1e-5)


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
