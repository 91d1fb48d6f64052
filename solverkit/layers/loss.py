"""Losses (one scalar top each) and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ConfigError, DataError
from ..files import LIMITS, load_npy, load_npz
from ..registry import register_layer
from ..spec.net import LayerParams
from .base import LossLayer


def _labels(blob, count: int, name: str, layer) -> np.ndarray:
    """Labels travel as float blobs; read them as integers, one per prediction."""
    labels = blob.data.reshape(-1)
    if labels.size != count:
        raise layer.error(f"label blob '{name}' has {labels.size} values but the prediction "
                          f"needs {count} (one per sample and position)", field="bottom")
    return labels.astype(np.int64)


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    """Softmax over ``axis`` then the mean negative log-likelihood of the labels.

    scores (N, C, ...) and labels (N, ...); ``normalization`` divides the summed loss by the
    number of non-ignored labels (VALID), all labels (FULL), N (BATCH_SIZE) or 1 (NONE).
    The gradient is ``(softmax - onehot) / normalizer`` on non-ignored positions.
    """

    class Params(LayerParams):
        axis: int = 1
        ignore_label: int | None = None
        normalization: Literal["FULL", "VALID", "BATCH_SIZE", "NONE"] = "VALID"
        normalize: bool | None = None     # Caffe's older flag: true = VALID, false = BATCH_SIZE

    max_tops = 2

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = self.params.axis % max(len(shape), 1)
        if len(shape) < 2:
            raise self.error(f"scores need a class axis; bottom '{bottom[0].name}' has shape "
                             f"{shape}", field="bottom")
        self.axis = axis
        self.outer = int(np.prod(shape[:axis]))
        self.inner = int(np.prod(shape[axis + 1:]))
        self.classes = shape[axis]
        if bottom[1].count != self.outer * self.inner:
            raise self.error(f"label blob '{bottom[1].name}' has shape {bottom[1].shape} "
                             f"({bottom[1].count} values) but scores {shape} need "
                             f"{self.outer * self.inner} labels", field="bottom")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(shape)

    def _normalizer(self, valid: int) -> float:
        mode = self.params.normalization
        # Caffe: the old `normalize` flag counts only when `normalization` is not given
        if self.params.normalize is not None and "normalization" not in self.params.model_fields_set:
            mode = "VALID" if self.params.normalize else "BATCH_SIZE"
        count = {"FULL": self.outer * self.inner, "VALID": valid,
                 "BATCH_SIZE": self.outer, "NONE": 1}[mode]
        return float(max(count, 1))

    def forward(self, bottom, top):
        scores = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        shifted = scores - scores.max(axis=1, keepdims=True)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=1, keepdims=True)
        self.prob = shifted                                   # (outer, C, inner)
        labels = _labels(bottom[1], self.outer * self.inner, bottom[1].name, self)
        labels = labels.reshape(self.outer, self.inner)
        ignore = self.params.ignore_label
        # valid: None when every position counts (no ignore_label), which skips the masking
        self.valid = labels != ignore if ignore is not None else None
        safe = np.where(self.valid, labels, 0) if self.valid is not None else labels
        if safe.size and (safe.min() < 0 or safe.max() >= self.classes):
            bad = int(safe[(safe < 0) | (safe >= self.classes)][0])
            raise self.error(f"label {bad} is outside 0..{self.classes - 1}", field="bottom")
        self.labels = safe
        picked = np.take_along_axis(shifted, safe[:, None, :], axis=1)[:, 0, :]
        logp = np.log(np.maximum(picked, np.finfo(shifted.dtype).tiny))
        every = self.valid is None
        self.normalizer = self._normalizer(safe.size if every else int(self.valid.sum()))
        total = logp.sum() if every else (logp * self.valid).sum()
        top[0].data[...] = -total / self.normalizer
        if len(top) > 1:
            top[1].data[...] = shifted.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        grad = bottom[0].diff.reshape(self.outer, self.classes, self.inner)
        np.copyto(grad, self.prob)
        outer_idx, inner_idx = np.indices(self.labels.shape, sparse=True)
        grad[outer_idx, self.labels, inner_idx] -= 1
        scale = float(top[0].diff) / self.normalizer
        if self.valid is None:
            grad *= grad.dtype.type(scale)
        else:
            grad *= (self.valid[:, None, :] * scale).astype(grad.dtype)


class _PairLoss(LossLayer):
    """Losses of a prediction against a target of the same count (reshaped, never broadcast)."""

    allows_in_place = False

    def allow_backward_to(self, bottom_index: int) -> bool:
        return True      # Caffe lets both bottoms of a distance loss receive gradients

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise self.error(f"bottoms '{bottom[0].name}' {bottom[0].shape} and "
                             f"'{bottom[1].name}' {bottom[1].shape} must have the same number "
                             f"of values", field="bottom")
        top[0].reshape(())

    def _difference(self, bottom) -> np.ndarray:
        self.batch = bottom[0].shape[0] if bottom[0].data.ndim else 1
        return bottom[0].data - bottom[1].data.reshape(bottom[0].shape)

    def _scatter(self, grad, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = grad
        if propagate_down[1]:
            bottom[1].diff[...] = -grad.reshape(bottom[1].shape)


@register_layer("EuclideanLoss")
class EuclideanLoss(_PairLoss):
    """``1/(2N) Σ ‖a − b‖²`` over a batch of N; gradient ``(a − b)/N``."""

    def forward(self, bottom, top):
        self.diff = self._difference(bottom)
        top[0].data[...] = np.sum(self.diff * self.diff) / (2 * self.batch)

    def backward(self, top, propagate_down, bottom):
        self._scatter(self.diff * (float(top[0].diff) / self.batch), propagate_down, bottom)


@register_layer("L1Loss")
class L1Loss(_PairLoss):
    """``1/N Σ |a − b|`` over a batch of N (the absolute-error loss); gradient ``sign(a − b)/N``."""

    def forward(self, bottom, top):
        self.diff = self._difference(bottom)
        top[0].data[...] = np.sum(np.abs(self.diff)) / self.batch

    def backward(self, top, propagate_down, bottom):
        self._scatter(np.sign(self.diff) * (float(top[0].diff) / self.batch), propagate_down,
                      bottom)


@register_layer("Accuracy")
class Accuracy(LossLayer):
    """Share of samples whose label is among the ``top_k`` highest scores (no backward).

    scores (N, C, ...) along ``axis``, labels (N, ...); ``ignore_label`` positions don't count.
    As in Caffe, a class tied with the label's score does not count as higher (a tie is
    correct); a sample with any NaN score is never correct.
    An optional second top gives the per-class accuracy (C,).
    """

    class Params(LayerParams):
        top_k: int = 1
        axis: int = 1
        ignore_label: int | None = None

    is_loss = False
    has_backward = False
    max_tops = 2

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2:
            raise self.error(f"scores need a class axis; bottom '{bottom[0].name}' has shape "
                             f"{shape}", field="bottom")
        self.axis = self.params.axis % len(shape)
        self.outer = int(np.prod(shape[:self.axis]))
        self.inner = int(np.prod(shape[self.axis + 1:]))
        self.classes = shape[self.axis]
        if not 1 <= self.params.top_k <= self.classes:
            raise self.error(f"top_k must be between 1 and the number of classes "
                             f"({self.classes}), got {self.params.top_k}", field="top_k")
        if bottom[1].count != self.outer * self.inner:
            raise self.error(f"label blob '{bottom[1].name}' has {bottom[1].count} values but "
                             f"scores {shape} need {self.outer * self.inner}", field="bottom")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))

    def forward(self, bottom, top):
        scores = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        labels = _labels(bottom[1], self.outer * self.inner, bottom[1].name, self)
        labels = labels.reshape(self.outer, self.inner)
        ignore = self.params.ignore_label
        valid = labels != ignore if ignore is not None else np.ones(labels.shape, bool)
        safe = np.where(valid, labels, 0)
        label_score = np.take_along_axis(scores, safe[:, None, :], axis=1)
        # Caffe counts a hit when fewer than top_k classes score strictly higher, so a tie
        # with the label's score counts as correct (as in Caffe); a sample with a NaN score
        # is never correct (NaN compares false, which would make it "no class is higher")
        higher = (scores > label_score).sum(axis=1)
        hit = (higher < self.params.top_k) & valid & ~np.isnan(scores).any(axis=1)
        top[0].data[...] = hit.sum() / max(int(valid.sum()), 1)
        if len(top) > 1:
            per_class = np.bincount(safe[valid], minlength=self.classes)
            hits = np.bincount(safe[hit], minlength=self.classes)
            top[1].data[...] = hits / np.maximum(per_class, 1)


# Caffe's kLOG_THRESHOLD: probabilities are clamped to it before the log
LOG_THRESHOLD = 1e-20


def _loss_normalizer(mode: str, normalize: bool | None, outer: int, inner: int,
                     valid: int) -> float:
    """Caffe's LossLayer::GetNormalizer (``normalize`` is the older flag: true = VALID)."""
    if normalize is not None:
        mode = "VALID" if normalize else "BATCH_SIZE"
    count = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return float(max(count, 1))


def _class_view(layer, bottom, axis: int = 1) -> tuple[int, int, int]:
    """(outer, classes, inner) of the scores bottom[0] around the class ``axis``."""
    shape = bottom[0].shape
    if len(shape) < 2:
        raise layer.error(f"scores need a class axis; bottom '{bottom[0].name}' has shape "
                          f"{shape}", field="bottom")
    if not -len(shape) <= axis < len(shape):
        raise layer.error(f"axis {axis} is out of range for bottom shape {shape}", field="axis")
    axis %= len(shape)
    return (int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:])))


def _class_labels(layer, bottom, outer: int, classes: int, inner: int,
                  ignore_label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels (outer, inner) with ignored ones set to 0, mask of the non-ignored)."""
    labels = _labels(bottom[1], outer * inner, bottom[1].name, layer).reshape(outer, inner)
    valid = (labels != ignore_label if ignore_label is not None
             else np.ones(labels.shape, bool))
    labels = np.where(valid, labels, 0)
    outside = (labels < 0) | (labels >= classes)
    if np.any(outside):
        raise layer.error(f"label {int(labels[outside][0])} is outside 0..{classes - 1}",
                          field="bottom")
    return labels, valid


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    """Cross-entropy of ``p = sigmoid(x)`` against targets t in [0, 1] of the same count.

    ``loss = Σ [max(x, 0) − x·t + log(1 + exp(−|x|))] / normalizer`` — the stable form of
    ``−t·log p − (1 − t)·log(1 − p)``, finite for any x. Positions whose target equals
    ``ignore_label`` count for nothing. ``normalization`` defaults to BATCH_SIZE (Caffe):
    divide by N = shape[0]; VALID by the non-ignored count, FULL by all, NONE by 1.
    Gradient ``(sigmoid(x) − t) / normalizer``; the targets get none.
    """

    class Params(LayerParams):
        ignore_label: int | None = None
        normalization: Literal["FULL", "VALID", "BATCH_SIZE", "NONE"] = "BATCH_SIZE"
        normalize: bool | None = None

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise self.error(f"scores '{bottom[0].name}' {bottom[0].shape} and targets "
                             f"'{bottom[1].name}' {bottom[1].shape} must have the same number "
                             f"of values", field="bottom")
        self.outer = bottom[0].shape[0] if bottom[0].shape else 1
        self.inner = bottom[0].count // max(self.outer, 1)
        top[0].reshape(())

    def forward(self, bottom, top):
        x = bottom[0].data
        target = bottom[1].data.reshape(x.shape)
        ignore = self.params.ignore_label
        # Caffe compares the target cast to int with ignore_label
        self.valid = (target.astype(np.int64) != ignore if ignore is not None
                      else np.ones(x.shape, bool))
        loss = np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x)))
        p = self.params
        self.normalizer = _loss_normalizer(p.normalization, p.normalize, self.outer,
                                           self.inner, int(self.valid.sum()))
        top[0].data[...] = np.sum(loss * self.valid) / self.normalizer

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            sigmoid = 0.5 * np.tanh(0.5 * x) + 0.5
            grad = (sigmoid - bottom[1].data.reshape(x.shape)) * self.valid
            bottom[0].diff[...] = grad * (float(top[0].diff) / self.normalizer)


@register_layer("HingeLoss")
class HingeLoss(LossLayer):
    """One-vs-all hinge loss of scores x (N, C, ...) against class indices (N,).

    With ``t_nk = 1`` for the labelled class and −1 otherwise, ``m_nk = max(0, 1 − t_nk x_nk)``:
    L1 ``loss = Σ m / N``, L2 ``loss = Σ m² / N``; gradients ``−t·[m > 0] / N`` and
    ``−2 t·m / N``.
    """

    class Params(LayerParams):
        norm: Literal["L1", "L2"] = "L1"

    def reshape(self, bottom, top):
        if not bottom[0].shape:
            raise self.error("scores need a batch axis", field="bottom")
        self.num = bottom[0].shape[0]
        self.dim = bottom[0].count // self.num
        if bottom[1].count != self.num:
            raise self.error(f"label blob '{bottom[1].name}' has {bottom[1].count} values but "
                             f"scores {bottom[0].shape} need one per sample ({self.num})",
                             field="bottom")
        top[0].reshape(())

    def forward(self, bottom, top):
        labels, _ = _class_labels(self, bottom, self.num, self.dim, 1)
        self.sign = -np.ones((self.num, self.dim), dtype=self.dtype)
        self.sign[np.arange(self.num), labels[:, 0]] = 1
        self.margin = np.maximum(0, 1 - self.sign * bottom[0].data.reshape(self.num, self.dim))
        total = self.margin.sum() if self.params.norm == "L1" else np.square(self.margin).sum()
        top[0].data[...] = total / self.num

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        scale = float(top[0].diff) / self.num
        if self.params.norm == "L1":
            grad = -self.sign * (self.margin > 0) * scale
        else:
            grad = -2 * self.sign * self.margin * scale
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLoss(LossLayer):
    """``loss = −Σ_n log(max(p[n, label_n], 1e-20)) / N`` for probabilities p (N, C, ...)
    (the flattened per-sample values are the classes) and labels (N,). Gradient
    ``−1 / (N · max(p, 1e-20))`` at each label, 0 elsewhere."""

    def reshape(self, bottom, top):
        if not bottom[0].shape:
            raise self.error("probabilities need a batch axis", field="bottom")
        self.num = bottom[0].shape[0]
        self.dim = bottom[0].count // self.num
        if bottom[1].count != self.num:
            raise self.error(f"label blob '{bottom[1].name}' has {bottom[1].count} values but "
                             f"probabilities {bottom[0].shape} need one per sample "
                             f"({self.num})", field="bottom")
        top[0].reshape(())

    def forward(self, bottom, top):
        labels, _ = _class_labels(self, bottom, self.num, self.dim, 1)
        self.labels = labels[:, 0]
        prob = bottom[0].data.reshape(self.num, self.dim)
        self.picked = np.maximum(prob[np.arange(self.num), self.labels], LOG_THRESHOLD)
        top[0].data[...] = -np.log(self.picked).sum() / self.num

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            grad = bottom[0].diff.reshape(self.num, self.dim)
            grad[...] = 0
            grad[np.arange(self.num), self.labels] = (-float(top[0].diff) / self.num
                                                       / self.picked)


@register_layer("InfogainLoss")
class InfogainLoss(LossLayer):
    """Softmax over ``axis`` then ``loss = −Σ_k H[label, k] · log(max(p_k, 1e-20))`` summed
    over positions and divided by the normalizer (Caffe's current InfogainLoss).

    scores (N, C, ...), labels (N, ...), H (C, C): a third bottom, or ``source``, a .npy
    file or a .npz holding one array (or one named ``H``), relative to the net file. With
    H = identity this is SoftmaxWithLoss. ``ignore_label`` and ``normalization`` (default
    VALID) as SoftmaxWithLoss; an optional second top gives the probabilities.
    Gradient ``(p_l · Σ_k H[label, k] − H[label, l]) / normalizer``; labels and H get none.
    """

    class Params(LayerParams):
        source: str | None = None
        axis: int = 1
        ignore_label: int | None = None
        normalization: Literal["FULL", "VALID", "BATCH_SIZE", "NONE"] = "VALID"
        normalize: bool | None = None

    max_bottoms = 3
    max_tops = 2

    def setup(self, bottom, top):
        source = self.params.source
        if len(bottom) == 3:
            if source is not None:
                raise ConfigError("give the infogain matrix as a third bottom or as source, "
                                  "not both", layer=self.name, field="source")
            self.stored = None
        elif source is None:
            raise ConfigError("the infogain matrix H is missing: give source (a .npy/.npz "
                              "file) or a third bottom", layer=self.name, field="source")
        else:
            self.stored = self._read_matrix(source)

    def _read_matrix(self, source: str) -> np.ndarray:
        path = Path(source)
        if not path.is_absolute() and self.base_dir is not None:
            path = Path(self.base_dir) / path
        try:
            if path.suffix.lower() == ".npz":
                loaded = load_npz(path, what="infogain matrix", limit=LIMITS["array"],
                                  error=DataError)
            else:
                return load_npy(path, what="infogain matrix", limit=LIMITS["array"],
                                error=DataError).astype(self.dtype)
        except DataError as err:
            raise err.located(layer=self.name, field="source") from None
        names = list(loaded)
        key = "H" if "H" in names else names[0] if len(names) == 1 else None
        if key is None:
            raise DataError(f"the archive holds {names}; name the infogain matrix 'H'",
                            file=str(path), layer=self.name, field="source")
        return loaded[key].astype(self.dtype)

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        self.view = _class_view(self, bottom, self.params.axis)
        outer, classes, inner = self.view
        if bottom[1].count != outer * inner:
            raise self.error(f"label blob '{bottom[1].name}' has {bottom[1].count} values but "
                             f"scores {bottom[0].shape} need {outer * inner}", field="bottom")
        matrix = bottom[2].data if len(bottom) == 3 else self.stored
        if matrix.size != classes ** 2:
            raise self.error(f"the infogain matrix has shape {matrix.shape} but {classes} classes "
                             f"need {classes}×{classes}",
                             field="bottom" if len(bottom) == 3 else "source")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _matrix(self, bottom) -> np.ndarray:
        classes = self.view[1]
        matrix = bottom[2].data if len(bottom) == 3 else self.stored
        return matrix.reshape(classes, classes)

    def forward(self, bottom, top):
        outer, classes, inner = self.view
        scores = bottom[0].data.reshape(self.view)
        prob = np.exp(scores - scores.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        self.prob = prob
        p = self.params
        self.labels, self.valid = _class_labels(self, bottom, outer, classes, inner,
                                                p.ignore_label)
        weights = self._matrix(bottom)[self.labels]            # (outer, inner, C): H[label, :]
        log_prob = np.log(np.maximum(prob, LOG_THRESHOLD))    # (outer, C, inner)
        per_position = np.einsum("oik,oki->oi", weights, log_prob)
        self.normalizer = _loss_normalizer(p.normalization, p.normalize, outer, inner,
                                           int(self.valid.sum()))
        top[0].data[...] = -np.sum(per_position * self.valid) / self.normalizer
        if len(top) > 1:
            top[1].data[...] = prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        weights = self._matrix(bottom)[self.labels]                  # (outer, inner, C)
        grad = self.prob * weights.sum(axis=2)[:, None, :] - weights.transpose(0, 2, 1)
        grad *= self.valid[:, None, :] * (float(top[0].diff) / self.normalizer)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


@register_layer("ContrastiveLoss")
class ContrastiveLoss(LossLayer):
    """Siamese loss of feature pairs a, b (N, C, ...) and similarity labels y (N,).

    ``d = ‖a − b‖``; ``loss = Σ_n [y·d² + (1 − y)·max(margin − d, 0)²] / 2N``, or with
    ``legacy_version`` ``(1 − y)·max(margin − d², 0)``; y is read as an integer, non-zero
    meaning similar. Gradients go to a and b (``∂/∂b = −∂/∂a``); for a dissimilar pair
    ``∂/∂a = −(margin − d)/d · (a − b) / N`` — exact, where Caffe adds 1e-4 to d.
    """

    class Params(LayerParams):
        margin: float = 1.0
        legacy_version: bool = False

    min_bottoms = max_bottoms = 3

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index < 2

    def reshape(self, bottom, top):
        a, b, y = bottom
        if a.shape != b.shape or not a.shape:
            raise self.error(f"bottoms '{a.name}' {a.shape} and '{b.name}' {b.shape} must be "
                             f"feature batches of one shape", field="bottom")
        self.num = a.shape[0]
        if y.count != self.num:
            raise self.error(f"similarity blob '{y.name}' has {y.count} values but there "
                             f"are {self.num} pairs", field="bottom")
        top[0].reshape(())

    def forward(self, bottom, top):
        p = self.params
        self.diff = (bottom[0].data - bottom[1].data).reshape(self.num, -1)
        self.dist_sq = np.square(self.diff).sum(axis=1)
        self.similar = bottom[2].data.reshape(-1).astype(np.int64) != 0
        if p.legacy_version:
            apart = np.maximum(p.margin - self.dist_sq, 0)
        else:
            apart = np.square(np.maximum(p.margin - np.sqrt(self.dist_sq), 0))
        loss = np.where(self.similar, self.dist_sq, apart).sum()
        top[0].data[...] = loss / (2 * self.num)

    def backward(self, top, propagate_down, bottom):
        p = self.params
        alpha = float(top[0].diff) / self.num
        if p.legacy_version:
            push = np.where(p.margin - self.dist_sq > 0, -1.0, 0.0)
        else:
            dist = np.sqrt(self.dist_sq)
            short = p.margin - dist
            # at d = 0 the difference vector is 0 too, so any finite factor gives 0
            push = np.where(short > 0, -short / np.where(dist > 0, dist, 1.0), 0.0)
        factor = alpha * np.where(self.similar, 1.0, push)
        grad = (factor[:, None] * self.diff).reshape(bottom[0].shape)
        if propagate_down[0]:
            bottom[0].diff[...] = grad
        if propagate_down[1]:
            bottom[1].diff[...] = -grad
