"""Upsample (SegNet), ShuffleChannel (ShuffleNet), DepthwiseConvolution: values against
references written here from the forks' C++, and numeric gradients in float64."""

from __future__ import annotations

import numpy as np
import pytest

from solverkit.errors import SolverkitError
from solverkit.gradient_check import check_layer_gradients, layer_net

POOL = {"name": "pool", "type": "Pooling", "bottom": "x", "top": ["p", "mask"],
        "pool": "MAX", "kernel_size": 2, "stride": 2}


def _upsample_reference(x, mask, out_h, out_w):
    """SegNet's UpsampleLayer::Forward_cpu: zeros, then each value at its mask index."""
    n, c = x.shape[:2]
    top = np.zeros((n, c, out_h * out_w))
    for i in range(n):
        for ch in range(c):
            for k, value in enumerate(x[i, ch].ravel()):
                top[i, ch, int(mask[i, ch].ravel()[k])] = value
    return top.reshape(n, c, out_h, out_w)


@pytest.mark.parametrize("fields, size, out", [
    ({"scale": 2}, (6, 8), (6, 8)),
    ({"scale": 2, "pad_out_h": True}, (5, 8), (5, 8)),
    ({"upsample_h": 7, "upsample_w": 9}, (7, 9), (7, 9)),
])
def test_upsample_with_the_pooling_mask(rng, fields, size, out):
    x = rng.normal(size=(2, 3, *size))
    layer = {"name": "up", "type": "Upsample", "bottom": ["p", "mask"], "top": "y", **fields}
    net = layer_net(POOL, {"x": x}, extra_layers=[layer])
    net.forward()
    pooled, mask = net.blobs["p"].data, net.blobs["mask"].data
    y = net.blobs["y"].data
    assert y.shape == (2, 3, *out)
    np.testing.assert_array_equal(y, _upsample_reference(pooled, mask, *out))
    # every maximum goes back where it was found: unpooling the pooled map keeps the maxima
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[..., :out[0], :out[1]][kept])
    dy = rng.normal(size=y.shape)
    net.backward(y=dy)
    expected = np.take_along_axis(dy.reshape(6, -1), mask.reshape(6, -1).astype(int), axis=1)
    np.testing.assert_allclose(net.blobs["p"].diff.reshape(6, -1), expected)


def test_upsample_gradient(rng):
    mask = np.array([[[[0, 3], [9, 14]], [[1, 2], [12, 15]]]], dtype=float)
    check_layer_gradients({"name": "up", "type": "Upsample", "bottom": ["x", "mask"],
                           "top": "y", "scale": 2},
                          {"x": rng.normal(size=(1, 2, 2, 2)), "mask": mask})


def test_upsample_rejects_a_mask_outside_the_map(rng):
    net = layer_net({"name": "up", "type": "Upsample", "bottom": ["x", "mask"], "top": "y"},
                    {"x": np.ones((1, 1, 1, 1)), "mask": np.full((1, 1, 1, 1), 4.0)})
    with pytest.raises(SolverkitError, match="outside") as info:
        net.forward()
    assert info.value.layer == "up"


def test_shuffle_channel_interleaves_groups(rng):
    x = rng.normal(size=(2, 6, 3, 2))
    layer = {"name": "shuffle", "type": "ShuffleChannel", "bottom": "x", "top": "y", "group": 2}
    net = layer_net(layer, {"x": x})
    net.forward()
    group_row, group_column = 2, 3               # ShuffleChannelLayer's Resize_cpu
    for i in range(group_row):
        for j in range(group_column):
            np.testing.assert_array_equal(net.blobs["y"].data[:, j * group_row + i],
                                          x[:, i * group_column + j])
    check_layer_gradients(layer, {"x": x})


def test_shuffle_channel_group_must_divide_the_channels():
    with pytest.raises(SolverkitError) as info:
        layer_net({"name": "s", "type": "ShuffleChannel", "bottom": "x", "top": "y",
                   "group": 4}, {"x": np.zeros((1, 6, 2, 2))})
    assert info.value.field == "group"


def test_depthwise_convolution_is_one_filter_per_channel(rng):
    x = rng.normal(size=(2, 3, 7, 6))
    layer = {"name": "dw", "type": "DepthwiseConvolution", "bottom": "x", "top": "y",
             "num_output": 3, "kernel_size": 3, "pad": 1, "stride": 2,
             "weight_filler": {"type": "gaussian"}, "bias_filler": {"type": "gaussian"}}
    net = layer_net(layer, {"x": x})
    net.forward()
    weight, bias = (b.data for b in net.params["dw"])
    assert weight.shape == (3, 1, 3, 3)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((2, 3, 4, 3))
    for ch in range(3):
        for oh in range(4):
            for ow in range(3):
                window = padded[:, ch, 2 * oh:2 * oh + 3, 2 * ow:2 * ow + 3]
                out[:, ch, oh, ow] = (window * weight[ch, 0]).sum(axis=(1, 2)) + bias[ch]
    np.testing.assert_allclose(net.blobs["y"].data, out, rtol=1e-12)
    check_layer_gradients({**layer, "group": 3, "num_output": 6}, {"x": x})
