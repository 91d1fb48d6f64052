"""Runs written as Caffe's notebooks write them: learning LeNet from an LMDB with NetSpec
and SGDSolver, classifying with a Transformer and .caffemodel weights, net surgery."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from solverkit.data.sources import load_source

lmdb = pytest.importorskip("lmdb")


def write_digits_lmdb(path, split):
    """The built-in digits as a Caffe LMDB of uint8 Datum records (pixels 0..16 -> 0..255)."""
    dataset = load_source(f"builtin:digits/{split}")
    images = np.minimum(dataset.data.astype(np.int32) * 16, 255).astype(np.uint8)
    with lmdb.open(str(path), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for k, (image, label) in enumerate(zip(images, dataset.labels)):
            datum = caffe.io.array_to_datum(image, int(label))
            txn.put(f"{k:08d}".encode(), datum.SerializeToString())
    return len(images)


def lenet(lmdb_path, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb_path,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=12,
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool1, num_output=32, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


@pytest.mark.slow
def test_learning_lenet_as_the_notebook_does(tmp_path):
    write_digits_lmdb(tmp_path / "train_lmdb", "train")
    test_count = write_digits_lmdb(tmp_path / "test_lmdb", "test")
    (tmp_path / "train.prototxt").write_text(str(lenet(str(tmp_path / "train_lmdb"), 32)))
    (tmp_path / "test.prototxt").write_text(str(lenet(str(tmp_path / "test_lmdb"), 40)))
    test_iter = test_count // 40
    (tmp_path / "solver.prototxt").write_text(
        'train_net: "train.prototxt"\ntest_net: "test.prototxt"\n'
        f'test_iter: {test_iter}\ntest_interval: 100000\ntest_initialization: false\n'
        'base_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: "inv"\n'
        'gamma: 0.0001\npower: 0.75\ndisplay: 0\nmax_iter: 150\nsnapshot: 0\n'
        f'random_seed: 7\nsnapshot_prefix: "{tmp_path}/lenet"\n')

    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    assert [(k, v.data.shape) for k, v in solver.net.blobs.items()][:2] == \
        [("data", (32, 1, 8, 8)), ("label", (32,))]
    losses = []
    for _ in range(150):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    correct = 0
    for _ in range(test_iter):
        solver.test_nets[0].forward()
        correct += int((solver.test_nets[0].blobs["score"].data.argmax(1)
                        == solver.test_nets[0].blobs["label"].data).sum())
    accuracy = correct / (test_iter * 40)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert accuracy > 0.85

    # the same net and solver under `solverkit train`, with an Accuracy layer added
    test_net = lenet(str(tmp_path / "test_lmdb"), 40)
    layer = test_net.layer.add(name="accuracy", type="Accuracy", bottom=["score", "label"],
                               top=["accuracy"])
    assert layer.name == "accuracy"
    (tmp_path / "test.prototxt").write_text(str(test_net))
    run = subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver",
                          "solver.prototxt", "--quiet", "--set",
                          f"snapshot_prefix={tmp_path}/cli"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = float(re.search(r"accuracy = ([0-9.]+)", run.stdout + run.stderr).group(1))
    assert printed == pytest.approx(accuracy, abs=1e-6)


DEPLOY = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.02 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.02 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_classification_as_the_notebook_does_matches_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    Image = pytest.importorskip("PIL.Image")
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY)
    caffe.set_random_seed(11)
    caffe.Net(str(deploy), caffe.TEST).save(str(tmp_path / "tiny.caffemodel"))
    picture = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "cat.png")
    mean_bgr = np.array([104.0, 117.0, 123.0])

    caffe.set_mode_cpu()
    net = caffe.Net(str(deploy), str(tmp_path / "tiny.caffemodel"), caffe.TEST)
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", mean_bgr)
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))
    net.blobs["data"].reshape(1, 3, 16, 16)
    image = caffe.io.load_image(str(tmp_path / "cat.png"))
    net.blobs["data"].data[...] = transformer.preprocess("data", image)
    probabilities = net.forward()["prob"][0]

    reference = cv2.dnn.readNetFromCaffe(str(deploy), str(tmp_path / "tiny.caffemodel"))
    bgr = cv2.imread(str(tmp_path / "cat.png"))
    reference.setInput(cv2.dnn.blobFromImage(bgr, 1.0, (16, 16), tuple(mean_bgr), swapRB=False))
    expected = reference.forward().reshape(-1)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    assert probabilities.argmax() == expected.argmax() and probabilities.std() > 1e-3


FC_NET = """name: "fc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" }
                              bias_filler { type: "constant" value: 0.2 } } }
"""
FULLY_CONV = """name: "fcn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 11 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc-conv" type: "Convolution" bottom: "conv1" top: "fc-conv"
        convolution_param { num_output: 3 kernel_size: 6 } }
"""


def test_net_surgery_fc_weights_into_a_fully_convolutional_net(tmp_path):
    (tmp_path / "fc.prototxt").write_text(FC_NET)
    (tmp_path / "fcn.prototxt").write_text(FULLY_CONV)
    net = caffe.Net(str(tmp_path / "fc.prototxt"), caffe.TEST)
    fcn = caffe.Net(str(tmp_path / "fcn.prototxt"), caffe.TEST)
    fc_params = {name: (v[0].data, v[1].data) for name, v in net.params.items()}
    conv_params = {name: (v[0].data, v[1].data) for name, v in fcn.params.items()}
    assert conv_params["fc-conv"][0].shape == (3, 4, 6, 6) and fc_params["fc"][0].shape == (3, 144)
    conv_params["fc-conv"][0].flat = fc_params["fc"][0].flat      # the notebook's surgery
    conv_params["fc-conv"][1][...] = fc_params["fc"][1]
    conv_params["conv1"][0][...] = fc_params["conv1"][0]
    conv_params["conv1"][1][...] = fc_params["conv1"][1]

    image = np.random.default_rng(5).normal(size=(1, 1, 11, 10)).astype(np.float32)
    fcn.blobs["data"].data[...] = image
    scores = fcn.forward()["fc-conv"]
    assert scores.shape == (1, 3, 4, 3)
    for i in range(4):
        for j in range(3):
            net.blobs["data"].data[...] = image[:, :, i:i + 8, j:j + 8]
            np.testing.assert_allclose(scores[0, :, i, j], net.forward()["fc"][0], rtol=1e-4,
                                       atol=1e-5)
