"""Learned linear maps: InnerProduct (``y = x·Wᵀ + b``) and Embed (the same map of a one-hot
index, read as a table lookup)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .. import blas, dnnl, threads
from ..blob import is_frozen
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from . import method_choice
from .base import Layer, accumulate_matmul, accumulate_sum

# An inference forward reads frozen weights in Caffe's own layout, where they lie, up to
# this many rows (oneDNN's inner product: its gemm, a matrix-vector product, streams them
# once, ~40% faster at batch 1 than its blocked layout).
PLAIN_WEIGHT_ROWS = 2
# With more rows oneDNN's blocked copy of the weights is faster (CaffeNet's fc6 at batch
# 16: 9.0 against 13.3 ms; LeNet's ip1 at 64 ~0.3 ms less), but it is a second copy: weights
# larger than this are read in place by oneDNN's matmul instead (CaffeNet's and VGG's
# fully-connected layers, 234 MB and 494 MB, most of their nets' memory).
PACKED_WEIGHT_MAX_BYTES = 16 << 20


@register_layer("InnerProduct")
class InnerProduct(Layer):
    """Fully connected: ``y = x W^T + b`` over the axes from ``axis`` on, flattened.

    x: (N, ...) with fan_in = prod(shape[axis:]); W: (num_output, fan_in); b: (num_output,).
    The inference forward runs on oneDNN where ``method_choice.inner_product_method`` says so.
    """

    packed_params = (0,)

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
                             f"but the weights were made for {self.fan_in}", field="bottom")
        top[0].reshape((*bottom[0].shape[:axis], self.params.num_output))

    def _weight(self):
        w = self.blobs[0].data
        return w if self.params.transpose else w.T      # (fan_in, num_output)

    @property
    def method(self) -> str:
        """``dnnl`` or ``blas`` (``method_choice.inner_product_method``): oneDNN for the
        inference forward of frozen weights (``blob.is_frozen``), whose layout it then
        computes once; writable weights would be reordered at every call."""
        weight = self.blobs[0].data
        frozen = is_frozen(weight)
        return method_choice.inner_product_method(weight.dtype, self.params.transpose,
                                                  self.inference and frozen)

    def forward_with_relu(self, bottom, top, negative_slope: float) -> bool:
        """The forward and an in-place ReLU after it in one pass: one oneDNN primitive (an
        inner product in inference, a matmul with a post-op in training; the ReLU's
        backward reads the rectified top as it would after its own forward)."""
        if self.method == "dnnl":
            self._forward_dnnl(bottom, top, relu=negative_slope)
        else:
            self._forward_blas(bottom, top, relu=negative_slope)
        return True

    def _forward_dnnl(self, bottom, top, relu=None):
        x = bottom[0].data.reshape(-1, self.fan_in)
        y = top[0].data.reshape(x.shape[0], -1)
        weight, bias = self._weight(), self.blobs[1].data if self.params.bias_term else None
        key = (x.shape, x.strides, weight.strides, y.strides, threads.num_threads(), relu)
        if getattr(self, "_plan_key", None) != key:
            if x.shape[0] <= PLAIN_WEIGHT_ROWS or weight.nbytes <= PACKED_WEIGHT_MAX_BYTES:
                self._plan = dnnl.InnerProductPlan(
                    x.shape[0], self.fan_in, self.params.num_output, self.params.bias_term,
                    relu=relu, plain_weights=x.shape[0] <= PLAIN_WEIGHT_ROWS)
            else:
                self._plan = dnnl.MatmulPlan(x, weight, y, bias=bias is not None, relu=relu)
            self._plan_key = key
        if isinstance(self._plan, dnnl.MatmulPlan):
            self._plan.run(x, weight, y, bias)
            direct = True
        else:
            # frozen (see ``method``): the weights cannot change, their layout is computed once
            self._plan.forward(x, self.blobs[0].data, bias, y, constant_weight=True)
            direct = self._plan.weight.direct
        self.last_forward = ("dnnl inference" + (" + ReLU" if relu is not None else "")
                             + (", weights read in place" if direct else ", packed weights"))

    def forward(self, bottom, top):
        if self.method == "dnnl":
            self._forward_dnnl(bottom, top)
            return
        self._forward_blas(bottom, top)

    def _forward_blas(self, bottom, top, relu=None):
        self.last_forward = "blas" + (" + ReLU" if relu is not None else "")
        x = bottom[0].data.reshape(-1, self.fan_in)
        y = top[0].data.reshape(x.shape[0], -1)
        blas.matmul(x, self._weight(), out=y,
                    bias=self.blobs[1].data if self.params.bias_term else None, relu=relu)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(-1, self.params.num_output)
        x = bottom[0].data.reshape(-1, self.fan_in)
        if self.param_propagate_down[0]:
            if self.params.transpose:
                accumulate_matmul(self.blobs[0], x.T, dy)
            else:
                accumulate_matmul(self.blobs[0], dy.T, x)
        if self.params.bias_term and self.param_propagate_down[1]:
            accumulate_sum(self.blobs[1], dy, axis=0)
        if propagate_down[0]:
            blas.matmul(dy, self._weight().T, out=bottom[0].diff.reshape(x.shape))


@register_layer("Embed")
class Embed(Layer):
    """A lookup table: ``y[..., :] = W[x[...], :] (+ b)``, indices read from a float blob.

    x: any shape of integer values in [0, input_dim); W: (input_dim, num_output);
    b: (num_output,); y: x.shape + (num_output,). ``dW[i] = Σ_{x = i} dy``; the indices
    get no gradient.
    """

    class Params(LayerParams):
        num_output: int = Field(gt=0)
        input_dim: int = Field(gt=0)
        bias_term: bool = True
        weight_filler: FillerSpec | None = None
        bias_filler: FillerSpec | None = None

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        p = self.params
        self.make_param((p.input_dim, p.num_output), p.weight_filler, "weight")
        if p.bias_term:
            self.make_param((p.num_output,), p.bias_filler, "bias")

    def allow_backward_to(self, bottom_index: int) -> bool:
        return False

    def reshape(self, bottom, top):
        top[0].reshape((*bottom[0].shape, self.params.num_output))

    def forward(self, bottom, top):
        values = bottom[0].data.reshape(-1)
        index = values.astype(np.int64)
        bad = (index != values) | (index < 0) | (index >= self.params.input_dim)
        if np.any(bad):
            raise self.error(f"index {values[bad][0]:g} in bottom '{bottom[0].name}' is not "
                             f"an integer in 0..{self.params.input_dim - 1}", field="input_dim")
        self.index = index
        y = top[0].data.reshape(index.size, -1)
        np.take(self.blobs[0].data, index, axis=0, out=y)
        if self.params.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.index.size, -1)
        if self.param_propagate_down[0]:
            np.add.at(self.blobs[0].diff, self.index, dy)   # repeated indices accumulate
        if self.params.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
