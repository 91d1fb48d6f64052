"""A small SSD net against OpenCV's Caffe importer (Normalize, Permute, PriorBox,
DetectionOutput), and a detector end to end: net.forward, solverkit predict and OpenCV
give the same detections for an image."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import solverkit as sk
from solverkit.caffe.export import export_caffe

cv2 = pytest.importorskip("cv2")

HEAD = """\
name: "TinySSD"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: BATCH dim: 3 dim: 32 dim: 32 } } }
"""
BODY = """\
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2
          weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "norm1" type: "Normalize" bottom: "conv1" top: "norm1"
        norm_param { across_spatial: false channel_shared: false scale_filler { type: "uniform" min: 2 max: 4 } } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loc1" type: "Convolution" bottom: "norm1" top: "loc1"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "loc1_perm" type: "Permute" bottom: "loc1" top: "loc1_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc1_flat" type: "Flatten" bottom: "loc1_perm" top: "loc1_flat" flatten_param { axis: 1 } }
layer { name: "conf1" type: "Convolution" bottom: "norm1" top: "conf1"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "conf1_perm" type: "Permute" bottom: "conf1" top: "conf1_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf1_flat" type: "Flatten" bottom: "conf1_perm" top: "conf1_flat" flatten_param { axis: 1 } }
layer { name: "prior1" type: "PriorBox" bottom: "norm1" bottom: "data" top: "prior1"
        prior_box_param { min_size: 6 max_size: 12 aspect_ratio: 2 flip: true clip: true
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
layer { name: "loc2" type: "Convolution" bottom: "conv2" top: "loc2"
        convolution_param { num_output: 24 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "loc2_perm" type: "Permute" bottom: "loc2" top: "loc2_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc2_flat" type: "Flatten" bottom: "loc2_perm" top: "loc2_flat" flatten_param { axis: 1 } }
layer { name: "conf2" type: "Convolution" bottom: "conv2" top: "conf2"
        convolution_param { num_output: 18 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "conf2_perm" type: "Permute" bottom: "conf2" top: "conf2_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf2_flat" type: "Flatten" bottom: "conf2_perm" top: "conf2_flat" flatten_param { axis: 1 } }
layer { name: "prior2" type: "PriorBox" bottom: "conv2" bottom: "data" top: "prior2"
        prior_box_param { min_size: 14 max_size: 28 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 offset: 0.5 } }
layer { name: "loc" type: "Concat" bottom: "loc1_flat" bottom: "loc2_flat" top: "loc" concat_param { axis: 1 } }
layer { name: "conf" type: "Concat" bottom: "conf1_flat" bottom: "conf2_flat" top: "conf" concat_param { axis: 1 } }
layer { name: "prior" type: "Concat" bottom: "prior1" bottom: "prior2" top: "prior" concat_param { axis: 2 } }
layer { name: "conf_reshape" type: "Reshape" bottom: "conf" top: "conf_reshape" reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax" softmax_param { axis: 2 } }
layer { name: "conf_flatten" type: "Flatten" bottom: "conf_softmax" top: "conf_flatten" flatten_param { axis: 1 } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "loc" bottom: "conf_flatten" bottom: "prior" top: "detection_out"
        detection_output_param { num_classes: 3 share_location: true background_label_id: 0
          nms_param { nms_threshold: 0.45 top_k: 50 } code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.3 } }
"""


def _ssd(tmp_path, batch: int, seed: int = 1, clip: bool = False):
    path = tmp_path / "ssd.prototxt"
    body = BODY.replace("confidence_threshold: 0.3", "confidence_threshold: 0.3 clip: 1") \
        if clip else BODY                       # OpenCV's field, written 0/1 as in its files
    path.write_text(HEAD.replace("BATCH", str(batch)) + body)
    return sk.Net(path, phase="TEST", seed=seed)


def _ordered(rows: np.ndarray) -> np.ndarray:
    """Detections by image, label, then falling score (the order both write, ties aside);
    OpenCV pads its top to keep_top_k rows of 0 (label 0 is the background, never found)."""
    rows = rows.reshape(-1, 7)
    rows = rows[rows[:, 1] > 0]
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("clip", [False, True])
def test_ssd_layers_agree_with_opencv(tmp_path, rng, clip):
    net = _ssd(tmp_path, batch=2, clip=clip)
    x = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    ours = {name: blob.copy() for name, blob in net.forward(data=x).items()}
    for name in ("norm1", "loc1_perm", "prior"):
        ours[name] = net.blobs[name].data.copy()
    caffemodel, prototxt = export_caffe(net.spec, net, tmp_path / "out" / "ssd.caffemodel")
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    reader.setInput(x)
    names = ["norm1", "loc1_perm", "prior", "detection_out"]
    theirs = dict(zip(names, reader.forward(names)))
    np.testing.assert_allclose(theirs["norm1"], ours["norm1"], atol=1e-5)
    np.testing.assert_allclose(theirs["loc1_perm"], ours["loc1_perm"], atol=1e-5)
    np.testing.assert_allclose(theirs["prior"], ours["prior"], atol=1e-6)
    detections = ours["detection_out"][0, 0]
    assert len(detections) > 4 and set(detections[:, 0]) == {0, 1}     # both images found some
    np.testing.assert_allclose(_ordered(theirs["detection_out"]), _ordered(detections),
                               atol=1e-5)


def _predict(args, cwd):
    return subprocess.run([sys.executable, "-m", "solverkit", "predict", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, check=False)


def test_a_detector_end_to_end_forward_predict_and_opencv(tmp_path, rng):
    net = _ssd(tmp_path, batch=1, seed=4)
    caffemodel, prototxt = export_caffe(net.spec, net, tmp_path / "out" / "ssd.caffemodel")
    images = []
    for k in range(2):
        pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"photo{k}.png"), pixels)
        images.append(pixels)
    mean, scale = (104.0, 117.0, 123.0), 0.017
    # OpenCV: the same file read by its own loader, mean and scale by blobFromImage
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    expected = []
    for k, pixels in enumerate(images):
        # what solverkit does by hand: HWC BGR -> CHW, (x - mean) * scale
        x = ((pixels.transpose(2, 0, 1).astype(np.float32)
              - np.asarray(mean, np.float32)[:, None, None]) * np.float32(scale))[None]
        ours = net.forward(data=x)["detection_out"][0, 0].copy()
        blob = cv2.dnn.blobFromImage(cv2.imread(str(tmp_path / f"photo{k}.png")), scale,
                                     (32, 32), mean, swapRB=False, crop=False)
        reader.setInput(blob)
        theirs = reader.forward("detection_out")[0, 0]
        np.testing.assert_allclose(_ordered(theirs), _ordered(ours), atol=1e-4)
        ours[:, 0] = k
        expected.append(ours)
    expected = np.concatenate(expected)
    assert len(expected) > 2
    args = ["--net", prototxt, "--weights", caffemodel, tmp_path / "photo0.png",
            tmp_path / "photo1.png", "--mean", "104,117,123", "--scale", scale,
            "--batch-size", 1]
    done = _predict([*args, "--format", "json"], tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["detections"]
    rows = np.array([[int(d["input"].endswith("photo1.png")), d["label"], d["score"],
                      *(d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax"))] for d in found])
    np.testing.assert_allclose(_ordered(rows), _ordered(expected), atol=1e-5)
    table = _predict([*args, "--format", "table", "--batch-size", 2], tmp_path)
    assert table.returncode == 0, table.stderr
    assert f"photo0.png: {int((expected[:, 0] == 0).sum())} detections" in table.stdout
    lines = _predict([*args, "--format", "csv"], tmp_path).stdout.splitlines()
    assert lines[0] == "input,label,name,score,xmin,ymin,xmax,ymax"
    assert len(lines) == 1 + len(expected)


def test_predict_resizes_and_swaps_channels_for_a_detector(tmp_path, rng):
    net = _ssd(tmp_path, batch=1, seed=4)
    caffemodel, prototxt = export_caffe(net.spec, net, tmp_path / "out" / "ssd.caffemodel")
    pixels = rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), pixels)
    done = _predict(["--net", prototxt, "--weights", caffemodel, tmp_path / "big.png",
                     "--resize", "64", "--channel-order", "RGB", "--scale", "0.01",
                     "--format", "json"], tmp_path)
    assert done.returncode == 0, done.stderr
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    reader.setInput(cv2.dnn.blobFromImage(pixels, 0.01, (64, 64), swapRB=True))
    theirs = reader.forward("detection_out")[0, 0]
    theirs = theirs[theirs[:, 1] > 0]              # OpenCV pads with rows of 0
    found = json.loads(done.stdout)["detections"]
    assert len(found) == len(theirs) > 0
    # the resize is bilinear in both; a box decoded from a slightly different pixel may move
    assert sorted(d["label"] for d in found) == sorted(theirs[:, 1].astype(int).tolist())


@pytest.mark.parametrize("extra, field", [
    (["--mean", "1,2"], "--mean"), (["--mean", "a,b,c"], "--mean"),
    (["--resize", "0"], "--resize"), (["--scale", "0"], "--scale")])
def test_predict_preprocessing_mistakes_exit_2(tmp_path, rng, extra, field):
    net = _ssd(tmp_path, batch=1)
    caffemodel, prototxt = export_caffe(net.spec, net, tmp_path / "out" / "ssd.caffemodel")
    np.save(tmp_path / "x.npy", rng.normal(size=(3, 32, 32)).astype(np.float32))
    done = _predict(["--net", prototxt, "--weights", caffemodel, tmp_path / "x.npy", *extra],
                    tmp_path)
    assert done.returncode == 2 and field in done.stderr and "Traceback" not in done.stderr
