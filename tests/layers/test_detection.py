"""Normalize, Permute, PriorBox, DetectionOutput, ROIPooling: values against references
written here from the SSD and Fast R-CNN forks' C++ (element by element, in loops), and
numeric gradients in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

from solverkit.errors import SolverkitError
from solverkit.gradient_check import check_layer_gradients, layer_net


def _run(layer: dict, inputs: dict):
    net = layer_net(layer, inputs)
    net.forward()
    return net


# ---------------------------------------------------------------- Normalize

def _normalize_reference(x, scale, across_spatial, eps):
    n, c, h, w = x.shape
    y = np.empty_like(x)
    for i in range(n):
        if across_spatial:
            y[i] = x[i] / math.sqrt(float(np.sum(x[i] ** 2)) + eps)
        else:
            for a in range(h):
                for b in range(w):
                    y[i, :, a, b] = x[i, :, a, b] / math.sqrt(float(np.sum(x[i, :, a, b] ** 2))
                                                              + eps)
        for ch in range(c):
            y[i, ch] *= scale[0] if scale.size == 1 else scale[ch]
    return y


@pytest.mark.parametrize("across_spatial", [True, False])
@pytest.mark.parametrize("channel_shared", [True, False])
def test_normalize_forward_and_gradient(rng, across_spatial, channel_shared):
    x = rng.normal(size=(2, 3, 4, 5))
    layer = {"name": "norm", "type": "Normalize", "bottom": "x", "top": "y",
             "across_spatial": across_spatial, "channel_shared": channel_shared, "eps": 0.01,
             "scale_filler": {"type": "uniform", "min": 0.5, "max": 3}}
    net = _run(layer, {"x": x})
    scale = net.params["norm"][0].data
    assert scale.shape == ((1,) if channel_shared else (3,))
    np.testing.assert_allclose(net.blobs["y"].data,
                               _normalize_reference(x, scale, across_spatial, 0.01), rtol=1e-12)
    check_layer_gradients(layer, {"x": x})


def test_normalize_defaults_are_the_forks():
    net = _run({"name": "norm", "type": "Normalize", "bottom": "x", "top": "y"},
               {"x": np.full((1, 2, 1, 2), 3.0)})
    assert net.params["norm"][0].data.tolist() == [1.0]            # constant 1, shared
    np.testing.assert_allclose(net.blobs["y"].data, 0.5)            # across_spatial: 4 values


# ---------------------------------------------------------------- Permute

def test_permute_completes_the_order_and_inverts_in_backward(rng):
    x = rng.normal(size=(2, 3, 4, 5))
    layer = {"name": "perm", "type": "Permute", "bottom": "x", "top": "y", "order": [0, 3]}
    net = _run(layer, {"x": x})
    assert net.blobs["y"].shape == (2, 5, 3, 4)
    for idx in np.ndindex(x.shape):
        n, c, h, w = idx
        assert net.blobs["y"].data[n, w, c, h] == x[idx]
    check_layer_gradients(layer, {"x": x})


def test_permute_rejects_a_repeated_axis():
    with pytest.raises(SolverkitError, match="twice") as info:
        layer_net({"name": "perm", "type": "Permute", "bottom": "x", "top": "y",
                   "order": [0, 2, 2]}, {"x": np.zeros((1, 2, 3))})
    assert info.value.layer == "perm"


# ---------------------------------------------------------------- PriorBox

def _prior_reference(layer_hw, image_hw, p):
    """The fork's PriorBoxLayer::Forward_cpu, cell by cell."""
    height, width = layer_hw
    img_h = p.get("img_h", p.get("img_size", image_hw[0]))
    img_w = p.get("img_w", p.get("img_size", image_hw[1]))
    step_h = p.get("step_h", p.get("step", img_h / height))
    step_w = p.get("step_w", p.get("step", img_w / width))
    offset = p.get("offset", 0.5)
    ratios = [1.0]
    for r in p.get("aspect_ratio", []):
        if any(abs(r - q) < 1e-6 for q in ratios):
            continue
        ratios.append(r)
        if p.get("flip", True):
            ratios.append(1.0 / r)
    boxes = []
    for h in range(height):
        for w in range(width):
            cx, cy = (w + offset) * step_w, (h + offset) * step_h
            for s, m in enumerate(p["min_size"]):
                sizes = [(m, m)]
                if p.get("max_size"):
                    side = math.sqrt(m * p["max_size"][s])
                    sizes.append((side, side))
                sizes += [(m * math.sqrt(r), m / math.sqrt(r)) for r in ratios if
                          abs(r - 1) >= 1e-6]
                for bw, bh in sizes:
                    boxes += [(cx - bw / 2) / img_w, (cy - bh / 2) / img_h,
                              (cx + bw / 2) / img_w, (cy + bh / 2) / img_h]
    boxes = np.asarray(boxes)
    if p.get("clip", False):
        boxes = np.clip(boxes, 0, 1)
    variance = p.get("variance", [0.1])
    variances = np.tile(variance if len(variance) == 4 else variance * 4, boxes.size // 4)
    return np.stack([boxes, variances])[None]


@pytest.mark.parametrize("fields", [
    {"min_size": [4.0]},
    {"min_size": [4.0, 9.0], "max_size": [8.0, 15.0], "aspect_ratio": [2.0, 3.0, 2.0],
     "flip": True, "clip": True, "variance": [0.1, 0.1, 0.2, 0.2]},
    {"min_size": [5.0], "aspect_ratio": [0.5], "flip": False, "step_h": 3.0, "step_w": 5.0,
     "img_h": 20, "img_w": 30, "offset": 0.25, "variance": [0.3]},
    {"min_size": [6.0], "max_size": [10.0], "img_size": 24, "step": 7.0},
])
def test_prior_box_against_the_forks_loops(fields):
    net = _run({"name": "pb", "type": "PriorBox", "bottom": ["f", "d"], "top": "p", **fields},
               {"f": np.zeros((2, 4, 3, 5)), "d": np.zeros((2, 3, 18, 26))})
    expected = _prior_reference((3, 5), (18, 26), fields)
    assert net.blobs["p"].shape == expected.shape
    np.testing.assert_allclose(net.blobs["p"].data, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("fields, field", [
    ({}, "min_size"), ({"min_size": [4.0], "max_size": [3.0]}, "max_size"),
    ({"min_size": [4.0], "variance": [0.1, 0.2]}, "variance"),
    ({"min_size": [4.0], "step": 2.0, "step_h": 2.0, "step_w": 2.0}, "step"),
])
def test_prior_box_mistakes_name_the_field(fields, field):
    with pytest.raises(SolverkitError) as info:
        layer_net({"name": "pb", "type": "PriorBox", "bottom": ["f", "d"], "top": "p",
                   **fields}, {"f": np.zeros((1, 1, 2, 2)), "d": np.zeros((1, 3, 8, 8))})
    assert info.value.layer == "pb" and info.value.field == field


# ---------------------------------------------------------------- DetectionOutput

def _decode_reference(prior, var, loc, code, encoded):
    if encoded:
        var = [1.0, 1.0, 1.0, 1.0]
    if code == "CORNER":
        return [prior[k] + var[k] * loc[k] for k in range(4)]
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code == "CORNER_SIZE":
        return [prior[0] + var[0] * loc[0] * pw, prior[1] + var[1] * loc[1] * ph,
                prior[2] + var[2] * loc[2] * pw, prior[3] + var[3] * loc[3] * ph]
    cx = var[0] * loc[0] * pw + (prior[0] + prior[2]) / 2
    cy = var[1] * loc[1] * ph + (prior[1] + prior[3]) / 2
    w = math.exp(var[2] * loc[2]) * pw
    h = math.exp(var[3] * loc[3]) * ph
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _iou_reference(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = iw * ih

    def size(box):
        return 0.0 if box[2] < box[0] or box[3] < box[1] else (box[2] - box[0]) * (box[3] - box[1])
    return inter / (size(a) + size(b) - inter)


def _detections_reference(loc, conf, prior, p):
    """The fork's DetectionOutputLayer::Forward_cpu with ApplyNMSFast, box by box."""
    classes = p["num_classes"]
    share = p.get("share_location", True)
    background = p.get("background_label_id", 0)
    nms = p.get("nms_param", {})
    threshold, top_k, eta = nms.get("nms_threshold", 0.3), nms.get("top_k", -1), nms.get("eta", 1)
    confidence = p.get("confidence_threshold", -np.inf)
    keep_top_k = p.get("keep_top_k", -1)
    num_priors = prior.shape[2] // 4
    n = loc.shape[0]
    loc_classes = 1 if share else classes
    rows = []
    for i in range(n):
        boxes = {}
        for c in range(loc_classes):
            label = -1 if share else c
            if label == background:
                continue
            boxes[label] = [
                _decode_reference(prior[0, 0, 4 * j:4 * j + 4], prior[0, 1, 4 * j:4 * j + 4],
                                  loc[i, (j * loc_classes + c) * 4:(j * loc_classes + c) * 4 + 4],
                                  p.get("code_type", "CORNER"),
                                  p.get("variance_encoded_in_target", False))
                for j in range(num_priors)]
            if p.get("clip", False):                       # OpenCV's ClipBBox after decoding
                boxes[label] = [[min(max(v, 0.0), 1.0) for v in box] for box in boxes[label]]
        indices = {}
        for c in range(classes):
            if c == background:
                continue
            scores = [conf[i, j * classes + c] for j in range(num_priors)]
            bxs = boxes[-1 if share else c]
            order = sorted([j for j in range(num_priors) if scores[j] > confidence],
                           key=lambda j: -scores[j])            # Python's sort is stable
            if top_k > -1:
                order = order[:top_k]
            kept, adaptive = [], threshold
            for j in order:
                keep = all(_iou_reference(bxs[j], bxs[k]) <= adaptive for k in kept)
                if keep:
                    kept.append(j)
                    if eta < 1 and adaptive > 0.5:
                        adaptive *= eta
            indices[c] = kept
        total = sum(len(v) for v in indices.values())
        if keep_top_k > -1 and total > keep_top_k:
            pairs = sorted(((conf[i, j * classes + c], c, j) for c, v in indices.items()
                            for j in v), key=lambda t: -t[0])[:keep_top_k]
            indices = {}
            for _, c, j in pairs:
                indices.setdefault(c, []).append(j)
        for c in sorted(indices):
            for j in indices[c]:
                rows.append([i, c, conf[i, j * classes + c], *boxes[-1 if share else c][j]])
    if not rows:
        return np.array([[i, -1, -1, -1, -1, -1, -1] for i in range(n)], dtype=float)
    return np.asarray(rows)


def _detection_inputs(rng, n, num_priors, classes, loc_classes):
    centre = rng.uniform(0.2, 0.8, size=(num_priors, 2))
    size = rng.uniform(0.1, 0.4, size=(num_priors, 2))
    priors = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    variances = np.tile([0.1, 0.1, 0.2, 0.2], (num_priors, 1))
    prior = np.stack([priors.ravel(), variances.ravel()])[None]
    loc = rng.normal(scale=0.5, size=(n, num_priors * loc_classes * 4))
    logits = rng.normal(scale=2.0, size=(n, num_priors, classes))
    conf = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return loc, conf.reshape(n, -1), prior


@pytest.mark.parametrize("fields", [
    {"num_classes": 3, "nms_param": {"nms_threshold": 0.45, "top_k": 30},
     "code_type": "CENTER_SIZE", "keep_top_k": 12, "confidence_threshold": 0.2},
    {"num_classes": 4, "share_location": False, "background_label_id": -1,
     "nms_param": {"nms_threshold": 0.7, "eta": 0.8}, "code_type": "CORNER",
     "confidence_threshold": 0.3},
    {"num_classes": 3, "background_label_id": 2, "code_type": "CORNER_SIZE",
     "variance_encoded_in_target": True, "nms_param": {"nms_threshold": 0.6, "top_k": 5}},
    {"num_classes": 3, "code_type": "CENTER_SIZE", "clip": True, "keep_top_k": 7},
    {"num_classes": 2, "confidence_threshold": 0.999},                    # nothing found
])
def test_detection_output_against_the_forks_loops(rng, fields):
    classes = fields["num_classes"]
    loc_classes = 1 if fields.get("share_location", True) else classes
    loc, conf, prior = _detection_inputs(rng, 3, 40, classes, loc_classes)
    net = _run({"name": "det", "type": "DetectionOutput", "bottom": ["loc", "conf", "prior"],
                "top": "out", **fields}, {"loc": loc, "conf": conf, "prior": prior})
    expected = _detections_reference(loc, conf, prior, fields)
    got = net.blobs["out"].data
    assert got.shape == (1, 1, *expected.shape)
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-12, atol=1e-12)


def test_detection_output_checks_the_bottom_sizes(rng):
    loc, conf, prior = _detection_inputs(rng, 2, 10, 3, 1)
    with pytest.raises(SolverkitError, match="priors") as info:
        layer_net({"name": "det", "type": "DetectionOutput", "bottom": ["loc", "conf", "prior"],
                   "top": "out", "num_classes": 3, "share_location": False},
                  {"loc": loc, "conf": conf, "prior": prior})
    assert info.value.layer == "det" and info.value.field == "share_location"


# ---------------------------------------------------------------- ROIPooling

def _roi_pooling_reference(x, rois, pooled_h, pooled_w, spatial_scale):
    """Fast R-CNN's ROIPoolingLayer::Forward_cpu, bin by bin, with the argmax."""
    _, c, height, width = x.shape
    top = np.zeros((len(rois), c, pooled_h, pooled_w))
    argmax = np.full(top.shape, -1)

    def round_c(v):
        return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        x1, y1, x2, y2 = (round_c(v * spatial_scale) for v in roi[1:])
        roi_h, roi_w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        for ch in range(c):
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    hs = min(max(int(math.floor(ph * bin_h)) + y1, 0), height)
                    he = min(max(int(math.ceil((ph + 1) * bin_h)) + y1, 0), height)
                    ws = min(max(int(math.floor(pw * bin_w)) + x1, 0), width)
                    we = min(max(int(math.ceil((pw + 1) * bin_w)) + x1, 0), width)
                    if he <= hs or we <= ws:
                        continue
                    best = -np.inf
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[b, ch, h, w] > best:
                                best, argmax[r, ch, ph, pw] = x[b, ch, h, w], h * width + w
                    top[r, ch, ph, pw] = best
    return top, argmax


def test_roi_pooling_forward_backward_and_gradient(rng):
    x = rng.normal(size=(2, 3, 9, 11))
    rois = np.array([[0, 0, 0, 20, 16], [1, 4.4, 2.6, 13, 9], [0, 30, 30, 40, 40],
                     [1, -6, -2, 3, 5], [0, 7, 7, 7, 7]])
    layer = {"name": "roi", "type": "ROIPooling", "bottom": ["x", "rois"], "top": "y",
             "pooled_h": 3, "pooled_w": 2, "spatial_scale": 0.5}
    net = _run(layer, {"x": x, "rois": rois})
    top, argmax = _roi_pooling_reference(x, rois, 3, 2, 0.5)
    np.testing.assert_array_equal(net.blobs["y"].data, top)
    dy = rng.normal(size=top.shape)
    net.backward(y=dy)
    dx = np.zeros((2, 3, 99))
    for r, ch, ph, pw in np.ndindex(top.shape):
        if argmax[r, ch, ph, pw] >= 0:
            dx[int(rois[r, 0]), ch, argmax[r, ch, ph, pw]] += dy[r, ch, ph, pw]
    np.testing.assert_allclose(net.blobs["x"].diff, dx.reshape(x.shape))
    check_layer_gradients(layer, {"x": x, "rois": rois})


def test_roi_pooling_rejects_a_region_of_another_image(rng):
    net = layer_net({"name": "roi", "type": "ROIPooling", "bottom": ["x", "rois"], "top": "y",
                     "pooled_h": 2, "pooled_w": 2},
                    {"x": rng.normal(size=(1, 1, 4, 4)), "rois": np.array([[1, 0, 0, 2, 2]])})
    with pytest.raises(SolverkitError, match="image 1") as info:
        net.forward()
    assert info.value.layer == "roi"
