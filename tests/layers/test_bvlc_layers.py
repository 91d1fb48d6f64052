"""Threshold, BatchReindex, Filter, SPP and Im2col against references written from Caffe's
layer semantics, and their gradients (float64 central differences)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from solverkit.errors import SolverkitError
from solverkit.gradient_check import check_layer_gradients, layer_net


def forward(layer, inputs, top="y"):
    net = layer_net({"name": "layer", **layer}, inputs)
    net.forward()
    return net, net.blobs[top].data.copy()


# ---------------------------------------------------------------- Threshold

def test_threshold_is_a_step_above_the_threshold(rng):
    x = rng.standard_normal((2, 3, 4))
    x[0, 0, 0] = 0.25                      # exactly at the threshold: 0 (strictly greater)
    _, y = forward({"type": "Threshold", "bottom": "x", "top": "y", "threshold": 0.25},
                   {"x": x})
    np.testing.assert_array_equal(y, (x > 0.25).astype(np.float64))
    assert y[0, 0, 0] == 0


# ---------------------------------------------------------------- BatchReindex

def test_batch_reindex_gathers_and_scatters_back(rng):
    x = rng.standard_normal((4, 2, 3))
    permut = np.array([3.0, 0.0, 3.0, 1.0, 1.0])   # repeats, and item 2 left out
    layer = {"type": "BatchReindex", "bottom": ["x", "permut"], "top": "y"}
    net, y = forward(layer, {"x": x, "permut": permut})
    np.testing.assert_array_equal(y, np.stack([x[int(i)] for i in permut]))
    dy = rng.standard_normal(y.shape)
    net.backward(y=dy)
    expected = np.zeros_like(x)
    for k, i in enumerate(permut.astype(int)):
        expected[i] += dy[k]
    np.testing.assert_allclose(net.blobs["x"].diff, expected)
    worst = check_layer_gradients({"name": "layer", **layer}, {"x": x, "permut": permut})
    assert set(worst) == {"input:x"}


def test_batch_reindex_refuses_indices_out_of_range(rng):
    layer = {"name": "layer", "type": "BatchReindex", "bottom": ["x", "permut"], "top": "y"}
    net = layer_net(layer, {"x": rng.standard_normal((3, 2)), "permut": np.array([0.0, 3.0])})
    with pytest.raises(SolverkitError, match=r"layer.*\[0, 3\)"):
        net.forward()


# ---------------------------------------------------------------- Filter

def test_filter_keeps_selected_items_and_the_net_follows_the_new_shapes(rng):
    x = rng.standard_normal((5, 3))
    label = np.arange(5.0)
    spec = [{"name": "filter", "type": "Filter", "bottom": ["x", "label", "keep"],
             "top": ["fx", "flabel"]},
            {"name": "ip", "type": "InnerProduct", "bottom": "fx", "top": "ip",
             "num_output": 2, "weight_filler": {"type": "gaussian"}}]
    keep = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    net = layer_net(spec[0], {"x": x, "label": label, "keep": keep}, extra_layers=spec[1:])
    net.forward()
    np.testing.assert_array_equal(net.blobs["fx"].data, x[[0, 2, 3]])
    np.testing.assert_array_equal(net.blobs["flabel"].data, [0.0, 2.0, 3.0])
    w, b = (blob.data for blob in net.params["ip"])
    np.testing.assert_allclose(net.blobs["ip"].data, x[[0, 2, 3]] @ w.T + b)
    dy = rng.standard_normal((3, 2))
    net.backward(ip=dy)
    expected = np.zeros_like(x)
    expected[[0, 2, 3]] = dy @ w
    np.testing.assert_allclose(net.blobs["x"].diff, expected)
    net.set_input("keep", np.array([0.0, 1.0, 0.0, 0.0, 0.0]))
    net.forward()                                  # one item now: shapes follow the data
    assert net.blobs["ip"].shape == (1, 2)
    np.testing.assert_array_equal(net.blobs["flabel"].data, [1.0])
    worst = check_layer_gradients(spec[0], {"x": x, "label": label, "keep": keep},
                                  extra_layers=spec[1:])
    assert "input:x" in worst and "input:keep" not in worst


# ---------------------------------------------------------------- SPP

def reference_pool(x, kernel, stride, pad, method):
    """Caffe's PoolingLayer on the CPU, one output cell at a time."""
    n, c, h, w = x.shape
    out = []
    for size, k, s, p in ((h, kernel[0], stride[0], pad[0]), (w, kernel[1], stride[1], pad[1])):
        pooled = int(math.ceil((size + 2 * p - k) / s)) + 1
        if p and (pooled - 1) * s >= size + p:
            pooled -= 1
        out.append(pooled)
    y = np.zeros((n, c, *out))
    for i in range(out[0]):
        for j in range(out[1]):
            h0, w0 = i * stride[0] - pad[0], j * stride[1] - pad[1]
            h1, w1 = min(h0 + kernel[0], h + pad[0]), min(w0 + kernel[1], w + pad[1])
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            window = x[:, :, h0:h1, w0:w1]
            y[:, :, i, j] = window.max(axis=(2, 3)) if method == "MAX" else \
                window.sum(axis=(2, 3)) / size
    return y


def reference_spp(x, height, method):
    n, _, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        parts.append(reference_pool(x, (kh, kw), (kh, kw), (ph, pw), method))
    if height == 1:
        return parts[0]
    return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(3, (2, 2, 7, 9)), (1, (1, 3, 5, 4)),
                                          (2, (1, 1, 6, 6))])
def test_spp_matches_caffes_bins(rng, pool, height, shape):
    x = rng.permutation(np.prod(shape)).reshape(shape) / 7.0     # distinct values: no ties
    layer = {"type": "SPP", "bottom": "x", "top": "y", "pyramid_height": height, "pool": pool}
    _, y = forward(layer, {"x": x})
    np.testing.assert_allclose(y, reference_spp(x, height, pool), rtol=1e-12)
    check_layer_gradients({"name": "layer", **layer}, {"x": x})


def test_spp_names_the_level_an_image_is_too_small_for(rng):
    with pytest.raises(SolverkitError, match="pyramid level 2"):
        forward({"type": "SPP", "bottom": "x", "top": "y", "pyramid_height": 3},
                {"x": rng.standard_normal((1, 1, 3, 3))})


# ---------------------------------------------------------------- Im2col

def reference_im2col(x, kernel, stride, pad, dilation):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    y = np.zeros((n, c * kh * kw, oh, ow))
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                for a in range(oh):
                    for b in range(ow):
                        r, s = a * sh - ph + i * dh, b * sw - pw + j * dw
                        if 0 <= r < h and 0 <= s < w:
                            y[:, (ch * kh + i) * kw + j, a, b] = x[:, ch, r, s]
    return y


@pytest.mark.parametrize("fields,geometry", [
    ({"kernel_size": 3}, ((3, 3), (1, 1), (0, 0), (1, 1))),
    ({"kernel_h": 2, "kernel_w": 3, "stride": 2, "pad": 1, "dilation": 2},
     ((2, 3), (2, 2), (1, 1), (2, 2))),
])
def test_im2col_lays_windows_out_as_channels(rng, fields, geometry):
    x = rng.standard_normal((2, 2, 6, 7))
    layer = {"type": "Im2col", "bottom": "x", "top": "y", **fields}
    _, y = forward(layer, {"x": x})
    np.testing.assert_array_equal(y, reference_im2col(x, *geometry))
    check_layer_gradients({"name": "layer", **layer}, {"x": x})
