"""BatchNorm and Scale over blocks of channels, Eltwise SUM over parts of the blobs, on
several threads: values against an independent numpy reference written from Caffe's
formulas, float32 and float64, in place and not, results that do not depend on the block
size or the thread count, and numeric gradients with many blocks."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit import threads
from solverkit.gradient_check import check_layer_gradients
from solverkit.layers import activation, normalization

SHAPES = [(1, 3, 5, 4), (4, 7, 3, 3), (3, 5), (2, 9, 11)]


@pytest.fixture
def many_blocks(monkeypatch):
    """Blocks of 32 bytes (several channels per block, several blocks per
    layer), every pass split over two threads."""
    monkeypatch.setattr(normalization, "CHANNEL_BLOCK_BYTES", 32)
    monkeypatch.setattr(threads, "ELEMENTS_PER_THREAD", 1)
    before = threads.num_threads()
    threads.set_num_threads(2)
    yield
    threads.set_num_threads(before)


def _chain_net(shape, dtype, in_place, seed=0):
    """Input -> BatchNorm -> Scale (bias) -> Eltwise SUM with the input, in place or not."""
    h = "x" if in_place else "h"
    s = "x" if in_place else "s"
    return sk.Net({"name": "chain", "dtype": dtype, "force_backward": True, "layers": [
        {"name": "input", "type": "Input", "top": ["x", "skip"], "shape": [list(shape)] * 2},
        {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": h,
         "moving_average_fraction": 0.8, "eps": 1e-3},
        {"name": "sc", "type": "Scale", "bottom": h, "top": s, "bias_term": True,
         "filler": {"type": "uniform", "min": 0.5, "max": 1.5},
         "bias_filler": {"type": "uniform", "min": -1, "max": 1}},
        {"name": "sum", "type": "Eltwise", "bottom": [s, "skip"], "top": "y"}]},
        phase="TRAIN", seed=seed)


def _reference(x, skip, dy, gamma, beta, eps, fraction, passes):
    """Caffe's BatchNorm (batch statistics), Scale and Eltwise SUM in float64 numpy."""
    n, c = x.shape[:2]
    v = x.reshape(n, c, -1).astype(np.float64)
    m = v.shape[0] * v.shape[2]
    mean = v.mean(axis=(0, 2))
    var = ((v - mean[:, None]) ** 2).mean(axis=(0, 2))
    x_hat = (v - mean[:, None]) / np.sqrt(var[:, None] + eps)
    y = x_hat * gamma[:, None] + beta[:, None] + skip.reshape(v.shape)
    g = dy.reshape(v.shape).astype(np.float64)
    d_gamma, d_beta = (g * x_hat).sum(axis=(0, 2)), g.sum(axis=(0, 2))
    g_hat = g * gamma[:, None]
    dx = (g_hat - g_hat.mean(axis=(0, 2), keepdims=True)
          - x_hat * (g_hat * x_hat).mean(axis=(0, 2), keepdims=True)) / np.sqrt(var[:, None] + eps)
    # the running sums after `passes` forwards of the same batch, from zero
    total = sum(fraction ** k for k in range(passes))
    running = (total * mean, total * var * (m / (m - 1) if m > 1 else 1.0), total)
    return {"y": y.reshape(x.shape), "dx": dx.reshape(x.shape), "dskip": g.reshape(x.shape),
            "d_gamma": d_gamma, "d_beta": d_beta, "running": running}


def _run(net, x, skip, dy, passes=2):
    for _ in range(passes):
        net.forward(x=x, skip=skip)
    y = net.blobs["y"].data.copy()
    net.clear_param_diffs()
    net.backward(y=dy)
    fan = net.blobs
    return {"y": y, "dx": fan["x"].diff.copy(), "dskip": fan["skip"].diff.copy(),
            "d_gamma": net.params["sc"][0].diff.copy(), "d_beta": net.params["sc"][1].diff.copy(),
            "running": tuple(b.data.copy() for b in net.params["bn"])}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("in_place", [True, False])
def test_blocked_passes_match_the_reference(shape, dtype, in_place, many_blocks, rng):
    x = rng.normal(1.5, 2.0, shape)
    skip, dy = rng.normal(size=shape), rng.normal(size=shape)
    net = _chain_net(shape, dtype, in_place)
    view = net.layers[1].view
    # several blocks, except for one value per sample and channel (see _channel_sums)
    assert len(normalization._channel_blocks(view, np.dtype(dtype).itemsize)) == \
        (1 if view[2] == 1 else view[1])
    gamma, beta = (p.data.astype(np.float64) for p in net.params["sc"])
    got = _run(net, x, skip, dy)
    want = _reference(x, skip, dy, gamma, beta, 1e-3, 0.8, passes=2)
    rtol = 1e-4 if dtype == "float32" else 1e-10
    for key in ("y", "dx", "dskip", "d_gamma", "d_beta"):
        scale = np.abs(want[key]).max()
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=rtol * scale,
                                   err_msg=key)
    for have, expected in zip(got["running"], want["running"]):
        np.testing.assert_allclose(have, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_do_not_depend_on_blocks_or_threads(dtype, monkeypatch, rng):
    shape = (3, 10, 6, 5)
    x, skip, dy = (rng.normal(size=shape) for _ in range(3))
    results = []
    before = threads.num_threads()
    try:
        for block_bytes, count in ((1 << 30, 1), (256, 1), (256, 2), (1000, 2)):
            monkeypatch.setattr(normalization, "CHANNEL_BLOCK_BYTES", block_bytes)
            monkeypatch.setattr(threads, "ELEMENTS_PER_THREAD", 1)
            threads.set_num_threads(count)
            results.append(_run(_chain_net(shape, dtype, in_place=True), x, skip, dy))
    finally:
        threads.set_num_threads(before)
    def arrays(result):
        return [result[key] for key in ("y", "dx", "dskip", "d_gamma", "d_beta")] + \
            list(result["running"])

    for other in results[1:]:
        for have, want in zip(arrays(other), arrays(results[0])):
            np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (4, 5, 3)])
def test_batchnorm_scale_gradients_with_many_blocks(shape, many_blocks, rng):
    check_layer_gradients(
        {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "h"},
        {"x": rng.normal(1.0, 2.0, shape)},
        extra_layers=[{"name": "bn2", "type": "BatchNorm", "bottom": "h", "top": "h"},
                      {"name": "sc", "type": "Scale", "bottom": "h", "top": "h",
                       "bias_term": True, "filler": {"type": "uniform", "min": 0.5, "max": 1.5},
                       "bias_filler": {"type": "uniform", "min": 0.2, "max": 0.6}},
                      {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h"}])


def test_scale_two_bottoms_gradient_with_many_blocks(many_blocks, rng):
    check_layer_gradients({"name": "sc", "type": "Scale", "bottom": ["x", "s"], "top": "y"},
                          {"x": rng.normal(size=(2, 7, 5)), "s": rng.normal(size=(7,))})


@pytest.mark.parametrize("coeff", [[], [1, 1, 1], [2.0, -1.0, 0.5], [1, -1, 3]])
@pytest.mark.parametrize("in_place", [None, 0, 1])
def test_eltwise_sum_in_parts_and_in_place(coeff, in_place, many_blocks, rng):
    """y = Σ c_i x_i and dx_i = c_i dy over three bottoms, y written into one of them."""
    shape = (3, 4, 5)
    xs = [rng.normal(size=shape) for _ in range(3)]
    names = ["a", "b", "c"]
    # flat copies of the inputs (an Input blob cannot be a top written in place)
    copies = [{"name": f"copy_{n}", "type": "Flatten", "bottom": n, "top": f"{n}2", "axis": 0}
              for n in names]
    bottoms = [f"{n}2" for n in names]
    top = "y" if in_place is None else bottoms[in_place]
    net = sk.Net({"name": "sum", "dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": names, "shape": [list(shape)] * 3},
        *copies,
        {"name": "sum", "type": "Eltwise", "bottom": bottoms, "top": top,
         **({"coeff": coeff} if coeff else {})}]}, phase="TRAIN")
    c = coeff or [1, 1, 1]
    y = net.forward(a=xs[0], b=xs[1], c=xs[2])[top]
    np.testing.assert_allclose(y, sum(ci * x for ci, x in zip(c, xs)).ravel(), rtol=1e-12)
    dy = rng.normal(size=shape)
    net.backward(**{top: dy.ravel()})
    for name, ci in zip(names, c):
        np.testing.assert_allclose(net.blobs[name].diff, ci * dy, rtol=1e-12, err_msg=name)


def test_eltwise_sum_gradient_with_parts(many_blocks, rng):
    check_layer_gradients({"name": "sum", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                           "coeff": [1.5, -2.0]},
                          {"a": rng.normal(size=(2, 3, 4)), "b": rng.normal(size=(2, 3, 4))})


def test_in_place_scale_after_batchnorm_shares_its_copy(rng):
    """The in-place Scale keeps BatchNorm's x̂ for ds instead of a copy of its own, only
    when BatchNorm ran just before it; gradients are the same either way."""
    shape = (2, 3, 4, 5)
    x, skip, dy = (rng.normal(size=shape) for _ in range(3))
    net = _chain_net(shape, "float64", in_place=True)
    bn, scale = net.layer("bn"), net.layer("sc")
    shared = _run(net, x, skip, dy, passes=1)
    assert np.shares_memory(scale.x, bn.x_norm)
    assert scale._copy is None                      # no copy of its own was made

    # from the Scale on, BatchNorm did not just write the blob: the Scale copies it
    position = net.layers.index(scale)
    net.forward(x=x, skip=skip)
    np.copyto(net.blobs["x"].data, bn.x_norm.reshape(shape))
    net.forward_from_to(position, len(net.layers) - 1)
    assert scale.x is scale._copy and not np.shares_memory(scale.x, bn.x_norm)
    np.testing.assert_array_equal(net.blobs["y"].data, shared["y"])
    net.clear_param_diffs()
    net.backward(y=dy)
    np.testing.assert_array_equal(net.params["sc"][0].diff, shared["d_gamma"])
    np.testing.assert_array_equal(net.blobs["x"].diff, shared["dx"])


def _chain_with_relu(shape, dtype, slope):
    """Input -> in-place BatchNorm -> Scale (bias) -> ReLU -> Eltwise SUM with ``skip``."""
    return sk.Net({"name": "chain", "dtype": dtype, "force_backward": True, "layers": [
        {"name": "input", "type": "Input", "top": ["x", "skip"], "shape": [list(shape)] * 2},
        {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "x", "eps": 1e-3},
        {"name": "sc", "type": "Scale", "bottom": "x", "top": "x", "bias_term": True,
         "filler": {"type": "uniform", "min": 0.5, "max": 1.5},
         "bias_filler": {"type": "uniform", "min": -1, "max": 1}},
        {"name": "relu", "type": "ReLU", "bottom": "x", "top": "x", "negative_slope": slope},
        {"name": "sum", "type": "Eltwise", "bottom": ["x", "skip"], "top": "y"}]},
        phase="TRAIN", seed=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("relu", [None, 0.0, 0.1], ids=["scale", "relu", "leaky_relu"])
def test_batchnorm_and_its_in_place_scale_run_as_one_sweep(dtype, relu, many_blocks, rng,
                                                           monkeypatch):
    """In a training net an in-place BatchNorm + Scale (+ a ReLU without negative slope)
    run their forward and their backward as one sweep each (the Scale's and ReLU's own
    forward and backward are not called), with the same values, bit for bit, as the
    layers one after the other; a leaky ReLU runs on its own."""
    shape = (3, 4, 5, 6)
    x, skip, dy = rng.normal(1.0, 2.0, shape), rng.normal(size=shape), rng.normal(size=shape)

    def build():
        if relu is None:
            return _chain_net(shape, dtype, in_place=True)
        return _chain_with_relu(shape, dtype, relu)

    apart = build()
    apart._scales_after = {}                # the net's layers one by one
    expected = _run(apart, x, skip, dy)
    joined = build()
    assert joined._scales_after == {1: (2, 3 if relu == 0 else None)}
    calls = []
    for cls in (normalization.Scale, activation.ReLU):
        for method in ("forward", "backward"):
            original = getattr(cls, method)

            def counted(self, *args, _original=original, _method=method):
                calls.append((self.type, _method))
                return _original(self, *args)
            monkeypatch.setattr(cls, method, counted)
    got = _run(joined, x, skip, dy)
    assert calls == ([("ReLU", "forward")] * 2 + [("ReLU", "backward")] if relu else [])
    for key in ("y", "dx", "dskip", "d_gamma", "d_beta"):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    for a, b in zip(got["running"], expected["running"]):
        np.testing.assert_array_equal(a, b)


def test_a_scale_after_global_statistics_copies_its_input(rng):
    net = _chain_net((2, 3, 4), "float64", in_place=True)
    net.layer("bn").use_global_stats = True
    net.forward(x=rng.normal(size=(2, 3, 4)), skip=np.zeros((2, 3, 4)))
    assert net.layer("sc").x is net.layer("sc")._copy
