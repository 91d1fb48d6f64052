"""BatchNorm (+ Scale) folded into the convolution before them in a net built for inference:
the training form's outputs, the fold really taken, only where it is safe, never stale."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from trained_statistics import set_trained_statistics

import solverkit as sk
from solverkit import ConfigError, dnnl
from solverkit.layers import method_choice

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_nets

HAVE_DNNL = dnnl.set_backend("auto") == "dnnl"
SHAPE = (2, 4, 9, 9)


def _conv(name, bottom, num_output=6, bias=True, **fields):
    layer = {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
             "num_output": num_output, "kernel_size": 3, "pad": 1, "bias_term": bias,
             "weight_filler": {"type": "gaussian", "std": 0.3},
             "bias_filler": {"type": "gaussian", "std": 0.3}}
    layer.update(fields)
    return layer


def _bn(blob, top=None, name=None):
    return {"name": name or f"bn_{blob}", "type": "BatchNorm", "bottom": blob,
            "top": top or blob, "use_global_stats": True}


def _scale(blob, bias=True, top=None, name=None):
    return {"name": name or f"scale_{blob}", "type": "Scale", "bottom": blob,
            "top": top or blob, "bias_term": bias, "filler": {"type": "gaussian", "std": 1.0},
            "bias_filler": {"type": "gaussian", "std": 1.0}}


def _relu(blob, slope=0.0):
    return {"name": f"relu_{blob}", "type": "ReLU", "bottom": blob, "top": blob,
            "negative_slope": slope}


def _spec(*layers):
    return {"name": "fold", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [list(SHAPE)]}, *layers]}


# name -> (spec, conv layers whose chain folds)
CHAINS = {
    "bn_scale_bias_relu": (_spec(_conv("conv1", "data", bias=False), _bn("conv1"),
                                 _scale("conv1"), _relu("conv1")), ["conv1"]),
    "conv_bias_bn_scale_no_bias": (_spec(_conv("conv1", "data"), _bn("conv1"),
                                         _scale("conv1", bias=False)), ["conv1"]),
    "bn_only_leaky_relu": (_spec(_conv("conv1", "data"), _bn("conv1"),
                                 _relu("conv1", 0.1)), ["conv1"]),
    "groups_strided_two_chains": (_spec(
        _conv("conv1", "data", 8, group=2, stride=2), _bn("conv1"), _scale("conv1"),
        _relu("conv1"), _conv("conv2", "conv1", 4, kernel_size=1, pad=0, bias=False),
        _bn("conv2"), _scale("conv2")), ["conv1", "conv2"]),
}

# name -> (spec, conv layers that must NOT fold)
NOT_FOLDED = {
    # BatchNorm writes a blob of its own: the convolution's output stays readable
    "bn_not_in_place": _spec(_conv("conv1", "data"), _bn("conv1", top="norm"),
                             _scale("norm")),
    # a layer between them: BatchNorm does not directly follow the convolution
    "layer_between": _spec(_conv("conv1", "data"), _conv("conv2", "data"), _bn("conv1"),
                           {"name": "sum", "type": "Eltwise", "bottom": ["conv1", "conv2"],
                            "top": "sum"}),
    # batch statistics (use_global_stats: false) depend on the batch
    "batch_statistics": _spec(_conv("conv1", "data"),
                              {**_bn("conv1"), "use_global_stats": False}),
}

# BatchNorm folds, but its output is read by two layers: the Scale after it writes another
# blob, so the Scale is not folded, and the other reader sees BatchNorm's output
BN_READ_TWICE = _spec(_conv("conv1", "data"), _bn("conv1"), _scale("conv1", top="scaled"),
                      {"name": "sum", "type": "Eltwise", "bottom": ["conv1", "scaled"],
                       "top": "sum"})


@pytest.fixture(params=[None, "columns"], ids=["chosen", "numpy"])
def method(request):
    """Each case with the methods chosen by shape (oneDNN where it loads) and on numpy."""
    previous = method_choice.prefer(request.param)
    yield request.param
    method_choice.prefer(previous)


def _data(seed=0):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def _frozen(spec, factor=2.0, seed=1):
    net = sk.Net(spec, "TEST", seed=seed)
    set_trained_statistics(net, factor=factor)
    net.freeze()
    return net


def _params(net):
    return {name: [blob.data.copy() for blob in blobs] for name, blobs in net.params.items()}


def _reference(spec, params, x, phase="TRAIN"):
    """The net as a TRAIN net (the training forward, layer by layer) with ``params``."""
    net = sk.Net(spec, phase, seed=3)
    for name, arrays in params.items():
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    return net.forward(data=x)


def _folded(net, name):
    return (net.layer(name).last_forward or "").endswith(", folded")


def _assert_outputs_equal(outputs, reference):
    assert outputs.keys() == reference.keys()
    for name in outputs:
        # rounding grows with the values (factor 0 divides by sqrt(eps) ≈ 0.003)
        atol = 2e-5 * max(1.0, float(np.abs(reference[name]).max()))
        np.testing.assert_allclose(outputs[name], reference[name], rtol=2e-5, atol=atol)


@pytest.mark.parametrize("factor", [2.0, 0.0], ids=["factor2", "factor0"])
@pytest.mark.parametrize("name", CHAINS)
def test_folded_chain_equals_the_training_forward(name, factor, method):
    spec, convolutions = CHAINS[name]
    net = _frozen(spec, factor)
    x = _data()
    outputs = net.forward(data=x)
    assert all(_folded(net, conv) for conv in convolutions)
    _assert_outputs_equal(outputs, _reference(spec, _params(net), x))
    if method is None and HAVE_DNNL:
        # the ReLU after the chain is still one primitive with the convolution
        relu = [conv for conv in convolutions if f"relu_{conv}" in net.layer_names]
        assert all(net.layer(conv).last_forward ==
                   "dnnl inference + ReLU, packed weights, folded" for conv in relu)


def test_folded_weights_follow_caffes_formula():
    """An independent computation: W' = W·γ/sqrt(σ²+eps), b' = (b − μ)·γ/sqrt(σ²+eps) + β
    with μ, σ² the stored sums divided by the factor, against the convolution of numpy."""
    spec, _ = CHAINS["conv_bias_bn_scale_no_bias"]
    net = _frozen(spec, factor=4.0)
    x = _data()
    y = net.forward(data=x)["conv1"]
    w, b = (blob.data.astype(np.float64) for blob in net.params["conv1"])
    mean, var, stored = (blob.data.astype(np.float64) for blob in net.params["bn_conv1"])
    gamma = net.params["scale_conv1"][0].data.astype(np.float64)
    eps = net.layer("bn_conv1").params.eps
    rate = gamma / np.sqrt(var / stored[0] + eps)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    conv = np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]
    expected = (conv - mean[None, :, None, None] / stored[0]) * rate[None, :, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NOT_FOLDED)
def test_chains_that_are_not_safe_to_fold_run_unfolded(name, method):
    spec = NOT_FOLDED[name]
    net = _frozen(spec)
    x = _data()
    outputs = net.forward(data=x)
    assert not _folded(net, "conv1")
    _assert_outputs_equal(outputs, _reference(spec, _params(net), x,
                                              "TEST" if name == "batch_statistics" else "TRAIN"))
    if name == "bn_not_in_place":       # the convolution's own output is still there
        reference = sk.Net(spec, "TEST", seed=3)
        for layer, arrays in _params(net).items():
            for blob, array in zip(reference.params[layer], arrays):
                blob.data[...] = array
        reference.forward(data=x)
        np.testing.assert_allclose(net.blobs["conv1"].data, reference.blobs["conv1"].data,
                                   rtol=1e-5, atol=1e-5)


def test_batch_norm_read_by_two_layers_folds_without_the_scale(method):
    net = _frozen(BN_READ_TWICE)
    x = _data()
    outputs = net.forward(data=x)
    assert _folded(net, "conv1")
    assert net.layer("scale_conv1").x is None           # it ran, kept nothing (no backward)
    _assert_outputs_equal(outputs, _reference(BN_READ_TWICE, _params(net), x))


def test_partial_forward_does_not_fold_across_its_end():
    """pycaffe's forward(end='conv1') leaves the convolution's own output in its top."""
    spec, _ = CHAINS["bn_scale_bias_relu"]
    net = _frozen(spec)
    x = _data()
    net.set_input("data", x)
    net.forward_from_to(0, 1)
    assert not _folded(net, "conv1")
    full = _reference(spec, _params(net), x)
    train = sk.Net(spec, "TRAIN", seed=3)
    for layer, arrays in _params(net).items():
        for blob, array in zip(train.params[layer], arrays):
            blob.data[...] = array
    train.set_input("data", x)
    train.forward_from_to(0, 1)
    np.testing.assert_allclose(net.blobs["conv1"].data, train.blobs["conv1"].data,
                               rtol=1e-5, atol=1e-5)
    net.forward_from_to(2, len(net.layers) - 1)         # then the rest, layer by layer
    np.testing.assert_allclose(net.blobs["conv1"].data, full["conv1"], rtol=2e-5, atol=2e-5)


def test_new_weights_are_folded_again(tmp_path, method):
    """``load`` after freezing: the next forward folds the new weights and statistics;
    statistics and γ written in place are folded again; weights replaced by a writable
    array run the chain unfolded, with that array."""
    spec, _ = CHAINS["groups_strided_two_chains"]
    net = _frozen(spec)
    x = _data()
    before = net.forward(data=x)["conv2"].copy()
    new = {name: [2 * a + 0.1 for a in arrays] for name, arrays in _params(net).items()}
    new["bn_conv1"][2] = np.array([3.0], np.float32)
    source = sk.Net(spec, "TEST", seed=3)
    for name, arrays in new.items():
        for blob, array in zip(source.params[name], arrays):
            blob.data[...] = array
    source.save(tmp_path / "new.npz")
    net.load(tmp_path / "new.npz")
    after = net.forward(data=x)["conv2"].copy()
    assert _folded(net, "conv1") and _folded(net, "conv2")
    np.testing.assert_allclose(after, _reference(spec, new, x)["conv2"], rtol=2e-5, atol=2e-5)
    assert not np.allclose(after, before)
    # the statistics and the Scale's parameters stay writable: written in place, refolded
    new["bn_conv2"][0][...] = 0.25
    new["scale_conv1"][0][:2] = -1.0
    net.params["bn_conv2"][0].data[...] = new["bn_conv2"][0]
    net.params["scale_conv1"][0].data[:2] = -1.0
    changed = net.forward(data=x)["conv2"].copy()
    assert _folded(net, "conv1") and _folded(net, "conv2")
    np.testing.assert_allclose(changed, _reference(spec, new, x)["conv2"], rtol=2e-5,
                               atol=2e-5)
    assert not np.allclose(changed, after)
    # weights put in by hand as a writable array are used as they are: that chain unfolds
    with pytest.raises(ValueError, match="read-only"):
        net.params["conv2"][0].data[...] = 0
    weight = new["conv2"][0] = -new["conv2"][0]
    net.params["conv2"][0].data = weight.copy()
    unfolded = net.forward(data=x)["conv2"]
    assert _folded(net, "conv1") and not _folded(net, "conv2")
    np.testing.assert_allclose(unfolded, _reference(spec, new, x)["conv2"], rtol=2e-5,
                               atol=2e-5)


def test_backward_and_the_unfrozen_test_net():
    """A frozen net has no backward (nothing it folded or skipped is needed); the same
    chain in a TEST net is not folded (its weights may change under it), and a backward
    after its inference forward gives the training form's gradients."""
    spec, _ = CHAINS["bn_scale_bias_relu"]
    frozen = _frozen(spec)
    x = _data()
    y = frozen.forward(data=x)["conv1"]
    with pytest.raises(ConfigError, match="inference=True"):
        frozen.backward(conv1=np.ones_like(y))
    test = sk.Net(spec, "TEST", seed=1)
    set_trained_statistics(test)
    assert test.inference_forward
    y = test.forward(data=x)["conv1"]
    assert not _folded(test, "conv1")
    np.testing.assert_allclose(y, frozen.forward(data=x)["conv1"], rtol=2e-5, atol=2e-5)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    test.backward(conv1=dy)
    train = sk.Net(spec, "TRAIN", seed=3)
    for name, arrays in _params(test).items():
        for blob, array in zip(train.params[name], arrays):
            blob.data[...] = array
    train.forward(data=x)
    train.backward(conv1=dy)
    np.testing.assert_allclose(test.blobs["data"].diff, train.blobs["data"].diff,
                               rtol=1e-4, atol=1e-5)
    for name, blobs in test.params.items():
        if name.startswith("bn"):
            continue
        for mine, theirs in zip(blobs, train.params[name]):
            np.testing.assert_allclose(mine.diff, theirs.diff, rtol=1e-4, atol=1e-4)


def test_resnet50_deploy_net_folded_equals_unfolded():
    """The benchmark's ResNet-50 (53 convolution + BatchNorm + Scale chains) at 32×32."""
    spec = bench_nets.resnet50()
    x = np.random.default_rng(8).standard_normal((2, 3, 32, 32)).astype(np.float32)
    spec["layers"][0].update({"batch_size": 2, "source": (x, np.zeros(2, np.float32))})
    deploy = sk.deploy_net(spec)
    net = sk.Net(deploy, "TEST", seed=1)
    rng = set_trained_statistics(net, mean_std=0.1, seed=7)
    for layer in net.layers:
        if layer.type == "Scale":
            for blob in layer.blobs:
                blob.data[...] = rng.normal(0.5, 0.2, blob.shape)
    assert net.outputs == ["prob"]
    net.forward(data=x)
    unfolded = net.blobs["fc1000"].data.copy()         # the logits: the probabilities' input
    net.freeze()
    net.forward(data=x)
    folded = net.blobs["fc1000"].data
    conv_layers = [layer.name for layer in net.layers if layer.type == "Convolution"]
    assert len(conv_layers) == 53 and all(_folded(net, name) for name in conv_layers)
    np.testing.assert_allclose(folded, unfolded, rtol=1e-3, atol=1e-3 * np.abs(unfolded).max())
