"""SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss, InfogainLoss, ContrastiveLoss:
values computed by hand in the test, numeric gradients, extreme inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import solverkit as sk
from solverkit.errors import ConfigError, DataError
from solverkit.gradient_check import check_layer_gradients, layer_net


def _loss(layer: dict, inputs: dict) -> tuple[float, sk.Net]:
    net = layer_net({"name": "loss", "top": "loss", **layer}, inputs)
    net.forward()
    return float(net.blobs["loss"].data), net


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# ---------------------------------------------------------------- SigmoidCrossEntropyLoss
def test_sigmoid_cross_entropy_value_and_batch_size_default(rng):
    x = rng.normal(size=(3, 4))
    t = rng.uniform(size=(3, 4))
    value, _ = _loss({"type": "SigmoidCrossEntropyLoss", "bottom": ["x", "t"]},
                     {"x": x, "t": t})
    total = 0.0
    for z, target in zip(x.ravel(), t.ravel()):
        p = _sigmoid(z)
        total -= target * math.log(p) + (1 - target) * math.log(1 - p)
    assert value == pytest.approx(total / 3, rel=1e-12)        # divided by N, not N·4


def test_sigmoid_cross_entropy_extreme_logits_stay_finite():
    x = np.array([[100.0, -100.0, 100.0, -100.0, 0.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]])
    value, net = _loss({"type": "SigmoidCrossEntropyLoss", "bottom": ["x", "t"],
                        "normalization": "NONE"}, {"x": x, "t": t})
    # −log(1 − σ(100)) = 100 + log(1 + e^−100); −log σ(−100) likewise; the right ones ≈ e^−100
    expected = 2 * (100 + math.log1p(math.exp(-100))) + 2 * math.log1p(math.exp(-100)) \
        + math.log(2)
    assert value == pytest.approx(expected, rel=1e-12)
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, [[1.0, -1.0, 0.0, 0.0, -0.5]], atol=1e-40)
    assert np.all(np.isfinite(net.blobs["x"].diff))


def test_sigmoid_cross_entropy_ignore_label_and_valid_normalization():
    x = np.array([[0.5, -1.0], [2.0, 0.3]])
    t = np.array([[1.0, -1.0], [0.0, 1.0]])          # -1 is ignored
    value, net = _loss({"type": "SigmoidCrossEntropyLoss", "bottom": ["x", "t"],
                        "ignore_label": -1, "normalization": "VALID"}, {"x": x, "t": t})
    kept = [(0.5, 1.0), (2.0, 0.0), (0.3, 1.0)]
    expected = -sum(tt * math.log(_sigmoid(z)) + (1 - tt) * math.log(1 - _sigmoid(z))
                    for z, tt in kept) / 3
    assert value == pytest.approx(expected, rel=1e-12)
    net.backward()
    assert net.blobs["x"].diff[0, 1] == 0
    assert net.blobs["x"].diff[1, 0] == pytest.approx((_sigmoid(2.0) - 0) / 3)


@pytest.mark.parametrize("fields", [{}, {"normalization": "FULL"},
                                    {"ignore_label": 2, "normalization": "VALID"}])
def test_sigmoid_cross_entropy_gradient(rng, fields):
    t = rng.uniform(size=(3, 2, 2))
    if "ignore_label" in fields:
        t[0, 0, 0] = 2.0
    check_layer_gradients({"name": "loss", "type": "SigmoidCrossEntropyLoss",
                           "bottom": ["x", "t"], "top": "loss", **fields},
                          {"x": rng.normal(0, 3, size=(3, 2, 2)), "t": t})


# ---------------------------------------------------------------- HingeLoss
@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss_value(rng, norm):
    x = rng.normal(size=(4, 3))
    labels = np.array([0.0, 2.0, 1.0, 2.0])
    value, _ = _loss({"type": "HingeLoss", "bottom": ["x", "label"], "norm": norm},
                     {"x": x, "label": labels})
    total = 0.0
    for n in range(4):
        for k in range(3):
            sign = 1.0 if k == int(labels[n]) else -1.0
            margin = max(0.0, 1 - sign * x[n, k])
            total += margin if norm == "L1" else margin ** 2
    assert value == pytest.approx(total / 4, rel=1e-12)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss_gradient(rng, norm):
    # scores ±(1 ± 0.5..) keep every margin 1 − t·x clear of its kink at 0
    x = rng.choice([-1, 1], (4, 3, 2)) * (1 + rng.choice([-1, 1], (4, 3, 2))
                                          * rng.uniform(0.2, 0.8, (4, 3, 2)))
    check_layer_gradients({"name": "loss", "type": "HingeLoss", "bottom": ["x", "label"],
                           "top": "loss", "norm": norm},
                          {"x": x, "label": np.array([1.0, 5.0, 0.0, 3.0])})


# ---------------------------------------------------------------- MultinomialLogisticLoss
def test_multinomial_logistic_loss_value_and_threshold():
    prob = np.array([[0.2, 0.5, 0.3], [0.0, 0.9, 0.1]])
    value, net = _loss({"type": "MultinomialLogisticLoss", "bottom": ["p", "label"]},
                       {"p": prob, "label": np.array([1.0, 0.0])})
    assert value == pytest.approx((-math.log(0.5) - math.log(1e-20)) / 2, rel=1e-12)
    net.backward()
    np.testing.assert_allclose(net.blobs["p"].diff,
                               [[0, -1 / (2 * 0.5), 0], [-1 / (2 * 1e-20), 0, 0]])


def test_multinomial_logistic_loss_gradient(rng):
    check_layer_gradients({"name": "loss", "type": "MultinomialLogisticLoss",
                           "bottom": ["p", "label"], "top": "loss"},
                          {"p": rng.uniform(0.1, 1.0, (3, 4, 1, 1)),
                           "label": np.array([3.0, 0.0, 2.0])})


# ---------------------------------------------------------------- InfogainLoss
def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_infogain_loss_value_with_matrix_bottom(rng):
    x = rng.normal(size=(3, 4))
    labels = np.array([2.0, 0.0, 3.0])
    H = rng.uniform(size=(4, 4))
    value, _ = _loss({"type": "InfogainLoss", "bottom": ["x", "label", "H"]},
                     {"x": x, "label": labels, "H": H})
    p = _softmax(x)
    expected = -sum(H[int(labels[n]), k] * math.log(p[n, k])
                    for n in range(3) for k in range(4)) / 3
    assert value == pytest.approx(expected, rel=1e-12)


def test_infogain_with_identity_is_softmax_with_loss(rng):
    x = rng.normal(size=(2, 3, 2, 2))
    labels = rng.integers(0, 3, (2, 2, 2)).astype(float)
    common = {"x": x, "label": labels}
    info, _ = _loss({"type": "InfogainLoss", "bottom": ["x", "label", "H"]},
                    {**common, "H": np.eye(3)})
    soft, _ = _loss({"type": "SoftmaxWithLoss", "bottom": ["x", "label"]}, common)
    assert info == pytest.approx(soft, rel=1e-12)


@pytest.mark.parametrize("fields,shape,label_shape", [
    ({}, (3, 4), (3,)),
    ({"axis": 1, "ignore_label": 1}, (2, 3, 2), (2, 2)),
    ({"normalization": "BATCH_SIZE"}, (2, 3, 2), (2, 2)),
])
def test_infogain_gradient(rng, fields, shape, label_shape):
    classes = shape[1]
    labels = rng.integers(0, classes, label_shape).astype(float)
    labels.reshape(-1)[0] = 1.0
    check_layer_gradients({"name": "loss", "type": "InfogainLoss",
                           "bottom": ["x", "label", "H"], "top": "loss", **fields},
                          {"x": rng.normal(size=shape), "label": labels,
                           "H": rng.uniform(size=(classes, classes))})


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_infogain_source_file_is_relative_to_the_net_file(rng, tmp_path, write_net, suffix):
    H = rng.uniform(size=(3, 3))
    folder = tmp_path / "weights"
    folder.mkdir()
    if suffix == ".npy":
        np.save(folder / "H.npy", H)
    else:
        np.savez(folder / "H.npz", gain=H)
    path = write_net({"name": "info", "layers": [
        {"name": "input", "type": "Input", "top": ["x", "label"], "shape": [[2, 3], [2]]},
        {"name": "loss", "type": "InfogainLoss", "bottom": ["x", "label"], "top": "loss",
         "source": f"weights/H{suffix}"}]})
    x = rng.normal(size=(2, 3))
    net = sk.Net(path, phase="TRAIN")
    value = net.forward(x=x, label=np.array([2.0, 1.0]))["loss"]
    p = _softmax(x)
    expected = -(H[2] @ np.log(p[0]) + H[1] @ np.log(p[1])) / 2
    assert value == pytest.approx(expected, rel=1e-5)       # float32 net


def test_infogain_missing_source_is_a_data_error(write_net):
    path = write_net({"name": "info", "layers": [
        {"name": "input", "type": "Input", "top": ["x", "label"], "shape": [[2, 3], [2]]},
        {"name": "loss", "type": "InfogainLoss", "bottom": ["x", "label"], "top": "loss",
         "source": "nowhere.npy"}]})
    with pytest.raises(DataError, match="infogain") as info:
        sk.Net(path)
    assert info.value.layer == "loss" and "nowhere.npy" in info.value.file


def test_infogain_needs_a_matrix_of_the_right_size(rng):
    with pytest.raises(ConfigError, match="source"):
        layer_net({"name": "loss", "type": "InfogainLoss", "bottom": ["x", "label"],
                   "top": "loss"}, {"x": np.zeros((2, 3)), "label": np.zeros(2)})
    with pytest.raises(ConfigError, match="3×3"):
        layer_net({"name": "loss", "type": "InfogainLoss", "bottom": ["x", "label", "H"],
                   "top": "loss"}, {"x": np.zeros((2, 3)), "label": np.zeros(2),
                                    "H": np.eye(2)})


# ---------------------------------------------------------------- ContrastiveLoss
def _contrastive_reference(a, b, y, margin, legacy):
    total = 0.0
    for n in range(len(a)):
        d2 = float(np.sum((a[n] - b[n]) ** 2))
        if y[n]:
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - math.sqrt(d2), 0.0) ** 2
    return total / (2 * len(a))


def _pairs(rng):
    a = rng.normal(size=(4, 3))
    direction = rng.normal(size=(4, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    # distances 0.5, 0.9, 1.6, 2.5: inside and outside margin 1.2 (and 1.2² for legacy)
    b = a + direction * np.array([0.5, 0.9, 1.6, 2.5])[:, None]
    return a, b, np.array([1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_value(rng, legacy):
    a, b, y = _pairs(rng)
    value, _ = _loss({"type": "ContrastiveLoss", "bottom": ["a", "b", "y"], "margin": 1.2,
                      "legacy_version": legacy}, {"a": a, "b": b, "y": y})
    assert value == pytest.approx(_contrastive_reference(a, b, y, 1.2, legacy), rel=1e-12)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_gradient(rng, legacy):
    a, b, y = _pairs(rng)
    check_layer_gradients({"name": "loss", "type": "ContrastiveLoss", "bottom": ["a", "b", "y"],
                           "top": "loss", "margin": 1.2, "legacy_version": legacy},
                          {"a": a.reshape(4, 3, 1, 1), "b": b.reshape(4, 3, 1, 1), "y": y})
