"""BatchNorm, Scale, Bias, LRN, MVN: forward against independent numpy, numeric gradients."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit.errors import ConfigError
from solverkit.gradient_check import check_layer_gradients, check_net_gradients, layer_net


def _bn_net(phase="TRAIN", shape=(4, 3, 2, 2), **fields):
    return sk.Net({"name": "bn", "dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [list(shape)]},
        {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "y", **fields}]},
        phase=phase, seed=0)


# ---------------------------------------------------------------- BatchNorm
def test_batchnorm_train_uses_batch_statistics_and_updates_running_sums(rng):
    net = _bn_net(moving_average_fraction=0.9, eps=1e-3)
    x1 = rng.normal(2.0, 3.0, (4, 3, 2, 2))
    x2 = rng.normal(-1.0, 0.5, (4, 3, 2, 2))
    y1 = net.forward(x=x1)["y"]

    mean1 = np.array([x1[:, c].mean() for c in range(3)])
    var1 = np.array([x1[:, c].var() for c in range(3)])          # biased, for normalising
    expected = (x1 - mean1[None, :, None, None]) / np.sqrt(var1[None, :, None, None] + 1e-3)
    np.testing.assert_allclose(y1, expected, rtol=1e-10)

    net.forward(x=x2)
    m = 4 * 2 * 2
    mean2 = np.array([x2[:, c].mean() for c in range(3)])
    unbiased = [np.array([x[:, c].var(ddof=1) for c in range(3)]) for x in (x1, x2)]
    mean_blob, var_blob, factor_blob = net.params["bn"]
    # Caffe: s = 0.9·s + 1; mean = 0.9·mean + μ; var = 0.9·var + σ²·m/(m−1), from zeros
    np.testing.assert_allclose(factor_blob.data, [0.9 * 1 + 1])
    np.testing.assert_allclose(mean_blob.data, 0.9 * mean1 + mean2)
    np.testing.assert_allclose(var_blob.data, 0.9 * unbiased[0] + unbiased[1])
    assert m / (m - 1) * var1 == pytest.approx(unbiased[0])


def test_batchnorm_test_phase_uses_stored_statistics(rng):
    net = _bn_net(phase="TEST", eps=1e-5)
    mean, var, factor = net.params["bn"]
    mean.data[...] = [2.0, -4.0, 6.0]
    var.data[...] = [8.0, 2.0, 0.5]
    factor.data[...] = [2.0]
    x = rng.normal(size=(4, 3, 2, 2))
    y = net.forward(x=x)["y"]
    expected = (x - np.array([1.0, -2.0, 3.0])[:, None, None]) / np.sqrt(
        np.array([4.0, 1.0, 0.25])[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    np.testing.assert_array_equal(mean.data, [2.0, -4.0, 6.0])      # TEST never updates


def test_batchnorm_zero_scale_factor_means_zero_statistics(rng):
    net = _bn_net(phase="TEST", eps=0.25)
    x = rng.normal(size=(4, 3, 2, 2))
    np.testing.assert_allclose(net.forward(x=x)["y"], x / 0.5)


def test_batchnorm_statistics_are_never_learned(rng):
    net = _bn_net(param=[{"lr_mult": 0}, {"lr_mult": 0}, {"lr_mult": 0}])
    stats = [p for p in net.learnable_params if p.layer == "bn"]
    assert [p.index for p in stats] == [0, 1, 2]
    assert all(p.lr_mult == 0 for p in stats)
    assert net.layer("bn").param_propagate_down == [False, False, False]
    net.forward(x=rng.normal(size=(4, 3, 2, 2)))
    net.clear_param_diffs()
    net.backward(y=np.ones((4, 3, 2, 2)))
    assert all(not np.any(p.blob.diff) for p in stats)
    with pytest.raises(ConfigError, match="lr_mult"):
        _bn_net(param=[{"lr_mult": 1}])


def test_batchnorm_statistics_are_saved_and_shared_with_the_test_net(rng, tmp_path):
    train = _bn_net()
    train.forward(x=rng.normal(1.0, 2.0, (4, 3, 2, 2)))
    path = tmp_path / "bn.model.npz"
    train.save(path)
    fresh = _bn_net(phase="TEST")
    fresh.load(path)
    for ours, theirs in zip(fresh.params["bn"], train.params["bn"]):
        np.testing.assert_array_equal(ours.data, theirs.data)
    shared = sk.Net(train.spec, phase="TEST", share_from=train)
    assert shared.params["bn"][0] is train.params["bn"][0]


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 2), (6,)])
def test_batchnorm_gradient_with_batch_statistics(rng, shape):
    check_layer_gradients({"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "y"},
                          {"x": rng.normal(1.0, 2.0, shape)})


def test_batchnorm_gradient_with_global_statistics(rng):
    net = layer_net({"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "y"},
                    {"x": rng.normal(size=(3, 2, 2, 2))}, phase="TEST")
    net.params["bn"][0].data[...] = [0.5, -1.0]
    net.params["bn"][1].data[...] = [2.0, 0.5]
    net.params["bn"][2].data[...] = [1.5]
    check_net_gradients(net)


def test_batchnorm_scale_relu_in_place_chain_gradient(rng):
    """Caffe's usual pattern: BatchNorm, Scale and ReLU all in place on one blob."""
    x = rng.normal(size=(4, 2, 3, 3))
    check_layer_gradients(
        {"name": "ip", "type": "Scale", "bottom": "x", "top": "h",
         "filler": {"type": "uniform", "min": 0.5, "max": 1.5}},
        {"x": x},
        extra_layers=[
            {"name": "bn", "type": "BatchNorm", "bottom": "h", "top": "h"},
            {"name": "sc", "type": "Scale", "bottom": "h", "top": "h", "bias_term": True,
             "filler": {"type": "uniform", "min": 0.5, "max": 1.5},
             "bias_filler": {"type": "uniform", "min": 0.2, "max": 0.6}},
            {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h"}])


# ---------------------------------------------------------------- Scale / Bias
def test_scale_one_bottom_forward(rng):
    net = sk.Net({"name": "s", "dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [[2, 3, 4]]},
        {"name": "sc", "type": "Scale", "bottom": "x", "top": "y", "axis": 1, "num_axes": -1,
         "bias_term": True, "filler": {"type": "gaussian"},
         "bias_filler": {"type": "gaussian"}}]}, seed=3)
    scale, bias = net.params["sc"]
    assert scale.shape == (3, 4) and bias.shape == (3, 4)
    x = rng.normal(size=(2, 3, 4))
    np.testing.assert_allclose(net.forward(x=x)["y"], x * scale.data + bias.data)


def test_scale_default_filler_is_one():
    net = sk.Net({"name": "s", "layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [[2, 3]]},
        {"name": "sc", "type": "Scale", "bottom": "x", "top": "y"}]})
    np.testing.assert_array_equal(net.params["sc"][0].data, np.ones(3))
    assert len(net.params["sc"]) == 1                   # bias_term defaults to false


def test_scale_two_bottom_forward_and_scalar_operand(rng):
    x, s = rng.normal(size=(2, 3, 4)), rng.normal(size=(3,))
    net = layer_net({"name": "sc", "type": "Scale", "bottom": ["x", "s"], "top": "y"},
                    {"x": x, "s": s})
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, x * s[None, :, None])
    net = layer_net({"name": "sc", "type": "Scale", "bottom": "x", "top": "y", "num_axes": 0,
                     "filler": {"type": "constant", "value": 3.0}}, {"x": x})
    assert net.params["sc"][0].shape == ()
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, 3 * x)


@pytest.mark.parametrize("fields", [
    {},
    {"bias_term": True, "bias_filler": {"type": "gaussian"}},
    {"axis": 0, "num_axes": 2},
    {"axis": -1},
    {"num_axes": 0, "bias_term": True},
])
def test_scale_one_bottom_gradient(rng, fields):
    check_layer_gradients({"name": "sc", "type": "Scale", "bottom": "x", "top": "y",
                           "filler": {"type": "gaussian"}, **fields},
                          {"x": rng.normal(size=(2, 3, 4))})


@pytest.mark.parametrize("s_shape,fields", [((3,), {}), ((3, 4), {"bias_term": True}),
                                            ((2,), {"axis": 0}), ((), {})])
def test_scale_two_bottom_gradient(rng, s_shape, fields):
    check_layer_gradients({"name": "sc", "type": "Scale", "bottom": ["x", "s"], "top": "y",
                           "bias_filler": {"type": "gaussian"}, **fields},
                          {"x": rng.normal(size=(2, 3, 4)), "s": rng.normal(size=s_shape)})


def test_scale_shape_mismatch_names_the_layer(rng):
    with pytest.raises(ConfigError, match="from axis 1") as info:
        layer_net({"name": "sc", "type": "Scale", "bottom": ["x", "s"], "top": "y"},
                  {"x": np.zeros((2, 3, 4)), "s": np.zeros((4,))})
    assert info.value.layer == "sc"


def test_bias_forms(rng):
    x, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 4))
    net = layer_net({"name": "b", "type": "Bias", "bottom": ["x", "b"], "top": "y",
                     "num_axes": 2}, {"x": x, "b": b})
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, x + b)
    check_net_gradients(net)
    check_layer_gradients({"name": "b", "type": "Bias", "bottom": "x", "top": "y",
                           "filler": {"type": "gaussian"}}, {"x": x})


# ---------------------------------------------------------------- LRN
def _lrn_reference(x, size, alpha, beta, k, region):
    """Caffe's LRN by explicit loops (windows clipped at the edges)."""
    n, c, h, w = x.shape
    half = (size - 1) // 2
    scale = np.empty_like(x)
    for i in range(n):
        for ch in range(c):
            for r in range(h):
                for q in range(w):
                    if region == "ACROSS_CHANNELS":
                        lo, hi = max(0, ch - half), min(c, ch + half + 1)
                        scale[i, ch, r, q] = k + alpha / size * np.sum(x[i, lo:hi, r, q] ** 2)
                    else:
                        window = x[i, ch, max(0, r - half):r + half + 1,
                                   max(0, q - half):q + half + 1]
                        scale[i, ch, r, q] = 1 + alpha / size ** 2 * np.sum(window ** 2)
    return x * scale ** -beta


@pytest.mark.parametrize("region,size", [("ACROSS_CHANNELS", 3), ("ACROSS_CHANNELS", 5),
                                         ("WITHIN_CHANNEL", 3)])
def test_lrn_forward_matches_caffe_formula(rng, region, size):
    x = rng.normal(size=(2, 4, 3, 4))
    net = layer_net({"name": "lrn", "type": "LRN", "bottom": "x", "top": "y",
                     "local_size": size, "alpha": 0.7, "beta": 0.6, "k": 2.0,
                     "norm_region": region}, {"x": x})
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data,
                               _lrn_reference(x, size, 0.7, 0.6, 2.0, region), rtol=1e-12)


@pytest.mark.parametrize("fields", [
    {},
    {"local_size": 3, "alpha": 2.0, "beta": 0.5, "k": 1.5},
    {"norm_region": "WITHIN_CHANNEL", "local_size": 3, "alpha": 3.0},
    {"norm_region": "WITHIN_CHANNEL", "local_size": 5, "beta": 1.2},
])
def test_lrn_gradient(rng, fields):
    check_layer_gradients({"name": "lrn", "type": "LRN", "bottom": "x", "top": "y", **fields},
                          {"x": rng.normal(size=(2, 6, 3, 3))})


def test_lrn_rejects_even_local_size():
    with pytest.raises(ConfigError, match="odd"):
        layer_net({"name": "lrn", "type": "LRN", "bottom": "x", "top": "y", "local_size": 4},
                  {"x": np.zeros((1, 4, 2, 2))})


# ---------------------------------------------------------------- MVN
@pytest.mark.parametrize("across,normalize", [(False, True), (True, True), (False, False)])
def test_mvn_forward(rng, across, normalize):
    x = rng.normal(3.0, 2.0, size=(2, 3, 2, 3))
    net = layer_net({"name": "mvn", "type": "MVN", "bottom": "x", "top": "y", "eps": 1e-3,
                     "across_channels": across, "normalize_variance": normalize}, {"x": x})
    net.forward()
    axes = (1, 2, 3) if across else (2, 3)
    expected = x - x.mean(axis=axes, keepdims=True)
    if normalize:
        expected /= x.std(axis=axes, keepdims=True) + 1e-3
    np.testing.assert_allclose(net.blobs["y"].data, expected, rtol=1e-10)


@pytest.mark.parametrize("fields", [{}, {"across_channels": True, "eps": 0.1},
                                    {"normalize_variance": False}])
def test_mvn_gradient(rng, fields):
    check_layer_gradients({"name": "mvn", "type": "MVN", "bottom": "x", "top": "y", **fields},
                          {"x": rng.normal(size=(2, 3, 2, 2))})
