"""Activations and Dropout: element-wise layers, in place allowed."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..errors import ConfigError
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from ..threads import parallel_for, split
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
            flat_x, flat_y = x.reshape(-1), top[0].data.reshape(-1)
            parallel_for(lambda part: np.maximum(flat_x[part], 0, out=flat_y[part]),
                         split(x.size), elements=x.size)
        else:
            np.multiply(x, np.where(x > 0, 1, slope).astype(x.dtype), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # y > 0 exactly where x > 0 (for slope >= 0), so this works in place too
        y, slope = top[0].data, self.params.negative_slope
        if slope == 0:
            flat_y, dy, dx = y.reshape(-1), top[0].diff.reshape(-1), bottom[0].diff.reshape(-1)
            parallel_for(lambda part: np.multiply(dy[part], flat_y[part] > 0, out=dx[part]),
                         split(y.size), elements=y.size)
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


def _natural_log_of_base(base: float, layer: Layer) -> float:
    """ln(base) for Caffe's Exp/Log ``base`` field, where −1 means e."""
    if base == -1:
        return 1.0
    if base <= 0:
        raise ConfigError(f"base must be positive or -1 (for e), got {base:g}",
                          layer=layer.name, field="base")
    return float(np.log(base))


@register_layer("ELU")
class ELU(ElementwiseLayer):
    """``y = x`` for x > 0, ``α (exp(x) − 1)`` otherwise; ``dy/dx = 1`` or ``y + α``."""

    class Params(LayerParams):
        alpha: float = Field(default=1.0, ge=0)

    def forward(self, bottom, top):
        x = bottom[0].data
        # expm1 of min(x, 0): no overflow warnings from the branch that is not taken
        negative = self.params.alpha * np.expm1(np.minimum(x, 0))
        np.copyto(top[0].data, np.where(x > 0, x, negative))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # y > 0 exactly where x > 0, so top alone suffices (in place too)
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * np.where(y > 0, 1, y + self.params.alpha)


@register_layer("PReLU")
class PReLU(ElementwiseLayer):
    """``y = max(x, 0) + a_c · min(x, 0)`` with a learned slope per channel (or one shared).

    x: (N, C, ...); slope blob (C,) or (1,) with ``channel_shared``; ``filler`` defaults to
    constant 0.25. Gradients: ``dx = dy · (x > 0 ? 1 : a_c)``, ``da_c = Σ dy · x · [x ≤ 0]``.
    """

    class Params(LayerParams):
        channel_shared: bool = False
        filler: FillerSpec | None = None

    def setup(self, bottom, top):
        if len(bottom[0].shape) < 2:
            raise self.error(f"PReLU needs a bottom of at least 2 axes (N, C, ...); "
                             f"'{bottom[0].name}' has shape {bottom[0].shape}", field="bottom")
        channels = 1 if self.params.channel_shared else bottom[0].shape[1]
        self.make_param((channels,), self.params.filler or FillerSpec(type="constant",
                                                                      value=0.25), "slope")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2 or (not self.params.channel_shared
                              and shape[1] != self.blobs[0].shape[0]):
            raise self.error(f"bottom '{bottom[0].name}' {shape} does not fit the "
                             f"{self.blobs[0].shape[0]} slopes", field="bottom")
        self.view = (shape[0], shape[1], int(np.prod(shape[2:])))
        super().reshape(bottom, top)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        # backward needs x itself; in place, top overwrites it
        self.x = x.copy() if top[0] is bottom[0] else x
        slope = self.blobs[0].data.reshape(1, -1, 1)
        np.copyto(top[0].data.reshape(self.view), np.where(x > 0, x, slope * x))

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.view)
        negative = self.x <= 0
        if self.param_propagate_down[0]:
            grad = (dy * self.x * negative).sum(axis=(0, 2))
            self.blobs[0].diff += grad.sum(keepdims=True) if self.params.channel_shared else grad
        if propagate_down[0]:
            slope = self.blobs[0].data.reshape(1, -1, 1)
            np.copyto(bottom[0].diff.reshape(self.view), dy * np.where(negative, slope, 1))


@register_layer("AbsVal")
class AbsVal(ElementwiseLayer):
    """``y = |x|``; ``dy/dx = sign(x)``. Not in place (backward reads x), as in Caffe."""

    allows_in_place = False

    def forward(self, bottom, top):
        np.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, np.sign(bottom[0].data), out=bottom[0].diff)


@register_layer("Power")
class Power(ElementwiseLayer):
    """``y = (shift + scale · x)^power``;
    ``dy/dx = power · scale · (shift + scale · x)^(power − 1)``."""

    class Params(LayerParams):
        power: float = 1.0
        scale: float = 1.0
        shift: float = 0.0

    def forward(self, bottom, top):
        p = self.params
        self.base = p.shift + p.scale * bottom[0].data     # a new array: in place is fine
        np.power(self.base, p.power, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.params
        if p.power == 0 or p.scale == 0:
            bottom[0].diff[...] = 0
        elif p.power == 1:
            np.multiply(top[0].diff, p.scale, out=bottom[0].diff)
        else:
            bottom[0].diff[...] = (top[0].diff * (p.power * p.scale)
                                   * np.power(self.base, p.power - 1))


@register_layer("Exp")
class Exp(ElementwiseLayer):
    """``y = base^(shift + scale · x)`` (``base: -1`` is e); ``dy/dx = y · scale · ln(base)``."""

    class Params(LayerParams):
        base: float = -1.0
        scale: float = 1.0
        shift: float = 0.0

    def setup(self, bottom, top):
        p = self.params
        log_base = _natural_log_of_base(p.base, self)
        self.inner_scale = log_base * p.scale
        self.outer_scale = float(np.exp(log_base * p.shift))

    def forward(self, bottom, top):
        np.multiply(bottom[0].data, self.inner_scale, out=top[0].data)
        np.exp(top[0].data, out=top[0].data)
        if self.outer_scale != 1:
            top[0].data *= self.outer_scale

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * top[0].data * self.inner_scale


@register_layer("Log")
class Log(ElementwiseLayer):
    """``y = log_base(shift + scale · x)`` (``base: -1`` is e);
    ``dy/dx = scale / (ln(base) · (shift + scale · x))``."""

    class Params(LayerParams):
        base: float = -1.0
        scale: float = 1.0
        shift: float = 0.0

    def setup(self, bottom, top):
        self.log_base = _natural_log_of_base(self.params.base, self)

    def forward(self, bottom, top):
        p = self.params
        self.argument = p.shift + p.scale * bottom[0].data   # a new array: in place is fine
        np.log(self.argument, out=top[0].data)
        if self.log_base != 1:
            top[0].data /= self.log_base

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * (self.params.scale / self.log_base) / self.argument


@register_layer("BNLL")
class BNLL(ElementwiseLayer):
    """Binomial normal log-likelihood ``y = log(1 + exp(x))``, computed without overflow;
    ``dy/dx = sigmoid(x) = 1 − exp(−y)``."""

    def forward(self, bottom, top):
        np.logaddexp(0, bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # sigmoid(x) from y = softplus(x), so in place needs no copy of x
            bottom[0].diff[...] = top[0].diff * -np.expm1(-top[0].data)


@register_layer("Clip")
class Clip(ElementwiseLayer):
    """``y = min(max(x, min), max)``; ``dy/dx = 1`` for ``min ≤ x ≤ max``, else 0 (Caffe)."""

    class Params(LayerParams):
        min: float
        max: float

    def setup(self, bottom, top):
        if self.params.min > self.params.max:
            raise ConfigError(f"min ({self.params.min:g}) must not exceed max "
                              f"({self.params.max:g})", layer=self.name, field="min")

    def forward(self, bottom, top):
        x = bottom[0].data
        self.inside = (x >= self.params.min) & (x <= self.params.max)
        np.clip(x, self.params.min, self.params.max, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, self.inside, out=bottom[0].diff)


@register_layer("Swish")
class Swish(ElementwiseLayer):
    """``y = x · sigmoid(β x)``; ``dy/dx = β y + sigmoid(β x) (1 − β y)``."""

    class Params(LayerParams):
        beta: float = 1.0

    def forward(self, bottom, top):
        x = bottom[0].data
        # 0.5·tanh(z/2) + 0.5 is the logistic function without overflow
        self.sigmoid = 0.5 * np.tanh(0.5 * self.params.beta * x) + 0.5
        np.multiply(x, self.sigmoid, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            beta_y = self.params.beta * top[0].data
            bottom[0].diff[...] = top[0].diff * (beta_y + self.sigmoid * (1 - beta_y))


@register_layer("Threshold")
class Threshold(ElementwiseLayer):
    """``y = 1`` where ``x > threshold``, else ``0`` (Caffe's Threshold); no gradient."""

    class Params(LayerParams):
        threshold: float = 0.0

    has_backward = False

    def forward(self, bottom, top):
        np.greater(bottom[0].data, self.params.threshold, out=top[0].data, casting="unsafe")

    def backward(self, top, propagate_down, bottom):
        """A step function: Caffe has no backward for it either."""


@register_layer("Dropout")
class Dropout(Layer):
    """Inverted dropout: in TRAIN ``y = x · m / (1 − p)`` with ``m ~ Bernoulli(1 − p)`` drawn
    from the layer's Generator each forward; in TEST ``y = x``. ``p`` is ``dropout_ratio``.

    Scaling at train time (as Caffe) keeps the expected activation equal in both phases, so
    the TEST net needs no rescaling. Backward: ``dx = dy · m / (1 − p)`` (``dy`` in TEST).
    """

    class Params(LayerParams):
        dropout_ratio: float = Field(default=0.5, ge=0.0, lt=1.0)

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1
    allows_in_place = True

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase != "TRAIN":
            if top[0] is not bottom[0]:
                np.copyto(top[0].data, x)
            return
        p = self.params.dropout_ratio
        # the kept mask already holds the scale, so forward and backward are one multiply
        self.mask = (self.rng.random(x.shape, dtype=x.dtype) >= p).astype(x.dtype)
        self.mask *= x.dtype.type(1.0 / (1.0 - p))
        np.multiply(x, self.mask, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase != "TRAIN":
            if top[0] is not bottom[0]:
                np.copyto(bottom[0].diff, top[0].diff)
            return
        np.multiply(top[0].diff, self.mask, out=bottom[0].diff)
