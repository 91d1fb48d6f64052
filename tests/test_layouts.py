"""oneDNN's blocked layout kept between layers in a net that keeps only its outputs: the
same outputs as a net keeping every blob in NCHW, the blocked path really taken, NCHW
wherever a layer cannot read the layout, and a layer that cannot take it at run time
still right."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from trained_statistics import set_trained_statistics

import solverkit as sk
from solverkit import dnnl, layouts
from solverkit.layers import method_choice

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_nets

HAVE_DNNL = dnnl.set_backend("auto") == "dnnl"
needs_dnnl = pytest.mark.skipif(not HAVE_DNNL, reason="oneDNN is not installed")
GAUSS = {"type": "gaussian", "std": 0.2}


def _conv(name, bottom, num_output, kernel=1, stride=1, pad=0, top=None):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": top or name,
            "num_output": num_output, "kernel_size": kernel, "stride": stride, "pad": pad,
            "bias_term": False, "weight_filler": {"type": "msra"}}


def _conv_bn(name, bottom, num_output, kernel=1, stride=1, pad=0, relu=True):
    """Convolution, BatchNorm and Scale in place (+ ReLU): ResNet's unit, folded."""
    layers = [_conv(name, bottom, num_output, kernel, stride, pad),
              {"name": f"bn_{name}", "type": "BatchNorm", "bottom": name, "top": name,
               "use_global_stats": True},
              {"name": f"scale_{name}", "type": "Scale", "bottom": name, "top": name,
               "bias_term": True, "filler": {"type": "constant", "value": 1.0},
               "bias_filler": GAUSS}]
    if relu:
        layers.append(_relu(name))
    return layers


def _relu(blob):
    return {"name": f"relu_{blob}", "type": "ReLU", "bottom": blob, "top": blob}


def _bottleneck(tag, bottom, width, project):
    """ResNet's bottleneck: 1×1 → 3×3 → 1×1 (4·width), summed with the shortcut (a 1×1
    projection or the bottom itself), then ReLU in place."""
    shortcut = bottom
    layers = []
    if project:
        layers += _conv_bn(f"{tag}_branch1", bottom, 4 * width, relu=False)
        shortcut = f"{tag}_branch1"
    layers += [*_conv_bn(f"{tag}_branch2a", bottom, width),
               *_conv_bn(f"{tag}_branch2b", f"{tag}_branch2a", width, kernel=3, pad=1),
               *_conv_bn(f"{tag}_branch2c", f"{tag}_branch2b", 4 * width, relu=False),
               {"name": tag, "type": "Eltwise", "bottom": [shortcut, f"{tag}_branch2c"],
                "top": tag, "operation": "SUM"},
               _relu(tag)]
    return layers


def _resnet_like(batch=2, side=16):
    """A small ResNet: stem, max pooling, a projected and an identity bottleneck, global
    average pooling, a classifier and its Softmax."""
    return {"name": "small_resnet", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [[batch, 3, side, side]]},
        *_conv_bn("conv1", "data", 32, kernel=3, pad=1),
        {"name": "pool1", "type": "Pooling", "bottom": "conv1", "top": "pool1",
         "pool": "MAX", "kernel_size": 3, "stride": 2},
        *_bottleneck("res2a", "pool1", 16, project=True),
        *_bottleneck("res2b", "res2a", 16, project=False),
        {"name": "pool5", "type": "Pooling", "bottom": "res2b", "top": "pool5",
         "pool": "AVE", "global_pooling": True},
        {"name": "fc", "type": "InnerProduct", "bottom": "pool5", "top": "fc",
         "num_output": 10, "weight_filler": {"type": "gaussian", "std": 0.05},
         "bias_filler": GAUSS},
        {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}


def _pair(spec):
    """(the net that keeps only its outputs, the same net keeping every blob), equal
    weights and statistics."""
    blocked = sk.Net(spec, "TEST", seed=1, inference=True, outputs_only=True)
    plain = sk.Net(spec, "TEST", seed=1, inference=True)
    for net in (blocked, plain):         # the same statistics in both
        set_trained_statistics(net, mean_std=0.2)
    return blocked, plain


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _assert_same_outputs(blocked, plain, x):
    ours, theirs = blocked.forward(data=x), plain.forward(data=x)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        scale = max(1.0, float(np.abs(theirs[name]).max()))
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-5 * scale)
    return ours


@needs_dnnl
def test_the_blocked_order_is_onednn_s_nchw16c():
    """An identity 1×1 convolution from NCHW into the blocked layout writes what
    ``to_blocked`` computes, and back from it writes the NCHW images: the tag and the
    numpy order agree with the oneDNN that is loaded."""
    x = _images((2, 32, 5, 3))
    eye = np.eye(32, dtype=np.float32).reshape(32, 32, 1, 1)
    args = ((2, 32, 5, 3), (2, 32, 5, 3), eye.shape, 1, False, (1, 1), (0, 0), (1, 1))
    into = dnnl.ConvolutionPlan(*args, training=False, blocked_result=True)
    y = np.empty_like(x)
    into.forward(x, eye, None, y)
    np.testing.assert_array_equal(y, layouts.to_blocked(x))
    np.testing.assert_array_equal(layouts.to_plain(y), x)
    back = dnnl.ConvolutionPlan(*args, training=False, blocked_source=True)
    z = np.empty_like(x)
    back.forward(y, eye, None, z)
    np.testing.assert_array_equal(z, x)


def test_to_blocked_puts_sixteen_channels_innermost():
    x = np.arange(2 * 32 * 2 * 3, dtype=np.float32).reshape(2, 32, 2, 3)
    flat = layouts.to_blocked(x).reshape(-1)
    n, c, h, w = 1, 21, 1, 2            # element (n, c // 16, h, w, c % 16) of (N, C/16, H, W, 16)
    assert flat[(((n * 2 + c // 16) * 2 + h) * 3 + w) * 16 + c % 16] == x[n, c, h, w]
    np.testing.assert_array_equal(layouts.to_plain(layouts.to_blocked(x)), x)


@pytest.fixture(params=[None, "columns"], ids=["chosen", "numpy"])
def method(request):
    """With the methods chosen by shape (oneDNN where it loads), and all on numpy."""
    previous = method_choice.prefer(request.param)
    yield request.param
    method_choice.prefer(previous)


def test_resnet_like_net_gives_the_outputs_of_a_net_keeping_every_blob(method):
    blocked, plain = _pair(_resnet_like())
    x = _images((2, 3, 16, 16))
    probabilities = _assert_same_outputs(blocked, plain, x)["prob"]
    assert probabilities.max() < 0.9        # not saturated: the scores are compared too
    on_dnnl = HAVE_DNNL and method is None
    plan = blocked.layout_plan
    expected = {"conv1": (False, on_dnnl), "pool1": (on_dnnl, on_dnnl),
                "res2a_branch1": (on_dnnl, on_dnnl), "res2a_branch2b": (on_dnnl, on_dnnl),
                "res2b_branch2c": (on_dnnl, on_dnnl), "pool5": (on_dnnl, on_dnnl)}
    assert {name: blocked.layer(name).blocked for name in expected} == expected
    # the sums and ReLUs in between: blocked with the convolutions around them
    for name in ("res2a", "res2a_branch2a", "res2b_branch2c"):
        assert plan.is_blocked(blocked.blobs[name]) == on_dnnl
    # what a user reads, and the classifier's scores, stay NCHW
    for name in ("data", "fc", "prob"):
        assert not plan.is_blocked(blocked.blobs[name])
    if on_dnnl:
        assert blocked.layer("res2a_branch2b").last_forward == \
            "dnnl inference + ReLU, packed weights, blocked in and out, folded"
        assert blocked.layer("conv1").last_forward.endswith("blocked out, folded")
        # global pooling's 1×1 result is the same bytes in both layouts: no reorder for fc
        assert blocked.layer("pool5").last_forward == "dnnl, blocked in and out"
        # a net keeping every blob runs NCHW
        assert "blocked" not in plain.layer("res2a_branch2b").last_forward
        assert plain.layout_plan is None


def test_a_new_batch_size_is_planned_again():
    blocked, plain = _pair(_resnet_like())
    for batch in (3, 1, 2):
        _assert_same_outputs(blocked, plain, _images((batch, 3, 16, 16), seed=batch))
        assert blocked.layer("res2a_branch2b").blocked == (HAVE_DNNL, HAVE_DNNL)
        assert blocked.blobs["res2a"].data.shape[0] == batch


def _with(*layers, channels=32):
    return {"name": "small", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [[2, 3, 10, 10]]},
        _conv("conv1", "data", channels, kernel=3, pad=1), _relu("conv1"), *layers]}


@needs_dnnl
def test_a_blob_a_layer_without_the_layout_reads_stays_nchw():
    """conv2's top is read by an LRN (and so is the ReLU's blob tied to it); conv1's top
    only by convolutions and a ReLU."""
    spec = _with(_conv("conv2", "conv1", 32, kernel=3, pad=1), _relu("conv2"),
                 {"name": "norm", "type": "LRN", "bottom": "conv2", "top": "norm",
                  "local_size": 3},
                 _conv("conv3", "norm", 16))
    blocked, plain = _pair(spec)
    _assert_same_outputs(blocked, plain, _images((2, 3, 10, 10)))
    assert blocked.layer("conv2").blocked == (True, False)
    assert blocked.layer("conv3").blocked == (False, False)     # its top is the output
    assert blocked.layer("conv2").last_forward == "dnnl inference + ReLU, packed weights, " \
                                                  "blocked in"


@needs_dnnl
@pytest.mark.parametrize("channels", [8, 24])
def test_channels_not_a_multiple_of_16_stay_nchw(channels):
    spec = _with(_conv("conv2", "conv1", 32, kernel=3, pad=1), _relu("conv2"),
                 _conv("conv3", "conv2", 16), channels=channels)
    blocked, plain = _pair(spec)
    _assert_same_outputs(blocked, plain, _images((2, 3, 10, 10)))
    assert blocked.layer("conv1").blocked == (False, False)
    assert blocked.layer("conv2").blocked == (False, True)      # 32 channels: blocked


@needs_dnnl
def test_a_split_and_a_sum_share_the_layout():
    """An explicit Split's tops are its bottom; a MAX of two blocked blobs is element by
    element as well."""
    spec = _with({"name": "split", "type": "Split", "bottom": "conv1", "top": ["s1", "s2"]},
                 _conv("conv2", "s1", 32, kernel=3, pad=1), _conv("conv3", "s2", 32),
                 {"name": "max", "type": "Eltwise", "bottom": ["conv2", "conv3"],
                  "top": "max", "operation": "MAX"},
                 _conv("conv4", "max", 16))
    blocked, plain = _pair(spec)
    _assert_same_outputs(blocked, plain, _images((2, 3, 10, 10)))
    for name in ("conv1", "s1", "s2", "conv2", "conv3", "max"):
        assert blocked.layout_plan.is_blocked(blocked.blobs[name]), name


@needs_dnnl
def test_a_chain_that_runs_unfolded_reads_the_blob_converted():
    """Writable weights put in by hand: the BatchNorm + Scale chain runs unfolded on a
    blocked blob, each layer on an NCHW copy, and the outputs stay right."""
    blocked, plain = _pair(_resnet_like())
    x = _images((2, 3, 16, 16), seed=3)
    weight = np.random.default_rng(9).standard_normal((16, 32, 1, 1)).astype(np.float32)
    for net in (blocked, plain):
        net.params["res2a_branch2a"][0].data = weight.copy()      # writable: not folded
    _assert_same_outputs(blocked, plain, x)
    assert not blocked.layer("res2a_branch2a").last_forward.endswith("folded")
    assert blocked.layer("res2a_branch2a").blocked == (True, True)


@needs_dnnl
def test_a_convolution_whose_method_changed_reads_the_blob_converted():
    """numpy chosen after the net was built: the blocked blobs are converted for it."""
    blocked, plain = _pair(_resnet_like())
    x = _images((2, 3, 16, 16), seed=4)
    expected = plain.forward(data=x)["prob"]
    previous = method_choice.prefer("columns")
    try:
        np.testing.assert_allclose(blocked.forward(data=x)["prob"], expected,
                                   rtol=1e-5, atol=1e-6)
        assert blocked.layer("res2a_branch2b").last_forward == "columns"
    finally:
        method_choice.prefer(previous)


@needs_dnnl
def test_find_nonfinite_reruns_layer_by_layer_with_the_layouts():
    """The re-run runs the folded chain apart (its BatchNorm on an NCHW copy) and names
    the layer that made the first NaN."""
    blocked, _ = _pair(_resnet_like())
    blocked.params["bn_res2a_branch2c"][1].data[3] = np.nan     # one channel's variance
    x = _images((2, 3, 16, 16))
    assert np.isnan(blocked.forward(data=x)["prob"]).all()
    assert blocked.find_nonfinite() == ("layer 'bn_res2a_branch2c' (BatchNorm): output "
                                        "'res2a_branch2c' (its parameter 1 is non-finite)")


def test_resnet50_at_32_pixels_agrees_with_the_net_keeping_every_blob():
    """The benchmark's ResNet-50 deploy net at 32×32."""
    spec = bench_nets.resnet50()
    spec["layers"][0] = {"name": "data", "type": "Input", "top": "data",
                         "shape": [[2, 3, 32, 32]]}
    spec["layers"][-1] = {"name": "prob", "type": "Softmax", "bottom": "fc1000",
                          "top": "prob"}
    blocked, plain = _pair(spec)
    _assert_same_outputs(blocked, plain, _images((2, 3, 32, 32), seed=6))
    convolutions = [layer for layer in blocked.layers if layer.type == "Convolution"]
    assert len(convolutions) == 53
    assert all(layer.blocked == (position > 0 and HAVE_DNNL, HAVE_DNNL)
               for position, layer in enumerate(convolutions))


@needs_dnnl
def test_a_depthwise_convolution_between_blocked_blobs():
    """MobileNet's depthwise 3×3 (one group per channel) between two 1×1 convolutions."""
    depthwise = {"name": "dw", "type": "DepthwiseConvolution", "bottom": "conv1", "top": "dw",
                 "num_output": 32, "kernel_size": 3, "pad": 1, "stride": 2,
                 "weight_filler": {"type": "msra"}}
    blocked, plain = _pair(_with(depthwise, _relu("dw"), _conv("conv2", "dw", 16)))
    _assert_same_outputs(blocked, plain, _images((2, 3, 10, 10), seed=7))
    assert blocked.layer("dw").blocked == (True, True)
