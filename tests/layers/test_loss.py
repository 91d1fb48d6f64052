"""Losses and Accuracy on small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from solverkit import ShapeError


def test_linear_score_and_l1_loss(make_net, input_layer):
    """Weights [-3, 2] on x = [-1.5, 1.5] score 7.5; L1 against 5.0 is 2.5."""
    net = make_net(input_layer(x=(1, 2), target=(1, 1)),
                   {"name": "score", "type": "InnerProduct", "bottom": "x", "top": "score",
                    "num_output": 1, "bias_term": False},
                   {"name": "loss", "type": "L1Loss", "bottom": ["score", "target"],
                    "top": "loss"})
    net.params["score"][0].data[...] = [[-3.0, 2.0]]
    out = net.forward(x=[[-1.5, 1.5]], target=[[5.0]])
    assert net.blobs["score"].data.tolist() == [[7.5]]
    assert out == {"loss": 2.5}
    net.backward()
    # d|s − 5|/dW = sign(7.5 − 5)·x; d/dx = sign·W
    assert net.params["score"][0].diff.tolist() == [[-1.5, 1.5]]
    assert net.blobs["x"].diff.tolist() == [[-3.0, 2.0]]
    assert net.blobs["target"].diff.tolist() == [[-1.0]]


def test_l1_loss_averages_over_the_batch(make_net, input_layer):
    net = make_net(input_layer(a=(2, 2), b=(2, 2)),
                   {"name": "loss", "type": "L1Loss", "bottom": ["a", "b"], "top": "loss"})
    assert net.forward(a=[[1.0, -1], [0, 3]], b=[[0.0, 1], [0, 0]])["loss"] == (1 + 2 + 3) / 2


def test_euclidean_loss(make_net, input_layer):
    """1/(2N) Σ‖a − b‖², with b reshaped to a's shape (same count, never broadcast)."""
    a = np.array([[1.0, 2, 3], [4, 5, 6]])
    b = np.array([[[1.0], [0], [3]], [[0], [5], [9]]])           # (2, 3, 1)
    net = make_net(input_layer(a=a.shape, b=b.shape),
                   {"name": "loss", "type": "EuclideanLoss", "bottom": ["a", "b"],
                    "top": "loss"})
    assert net.forward(a=a, b=b)["loss"] == (4 + 16 + 9) / (2 * 2)
    net.backward()
    np.testing.assert_allclose(net.blobs["a"].diff, (a - b.reshape(2, 3)) / 2)
    np.testing.assert_allclose(net.blobs["b"].diff, -(a - b.reshape(2, 3)).reshape(b.shape) / 2)


def test_pair_loss_needs_equal_counts(make_net, input_layer):
    with pytest.raises(ShapeError, match="same number of values") as err:
        make_net(input_layer(a=(2, 3), b=(2, 2)),
                 {"name": "loss", "type": "EuclideanLoss", "bottom": ["a", "b"], "top": "loss"})
    assert (err.value.layer, err.value.field) == ("loss", "bottom")


SCORES = np.log(np.array([[1.0, 2, 1], [3.0, 1, 1], [1.0, 1, 2], [1.0, 1, 1]]))
LABELS = np.array([1.0, 0, 0, 2])
# softmax rows: [1,2,1]/4, [3,1,1]/5, [1,1,2]/4, [1,1,1]/3; probability of each label:
P_LABEL = np.array([2 / 4, 3 / 5, 1 / 4, 1 / 3])


def _softmax_loss(make_net, input_layer, **fields):
    return make_net(input_layer(x=SCORES.shape, label=(4,)),
                    {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["x", "label"],
                     "top": "loss", **fields})


@pytest.mark.parametrize("normalization, ignore, divisor", [
    ("VALID", None, 4), ("VALID", 0, 2), ("FULL", 0, 4), ("BATCH_SIZE", 0, 4), ("NONE", 0, 1),
])
def test_softmax_with_loss_values(make_net, input_layer, normalization, ignore, divisor):
    fields = {"normalization": normalization}
    if ignore is not None:
        fields["ignore_label"] = ignore
    net = _softmax_loss(make_net, input_layer, **fields)
    valid = LABELS != ignore
    loss = net.forward(x=SCORES, label=LABELS)["loss"]
    assert loss == pytest.approx(-np.log(P_LABEL[valid]).sum() / divisor, rel=1e-12)
    net.backward()
    prob = np.exp(SCORES) / np.exp(SCORES).sum(axis=1, keepdims=True)
    expected = (prob - np.eye(3)[LABELS.astype(int)]) * valid[:, None] / divisor
    np.testing.assert_allclose(net.blobs["x"].diff, expected, rtol=1e-12, atol=1e-15)


def test_softmax_with_loss_legacy_normalize_flag(make_net, input_layer):
    net = _softmax_loss(make_net, input_layer, ignore_label=0, normalize=False)
    loss = net.forward(x=SCORES, label=LABELS)["loss"]
    assert loss == pytest.approx(-np.log(P_LABEL[LABELS != 0]).sum() / 4)   # BATCH_SIZE
    # as in Caffe, an explicit normalization wins over the old flag
    net = _softmax_loss(make_net, input_layer, ignore_label=0, normalize=False,
                        normalization="NONE")
    loss = net.forward(x=SCORES, label=LABELS)["loss"]
    assert loss == pytest.approx(-np.log(P_LABEL[LABELS != 0]).sum())


def test_softmax_with_loss_spatial_and_weighted(make_net, input_layer):
    """Scores (N, C, H) with labels (N, H); the top holds the unweighted loss."""
    scores = np.stack([SCORES[:2].T, SCORES[2:].T])               # (2, 3, 2)
    net = make_net(input_layer(x=(2, 3, 2), label=(2, 2)),
                   {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["x", "label"],
                    "top": "loss", "loss_weight": 3.0})
    out = net.forward(x=scores, label=LABELS.reshape(2, 2))
    assert out["loss"] == pytest.approx(-np.log(P_LABEL).mean(), rel=1e-12)
    assert net.loss == pytest.approx(3 * out["loss"], rel=1e-12)


def test_softmax_with_loss_rejects_labels_out_of_range(make_net, input_layer):
    net = _softmax_loss(make_net, input_layer)
    with pytest.raises(ShapeError, match="label 3 is outside 0..2"):
        net.forward(x=SCORES, label=[0.0, 1, 2, 3])


ACC_SCORES = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
ACC_LABELS = np.array([1.0, 0, 0, 1])
# classes scoring strictly higher than the label, per row: 0, 0, 2, 0 (the row-3 tie is a hit,
# as in Caffe); a row is a hit when fewer than top_k classes beat its label


@pytest.mark.parametrize("top_k, ignore, expected", [
    (1, None, 3 / 4),
    (2, None, 3 / 4),
    (3, None, 4 / 4),
    (1, 1, 1 / 2),      # rows 1 (hit) and 2 (miss) remain
    (1, 0, 2 / 2),      # rows 0 and 3 remain, both hits
])
def test_accuracy(make_net, input_layer, top_k, ignore, expected):
    fields = {"top_k": top_k} | ({"ignore_label": ignore} if ignore is not None else {})
    net = make_net(input_layer(x=ACC_SCORES.shape, label=(4,)),
                   {"name": "acc", "type": "Accuracy", "bottom": ["x", "label"], "top": "acc",
                    **fields})
    assert net.forward(x=ACC_SCORES, label=ACC_LABELS)["acc"] == pytest.approx(expected)
