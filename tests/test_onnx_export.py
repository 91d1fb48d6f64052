"""ONNX export: every mapped layer (with non-default options) and every configs/ example
run by onnxruntime equals solverkit's TEST forward within 1e-5, at batch sizes 1 and 7."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from example_data import EXAMPLE_IDS, EXAMPLE_NETS, example_spec

import solverkit as sk

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from solverkit.export.onnx_model import IR_VERSION, OPSET, onnx_layer_types, to_onnx


def _session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _randomise(net: sk.Net, rng) -> None:
    """Weights away from their fillers' constants, BatchNorm statistics that mean something."""
    for layer in net.layers:
        if layer.type == "BatchNorm":
            channels = layer.blobs[0].shape[0]
            layer.blobs[0].data[...] = rng.normal(size=channels) * 3
            layer.blobs[1].data[...] = rng.uniform(0.5, 2.0, size=channels) * 3
            layer.blobs[2].data[...] = 3
            continue
        for blob in layer.blobs:
            blob.data[...] = rng.normal(size=blob.shape) * 0.5


def _compare(net: sk.Net, feeds_for, batches=(1, 7), tolerance=1e-5, output_names=None):
    model = to_onnx(net)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION
    assert model.opset_import[0].version == OPSET
    session = _session(model)
    assert [i.name for i in session.get_inputs()] == list(net.input_blobs)
    assert [o.name for o in session.get_outputs()] == (output_names or net.outputs)
    for batch in batches:
        feeds = feeds_for(batch)
        net.forward(**feeds)
        got = session.run(None, feeds)
        for name, value in zip(net.outputs, got):
            want = net.blobs[name].data
            assert value.shape == want.shape, (name, batch)
            np.testing.assert_allclose(value, want, rtol=tolerance, atol=tolerance,
                                       err_msg=f"{name} at batch {batch}")


def _input(shape):
    return {"name": "input", "type": "Input", "top": "x", "shape": [list(shape)]}


# (id, sample shape, layers after the Input 'x', input range)
CASES = [
    ("conv_stride_pad_dilation_group", (4, 9, 11), [
        {"name": "c", "type": "Convolution", "bottom": "x", "top": "y", "num_output": 6,
         "kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 1, "pad_h": 2, "pad_w": 1,
         "dilation": 2, "group": 2}], (-1, 1)),
    ("conv_no_bias", (3, 8, 8), [
        {"name": "c", "type": "Convolution", "bottom": "x", "top": "y", "num_output": 5,
         "kernel_size": 3, "stride": 3, "bias_term": False}], (-1, 1)),
    ("deconv", (4, 5, 6), [
        {"name": "d", "type": "Deconvolution", "bottom": "x", "top": "y", "num_output": 6,
         "kernel_size": 3, "stride": 2, "pad": 1, "group": 2, "dilation": 2}], (-1, 1)),
    ("max_pool_ceil_pad_clip", (2, 7, 8), [
        {"name": "p", "type": "Pooling", "bottom": "x", "top": "y", "pool": "MAX",
         "kernel_size": 3, "stride": 2, "pad": 1}], (-1, 1)),
    ("max_pool_ceil_overhang", (2, 6, 9), [
        {"name": "p", "type": "Pooling", "bottom": "x", "top": "y", "pool": "MAX",
         "kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 3}], (-1, 1)),
    ("max_pool_floor", (2, 7, 7), [
        {"name": "p", "type": "Pooling", "bottom": "x", "top": "y", "pool": "MAX",
         "kernel_size": 2, "stride": 2, "round_mode": "FLOOR", "pad": 1}], (-1, 1)),
    ("ave_pool_ceil_pad_divisor", (2, 7, 8), [
        {"name": "p", "type": "Pooling", "bottom": "x", "top": "y", "pool": "AVE",
         "kernel_size": 3, "stride": 2, "pad": 1}], (-1, 1)),
    ("ave_pool_ceil_overhang", (3, 6, 10), [
        {"name": "p", "type": "Pooling", "bottom": "x", "top": "y", "pool": "AVE",
         "kernel_size": 3, "stride": 2}], (-1, 1)),
    ("ave_pool_pad2_stride3", (1, 10, 9), [
        {"name": "p", "type": "Pooling", "bottom": "x", "top": "y", "pool": "AVE",
         "kernel_size": 4, "stride": 3, "pad": 2}], (-1, 1)),
    ("pool_stride_beyond_kernel", (2, 5, 7), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b"]},
        {"name": "pm", "type": "Pooling", "bottom": "a", "top": "pm", "pool": "MAX",
         "kernel_size": 1, "stride": 3},
        {"name": "pa", "type": "Pooling", "bottom": "b", "top": "pa", "pool": "AVE",
         "kernel_h": 1, "kernel_w": 2, "stride": 3}], (-1, 1)),
    ("global_pools", (3, 5, 4), [
        {"name": "pm", "type": "Pooling", "bottom": "x", "top": "ym", "pool": "MAX",
         "global_pooling": True},
        {"name": "pa", "type": "Pooling", "bottom": "x", "top": "ya", "pool": "AVE",
         "global_pooling": True}], (-1, 1)),
    ("activations", (3, 4, 5), [
        {"name": "s", "type": "Split", "bottom": "x", "top": [f"x{i}" for i in range(10)]},
        {"name": "relu", "type": "ReLU", "bottom": "x0", "top": "relu", "negative_slope": 0.1},
        {"name": "relu0", "type": "ReLU", "bottom": "x1", "top": "relu0"},
        {"name": "sig", "type": "Sigmoid", "bottom": "x2", "top": "sig"},
        {"name": "tanh", "type": "TanH", "bottom": "x3", "top": "tanh"},
        {"name": "elu", "type": "ELU", "bottom": "x4", "top": "elu", "alpha": 0.7},
        {"name": "abs", "type": "AbsVal", "bottom": "x5", "top": "abs"},
        {"name": "bnll", "type": "BNLL", "bottom": "x6", "top": "bnll"},
        {"name": "clip", "type": "Clip", "bottom": "x7", "top": "clip", "min": -0.3, "max": 0.5},
        {"name": "swish", "type": "Swish", "bottom": "x8", "top": "swish", "beta": 1.7},
        {"name": "drop", "type": "Dropout", "bottom": "x9", "top": "drop",
         "dropout_ratio": 0.3}], (-3, 3)),
    ("prelu", (4, 3, 3), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b"]},
        {"name": "pc", "type": "PReLU", "bottom": "a", "top": "pa"},
        {"name": "ps", "type": "PReLU", "bottom": "b", "top": "pb", "channel_shared": True}],
     (-2, 2)),
    ("prelu_2d", (6,), [{"name": "p", "type": "PReLU", "bottom": "x", "top": "y"}], (-2, 2)),
    ("power_exp_log", (2, 3, 4), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b", "c", "d", "e"]},
        {"name": "pow", "type": "Power", "bottom": "a", "top": "pow", "power": 2.5,
         "scale": 0.5, "shift": 1.5},
        {"name": "affine", "type": "Power", "bottom": "b", "top": "affine", "scale": -2.0,
         "shift": 0.25},
        {"name": "exp", "type": "Exp", "bottom": "c", "top": "exp", "base": 2.0, "scale": 0.7,
         "shift": 0.3},
        {"name": "exp_e", "type": "Exp", "bottom": "d", "top": "exp_e"},
        {"name": "log", "type": "Log", "bottom": "e", "top": "log", "base": 10.0, "scale": 2.0,
         "shift": 1.0}], (0, 2)),
    ("softmax_axis", (3, 4, 5), [
        {"name": "sm", "type": "Softmax", "bottom": "x", "top": "y", "axis": 2}], (-3, 3)),
    ("lrn", (7, 5, 6), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b"]},
        {"name": "across", "type": "LRN", "bottom": "a", "top": "across", "local_size": 3,
         "alpha": 0.5, "beta": 0.6, "k": 2.0},
        {"name": "within", "type": "LRN", "bottom": "b", "top": "within", "local_size": 3,
         "alpha": 0.4, "beta": 0.8, "norm_region": "WITHIN_CHANNEL"}], (-2, 2)),
    ("batchnorm_scale_bias", (3, 4, 4), [
        {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "x"},
        {"name": "sc", "type": "Scale", "bottom": "x", "top": "x", "bias_term": True},
        {"name": "b", "type": "Bias", "bottom": "x", "top": "y"}], (-2, 2)),
    ("batchnorm_2d", (5,), [
        {"name": "bn", "type": "BatchNorm", "bottom": "x", "top": "y", "eps": 0.01}], (-2, 2)),
    ("scale_two_bottoms_axis", (3, 4, 5), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b"]},
        {"name": "r", "type": "Reduction", "bottom": "b", "top": "r", "axis": 2},
        {"name": "sc", "type": "Scale", "bottom": ["a", "r"], "top": "y", "axis": 0},
        {"name": "sc2", "type": "Scale", "bottom": "y", "top": "z", "axis": 2, "num_axes": 1}],
     (-2, 2)),
    ("mvn", (3, 4, 5), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b", "c"]},
        {"name": "m1", "type": "MVN", "bottom": "a", "top": "m1"},
        {"name": "m2", "type": "MVN", "bottom": "b", "top": "m2", "across_channels": True},
        {"name": "m3", "type": "MVN", "bottom": "c", "top": "m3", "normalize_variance": False}],
     (-2, 2)),
    ("concat_slice_eltwise", (6, 3, 4), [
        {"name": "sl", "type": "Slice", "bottom": "x", "top": ["a", "b", "c"],
         "slice_point": [2, 4]},
        {"name": "sum", "type": "Eltwise", "bottom": ["a", "b", "c"], "top": "sum",
         "coeff": [0.5, -2.0, 1.0]},
        {"name": "prod", "type": "Eltwise", "bottom": ["a", "b", "c"], "top": "prod",
         "operation": "PROD"},
        {"name": "max", "type": "Eltwise", "bottom": ["a", "b"], "top": "max",
         "operation": "MAX"},
        {"name": "cat", "type": "Concat", "bottom": ["sum", "prod", "max"], "top": "cat",
         "axis": 2},
        {"name": "sl2", "type": "Slice", "bottom": "cat", "top": ["d", "e"], "axis": -1}],
     (-2, 2)),
    ("flatten_reshape", (2, 3, 4), [
        {"name": "f", "type": "Flatten", "bottom": "x", "top": "f", "axis": 2},
        {"name": "r", "type": "Reshape", "bottom": "f", "top": "r", "shape": [3, -1],
         "axis": 2, "num_axes": 1},
        {"name": "r2", "type": "Reshape", "bottom": "r", "top": "r2", "shape": [0, -1]},
        {"name": "f2", "type": "Flatten", "bottom": "x", "top": "f2", "axis": 1,
         "end_axis": 2}], (-2, 2)),
    ("crop_tile", (3, 6, 7), [
        {"name": "p", "type": "Pooling", "bottom": "x", "top": "p", "pool": "MAX",
         "kernel_size": 2, "stride": 2},
        {"name": "crop", "type": "Crop", "bottom": ["x", "p"], "top": "crop",
         "offset": [1, 2]},
        {"name": "crop1", "type": "Crop", "bottom": ["x", "p"], "top": "crop1", "axis": 3,
         "offset": [3]},
        {"name": "tile", "type": "Tile", "bottom": "p", "top": "tile", "axis": 2, "tiles": 3}],
     (-2, 2)),
    ("reduction", (3, 4, 5), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b", "c", "d"]},
        {"name": "sum", "type": "Reduction", "bottom": "a", "top": "sum", "axis": 1},
        {"name": "asum", "type": "Reduction", "bottom": "b", "top": "asum", "axis": 2,
         "operation": "ASUM", "coeff": 0.5},
        {"name": "sumsq", "type": "Reduction", "bottom": "c", "top": "sumsq", "axis": -1,
         "operation": "SUMSQ"},
        {"name": "mean", "type": "Reduction", "bottom": "d", "top": "mean", "axis": 1,
         "operation": "MEAN", "coeff": -2.0}], (-2, 2)),
    ("argmax", (4, 3, 5), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b", "c", "d"]},
        {"name": "am", "type": "ArgMax", "bottom": "a", "top": "am"},
        {"name": "amv", "type": "ArgMax", "bottom": "b", "top": "amv", "out_max_val": True,
         "top_k": 3},
        {"name": "ama", "type": "ArgMax", "bottom": "c", "top": "ama", "axis": 2},
        {"name": "amav", "type": "ArgMax", "bottom": "d", "top": "amav", "axis": 1,
         "out_max_val": True, "top_k": 2}], (-2, 2)),
    ("inner_product_axis_transpose", (3, 4, 5), [
        {"name": "s", "type": "Split", "bottom": "x", "top": ["a", "b"]},
        {"name": "ip2", "type": "InnerProduct", "bottom": "a", "top": "ip2", "num_output": 6,
         "axis": 2},
        {"name": "ipt", "type": "InnerProduct", "bottom": "b", "top": "ipt", "num_output": 4,
         "transpose": True, "bias_term": False}], (-2, 2)),
]


@pytest.mark.parametrize("layers, shape, low_high",
                         [pytest.param(layers, shape, rng, id=name)
                          for name, shape, layers, rng in CASES])
def test_layer_matches_onnxruntime(layers, shape, low_high):
    net = sk.Net({"name": "case", "layers": [_input((2, *shape)), *layers]}, phase="TEST")
    _randomise(net, np.random.default_rng(3))
    rng = np.random.default_rng(5)
    _compare(net, lambda batch: {"x": rng.uniform(*low_high, size=(batch, *shape))
                                 .astype(np.float32)})


def test_embed_matches_onnxruntime():
    net = sk.Net({"name": "embed", "layers": [
        _input((2, 3)),
        {"name": "e", "type": "Embed", "bottom": "x", "top": "y", "num_output": 4,
         "input_dim": 6}]}, phase="TEST")
    _randomise(net, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    _compare(net, lambda b: {"x": rng.integers(0, 6, size=(b, 3)).astype(np.float32)})


def test_every_listed_layer_has_a_mapping():
    listed = {"Convolution", "Deconvolution", "InnerProduct", "Pooling", "ReLU", "Sigmoid",
              "TanH", "ELU", "PReLU", "AbsVal", "Power", "Exp", "Log", "BNLL", "Clip", "Swish",
              "Softmax", "LRN", "BatchNorm", "Scale", "Bias", "MVN", "Concat", "Slice", "Split",
              "Eltwise", "Flatten", "Reshape", "Crop", "Tile", "Reduction", "ArgMax", "Dropout"}
    assert listed <= set(onnx_layer_types())
    covered = {layer["type"] for _, _, layers, _ in CASES for layer in layers}
    assert listed <= covered | {"Input"}


def test_the_guide_lists_exactly_the_mapped_layers():
    readme = (Path(__file__).resolve().parent.parent / "docs" / "using-a-trained-model.md").read_text()
    listed = readme.split("The layer types\n  that map to ONNX are ")[1].split("; any other")[0]
    assert re.findall(r"`(\w+)`", listed) == onnx_layer_types()


def test_a_layer_without_mapping_is_an_error_naming_it():
    spec = {"name": "n", "layers": [
        _input((2, 3)), {"name": "lbl", "type": "Input", "top": "t", "shape": [[2, 3]]},
        {"name": "the_loss", "type": "EuclideanLoss", "bottom": ["x", "t"], "top": "loss"}]}
    net = sk.Net(spec, phase="TEST")
    with pytest.raises(sk.ConfigError, match="the_loss.*EuclideanLoss has no ONNX mapping"):
        to_onnx(net)


def test_in_place_rewrites_of_an_input_keep_the_names():
    net = sk.Net({"name": "n", "layers": [
        _input((2, 3)), {"name": "r", "type": "ReLU", "bottom": "x", "top": "x"}]},
        phase="TEST")
    rng = np.random.default_rng(0)
    _compare(net, lambda b: {"x": rng.normal(size=(b, 3)).astype(np.float32)},
             output_names=["x@r"])


# ------------------------------------------------------------------ the shipped examples
@pytest.mark.parametrize("config", EXAMPLE_NETS, ids=EXAMPLE_IDS)
def test_example_nets_match_onnxruntime(config, tmp_path):
    spec = sk.deploy_net(example_spec(config, tmp_path))
    net = sk.Net(spec, phase="TEST", seed=0)
    _randomise(net, np.random.default_rng(7))
    rng = np.random.default_rng(8)

    def feeds(batch):
        out = {}
        for name, blob in net.input_blobs.items():
            # apple's second input is sliced along its batch axis into two: it keeps 2
            size = blob.shape[0] if name == "unit" else batch
            out[name] = rng.uniform(0, 1, size=(size, *blob.shape[1:])).astype(np.float32)
        return out

    _compare(net, feeds)
