"""Common layers: Input, InnerProduct, Eltwise, and the blob plumbing ones."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from .base import Layer


@register_layer("Input")
class Input(Layer):
    """Blobs the user fills: ``net.forward(data=x)``. ``shape`` gives one shape per top."""

    class Params(LayerParams):
        shape: list[list[int]] = Field(min_length=1)

    min_tops = 1
    has_backward = False
    tops_need_backward = True   # gradient checks and saliency read the inputs' diffs

    def setup(self, bottom, top):
        shapes = self.params.shape
        if len(shapes) not in (1, len(top)):
            raise self.error(f"shape has {len(shapes)} entries for {len(top)} tops "
                             f"(give one, or one per top)", field="shape")
        for shape in shapes:
            if any(d <= 0 for d in shape):
                raise self.error(f"every dimension must be positive, got {shape}", field="shape")
        for j, blob in enumerate(top):
            blob.reshape(shapes[j if len(shapes) > 1 else 0])

    def reshape(self, bottom, top):
        """Input blobs keep the shape they were given (``net.forward`` may change it)."""

    def forward(self, bottom, top):
        """The data is already in the top blobs."""


@register_layer("InnerProduct")
class InnerProduct(Layer):
    """Fully connected: ``y = x W^T + b`` over the axes from ``axis`` on, flattened.

    x: (N, ...) with fan_in = prod(shape[axis:]); W: (num_output, fan_in); b: (num_output,).
    """

    class Params(LayerParams):
        num_output: int = Field(gt=0)
        bias_term: bool = True
        axis: int = 1
        transpose: bool = False
        weight_filler: FillerSpec | None = None
        bias_filler: FillerSpec | None = None

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def _split(self, shape):
        axis = self.params.axis
        if not -len(shape) <= axis < len(shape) + (1 if len(shape) == 0 else 0):
            raise self.error(f"axis {axis} is out of range for bottom shape {shape}", field="axis")
        axis %= max(len(shape), 1)
        return axis, int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))

    def setup(self, bottom, top):
        p = self.params
        _, _, fan_in = self._split(bottom[0].shape)
        shape = (fan_in, p.num_output) if p.transpose else (p.num_output, fan_in)
        self.make_param(shape, p.weight_filler)
        if p.bias_term:
            self.make_param((p.num_output,), p.bias_filler)
        self.fan_in = fan_in

    def reshape(self, bottom, top):
        axis, _, fan_in = self._split(bottom[0].shape)
        if fan_in != self.fan_in:
            raise self.error(f"bottom shape {bottom[0].shape} gives {fan_in} inputs per sample "
                             f"but the weights were made for {self.fan_in}")
        top[0].reshape((*bottom[0].shape[:axis], self.params.num_output))

    def _weight(self):
        w = self.blobs[0].data
        return w if self.params.transpose else w.T      # (fan_in, num_output)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1, self.fan_in)
        y = top[0].data.reshape(x.shape[0], -1)
        np.matmul(x, self._weight(), out=y)
        if self.params.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(-1, self.params.num_output)
        x = bottom[0].data.reshape(-1, self.fan_in)
        if self.param_propagate_down[0]:
            grad = x.T @ dy if self.params.transpose else dy.T @ x
            self.blobs[0].diff += grad
        if self.params.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            np.matmul(dy, self._weight().T, out=bottom[0].diff.reshape(x.shape))


@register_layer("Eltwise")
class Eltwise(Layer):
    """Element-wise over bottoms of one shape: SUM (``Σ coeff_i x_i``), PROD, MAX."""

    class Params(LayerParams):
        operation: Literal["SUM", "PROD", "MAX"] = "SUM"
        coeff: list[float] = Field(default_factory=list)
        stable_prod_grad: bool = True

    min_bottoms = 2
    min_tops = max_tops = 1
    allows_in_place = True

    def setup(self, bottom, top):
        p = self.params
        if p.coeff and (p.operation != "SUM" or len(p.coeff) != len(bottom)):
            raise self.error("coeff needs operation SUM and one value per bottom "
                             f"({len(bottom)}), got {len(p.coeff)}", field="coeff")
        self.coeff = p.coeff or [1.0] * len(bottom)

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != bottom[0].shape:
                raise self.error(f"bottom {i} '{blob.name}' has shape {blob.shape} but bottom 0 "
                                 f"'{bottom[0].name}' has {bottom[0].shape}; Eltwise needs "
                                 f"equal shapes", field="bottom")
        if top[0] not in bottom:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        op = self.params.operation
        xs = [b.data for b in bottom]
        if op == "SUM":
            out = sum(c * x for c, x in zip(self.coeff, xs))
        elif op == "PROD":
            out = np.prod(np.stack(xs), axis=0)
        else:
            stacked = np.stack(xs)
            self.argmax = stacked.argmax(axis=0)
            out = np.take_along_axis(stacked, self.argmax[None], axis=0)[0]
        top[0].data[...] = out

    def backward(self, top, propagate_down, bottom):
        op = self.params.operation
        dy = top[0].diff
        if op == "PROD":
            xs = [b.data.copy() for b in bottom]
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if op == "SUM":
                blob.diff[...] = self.coeff[i] * dy
            elif op == "PROD":
                others = [x for j, x in enumerate(xs) if j != i]
                blob.diff[...] = dy * np.prod(np.stack(others), axis=0)
            else:
                blob.diff[...] = dy * (self.argmax == i)
