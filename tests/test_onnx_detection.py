"""ONNX export of the SSD, Fast R-CNN and fork layers: onnxruntime equals solverkit's
TEST forward; DetectionOutput, which ONNX has no operator for, is an error naming it."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from solverkit.export.onnx_model import to_onnx  # noqa: E402


def _session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _compare(spec, feeds_for, batches=(1, 3)):
    net = sk.Net(spec, phase="TEST", seed=2)
    rng = np.random.default_rng(5)
    for layer in net.layers:
        for blob in layer.blobs:
            blob.data[...] = rng.uniform(0.5, 2.0, size=blob.shape)
    model = to_onnx(net)
    onnx.checker.check_model(model, full_check=True)
    session = _session(model)
    for batch in batches:
        feeds = feeds_for(batch, rng)
        net.forward(**feeds)
        got = session.run(None, feeds)
        for name, value in zip(net.outputs, got):
            np.testing.assert_allclose(value, net.blobs[name].data, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} at batch {batch}")


def _input(name, shape):
    return {"name": f"in_{name}", "type": "Input", "top": name, "shape": [list(shape)]}


@pytest.mark.parametrize("across_spatial", [True, False])
@pytest.mark.parametrize("channel_shared", [True, False])
def test_normalize_permute_shuffle_depthwise_and_priors(across_spatial, channel_shared):
    spec = {"name": "n", "layers": [
        _input("x", (1, 6, 5, 4)), _input("image", (1, 3, 20, 16)),
        {"name": "norm", "type": "Normalize", "bottom": "x", "top": "norm",
         "across_spatial": across_spatial, "channel_shared": channel_shared, "eps": 0.01},
        {"name": "dw", "type": "DepthwiseConvolution", "bottom": "norm", "top": "dw",
         "num_output": 6, "kernel_size": 3, "pad": 1},
        {"name": "shuffle", "type": "ShuffleChannel", "bottom": "dw", "top": "shuffle",
         "group": 3},
        {"name": "perm", "type": "Permute", "bottom": "shuffle", "top": "perm",
         "order": [0, 2, 3, 1]},
        {"name": "prior", "type": "PriorBox", "bottom": ["x", "image"], "top": "prior",
         "min_size": [4.0], "max_size": [9.0], "aspect_ratio": [2.0], "clip": True}]}
    _compare(spec, lambda n, rng: {"x": rng.normal(size=(n, 6, 5, 4)).astype(np.float32),
                                   "image": np.zeros((n, 3, 20, 16), np.float32)})


def test_upsample_scatters_by_the_mask():
    spec = {"name": "n", "layers": [
        _input("x", (1, 2, 3, 3)), _input("mask", (1, 2, 3, 3)),
        {"name": "up", "type": "Upsample", "bottom": ["x", "mask"], "top": "y",
         "upsample_h": 5, "upsample_w": 6}]}

    def feeds(n, rng):
        mask = np.stack([rng.permutation(30)[:9] for _ in range(n * 2)]).reshape(n, 2, 3, 3)
        return {"x": rng.normal(size=(n, 2, 3, 3)).astype(np.float32),
                "mask": mask.astype(np.float32)}
    _compare(spec, feeds)


def test_roi_pooling_as_max_roi_pool():
    spec = {"name": "n", "layers": [
        _input("x", (2, 3, 12, 10)), {"name": "in_rois", "type": "Input", "top": "rois",
                                      "shape": [[4, 5]]},
        {"name": "roi", "type": "ROIPooling", "bottom": ["x", "rois"], "top": "y",
         "pooled_h": 3, "pooled_w": 2, "spatial_scale": 0.5}]}
    rois = np.array([[0, 0, 0, 15, 20], [1, 4, 6, 19, 13], [1, 2, 2, 3, 3], [0, 8, 1, 18, 22]],
                    np.float32)
    _compare(spec, lambda n, rng: {"x": rng.normal(size=(2, 3, 12, 10)).astype(np.float32),
                                   "rois": rois}, batches=(2,))


def test_detection_output_has_no_onnx_operator():
    priors = np.tile(np.array([0.1, 0.1, 0.5, 0.5]), 4)
    spec = {"name": "n", "layers": [
        _input("loc", (1, 16)), _input("conf", (1, 8)), _input("prior", (1, 2, 16)),
        {"name": "detect", "type": "DetectionOutput", "bottom": ["loc", "conf", "prior"],
         "top": "out", "num_classes": 2}]}
    net = sk.Net(spec, phase="TEST")
    net.forward(loc=np.zeros((1, 16)), conf=np.full((1, 8), 0.5),
                prior=np.stack([priors, np.full(16, 0.1)])[None])
    with pytest.raises(sk.ConfigError, match="DetectionOutput has no ONNX mapping") as info:
        to_onnx(net)
    assert info.value.layer == "detect"
