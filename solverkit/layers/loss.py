"""Losses (one scalar top each) and metrics."""

from __future__ import annotations

from typing import Literal

import numpy as np

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
        if self.params.normalize is not None:
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
        self.valid = labels != ignore if ignore is not None else np.ones_like(labels, bool)
        safe = np.where(self.valid, labels, 0)
        if np.any((safe < 0) | (safe >= self.classes)):
            bad = int(safe[(safe < 0) | (safe >= self.classes)][0])
            raise self.error(f"label {bad} is outside 0..{self.classes - 1}", field="bottom")
        self.labels = safe
        picked = np.take_along_axis(shifted, safe[:, None, :], axis=1)[:, 0, :]
        logp = np.log(np.maximum(picked, np.finfo(shifted.dtype).tiny))
        self.normalizer = self._normalizer(int(self.valid.sum()))
        top[0].data[...] = -(logp * self.valid).sum() / self.normalizer
        if len(top) > 1:
            top[1].data[...] = shifted.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        grad = bottom[0].diff.reshape(self.outer, self.classes, self.inner)
        np.copyto(grad, self.prob)
        outer_idx, inner_idx = np.indices(self.labels.shape)
        grad[outer_idx, self.labels, inner_idx] -= 1
        grad *= (self.valid[:, None, :] * (float(top[0].diff) / self.normalizer)).astype(grad.dtype)


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
        # Caffe counts a hit when fewer than top_k classes score strictly higher
        higher = (scores > label_score).sum(axis=1)
        hit = (higher < self.params.top_k) & valid
        top[0].data[...] = hit.sum() / max(int(valid.sum()), 1)
        if len(top) > 1:
            per_class = np.bincount(safe[valid], minlength=self.classes)
            hits = np.bincount(safe[hit], minlength=self.classes)
            top[1].data[...] = hits / np.maximum(per_class, 1)
