"""Convolution over blocks of samples of unequal size, with padding and stride."""

import numpy as np
import pytest

from solverkit import Net, dnnl
from solverkit.gradient_check import check_layer_gradients
from solverkit.layers import kernels, method_choice


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
    monkeypatch.setattr(method_choice, "CONV_BLOCK_BYTES", 2 * 2 * 9 * out * 8)
    net = Net({"name": "t", "dtype": "float64", "layers": [
        {"name": "x", "type": "Input", "top": "x", "shape": [list(x.shape)]}, layer]}, seed=0)
    assert [b.stop - b.start for b in net.layers[1].blocks] == [2, 1]
    w, b = (p.data for p in net.params["conv"])
    for _ in range(2):            # the second pass reuses the buffers of the first
        np.testing.assert_allclose(net.forward(x=x)["y"], _direct_conv(x, w, b, stride, pad),
                                   rtol=1e-10, atol=1e-12)
    check_layer_gradients(layer, {"x": x})


def _direct_pool_backward(x, dy, kernel, stride, pad, pool):
    """Caffe's Backward_cpu loops: MAX routes dy to the first maximum, AVE spreads dy/size."""
    n, c, h, w = x.shape
    dx = np.zeros_like(x)
    for r in range(dy.shape[2]):
        for q in range(dy.shape[3]):
            h0, w0 = r * stride - pad, q * stride - pad
            h1, w1 = min(h0 + kernel, h + pad), min(w0 + kernel, w + pad)
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            if pool == "AVE":
                dx[:, :, h0:h1, w0:w1] += dy[:, :, r, q, None, None] / size
                continue
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            k = window.argmax(axis=2)
            rows, cols = h0 + k // (w1 - w0), w0 + k % (w1 - w0)
            np.add.at(dx, (np.arange(n)[:, None], np.arange(c)[None, :], rows, cols),
                      dy[:, :, r, q])
    return dx


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel,stride,pad", [(3, 2, 0), (2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pooling_in_blocks_on_two_threads_matches_caffe_loops(kernel, stride, pad, pool,
                                                              monkeypatch):
    from test_vision import direct_pool

    from solverkit import threads
    rng = np.random.default_rng(5)
    x = rng.permutation(5 * 3 * 9 * 11).reshape(5, 3, 9, 11) / 7.0   # no ties
    layer = {"name": "pool", "type": "Pooling", "bottom": "x", "top": "y", "pool": pool,
             "kernel_size": kernel, "stride": stride, "pad": pad}
    # blocks of 2 images (of 15): 8 blocks, the last one smaller, over two threads
    cells = ((9 + 2 * pad) // stride + 2) * ((11 + 2 * pad) // stride + 2)
    monkeypatch.setattr(kernels, "CACHE_BLOCK_BYTES", 2 * stride * stride * cells * 8)
    monkeypatch.setattr(threads, "ELEMENTS_PER_THREAD", 1)
    before = threads.num_threads()
    threads.set_num_threads(2)
    try:
        net = Net({"name": "t", "dtype": "float64", "layers": [
            {"name": "x", "type": "Input", "top": "x", "shape": [list(x.shape)]}, layer]})
        assert len(net.layers[1].blocks) > 2
        y = net.forward(x=x)["y"]
        expected, _ = direct_pool(x, kernel, stride, pad, pool)
        np.testing.assert_allclose(y, expected, rtol=1e-12)
        dy = rng.standard_normal(y.shape)
        for _ in range(2):            # the second pass reuses the buffers of the first
            net.backward(y=dy)
            np.testing.assert_allclose(net.blobs["x"].diff,
                                       _direct_pool_backward(x, dy, kernel, stride, pad, pool),
                                       rtol=1e-12, atol=1e-15)
    finally:
        threads.set_num_threads(before)


METHODS = ["per_sample", "kernel_rows", "columns"] + (
    ["dnnl"] if dnnl.set_backend("auto") == "dnnl" else [])


@pytest.mark.parametrize("method", METHODS)
def test_results_are_bitwise_the_same_on_one_and_two_threads(method, monkeypatch):
    """Each block writes its own outputs: the thread count cannot change a single bit of
    numpy's methods. oneDNN's are bitwise the same from run to run on one thread count
    (its weight gradients sum in another order on another count)."""
    from solverkit import threads
    monkeypatch.setattr(threads, "ELEMENTS_PER_THREAD", 1)
    monkeypatch.setattr(kernels, "CACHE_BLOCK_BYTES", 4096)
    spec = {"name": "t", "dtype": "float32", "layers": [
        {"name": "x", "type": "Input", "top": "x", "shape": [[6, 3, 12, 12]]},
        {"name": "conv", "type": "Convolution", "bottom": "x", "top": "c", "num_output": 16,
         "kernel_size": 3, "pad": 1, "weight_filler": {"type": "xavier"}},
        {"name": "conv2", "type": "Convolution", "bottom": "c", "top": "c2", "num_output": 8,
         "kernel_size": 3, "pad": 1, "weight_filler": {"type": "xavier"}},
        {"name": "pool", "type": "Pooling", "bottom": "c2", "top": "p", "pool": "MAX",
         "kernel_size": 3, "stride": 2},
        {"name": "ave", "type": "Pooling", "bottom": "p", "top": "a", "pool": "AVE",
         "kernel_size": 3, "stride": 2, "pad": 1}]}
    x = np.random.default_rng(0).standard_normal((6, 3, 12, 12)).astype(np.float32)
    results = []
    before = threads.num_threads()
    previous = method_choice.prefer(method)
    try:
        for count in (1, 1, 2, 2):
            threads.set_num_threads(count)
            net = Net(spec, seed=1)
            assert [layer.method for layer in net.layers[1:3]] == [method, method]
            out = net.forward(x=x)["a"]
            net.backward(a=np.ones_like(out))
            results.append((out, net.blobs["x"].diff.copy(), net.params["conv"][0].diff.copy(),
                            net.params["conv2"][0].diff.copy()))
    finally:
        threads.set_num_threads(before)
        method_choice.prefer(previous)
    for first, again in ((0, 1), (2, 3)) if method == "dnnl" else ((0, 1), (0, 2), (0, 3)):
        for one, other in zip(results[first], results[again]):
            np.testing.assert_array_equal(one, other)
