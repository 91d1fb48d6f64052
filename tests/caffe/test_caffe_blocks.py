"""Caffe's ``*_param`` block names (checked against caffe.proto) and ``raw_data`` blobs
(OpenCV's half-precision weights, and FLOAT/DOUBLE written by the protobuf package)."""

from __future__ import annotations

import numpy as np
import pytest
from protobuf_oracle import build

import solverkit as sk
from solverkit.caffe.export import export_caffe, net_to_prototxt
from solverkit.caffe.names import CAFFE_BLOCKS, block_name
from solverkit.caffe.weights import read_caffemodel
from solverkit.errors import SolverkitError
from solverkit.registry import layer_types
from solverkit.spec.net import LayerParams

# LayerParameter's type-specific fields, name -> number: BVLC/caffe master's caffe.proto,
# then the forks' own (the SSD fork weiliu89/caffe, SegNet, ShuffleNet, Fast R-CNN).
CAFFE_PROTO_LAYER_FIELDS = {
    "transform_param": 100, "loss_param": 101, "accuracy_param": 102, "argmax_param": 103,
    "batch_norm_param": 139, "bias_param": 141, "clip_param": 148, "concat_param": 104,
    "contrastive_loss_param": 105, "convolution_param": 106, "crop_param": 144,
    "data_param": 107, "dropout_param": 108, "dummy_data_param": 109, "eltwise_param": 110,
    "elu_param": 140, "embed_param": 137, "exp_param": 111, "flatten_param": 135,
    "hdf5_data_param": 112, "hdf5_output_param": 113, "hinge_loss_param": 114,
    "image_data_param": 115, "infogain_loss_param": 116, "inner_product_param": 117,
    "input_param": 143, "log_param": 134, "lrn_param": 118, "memory_data_param": 119,
    "mvn_param": 120, "parameter_param": 145, "pooling_param": 121, "power_param": 122,
    "prelu_param": 131, "python_param": 130, "recurrent_param": 146, "reduction_param": 136,
    "relu_param": 123, "reshape_param": 133, "scale_param": 142, "sigmoid_param": 124,
    "softmax_param": 125, "spp_param": 132, "slice_param": 126, "swish_param": 147,
    "tanh_param": 127, "threshold_param": 128, "tile_param": 138, "window_data_param": 129,
}
FORK_LAYER_FIELDS = {
    "permute_param": 202, "prior_box_param": 203, "detection_output_param": 204,
    "norm_param": 206,                                               # weiliu89/caffe (SSD)
    "upsample_param": 147,                                           # SegNet
    "shuffle_channel_param": 164,                                    # ShuffleNet
    "roi_pooling_param": 8266711,                                    # Fast R-CNN
}
# Caffe's types that have no message of their own
NO_BLOCK = {"AbsVal", "BNLL", "BatchReindex", "EuclideanLoss", "Filter", "LSTMUnit",
            "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "Silence", "Split"}
OURS = {"L1Loss"}                              # solverkit's own types


def test_every_block_name_is_a_field_of_caffe_proto():
    known = {**CAFFE_PROTO_LAYER_FIELDS, **FORK_LAYER_FIELDS}
    wrong = {t: b for t, b in CAFFE_BLOCKS.items() if b not in known}
    assert not wrong
    assert CAFFE_BLOCKS["ReLU"] == "relu_param" and CAFFE_BLOCKS["Normalize"] == "norm_param"


def test_every_registered_type_with_fields_has_its_block_in_the_table():
    for type_name, cls in layer_types().items():
        own = set(cls.Params.model_fields) - set(LayerParams.model_fields)
        built_in = cls.__module__.startswith("solverkit.")        # not a test's plugin
        if type_name in OURS or type_name in NO_BLOCK or not own or not built_in:
            continue
        assert type_name in CAFFE_BLOCKS, type_name
        assert block_name(type_name) == CAFFE_BLOCKS[type_name]


LEAKY = """\
name: "leaky"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" relu_param { negative_slope: 0.2 } }
"""


def _net_parameter_classes():
    """NetParameter/LayerParameter of caffe.proto with ReLUParameter spelled out."""
    layer = [(1, "name", "string", "optional", None), (2, "type", "string", "optional", None),
             (3, "bottom", "string", "repeated", None), (4, "top", "string", "repeated", None),
             (7, "blobs", "message", "repeated", "BlobProto")]
    layer += [(number, name, "message", "optional",
               "ReLUParameter" if name == "relu_param" else "Any")
              for name, number in CAFFE_PROTO_LAYER_FIELDS.items()]
    return build({
        "BlobShape": [(1, "dim", "int64", "repeated", True)],
        "BlobProto": [(7, "shape", "message", "optional", "BlobShape"),
                      (5, "data", "float", "repeated", True)],
        "Any": [],
        "ReLUParameter": [(1, "negative_slope", "float", "optional", None)],
        "LayerParameter": layer,
        "NetParameter": [(1, "name", "string", "optional", None),
                         (100, "layer", "message", "repeated", "LayerParameter")],
    })


def test_leaky_relu_imports_and_exports_as_relu_param(tmp_path, rng):
    path = tmp_path / "leaky.prototxt"
    path.write_text(LEAKY)
    net = sk.Net(path, phase="TEST", seed=0)
    assert net.layer("relu").params.negative_slope == pytest.approx(0.2)
    x = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
    y = net.forward(data=x)["conv"].copy()
    assert (y < 0).any()                                              # the slope is in use
    caffemodel, prototxt = export_caffe(net.spec, net, tmp_path / "out" / "leaky.caffemodel")
    text = prototxt.read_text()
    assert "relu_param {" in text and "re_lu_param" not in text
    # the protobuf package reads the text with caffe.proto's field names (the contents
    # of the other blocks are skipped: only ReLUParameter is spelled out here)
    text_format = pytest.importorskip("google.protobuf.text_format")
    classes = _net_parameter_classes()
    parsed = text_format.Parse(net_to_prototxt(net.spec), classes["NetParameter"](),
                               allow_unknown_field=True)
    relu = next(layer for layer in parsed.layer if layer.type == "ReLU")
    assert relu.HasField("relu_param")
    assert relu.relu_param.negative_slope == pytest.approx(0.2)
    back = sk.Net(prototxt, phase="TEST", seed=1)
    back.load(caffemodel)
    assert np.array_equal(back.forward(data=x)["conv"], y)


def test_re_lu_param_is_refused_naming_the_right_block(tmp_path):
    path = tmp_path / "wrong.prototxt"
    path.write_text(LEAKY.replace("relu_param", "re_lu_param"))
    with pytest.raises(SolverkitError, match="relu_param") as info:
        sk.Net(path)
    assert info.value.layer == "relu"


# ---------------------------------------------------------------- raw_data

def _blob_classes():
    return build({
        "BlobShape": [(1, "dim", "int64", "repeated", True)],
        "BlobProto": [(7, "shape", "message", "optional", "BlobShape"),
                      (10, "raw_data_type", "int32", "optional", None),
                      (12, "raw_data", "bytes", "optional", None)],
        "LayerParameter": [(1, "name", "string", "optional", None),
                           (2, "type", "string", "optional", None),
                           (7, "blobs", "message", "repeated", "BlobProto")],
        "NetParameter": [(100, "layer", "message", "repeated", "LayerParameter")],
    })


@pytest.mark.parametrize("code, dtype", [(0, "<f8"), (1, "<f4"), (2, "<f2")])
def test_raw_data_of_each_type_is_read(tmp_path, rng, code, dtype):
    classes = _blob_classes()
    values = rng.normal(size=(3, 2, 2, 2))
    net = classes["NetParameter"]()
    layer = net.layer.add(name="conv", type="Convolution")
    blob = layer.blobs.add(raw_data_type=code, raw_data=values.astype(dtype).tobytes())
    blob.shape.dim.extend(values.shape)
    path = tmp_path / "raw.caffemodel"
    path.write_bytes(net.SerializeToString())
    stored = read_caffemodel(path)[0].blobs[0]
    assert stored.shape == values.shape
    np.testing.assert_array_equal(stored, values.astype(dtype).astype(stored.dtype))


@pytest.mark.parametrize("code, size, match", [
    (2, 15, "whole number"), (2, 14, "holds 7 FLOAT16"), (3, 16, "INT")])
def test_raw_data_of_the_wrong_size_or_type_is_refused(tmp_path, code, size, match):
    classes = _blob_classes()
    net = classes["NetParameter"]()
    blob = net.layer.add(name="conv", type="Convolution").blobs.add(
        raw_data_type=code, raw_data=b"\0" * size)
    blob.shape.dim.extend([2, 4])
    path = tmp_path / "raw.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(SolverkitError, match=match) as info:
        read_caffemodel(path)
    assert info.value.file == str(path)


def test_opencv_half_precision_weights_load_as_the_rounded_originals(tmp_path, rng):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "leaky.prototxt"
    path.write_text(LEAKY)
    net = sk.Net(path, phase="TEST", seed=3)
    caffemodel, prototxt = export_caffe(net.spec, net, tmp_path / "full.caffemodel")
    half = tmp_path / "half.caffemodel"
    cv2.dnn.shrinkCaffeModel(str(caffemodel), str(half))
    assert half.stat().st_size < caffemodel.stat().st_size
    again = sk.Net(prototxt, phase="TEST", seed=9)
    again.load(half)
    for original, loaded in zip(net.params["conv"], again.params["conv"]):
        np.testing.assert_array_equal(loaded.data,
                                      original.data.astype(np.float16).astype(np.float32))
    assert not np.array_equal(again.params["conv"][0].data, net.params["conv"][0].data)
    x = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(half))
    reader.setInput(x)
    np.testing.assert_allclose(again.forward(data=x)["conv"], reader.forward("relu"),
                               atol=1e-5)
