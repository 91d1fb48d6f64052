"""Convolution over blocks of samples of unequal size, with padding and stride."""

import numpy as np
import pytest

from solverkit import Net
from solverkit.gradient_check import check_layer_gradients
from solverkit.layers import vision


def _direct_conv(x, w, b, stride, pad):
    """Cross-correlation by explicit loops over output pixels (float64)."""
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.empty((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w) + b
    return y


@pytest.mark.parametrize("stride,pad", [(1, 2), (2, 1), (1, 0)])
def test_convolution_in_blocks_of_two_and_one_sample(stride, pad, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 6, 5))
    layer = {"name": "conv", "type": "Convolution", "bottom": "x", "top": "y", "num_output": 3,
             "kernel_size": 3, "stride": stride, "pad": pad,
             "weight_filler": {"type": "gaussian", "std": 1.0},
             "bias_filler": {"type": "gaussian", "std": 1.0}}
    # room for two samples' columns: blocks of 2 and 1 (the last block is smaller)
    out = ((6 + 2 * pad - 3) // stride + 1) * ((5 + 2 * pad - 3) // stride + 1)
    monkeypatch.setattr(vision, "CONV_BLOCK_BYTES", 2 * 2 * 9 * out * 8)
    net = Net({"name": "t", "dtype": "float64", "layers": [
        {"name": "x", "type": "Input", "top": "x", "shape": [list(x.shape)]}, layer]}, seed=0)
    assert [b.stop - b.start for b in net.layers[1].blocks] == [2, 1]
    w, b = (p.data for p in net.params["conv"])
    for _ in range(2):            # the second pass reuses the buffers of the first
        np.testing.assert_allclose(net.forward(x=x)["y"], _direct_conv(x, w, b, stride, pad),
                                   rtol=1e-10, atol=1e-12)
    check_layer_gradients(layer, {"x": x})
