"""The inference forward of a TEST net: the same outputs as the training forward, the
fused convolution + ReLU actually used, packed weights never stale, backward still there."""

from __future__ import annotations

import numpy as np
import pytest
from trained_statistics import set_trained_statistics

import caffe
import solverkit as sk
from solverkit import ConfigError, dnnl
from solverkit.layers import inner_product, method_choice

HAVE_DNNL = dnnl.set_backend("auto") == "dnnl"
needs_dnnl = pytest.mark.skipif(not HAVE_DNNL, reason="oneDNN is not installed")
SHAPE = (3, 3, 13, 13)


def _conv(name, bottom, num_output, bias=True, **fields):
    layer = {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
             "num_output": num_output, "kernel_size": 3, "pad": 1, "bias_term": bias,
             "weight_filler": {"type": "gaussian", "std": 0.3},
             "bias_filler": {"type": "gaussian", "std": 0.3}}
    layer.update(fields)
    return layer


def _relu(blob, top=None, slope=0.0):
    return {"name": f"relu_{blob}", "type": "ReLU", "bottom": blob, "top": top or blob,
            "negative_slope": slope}


def _pool(name, bottom, pool="MAX", **fields):
    layer = {"name": name, "type": "Pooling", "bottom": bottom, "top": name, "pool": pool,
             "kernel_size": 3, "stride": 2}
    layer.update(fields)
    return layer


def _ip(name, bottom, num_output):
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name,
            "num_output": num_output, "weight_filler": {"type": "gaussian", "std": 0.1},
            "bias_filler": {"type": "gaussian", "std": 0.1}}


def _spec(*layers):
    return {"name": "inference", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [list(SHAPE)]}, *layers]}


NETS = {
    "conv_relu_maxpool_ip": _spec(_conv("conv1", "data", 16), _relu("conv1"),
                                  _pool("pool1", "conv1"), _ip("ip1", "pool1", 10),
                                  _relu("ip1"), _ip("ip2", "ip1", 4)),
    "leaky_relu_avepool_global_max": _spec(
        _conv("conv1", "data", 8, stride=2), _relu("conv1", slope=0.1),
        _pool("pool1", "conv1", "AVE", pad=1), _conv("conv2", "pool1", 8),
        _relu("conv2"), _pool("pool2", "conv2", global_pooling=True, kernel_size=None,
                              stride=None)),
    "batchnorm_scale": _spec(
        _conv("conv1", "data", 8, bias=False),
        {"name": "bn1", "type": "BatchNorm", "bottom": "conv1", "top": "conv1",
         "use_global_stats": True},
        {"name": "scale1", "type": "Scale", "bottom": "conv1", "top": "conv1",
         "bias_term": True, "filler": {"type": "gaussian", "std": 1.0},
         "bias_filler": {"type": "gaussian", "std": 1.0}},
        _relu("conv1"), _pool("pool1", "conv1"), _ip("ip1", "pool1", 5)),
    "relu_not_in_place": _spec(_conv("conv1", "data", 8), _relu("conv1", top="rect"),
                               _pool("pool1", "rect"), _ip("ip1", "pool1", 3)),
    # cifar10_quick's order: pooling, then the ReLU (MAX, and AVE with a leaky ReLU)
    "pool_then_relu": _spec(_conv("conv1", "data", 8), _pool("pool1", "conv1"),
                            _relu("pool1"), _conv("conv2", "pool1", 8),
                            _pool("pool2", "conv2", "AVE", stride=1, pad=1),
                            _relu("pool2", slope=0.2), _ip("ip1", "pool2", 3)),
}


def _data(seed=0):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def _training_form(spec, params):
    """The same net as a TRAIN net (whose forward keeps what backward needs) with
    ``params`` ({layer: [arrays]}) copied in: the reference an inference forward must equal."""
    net = sk.Net(spec, "TRAIN", seed=3)
    for name, arrays in params.items():
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    assert not net.inference_forward
    return net


def _params(net):
    return {name: [blob.data.copy() for blob in blobs] for name, blobs in net.params.items()}


def _output(net, x):
    return net.forward(data=x)[net.outputs[0]].copy()


@pytest.fixture(params=[None, "columns"], ids=["chosen", "numpy"])
def method(request):
    """Each case with the methods chosen by shape (oneDNN where it loads) and on numpy."""
    previous = method_choice.prefer(request.param)
    yield request.param
    method_choice.prefer(previous)


@pytest.mark.parametrize("name", NETS)
def test_inference_forward_equals_training_forward(name, method):
    spec = NETS[name]
    net = sk.Net(spec, "TEST", seed=1)
    set_trained_statistics(net)
    assert net.inference_forward
    x = _data()
    y = _output(net, x)
    reference = _output(_training_form(spec, _params(net)), x)
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)
    frozen = sk.Net(spec, "TEST", seed=1, inference=True)     # the same seed: same weights
    set_trained_statistics(frozen)
    np.testing.assert_allclose(_output(frozen, x), reference, rtol=1e-5, atol=1e-6)


@needs_dnnl
@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("large", [False, True])
def test_frozen_inner_product_packs_only_small_weights_beyond_batch_2(batch, large,
                                                                      monkeypatch):
    """At batch 1 and 2 the weights are read in Caffe's layout where they lie (a
    matrix-vector product streams them once); beyond, small weights get oneDNN's blocked
    copy and weights over ``PACKED_WEIGHT_MAX_BYTES`` are read in place by its matmul (no
    second copy of a classifier's largest arrays)."""
    monkeypatch.setattr(inner_product, "PACKED_WEIGHT_MAX_BYTES", 0 if large else 1 << 20)
    spec = {"name": "ip", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [[batch, 37]]},
        _ip("ip1", "data", 23), _relu("ip1")]}
    net = sk.Net(spec, "TEST", seed=2, inference=True)
    x = np.random.default_rng(0).standard_normal((batch, 37)).astype(np.float32)
    y = net.forward(data=x)["ip1"]
    weight, bias = (blob.data for blob in net.params["ip1"])
    np.testing.assert_allclose(y, np.maximum(x @ weight.T + bias, 0), rtol=1e-5, atol=1e-6)
    packed = batch > 2 and not large
    assert net.layer("ip1").last_forward == "dnnl inference + ReLU, " + (
        "packed weights" if packed else "weights read in place")
    plan = net.layer("ip1")._plan
    if batch > 2 and large:
        assert isinstance(plan, dnnl.MatmulPlan) and plan.implementation().startswith("brg")
    else:
        assert (plan.weight._packed is None) == (not packed)


@needs_dnnl
def test_fused_pooling_relu_is_used():
    net = sk.Net(NETS["pool_then_relu"], "TEST", seed=1)
    net.forward(data=_data())
    assert [net.layer(n).last_forward for n in ("pool1", "pool2")] == \
        ["dnnl inference + ReLU"] * 2
    # a training forward pools and rectifies apart (it keeps MAX's indices)
    net.backward(ip1=np.ones((SHAPE[0], 3), np.float32))
    net.forward(data=_data())
    assert net.layer("pool1").last_forward == "dnnl"


@needs_dnnl
def test_fused_convolution_relu_is_used():
    net = sk.Net(NETS["conv_relu_maxpool_ip"], "TEST", seed=1)
    net.forward(data=_data())
    assert net.layer("conv1").last_forward == "dnnl inference + ReLU"
    leaky = sk.Net(NETS["leaky_relu_avepool_global_max"], "TEST", seed=1)
    leaky.forward(data=_data())
    assert [leaky.layer(n).last_forward for n in ("conv1", "conv2")] == \
        ["dnnl inference + ReLU"] * 2
    # a ReLU into another blob leaves the convolution's top unrectified: no fusion
    apart = sk.Net(NETS["relu_not_in_place"], "TEST", seed=1)
    apart.forward(data=_data())
    assert apart.layer("conv1").last_forward == "dnnl inference"
    assert (apart.blobs["conv1"].data < 0).any()
    # a TRAIN net's forward is the training one
    train = _training_form(NETS["conv_relu_maxpool_ip"], _params(net))
    train.forward(data=_data())
    assert train.layer("conv1").last_forward == "dnnl training"
    frozen = sk.Net(NETS["conv_relu_maxpool_ip"], "TEST", seed=1, inference=True)
    frozen.forward(data=_data())
    assert frozen.layer("conv1").last_forward == "dnnl inference + ReLU, packed weights"


@needs_dnnl
def test_partial_forward_does_not_fuse_across_its_end():
    """pycaffe's forward(end='conv1') must leave conv1's top as the convolution gave it."""
    net = sk.Net(NETS["conv_relu_maxpool_ip"], "TEST", seed=1)
    net.set_input("data", _data())
    net.forward_from_to(0, 1)
    assert net.layer("conv1").last_forward == "dnnl inference"
    assert (net.blobs["conv1"].data < 0).any()


@pytest.mark.parametrize("frozen", [False, True], ids=["test_net", "inference_net"])
def test_weights_changed_after_a_forward_are_used(frozen, tmp_path, method):
    spec = NETS["conv_relu_maxpool_ip"]
    net = sk.Net(spec, "TEST", seed=1, inference=frozen)
    x = _data()
    before = _output(net, x)
    _output(net, x)                       # the packed weights (if any) are made and reused
    new = {name: [2 * a - 0.1 for a in arrays] for name, arrays in _params(net).items()}
    if frozen:
        with pytest.raises(ValueError, match="read-only"):
            net.params["conv1"][0].data[...] = new["conv1"][0]
        path = tmp_path / "new.npz"
        _training_form(spec, new).save(path)
        net.load(path)
    else:
        for name, arrays in new.items():
            for blob, array in zip(net.params[name], arrays):
                blob.data[...] = array
    after = _output(net, x)
    reference = _output(_training_form(spec, new), x)
    np.testing.assert_allclose(after, reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(after, before)
    if frozen and method is None and HAVE_DNNL:
        assert net.layer("conv1").last_forward.endswith("packed weights")


def test_test_net_sees_the_training_nets_updates():
    """The solver's TEST net shares the TRAIN net's weights, which change in place."""
    spec = NETS["conv_relu_maxpool_ip"]
    train = sk.Net(spec, "TRAIN", seed=1)
    test = sk.Net(spec, "TEST", seed=1, share_from=train)
    x = _data()
    before = _output(test, x)
    for blobs in train.params.values():
        for blob in blobs:
            blob.data *= 0.5                 # as an update writes them
            blob.data -= 0.01
    after = _output(test, x)
    np.testing.assert_allclose(after, _output(_training_form(spec, _params(train)), x),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(after, before)
    with pytest.raises(ConfigError, match="shares its parameters"):
        test.freeze()


@pytest.mark.parametrize("name", ["conv_relu_maxpool_ip", "leaky_relu_avepool_global_max"])
def test_backward_after_an_inference_forward(name, method):
    """A TEST net may still be asked for gradients (Caffe allows it): what its inference
    forward skipped is recomputed, and its gradients are the training form's."""
    spec = NETS[name]
    net = sk.Net(spec, "TEST", seed=1)
    x = _data()
    y = _output(net, x)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    net.backward(**{net.outputs[0]: dy})
    assert not net.inference_forward
    train = _training_form(spec, _params(net))
    _output(train, x)
    train.backward(**{train.outputs[0]: dy})
    np.testing.assert_allclose(net.blobs["data"].diff, train.blobs["data"].diff,
                               rtol=1e-4, atol=1e-6)
    for name_, blobs in net.params.items():
        for mine, theirs in zip(blobs, train.params[name_]):
            np.testing.assert_allclose(mine.diff, theirs.diff, rtol=1e-4, atol=1e-5)


PROTOTXT = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def test_pycaffe_test_net_surgery_and_backward(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(PROTOTXT)
    net = caffe.Net(str(path), caffe.TEST)
    x = _data()[:2, :, :9, :9]
    first = net.forward(data=x)["pool1"].copy()
    w = net.params["conv1"][0].data
    net.params["conv1"][0].data[...] = -w           # net surgery between forwards
    second = net.forward(data=x)["pool1"].copy()
    # the reference: the convolution with the new weights, ReLU, 2x2 max pooling, in numpy
    weight, bias = net.params["conv1"][0].data, net.params["conv1"][1].data
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
    conv = np.einsum("nchwij,ocij->nohw", windows, weight) + bias[None, :, None, None]
    rect = np.full((2, 4, 8, 8), -np.inf)             # 7x7, and Caffe's ceil adds a row
    rect[:, :, :7, :7] = np.maximum(conv, 0)
    expected = rect.reshape(2, 4, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_allclose(second, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(first, second)
    diffs = net.backward(pool1=np.ones_like(second))
    assert diffs["data"].shape == x.shape and np.abs(diffs["data"]).sum() > 0


def test_inference_net_refuses_backward_and_training():
    spec = NETS["conv_relu_maxpool_ip"]
    net = sk.Net(spec, "TEST", seed=1, inference=True)
    y = _output(net, _data())
    with pytest.raises(ConfigError, match="inference=True"):
        net.backward(ip2=np.ones_like(y))
    with pytest.raises(ConfigError, match="TEST net"):
        sk.Net(spec, "TRAIN", inference=True)
    train = sk.Net(spec, "TRAIN", seed=1)
    with pytest.raises(ConfigError, match="share_from"):
        sk.Net(spec, "TEST", inference=True, share_from=train)


@needs_dnnl
def test_inner_product_relu_fused_and_freeze_after_surgery():
    spec = NETS["conv_relu_maxpool_ip"]
    net = sk.Net(spec, "TEST", seed=1)
    x = _data()
    net.forward(data=x)
    assert net.layer("ip1").last_forward == "blas + ReLU"    # writable weights: BLAS products
    new = {name: [a + 0.05 for a in arrays] for name, arrays in _params(net).items()}
    for name, arrays in new.items():            # surgery by hand, then deployment
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    net.freeze()
    np.testing.assert_allclose(_output(net, x), _output(_training_form(spec, new), x),
                               rtol=1e-5, atol=1e-6)
    assert net.layer("ip1").last_forward == "dnnl inference + ReLU, packed weights"
    assert net.layer("ip2").last_forward == "dnnl inference, packed weights"
    with pytest.raises(ValueError, match="read-only"):
        net.params["ip1"][0].data[...] = 0
    # a new array put in place of a frozen one is used as it is (and not packed)
    net.params["ip1"][0].data = np.zeros_like(new["ip1"][0])
    new["ip1"][0] = np.zeros_like(new["ip1"][0])
    np.testing.assert_allclose(_output(net, x), _output(_training_form(spec, new), x),
                               rtol=1e-5, atol=1e-6)
    assert net.layer("ip1").last_forward == "blas + ReLU"


@needs_dnnl
def test_pointwise_convolution_in_inference_equals_training():
    """A 1×1 convolution's inference primitive works on the NCHW blobs themselves."""
    spec = _spec(_conv("conv1", "data", 8, kernel_size=1, pad=0), _relu("conv1"),
                 _conv("conv2", "conv1", 6, kernel_size=1, pad=0))
    net = sk.Net(spec, "TEST", seed=1, inference=True)
    x = _data()
    y = _output(net, x)
    np.testing.assert_allclose(y, _output(_training_form(spec, _params(net)), x),
                               rtol=1e-5, atol=1e-5)
    assert net.layer("conv1").last_forward == "dnnl inference + ReLU, packed weights"


@pytest.mark.parametrize("coeff,slope", [(None, 0.0), ([0.5, -1.0, 2.0], 0.0),
                                         ([1.0, 1.0, -0.5], 0.2)])
def test_eltwise_sum_and_relu_run_as_one_pass(coeff, slope, monkeypatch):
    """ResNet's shortcut sum and its ReLU: one pass in pieces over the threads (the ReLU
    layer itself does not run), the outputs of the two layers run one after the other."""
    shape = [2, 16, 128, 130]        # two threads, several pieces each
    sum_layer = {"name": "sum", "type": "Eltwise", "bottom": ["a", "b", "c"], "top": "sum",
                 "operation": "SUM"}
    if coeff:
        sum_layer["coeff"] = coeff
    spec = {"name": "shortcut", "layers": [
        *[{"name": n, "type": "Input", "top": n, "shape": [shape]} for n in "abc"],
        sum_layer, _relu("sum", slope=slope)]}
    rng = np.random.default_rng(4)
    inputs = {n: rng.standard_normal(shape).astype(np.float32) for n in "abc"}
    weights = coeff or [1.0, 1.0, 1.0]
    total = sum(np.float32(w) * inputs[n] for w, n in zip(weights, "abc"))
    expected = np.where(total > 0, total, slope * total)
    train = sk.Net(spec, "TRAIN")
    np.testing.assert_allclose(train.forward(**inputs)["sum"], expected, rtol=1e-6, atol=1e-6)
    net = sk.Net(spec, "TEST")
    monkeypatch.setattr(net.layer("relu_sum"), "forward", None)     # must not be called
    np.testing.assert_allclose(net.forward(**inputs)["sum"], expected, rtol=1e-6, atol=1e-6)
    # a partial forward that ends at the sum leaves it unrectified
    net.forward_from_to(0, 3)
    np.testing.assert_allclose(net.blobs["sum"].data, total, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("coeff", [None, [0.5, -1.0, 2.0]])
def test_eltwise_sum_and_relu_in_place_on_a_later_bottom(coeff):
    """The sum written over its last bottom: that bottom is read before it is replaced."""
    shape = [2, 16, 20, 20]
    sum_layer = {"name": "sum", "type": "Eltwise", "bottom": ["a", "b", "c"], "top": "c",
                 "operation": "SUM"}
    if coeff:
        sum_layer["coeff"] = coeff
    spec = {"name": "shortcut", "layers": [
        *[{"name": n, "type": "Input", "top": n, "shape": [shape]} for n in "abc"],
        sum_layer, _relu("c")]}
    rng = np.random.default_rng(5)
    inputs = {n: rng.standard_normal(shape).astype(np.float32) for n in "abc"}
    weights = coeff or [1.0, 1.0, 1.0]
    total = sum(np.float32(w) * inputs[n] for w, n in zip(weights, "abc"))
    net = sk.Net(spec, "TEST")
    np.testing.assert_allclose(net.forward(**inputs)["c"], np.maximum(total, 0),
                               rtol=1e-6, atol=1e-6)


CONVOLUTION_POOLING = {
    # cifar10_quick's three kinds: conv → MAX pool → ReLU, conv → ReLU → AVE pool
    "cifar_style": _spec(_conv("conv1", "data", 16, stride=1), _pool("pool1", "conv1"),
                         _relu("pool1"), _conv("conv2", "pool1", 16), _relu("conv2"),
                         _pool("pool2", "conv2", "AVE"), _ip("ip1", "pool2", 4)),
    # 8 channels (not a multiple of 16), read by two poolings: NCHW throughout
    "read_twice": _spec(_conv("conv1", "data", 8), _pool("pool1", "conv1"),
                        _pool("pool2", "conv1", "AVE"),
                        {"name": "cat", "type": "Concat", "bottom": ["pool1", "pool2"],
                         "top": "cat"}, _ip("ip1", "cat", 4)),
}


@pytest.mark.parametrize("name", CONVOLUTION_POOLING)
def test_convolution_into_pooling_gives_the_outputs_of_the_two_apart(name, method):
    """In a net that keeps only its outputs, a convolution whose top a pooling reads leaves
    its result in oneDNN's blocked layout for the pooling (16 channels, where oneDNN runs
    both; see ``layouts.py``); the outputs are those of a net that keeps every blob."""
    spec = CONVOLUTION_POOLING[name]
    x = _data()
    apart = sk.Net(spec, "TEST", seed=1, inference=True)
    together = sk.Net(spec, "TEST", seed=1, inference=True, outputs_only=True)
    expected = _output(apart, x)
    np.testing.assert_allclose(_output(together, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_output(together, x), expected, rtol=1e-5, atol=1e-6)
    blocked = name == "cifar_style" and HAVE_DNNL and method is None
    assert together.layer("conv1").blocked == (False, blocked)
    if blocked:
        assert together.layer("pool1").last_forward == "dnnl inference + ReLU, blocked in and out"
        assert together.layer("conv2").last_forward == \
            "dnnl inference + ReLU, packed weights, blocked in and out"
        assert together.layer("pool2").last_forward == "dnnl, blocked in"    # the ip reads NCHW
