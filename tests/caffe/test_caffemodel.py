"""``.caffemodel`` weights: files another writer built field by field load correctly;
our exported files read back bit-identically and OpenCV's Caffe importer agrees."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from protobuf_oracle import build

import solverkit as sk
from solverkit.caffe import export_caffe
from solverkit.errors import SnapshotError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

NET = """\
name: "small"
input: "data"
input_shape { dim: 2 dim: 2 dim: 5 dim: 5 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 4 } }
layer { name: "bn1" type: "BatchNorm" bottom: "ip1" top: "ip1" }
"""


def caffe_proto(packed: bool):
    """NetParameter and friends with caffe.proto's numbers (enums as their int32 wire form)."""
    blob = [(7, "shape", "message", "optional", "BlobShape"),
            (5, "data", "float", "repeated", packed),
            (8, "double_data", "double", "repeated", packed),
            (1, "num", "int32", "optional", None), (2, "channels", "int32", "optional", None),
            (3, "height", "int32", "optional", None), (4, "width", "int32", "optional", None)]
    return build({
        "BlobShape": [(1, "dim", "int64", "repeated", True)],
        "BlobProto": blob,
        "ConvolutionParameter": [(1, "num_output", "uint32", "optional", None),
                                 (4, "kernel_size", "uint32", "repeated", False)],
        "LayerParameter": [(1, "name", "string", "optional", None),
                           (2, "type", "string", "optional", None),
                           (3, "bottom", "string", "repeated", None),
                           (4, "top", "string", "repeated", None),
                           (7, "blobs", "message", "repeated", "BlobProto"),
                           (106, "convolution_param", "message", "optional",
                            "ConvolutionParameter")],
        "V1LayerParameter": [(2, "bottom", "string", "repeated", None),
                             (3, "top", "string", "repeated", None),
                             (4, "name", "string", "optional", None),
                             (5, "type", "int32", "optional", None),
                             (6, "blobs", "message", "repeated", "BlobProto"),
                             (7, "blobs_lr", "float", "repeated", False)],
        "NetParameter": [(1, "name", "string", "optional", None),
                         (2, "layers", "message", "repeated", "V1LayerParameter"),
                         (100, "layer", "message", "repeated", "LayerParameter")],
    })


def fill_blob(blob, array, legacy=False, double=False):
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
    else:
        blob.shape.dim.extend(array.shape)
    (blob.double_data if double else blob.data).extend(array.ravel().tolist())


@pytest.fixture
def weights(rng):
    return {"conv1": [rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)],
            "ip1": [rng.standard_normal((4, 27)), rng.standard_normal(4)],
            "bn1": [rng.standard_normal(4), rng.uniform(1, 2, 4), np.array([2.5])]}


@pytest.mark.parametrize("packed", [True, False])
def test_current_layers_with_shapes_and_double_data(tmp_path, weights, packed):
    pb = caffe_proto(packed)
    message = pb["NetParameter"](name="small")
    message.layer.add(name="data", type="Input", top=["data"])
    for name, kind in (("conv1", "Convolution"), ("ip1", "InnerProduct"), ("bn1", "BatchNorm")):
        layer = message.layer.add(name=name, type=kind)
        if kind == "Convolution":
            layer.convolution_param.num_output = 3       # layer settings are skipped
        for j, array in enumerate(weights[name]):
            fill_blob(layer.blobs.add(), array, double=(name == "ip1" and j == 0))
    path = tmp_path / "small.caffemodel"
    path.write_bytes(message.SerializeToString())
    net = sk.Net(NET, phase="TEST", seed=0)
    assert net.load(path) == []
    for name, arrays in weights.items():
        for blob, array in zip(net.layer(name).blobs, arrays):
            np.testing.assert_array_equal(blob.data, array.astype(np.float32))
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    ip = net.forward(data=x)["ip1"]
    mean, var = weights["bn1"][0] / 2.5, weights["bn1"][1] / 2.5    # Caffe's scale factor
    before = net.blobs["conv1"].data.reshape(2, -1) @ weights["ip1"][0].T.astype(
        np.float32) + weights["ip1"][1].astype(np.float32)
    np.testing.assert_allclose(ip, (before - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


def test_v1_layers_with_legacy_shapes(tmp_path, weights):
    pb = caffe_proto(False)
    message = pb["NetParameter"](name="small")
    for name, enum in (("conv1", 4), ("ip1", 14)):                 # CONVOLUTION, INNER_PRODUCT
        layer = message.layers.add(name=name, type=enum, blobs_lr=[1, 2])
        for array in weights[name]:
            fill_blob(layer.blobs.add(), array, legacy=True)
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(message.SerializeToString())
    stored = pb["NetParameter"].FromString(path.read_bytes())
    assert stored.layers[1].blobs[0].num == 1 and stored.layers[1].blobs[0].height == 4
    net = sk.Net(NET.replace('layer { name: "bn1" type: "BatchNorm" bottom: "ip1" top: "ip1" }',
                             ""), phase="TEST", seed=0)
    net.load(path)
    np.testing.assert_array_equal(net.layer("ip1").blobs[0].data,       # stored 1x1x4x27
                                  weights["ip1"][0].astype(np.float32))
    np.testing.assert_array_equal(net.layer("conv1").blobs[1].data,
                                  weights["conv1"][1].astype(np.float32))
    # without a net, import-caffe reduces the legacy shapes to the usual ones
    out = tmp_path / "v1.model.npz"
    done = subprocess.run([sys.executable, "-m", "solverkit", "import-caffe", "--weights",
                           str(path), "-o", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    with np.load(out, allow_pickle=False) as archive:
        assert archive["ip1/0"].shape == (4, 27) and archive["ip1/1"].shape == (4,)
        assert archive["conv1/0"].shape == (3, 2, 3, 3)
    fresh = sk.Net(net.spec, phase="TEST", seed=5)
    fresh.load(out)
    for a, b in zip(fresh.layer("ip1").blobs, net.layer("ip1").blobs):
        np.testing.assert_array_equal(a.data, b.data)


def test_matching_rules_are_those_of_model_files(tmp_path, weights):
    net = sk.Net(NET, phase="TEST", seed=0)
    from solverkit.caffe.weights import encode_caffemodel
    only_conv = tmp_path / "conv.caffemodel"
    only_conv.write_bytes(encode_caffemodel("x", [("conv1", "Convolution", [], [],
                                                   weights["conv1"])]))
    with pytest.raises(SnapshotError, match="layer 'ip1'.*no weights for this layer"):
        net.load(only_conv)
    assert net.load(only_conv, allow_missing=True) == ["ip1", "bn1"]
    extra = tmp_path / "extra.caffemodel"
    extra.write_bytes(encode_caffemodel("x", [
        (name, "", [], [], arrays) for name, arrays in weights.items()]
        + [("fc9", "InnerProduct", [], [], [np.zeros((2, 2))])]))
    with pytest.raises(SnapshotError, match="layers the net does not have: fc9"):
        net.load(extra)
    assert net.load(extra, allow_extra=True) == []
    three = tmp_path / "three.caffemodel"
    three.write_bytes(encode_caffemodel("x", [("conv1", "", [], [], [*weights["conv1"],
                                                                      np.zeros(1)])]))
    with pytest.raises(SnapshotError, match="3 parameters for this layer, the net's layer has 2"):
        net.load(three, allow_missing=True)


def _trained_digits_lenet(tmp_path) -> Path:
    solver = sk.Solver(CONFIGS / "digits" / "lenet_solver.yaml",
                       overrides={"max_iter": 60, "test_interval": 0, "display": 0,
                                  "snapshot_prefix": str(tmp_path / "lenet")}, progress=False)
    solver.solve()
    return tmp_path / "lenet_iter_60.model.npz"


DIGITS_DEPLOY = """\
name: "DigitsLeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 7 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 3 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 50 kernel_size: 3 pad: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""


def _opencv_forward(prototxt: Path, caffemodel: Path, x: np.ndarray) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    reader.setInput(x)
    return reader.forward()


def test_trained_lenet_round_trip_and_opencv(tmp_path):
    model = _trained_digits_lenet(tmp_path)
    deploy = sk.Net(DIGITS_DEPLOY, phase="TEST", seed=0)
    deploy.load(model)
    digits = np.load(Path(sk.__file__).parent / "data" / "digits.npz")
    x = (digits["x"][:7].reshape(7, 1, 8, 8) * 0.0625).astype(np.float32)
    ours = deploy.forward(data=x)["prob"].copy()
    caffemodel, prototxt = export_caffe(deploy.spec, deploy, tmp_path / "out" / "lenet.caffemodel")
    assert caffemodel.exists() and prototxt == tmp_path / "out" / "lenet.prototxt"
    back = sk.Net(prototxt, phase="TEST", seed=9)
    back.load(caffemodel)
    assert back.spec.to_dict() == deploy.spec.to_dict()
    assert np.array_equal(back.forward(data=x)["prob"], ours)              # bit-identical
    np.testing.assert_allclose(_opencv_forward(prototxt, caffemodel, x), ours, atol=1e-4)
    assert (ours.argmax(axis=1) == digits["y"][:7]).mean() > 0.5


MIXED = """\
name: "mixed"
input: "data"
input_shape { dim: 2 dim: 4 dim: 14 dim: 14 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2
                            weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1"
        prelu_param { filler { type: "uniform" min: 0.1 max: 0.4 } } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }
layer { name: "pool_max" type: "Pooling" bottom: "norm1" top: "pool_max"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pool_ave" type: "Pooling" bottom: "norm1" top: "pool_ave"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "cat" type: "Concat" bottom: "pool_max" bottom: "pool_ave" top: "cat" }
layer { name: "bn" type: "BatchNorm" bottom: "cat" top: "bn"
        batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn"
        scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 1.5 }
                      bias_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "side" type: "Convolution" bottom: "cat" top: "side"
        convolution_param { num_output: 16 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "sum" type: "Eltwise" bottom: "bn" bottom: "side" top: "sum"
        eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layer { name: "drop" type: "Dropout" bottom: "sum" top: "sum" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_opencv_agrees_on_lrn_groups_pooling_concat_batchnorm_eltwise_prelu(tmp_path, rng):
    """(LRN keeps Caffe's k = 1: OpenCV's importer does not read lrn_param.k.)"""
    net = sk.Net(MIXED, phase="TEST", seed=3)
    assert net.blobs["pool_max"].shape == (2, 8, 7, 7)           # ceil((14 - 3) / 2) + 1
    mean, var, factor = net.layer("bn").blobs
    mean.data[...] = rng.standard_normal(mean.shape) * 0.5
    var.data[...] = rng.uniform(0.5, 2.0, var.shape)
    factor.data[...] = 0.8                                          # Caffe's scale factor
    x = rng.standard_normal((2, 4, 14, 14)).astype(np.float32)
    ours = {name: net.forward(data=x)[name].copy() for name in ("prob",)}
    sums = net.blobs["sum"].data.copy()
    caffemodel, prototxt = export_caffe(net.spec, net, tmp_path / "mixed.caffemodel")
    cv2 = pytest.importorskip("cv2")
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    reader.setInput(x)
    theirs_sum, theirs_prob = reader.forward(["sum", "prob"])
    np.testing.assert_allclose(theirs_sum, sums, atol=1e-4)
    np.testing.assert_allclose(theirs_prob, ours["prob"], atol=1e-4)
    back = sk.Net(prototxt, phase="TEST", seed=0)
    back.load(caffemodel)
    assert np.array_equal(back.forward(data=x)["prob"], ours["prob"])


@pytest.mark.slow
def test_import_caffe_weights_checked_against_a_net(tmp_path, weights):
    from solverkit.caffe.weights import encode_caffemodel
    path = tmp_path / "w.caffemodel"
    path.write_bytes(encode_caffemodel("x", [(n, "", [], [], a) for n, a in weights.items()]))
    (tmp_path / "net.prototxt").write_text(NET)
    out = tmp_path / "w.model.npz"
    args = [sys.executable, "-m", "solverkit", "import-caffe", "--weights", str(path),
            "--net", str(tmp_path / "net.prototxt"), "-o", str(out)]
    assert subprocess.run(args, capture_output=True, text=True, check=False).returncode == 0
    again = subprocess.run(args, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    net = sk.Net(tmp_path / "net.prototxt", phase="TEST", seed=4)
    net.load(out)
    np.testing.assert_array_equal(net.layer("bn1").blobs[2].data, [2.5])
    np.testing.assert_array_equal(net.layer("ip1").blobs[0].data,
                                  weights["ip1"][0].astype(np.float32))


@pytest.mark.slow
def test_cli_test_and_fine_tune_take_a_caffemodel(tmp_path):
    model = _trained_digits_lenet(tmp_path)
    deploy = sk.Net(DIGITS_DEPLOY, phase="TEST", seed=0)
    deploy.load(model)
    caffemodel, _ = export_caffe(deploy.spec, deploy, tmp_path / "lenet.caffemodel")

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "solverkit", *map(str, args)],
                              cwd=tmp_path, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return re.findall(r"Test net output #\d+: (\w+) = (\S+)", done.stdout)

    caffe_net = CONFIGS / "digits" / "caffe" / "lenet_train_test.prototxt"
    with_npz = run("test", "--net", CONFIGS / "digits" / "lenet_net.yaml", "--weights", model)
    with_caffemodel = run("test", "--net", caffe_net, "--weights", caffemodel)
    assert with_caffemodel == with_npz and dict(with_npz)["accuracy"]
    tuned = run("train", "--solver", CONFIGS / "digits" / "caffe" / "lenet_solver.prototxt",
                "--weights", caffemodel, "--set", "max_iter=0",
                f"snapshot_prefix={tmp_path / 'tuned'}")
    assert tuned == with_npz                    # iteration 0: the weights as loaded


@pytest.mark.slow
def test_solverkit_export_writes_caffe_files_opencv_reads(tmp_path):
    """The train/test net in its deploy form, through ``solverkit export``."""
    model = _trained_digits_lenet(tmp_path)
    out = tmp_path / "lenet.caffemodel"
    done = subprocess.run([sys.executable, "-m", "solverkit", "export", "--net",
                           CONFIGS / "digits" / "lenet_net.yaml", "--weights", model, "-o", out],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    prototxt = out.with_suffix(".prototxt")
    deploy = sk.Net(sk.deploy_net(CONFIGS / "digits" / "lenet_net.yaml"), phase="TEST", seed=0)
    deploy.load(model, allow_extra=True)
    back = sk.Net(prototxt, phase="TEST", seed=1)
    back.load(out)
    assert back.spec.to_dict() == deploy.spec.to_dict()
    x = np.random.default_rng(2).random(back.blobs["data"].shape).astype(np.float32)
    probs = back.forward(data=x)["prob"]
    assert np.array_equal(probs, deploy.forward(data=x)["prob"])
    np.testing.assert_allclose(_opencv_forward(prototxt, out, x[:3]), probs[:3], atol=1e-4)


def test_exported_files_get_the_mode_new_files_get(tmp_path):
    """Exported Caffe files are written atomically like snapshots, with the umask's mode
    (a temporary file's own 0600 would lock other users out of a shared model)."""
    import os
    net = sk.Net({"name": "tiny", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [[1, 3]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip",
         "num_output": 2, "weight_filler": {"type": "gaussian"}}]}, phase="TEST", seed=0)
    previous = os.umask(0o022)
    try:
        paths = export_caffe(net.spec, net, tmp_path / "tiny.caffemodel")
    finally:
        os.umask(previous)
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert not list(tmp_path.glob(".*.tmp"))
