"""Embed, ArgMax, Reduction, Tile, Crop, Silence: values against numpy, numeric gradients."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit.errors import ConfigError
from solverkit.gradient_check import check_layer_gradients, layer_net


def _run(layer: dict, inputs: dict) -> sk.Net:
    net = layer_net(layer, inputs)
    net.forward()
    return net


# ---------------------------------------------------------------- Embed
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


# ---------------------------------------------------------------- ArgMax
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


# ---------------------------------------------------------------- Reduction
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


# ---------------------------------------------------------------- Tile
@pytest.mark.parametrize("axis,tiles", [(1, 3), (0, 2), (-1, 2)])
def test_tile(rng, axis, tiles):
    x = rng.normal(size=(2, 3, 2))
    layer = {"name": "t", "type": "Tile", "bottom": "x", "top": "y", "axis": axis,
             "tiles": tiles}
    net = _run(layer, {"x": x})
    # Caffe repeats the whole block of axes from ``axis`` on: copies laid end to end
    expected = np.concatenate([x] * tiles, axis=axis)
    np.testing.assert_allclose(net.blobs["y"].data, expected)
    check_layer_gradients(layer, {"x": x})


# ---------------------------------------------------------------- Crop
@pytest.mark.parametrize("fields,window", [
    ({}, (slice(None), slice(None), slice(0, 2), slice(0, 3))),
    ({"offset": [1]}, (slice(None), slice(None), slice(1, 3), slice(1, 4))),
    ({"offset": [2, 0]}, (slice(None), slice(None), slice(2, 4), slice(0, 3))),
    ({"axis": 1, "offset": [1, 0, 2]}, (slice(None), slice(1, 3), slice(0, 2), slice(2, 5))),
])
def test_crop(rng, fields, window):
    x = rng.normal(size=(2, 4, 4, 5))
    ref = np.zeros((1, 2, 2, 3))
    layer = {"name": "crop", "type": "Crop", "bottom": ["x", "ref"], "top": "y", **fields}
    net = _run(layer, {"x": x, "ref": ref})
    np.testing.assert_allclose(net.blobs["y"].data, x[window])
    check_layer_gradients(layer, {"x": x, "ref": ref})


def test_crop_out_of_bounds_names_offset():
    with pytest.raises(ConfigError, match="offset") as info:
        layer_net({"name": "crop", "type": "Crop", "bottom": ["x", "ref"], "top": "y",
                   "offset": [3]}, {"x": np.zeros((1, 1, 4, 4)), "ref": np.zeros((1, 1, 2, 2))})
    assert info.value.field == "offset"


# ---------------------------------------------------------------- Silence
def test_silence_hides_a_blob_from_the_outputs(rng):
    net = sk.Net({"name": "s", "dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": ["x", "unused"], "shape": [[2, 3], [2]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2},
        {"name": "quiet", "type": "Silence", "bottom": "unused"}]})
    assert net.outputs == ["y"]
    out = net.forward(x=rng.normal(size=(2, 3)), unused=np.ones(2))
    assert set(out) == {"y"}


def test_silence_backward_zeroes_diffs():
    blob = sk.Blob((2, 2), np.float64, name="b")
    blob.diff[...] = 5.0
    layer = layer_net({"name": "quiet", "type": "Silence", "bottom": "x"},
                      {"x": np.ones((2, 2))}).layer("quiet")
    layer.backward([], [True], [blob])
    assert not np.any(blob.diff)
