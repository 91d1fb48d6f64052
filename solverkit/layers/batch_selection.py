"""Layers that pick items along the batch axis: ``BatchReindex`` and ``Filter`` (Caffe's)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import DataError
from ..registry import register_layer
from .base import Layer


@register_layer("BatchReindex")
class BatchReindex(Layer):
    """``top[i] = x[permut[i]]``: x (N, ...), permut (M,) item indices in [0, N) → (M, ...).

    Indices may repeat or leave items out; the gradient adds each top item's diff into the
    item it came from. No gradient for the indices.
    """

    min_bottoms = max_bottoms = 2
    min_tops = max_tops = 1

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        if len(bottom[1].shape) != 1:
            raise self.error(f"bottom[1] (the indices) must be 1-d, got shape "
                             f"{list(bottom[1].shape)}", field="bottom")
        top[0].reshape((bottom[1].shape[0], *bottom[0].shape[1:]))

    def _indices(self, bottom) -> np.ndarray:
        values = bottom[1].data
        indices = values.astype(np.int64)
        count = bottom[0].shape[0]
        bad = (indices != values) | (indices < 0) | (indices >= count)
        if np.any(bad):
            raise DataError(f"the indices of bottom '{bottom[1].name}' must be integers in "
                            f"[0, {count}), got {values[bad][:3].tolist()}",
                            layer=self.name, field="bottom")
        return indices

    def forward(self, bottom, top):
        self.indices = self._indices(bottom)
        np.take(bottom[0].data, self.indices, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            np.add.at(bottom[0].diff, self.indices, top[0].diff)


@register_layer("Filter")
class Filter(Layer):
    """Keeps the items whose selector is non-zero: bottoms ``x_1 … x_k, selector`` (N,) (or
    (N, 1, …)), tops ``y_1 … y_k`` (M, …), M the number of selected items (data-dependent).

    The gradient goes to the selected items; the others get 0. No gradient for the selector.
    The first shapes (at construction) keep all N items, as Caffe's.
    """

    min_bottoms = 2
    min_tops = 1
    shapes_follow_data: ClassVar[bool] = True

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(f"takes one top per filtered bottom: {len(bottom) - 1}, got "
                             f"{len(top)}", field="top")
        self.selected = np.arange(bottom[-1].shape[0] if bottom[-1].shape else 0)
        self.first = True

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index < len(self.spec.bottom) - 1       # not the selector

    def reshape(self, bottom, top):
        selector = bottom[-1]
        if not selector.shape or any(d != 1 for d in selector.shape[1:]):
            raise self.error(f"the selector (last bottom) must be (N,) or (N, 1, ...), got "
                             f"{list(selector.shape)}", field="bottom")
        for blob in bottom[:-1]:
            if not blob.shape or blob.shape[0] != selector.shape[0]:
                raise self.error(f"bottom '{blob.name}' has {list(blob.shape)[:1]} items but "
                                 f"the selector {selector.shape[0]}", field="bottom")
        if self.first:
            self.first = False
            self.selected = np.arange(selector.shape[0])
        else:
            self.selected = np.flatnonzero(selector.data.reshape(-1))
        for blob, out in zip(bottom[:-1], top):
            out.reshape((len(self.selected), *blob.shape[1:]))

    def forward(self, bottom, top):
        for blob, out in zip(bottom[:-1], top):
            np.take(blob.data, self.selected, axis=0, out=out.data)

    def backward(self, top, propagate_down, bottom):
        for k, out in enumerate(top):
            if propagate_down[k]:
                bottom[k].diff[...] = 0
                bottom[k].diff[self.selected] = out.diff
