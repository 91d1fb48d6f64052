"""Activations: element-wise, in place allowed."""

from __future__ import annotations

import numpy as np

from ..registry import register_layer
from ..spec.net import LayerParams
from .base import Layer


class ElementwiseLayer(Layer):
    """One bottom, one top of the same shape; may work in place."""

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1
    allows_in_place = True

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)


@register_layer("ReLU")
class ReLU(ElementwiseLayer):
    """``y = max(x, 0) + negative_slope · min(x, 0)``."""

    class Params(LayerParams):
        negative_slope: float = 0.0

    def forward(self, bottom, top):
        x, slope = bottom[0].data, self.params.negative_slope
        if slope == 0:
            np.maximum(x, 0, out=top[0].data)
        else:
            np.multiply(x, np.where(x > 0, 1, slope).astype(x.dtype), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # y > 0 exactly where x > 0 (for slope >= 0), so this works in place too
        y, slope = top[0].data, self.params.negative_slope
        if slope == 0:
            np.multiply(top[0].diff, y > 0, out=bottom[0].diff)
        else:
            np.multiply(top[0].diff, np.where(y > 0, 1, slope).astype(y.dtype),
                        out=bottom[0].diff)


@register_layer("Sigmoid")
class Sigmoid(ElementwiseLayer):
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y (1 - y)``."""

    def forward(self, bottom, top):
        # 0.5·tanh(x/2) + 0.5 is the logistic function without overflow for large |x|
        np.multiply(bottom[0].data, 0.5, out=top[0].data)
        np.tanh(top[0].data, out=top[0].data)
        top[0].data *= 0.5
        top[0].data += 0.5

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (1 - y)


@register_layer("TanH")
class TanH(ElementwiseLayer):
    """``y = tanh(x)``; ``dy/dx = 1 - y²``."""

    def forward(self, bottom, top):
        np.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (1 - y * y)
