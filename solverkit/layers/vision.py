"""Vision layers: Convolution, Deconvolution and Pooling on NCHW blobs (Caffe's semantics).

Convolution runs on oneDNN's direct convolutions for float32 where the ``fast`` extra's
library loads (``solverkit/dnnl.py``), else as im2col + matrix products:

    col = im2col(x)       (C·kh·kw, N·OH·OW): rows (c, i, j), columns (n, oh, ow)
    y   = W · col + b     W viewed as (num_output, C/group·kh·kw), one product per group

with the backward pass ``dW += dy · colᵀ``, ``dx = col2im(Wᵀ · dy)``. Which of these a layer
uses, and how its products are laid out, is ``method_choice.convolution_method``'s choice
from the shapes. Deconvolution is the same machinery run the other way round (its forward
is Convolution's backward-data pass). Pooling runs on oneDNN where its windows are
Caffe's, else splits the padded input into its stride phases, after which every kernel
offset is one contiguous slice (``method_choice.pooling_method``). The array work itself
(im2col, kernel rows, pooling phases) is in ``kernels.py``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .. import blas, dnnl, threads
from ..blob import Blob, is_frozen
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams, LayerSpec
from ..threads import parallel_for, split
from . import kernels, method_choice
from .base import Layer, spatial_pair
from .kernels import (
    Buffers,
    Im2col,
    KernelRows,
    PoolingWindows,
    conv_output_size,
    deconv_output_size,
    pool_output_size,
)
from .method_choice import ConvGeometry

IntPair = int | list[int] | None


class WindowParams(LayerParams):
    """The sliding-window fields Convolution and Pooling share (Caffe's names, flat):
    ``kernel_size`` or ``kernel_h``/``kernel_w``, and likewise ``stride`` and ``pad``."""

    kernel_size: IntPair = None
    kernel_h: int | None = None
    kernel_w: int | None = None
    stride: IntPair = None
    stride_h: int | None = None
    stride_w: int | None = None
    pad: IntPair = None
    pad_h: int | None = None
    pad_w: int | None = None


class ConvolutionParams(WindowParams):
    """Caffe's ConvolutionParameter (flat), shared by Convolution and Deconvolution."""

    num_output: int
    dilation: IntPair = None
    group: int = 1
    bias_term: bool = True
    weight_filler: FillerSpec | None = None
    bias_filler: FillerSpec | None = None
    axis: int = 1


def _field(params, name: str, field_h: str) -> str:
    """The field a user wrote for a (h, w) pair (``kernel_size`` or ``kernel_h``), for messages."""
    return field_h if getattr(params, field_h, None) is not None else name


class _ConvolutionBase(Layer):
    """Reads and checks the shared parameters; makes the weights; keeps the Im2col."""

    Params = ConvolutionParams
    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        p = self.params
        self.kernel = spatial_pair(p, "kernel_size", field_h="kernel_h", field_w="kernel_w")
        self.stride = spatial_pair(p, "stride", default=1)
        self.pad = spatial_pair(p, "pad", default=0)
        self.dilation = spatial_pair(p, "dilation", default=1)
        for name, field_h, pair, least in (("kernel_size", "kernel_h", self.kernel, 1),
                                           ("stride", "stride_h", self.stride, 1),
                                           ("pad", "pad_h", self.pad, 0),
                                           ("dilation", "dilation", self.dilation, 1)):
            if min(pair) < least:
                raise self.error(f"{name} must be {'positive' if least else 'non-negative'}, "
                                 f"got {pair[0]}×{pair[1]} (h×w)", field=_field(p, name, field_h))
        if p.num_output <= 0:
            raise self.error(f"num_output must be positive, got {p.num_output}", field="num_output")
        if p.group <= 0:
            raise self.error(f"group must be positive, got {p.group}", field="group")
        if p.axis not in (1, -3):
            raise self.error(f"only axis 1 (channels of NCHW) is supported, got {p.axis}",
                             field="axis")
        self.channels = self._check_bottom(bottom[0].shape)[1]
        if self.channels % p.group:
            raise self.error(f"group {p.group} does not divide the {self.channels} input "
                             f"channels of bottom '{bottom[0].name}'", field="group")
        if p.num_output % p.group:
            raise self.error(f"group {p.group} does not divide num_output {p.num_output}",
                             field="group")
        self.make_param(self.weight_shape(), p.weight_filler)
        if p.bias_term:
            self.make_param((p.num_output,), p.bias_filler)
        self.im2col: Im2col | None = None
        self.kernel_rows: KernelRows | None = None
        self.last_forward: str | None = None    # how the last forward ran (tests read it)
        self._buffers = Buffers()

    def _check_bottom(self, shape):
        if len(shape) != 4:
            raise self.error(f"bottom must be 4-d (N, C, H, W), got shape {shape}", field="bottom")
        return shape

    def _bottom_shape(self, bottom):
        """(N, C, H, W) of the bottom, whose channels must be those the weights were made for."""
        n, c, h, w = self._check_bottom(bottom[0].shape)
        if c != self.channels:
            raise self.error(f"bottom '{bottom[0].name}' has {c} channels but the weights were "
                             f"made for {self.channels}", field="bottom")
        return n, c, h, w

    def weight_shape(self) -> tuple[int, int, int, int]:
        raise NotImplementedError(f"Weight layout is per type; {type(self).__name__} must define it")

    def _im2col_for(self, image_shape, dtype) -> Im2col:
        """The Im2col for images of ``image_shape``, kept while that shape stays."""
        if (self.im2col is None or self.im2col.dtype != dtype or
                (self.im2col.n, self.im2col.channels, self.im2col.height, self.im2col.width)
                != tuple(image_shape)):
            self.im2col = Im2col(image_shape, self.kernel, self.stride, self.pad, self.dilation,
                                 dtype)
        return self.im2col

    def _kernel_error(self, height, width):
        p = self.params
        extent = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel)]
        return self.error(
            f"kernel {self.kernel[0]}×{self.kernel[1]} (dilated extent {extent[0]}×{extent[1]}) "
            f"is larger than the padded input {height + 2 * self.pad[0]}×"
            f"{width + 2 * self.pad[1]}", field=_field(p, "kernel_size", "kernel_h"))

    def _dnnl_plan(self, x_shape, y_shape, bias: bool, training: bool = True,
                   relu: float | None = None, blocked: tuple[bool, bool] = (False, False)):
        """The oneDNN plan of the convolution from ``x_shape`` to ``y_shape`` (for a
        Deconvolution: from its top to its bottom), kept while the shapes, the thread
        count and the kind stay: a ``training`` plan (forward and backward primitives) or
        an inference one (forward only, ``relu`` fused if not None, ``blocked``: whether
        its source and its result are in oneDNN's blocked layout)."""
        key = (tuple(x_shape), tuple(y_shape), threads.num_threads(), bias, training, relu,
               blocked)
        plan = getattr(self, "_plan", None)
        if plan is None or self._plan_key != key:
            plan = self._plan = dnnl.ConvolutionPlan(
                x_shape, y_shape, self.blobs[0].shape, self.params.group, bias, self.stride,
                self.pad, self.dilation, training=training, relu=relu,
                blocked_source=blocked[0], blocked_result=blocked[1])
            self._plan_key = key
        return plan

    def _gradient_target(self, index: int, name: str):
        """(array to write parameter ``index``'s gradient into, diff to add it to or None):
        the diff itself right after the solver cleared it, else a scratch buffer."""
        diff, overwrite = self.blobs[index].diff_for_accumulation()
        if overwrite:
            return diff, None
        return self._buffers.get(name, diff.shape, diff.dtype), diff

    def _group_rows(self, rows: int):
        size = rows // self.params.group
        return [slice(g * size, (g + 1) * size) for g in range(self.params.group)]


@register_layer("Convolution")
class Convolution(_ConvolutionBase):
    """2-d convolution (cross-correlation, as Caffe), with stride, pad, dilation and groups.

    x: (N, C, H, W); W: (num_output, C/group, kh, kw); b: (num_output,);
    y: (N, num_output, OH, OW), ``OH = floor((H + 2p − (d(k−1)+1)) / s) + 1``;
    ``y[n, o, oh, ow] = b[o] + Σ_{c in o's group, i, j} W[o, c, i, j] ·
    x[n, c, oh·s − p + i·d, ow·s − p + j·d]`` (zero outside the image).
    """

    packed_params = (0,)
    # whether the bottom and the top hold oneDNN's blocked layout (nChw16c) instead of NCHW:
    # set by a net that keeps that layout between its layers (``layouts.py``)
    blocked = (False, False)

    def weight_shape(self):
        p = self.params
        return (p.num_output, self.channels // p.group, *self.kernel)

    @property
    def runs_blocked(self) -> bool:
        """Whether the forward reads and writes blobs in the blocked layout now: an inference
        forward on oneDNN."""
        return self.inference and self.method == "dnnl"

    def blocked_kernels(self, source: bool, result: bool) -> bool:
        """Whether oneDNN runs this inference forward with the bottom (``source``) and the
        top (``result``) in the blocked layout on a kernel of its own, not on its reference
        implementation (hundreds of times slower: a CPU whose kernels block by 8, a shape
        they do not cover)."""
        if not self.runs_blocked:
            return False
        g = self.geometry
        plan = self._dnnl_plan((g.n, g.channels, g.height, g.width),
                               (g.n, g.num_output, g.out_h, g.out_w), self.params.bias_term,
                               training=False, blocked=(source, result))
        return not any(name.startswith("ref") for name in plan.implementations())

    def reshape(self, bottom, top):
        n, c, h, w = self._bottom_shape(bottom)
        out_h, out_w = (conv_output_size(size, *args) for size, args in
                        zip((h, w), zip(self.kernel, self.stride, self.pad, self.dilation)))
        if out_h <= 0 or out_w <= 0:
            raise self._kernel_error(h, w)
        dtype = bottom[0].data.dtype
        self.geometry = ConvGeometry(n, c, h, w, out_h, out_w, self.kernel, self.stride,
                                     self.pad, self.params.group, self.params.num_output, dtype)
        block = self.geometry.block()
        self._im2col_for((block, c, h, w), dtype)
        self.blocks = [slice(start, min(start + block, n)) for start in range(0, n, block)]
        self.pixels = out_h * out_w
        top[0].reshape((n, self.params.num_output, out_h, out_w))
        self._col_valid = False

    def _rows(self, n):
        """(num_output, N·OH·OW): the product before it is transposed to NCHW (y, then dy)."""
        return self._buffers.get("rows", (self.params.num_output, n * self.pixels),
                                 self.im2col.dtype)

    @property
    def groups(self) -> list[tuple[slice, slice]]:
        """(weight rows, column rows) of each group's product."""
        return list(zip(self._group_rows(self.params.num_output),
                        self._group_rows(self.im2col.rows)))

    @property
    def method(self) -> str:
        """How this layer computes (``method_choice.convolution_method``): ``dnnl``,
        ``per_sample``, ``kernel_rows`` or ``columns``."""
        return method_choice.convolution_method(self.geometry)

    @property
    def per_sample(self) -> bool:
        return self.method == "per_sample"

    def _kernel_rows_for(self, n, dtype) -> KernelRows:
        """The KernelRows for the whole batch, kept while its shape stays."""
        shape = (n, self.channels, self.im2col.height, self.im2col.width)
        rows = self.kernel_rows
        if rows is None or rows.dtype != dtype or \
                (rows.n, rows.channels, rows.height, rows.width) != shape:
            rows = self.kernel_rows = KernelRows(shape, self.kernel, self.stride, self.pad,
                                                 self.dilation, dtype)
        return rows

    def _stacked_weight(self, weight: np.ndarray | None = None) -> np.ndarray:
        """(kh, num_output, C·kw): kernel row i of every filter of ``weight`` (the layer's
        own by default), as KernelRows multiplies it."""
        p = self.params
        weight = self.blobs[0].data if weight is None else weight
        stacked = self._buffers.get("stacked_weight", (self.kernel[0], p.num_output,
                                                       self.channels * self.kernel[1]),
                                    weight.dtype)
        np.copyto(stacked.reshape(self.kernel[0], p.num_output, self.channels, self.kernel[1]),
                  weight.transpose(2, 0, 1, 3))
        return stacked

    def _forward_kernel_rows(self, x, y, weight, bias):
        """``bias``: (1, num_output, 1, 1), or 0 without a bias term."""
        geometry = self._kernel_rows_for(x.shape[0], x.dtype)
        columns = geometry.build(x)
        stacked = self._stacked_weight(weight)
        total = self._rows(x.shape[0])
        part = self._buffers.get("rows_part", total.shape, total.dtype)
        for i in range(self.kernel[0]):
            blas.matmul(stacked[i], columns[:, geometry.row_columns(i)], out=part if i else total)
            if i:
                np.add(total, part, out=total)
        by_sample = total.reshape(self.params.num_output, geometry.out_h, x.shape[0],
                                  geometry.out_w).transpose(2, 0, 1, 3)
        y = y.reshape(by_sample.shape)
        # the transposing copy into NCHW adds the bias on the way
        parallel_for(lambda n: np.add(by_sample[n], bias, out=y[n]), split(x.shape[0]),
                     elements=y.size)

    def _backward_kernel_rows(self, x, dy, dx, need_weight, need_bottom):
        p, kh = self.params, self.kernel[0]
        geometry = self._kernel_rows_for(x.shape[0], x.dtype)
        stacked_dy = geometry.shifted_top_diff(
            dy.reshape(x.shape[0], p.num_output, geometry.out_h, geometry.out_w), kh)
        stacked_dy = stacked_dy.reshape(kh * p.num_output, -1)
        if need_weight:
            columns = geometry.buffer() if self._col_valid else geometry.build(x)
            grad_t = self._buffers.get("weight_grad_t", (geometry.rows, kh * p.num_output),
                                       x.dtype)
            blas.matmul(columns, stacked_dy.T, out=grad_t)           # rows (c, j), columns (i, o)
            self.blobs[0].diff[...] += grad_t.reshape(self.channels, self.kernel[1], kh,
                                                      p.num_output).transpose(3, 0, 2, 1)
        if need_bottom:
            grad_columns = geometry.buffer()      # B is free once dW is done
            self._col_valid = False
            blas.matmul(self._stacked_weight().reshape(kh * p.num_output, -1).T, stacked_dy,
                        out=grad_columns)
            geometry.scatter(grad_columns, dx)

    def _backward_dnnl(self, bottom, dy, need_bottom):
        p = self.params
        x = bottom.data
        plan = self._dnnl_plan(x.shape, dy.shape, p.bias_term, training=True)
        need_weight = self.param_propagate_down[0]
        need_bias = p.bias_term and self.param_propagate_down[1]
        if need_weight or need_bias:
            dweight, weight_sum = (self._gradient_target(0, "weight_grad") if need_weight else
                                   (self._buffers.get("weight_grad", self.blobs[0].shape,
                                                      x.dtype), None))
            dbias = bias_sum = None
            if p.bias_term:
                dbias, bias_sum = (self._gradient_target(1, "bias_grad") if need_bias else
                                   (self._buffers.get("bias_grad", self.blobs[1].shape,
                                                      x.dtype), None))
            plan.backward_weights(x, dy, dweight, dbias)
            if need_weight and weight_sum is not None:
                weight_sum += dweight
            if need_bias and bias_sum is not None:
                bias_sum += dbias
        if need_bottom:
            plan.backward_data(dy, self.blobs[0].data, bottom.diff)

    def _by_sample(self, col, block):
        """The column matrix of a block as a stack of per-sample matrices (n, C·kh·kw, OH·OW)."""
        return col.reshape(col.shape[0], block.stop - block.start, self.pixels).transpose(1, 0, 2)

    def forward_with_relu(self, bottom, top, negative_slope: float) -> bool:
        """The forward followed by an in-place ReLU of ``negative_slope`` in one pass, where
        oneDNN runs this layer in inference (a post-op of the convolution); False (nothing
        done) elsewhere, and the net runs the two layers one after the other."""
        if not (self.inference and self.method == "dnnl"):
            return False
        self._forward_dnnl(bottom[0].data, top[0].data, *self._own_weights(), relu=negative_slope)
        return True

    def forward_folded(self, bottom, top, weight, bias, negative_slope: float | None = None
                       ) -> bool:
        """The forward with ``weight`` (the shape of blobs[0]) and ``bias`` (num_output,) in
        place of the layer's own: those of a per-channel affine map folded into them (a net
        built for inference folds the in-place BatchNorm and Scale after this layer). With
        ``negative_slope``, the in-place ReLU after them is fused where oneDNN runs the
        layer; returns whether it was (False: the net runs the ReLU itself)."""
        fused = negative_slope is not None and self.inference and self.method == "dnnl"
        self._forward(bottom[0].data, top[0].data, weight, bias,
                      negative_slope if fused else None)
        self.last_forward += ", folded"
        return fused

    def _own_weights(self):
        """(weight, bias or None): the layer's parameters as its forward uses them."""
        return self.blobs[0].data, (self.blobs[1].data if self.params.bias_term else None)

    def _forward_dnnl(self, x, y, weight, bias, relu=None):
        blocked = self.blocked if self.inference else (False, False)
        plan = self._dnnl_plan(x.shape, y.shape, bias is not None, training=not self.inference,
                               relu=relu, blocked=blocked)
        # A read-only weight array that owns its memory (a net built for inference freezes
        # its parameters so) cannot change: oneDNN's layout of it is computed once.
        constant = self.inference and is_frozen(weight)
        plan.forward(x, weight, bias, y, constant_weight=constant)
        self.last_forward = ("dnnl " + ("inference" if self.inference else "training")
                             + (" + ReLU" if relu is not None else "")
                             + (", packed weights" if constant else "")
                             + _blocked_words(blocked))

    def forward(self, bottom, top):
        self._forward(bottom[0].data, top[0].data, *self._own_weights())

    def _forward(self, x, top_data, weight, bias, relu=None):
        """``top_data`` = the convolution of ``x`` with ``weight`` and ``bias`` (or None);
        ``relu`` (a negative slope) only where the method is ``dnnl``."""
        p, geometry = self.params, self.im2col
        n = x.shape[0]
        method = self.method
        self.last_forward = method
        if method == "dnnl":
            self._forward_dnnl(x, top_data, weight, bias, relu)
            self._col_valid = False
            return
        weight = weight.reshape(p.num_output, -1)
        y = top_data.reshape(n, p.num_output, -1)
        if method == "kernel_rows":
            self._forward_kernel_rows(x, y, weight.reshape(self.blobs[0].shape),
                                      0 if bias is None else bias.reshape(1, -1, 1, 1))
        elif method == "per_sample":
            for block in self.blocks:
                by_sample = self._by_sample(geometry.im2col(x[block]), block)
                for g_out, g_in in self.groups:
                    blas.matmul(weight[g_out], by_sample[:, g_in], out=y[block, g_out])
            if bias is not None:
                column = bias.reshape(1, -1, 1)
                parallel_for(lambda part: np.add(y[part], column, out=y[part]), split(n),
                             elements=y.size)
        else:
            rows = self._rows(n)
            for block in self.blocks:
                col = geometry.im2col(x[block])
                columns = slice(block.start * self.pixels, block.stop * self.pixels)
                for g_out, g_in in self.groups:
                    blas.matmul(weight[g_out], col[g_in], out=rows[g_out, columns])
            by_sample = rows.reshape(p.num_output, n, -1).transpose(1, 0, 2)
            column = 0 if bias is None else bias.reshape(1, -1, 1)
            parallel_for(lambda part: np.add(by_sample[part], column, out=y[part]), split(n),
                         elements=y.size)
        # with one block the columns are still there for backward's weight gradient
        self._col_valid = method == "kernel_rows" or len(self.blocks) == 1

    def backward(self, top, propagate_down, bottom):
        p, geometry = self.params, self.im2col
        x = bottom[0].data
        n = x.shape[0]
        method = self.method
        if method == "dnnl":
            self._backward_dnnl(bottom[0], top[0].diff, propagate_down[0])
            return
        dy = top[0].diff.reshape(n, p.num_output, -1)
        if method == "columns":
            rows = self._rows(n)
            threads.copyto(rows.reshape(p.num_output, n, -1).transpose(1, 0, 2), dy)
        if p.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += rows.sum(axis=1) if method == "columns" else dy.sum(axis=(0, 2))
        need_weight, need_bottom = self.param_propagate_down[0], propagate_down[0]
        if not (need_weight or need_bottom):
            return
        if method == "kernel_rows":
            self._backward_kernel_rows(x, dy, bottom[0].diff, need_weight, need_bottom)
            return
        weight = self.blobs[0].data.reshape(p.num_output, -1)
        weight_diff = self.blobs[0].diff.reshape(p.num_output, -1)
        group_in, group_out = geometry.rows // p.group, p.num_output // p.group
        for block in self.blocks:
            size = block.stop - block.start
            if need_weight:
                col = (geometry.col_buffer(size) if self._col_valid
                       else geometry.im2col(x[block]))
                if self.per_sample:
                    # dWᵀ = Σ_n col_n · dy_nᵀ: per-sample products, then their sum
                    by_sample = self._by_sample(col, block)
                    grad_t = self._buffers.get("weight_grad_by_sample", (
                        self.blocks[0].stop, group_in, group_out), geometry.dtype)[:size]
                    for g_out, g_in in self.groups:
                        blas.matmul(by_sample[:, g_in], dy[block, g_out].transpose(0, 2, 1),
                                    out=grad_t)
                        weight_diff[g_out] += grad_t.sum(axis=0).T
                else:
                    # dWᵀ = col · dyᵀ, per group: OpenBLAS runs this long-inner-dimension
                    # product 20–40% faster than dy · colᵀ; the result is only a weight's size
                    grad_t = self._buffers.get("weight_grad_t", (group_in, group_out),
                                               geometry.dtype)
                    columns = slice(block.start * self.pixels, block.stop * self.pixels)
                    for g_out, g_in in self.groups:
                        blas.matmul(col[g_in], rows[g_out, columns].T, out=grad_t)
                        weight_diff[g_out] += grad_t.T
            if need_bottom:
                # dy of the block with the batch innermost, (num_output, OH·OW·n), so that
                # dcol comes out batch-last too and col2im adds long contiguous runs
                flat = self._buffers.get("rows_batch_last", (dy.size,), geometry.dtype)
                batch_last = flat[:p.num_output * size * self.pixels].reshape(p.num_output, -1)
                threads.copyto(batch_last.reshape(p.num_output, self.pixels, size),
                               dy[block].transpose(1, 2, 0))
                # the column buffer is free once dW is done: dcol overwrites it
                dcol = geometry.col_buffer(size)
                self._col_valid = False
                for g_out, g_in in self.groups:
                    blas.matmul(weight[g_out].T, batch_last[g_out], out=dcol[g_in])
                geometry.col2im_batch_last(dcol, bottom[0].diff[block])


@register_layer("Deconvolution")
class Deconvolution(_ConvolutionBase):
    """Transposed convolution: the adjoint of Convolution with the same parameters.

    x: (N, C, H, W); W: (C, num_output/group, kh, kw) (Caffe's layout); b: (num_output,);
    y: (N, num_output, OH, OW), ``OH = s(H − 1) + d(k − 1) + 1 − 2p``;
    ``y = col2im(Wᵀ · x) + b``, so ``⟨conv_W(z), x⟩ = ⟨z, deconv_W(x)⟩`` for a Convolution
    from num_output to C channels with the same kernel, stride, pad, dilation and group.
    """

    def weight_shape(self):
        p = self.params
        return (self.channels, p.num_output // p.group, *self.kernel)

    def reshape(self, bottom, top):
        n, _, h, w = self._bottom_shape(bottom)
        out_h, out_w = (deconv_output_size(size, *args) for size, args in
                        zip((h, w), zip(self.kernel, self.stride, self.pad, self.dilation)))
        if out_h <= 0 or out_w <= 0:
            raise self.error(f"output size {out_h}×{out_w} is not positive: pad {self.pad[0]}×"
                             f"{self.pad[1]} is too large for input {h}×{w} and kernel "
                             f"{self.kernel[0]}×{self.kernel[1]}",
                             field=_field(self.params, "pad", "pad_h"))
        dtype = bottom[0].data.dtype
        geometry = self._im2col_for((n, self.params.num_output, out_h, out_w), dtype)
        assert (geometry.out_h, geometry.out_w) == (h, w)
        # the Convolution from this layer's top back to its bottom
        self.geometry = ConvGeometry(n, self.params.num_output, out_h, out_w, h, w, self.kernel,
                                     self.stride, self.pad, self.params.group, self.channels,
                                     dtype)
        top[0].reshape((n, self.params.num_output, out_h, out_w))

    @property
    def method(self) -> str:
        """``dnnl`` or ``columns`` (``method_choice.deconvolution_method``)."""
        return method_choice.deconvolution_method(self.geometry)

    def _bottom_rows(self, bottom):
        """The bottom as (C, N·H·W), the layout the product needs."""
        geometry = self.im2col
        rows = self._buffers.get("bottom_rows", (self.channels, geometry.columns),
                                 geometry.dtype)
        np.copyto(rows.reshape(self.channels, geometry.n, -1),
                  bottom[0].data.reshape(geometry.n, self.channels, -1).transpose(1, 0, 2))
        return rows

    def _add_bias(self, y):
        bias = self.blobs[1].data.reshape(1, -1, 1, 1)
        parallel_for(lambda part: np.add(y[part], bias, out=y[part]), split(len(y)),
                     elements=y.size)

    def forward(self, bottom, top):
        p, geometry = self.params, self.im2col
        if self.method == "dnnl":
            # forward is the backward-data pass of the Convolution from top to bottom
            plan = self._dnnl_plan(top[0].shape, bottom[0].shape, False, training=True)
            plan.backward_data(bottom[0].data, self.blobs[0].data, top[0].data)
            if p.bias_term:
                self._add_bias(top[0].data)
            return
        x = self._bottom_rows(bottom)
        weight = self.blobs[0].data.reshape(self.channels, -1)
        dcol = geometry.col_buffer()
        for g_in, g_col in zip(self._group_rows(self.channels), self._group_rows(geometry.rows)):
            blas.matmul(weight[g_in].T, x[g_in], out=dcol[g_col])
        geometry.col2im(dcol, top[0].data)
        if p.bias_term:
            top[0].data += self.blobs[1].data.reshape(1, -1, 1, 1)

    def backward(self, top, propagate_down, bottom):
        p, geometry = self.params, self.im2col
        dy = top[0].diff
        if p.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3))
        if not (self.param_propagate_down[0] or propagate_down[0]):
            return
        if self.method == "dnnl":
            x = bottom[0].data
            plan = self._dnnl_plan(dy.shape, x.shape, False, training=True)
            if self.param_propagate_down[0]:
                dweight, weight_sum = self._gradient_target(0, "weight_grad")
                plan.backward_weights(dy, x, dweight, None)
                if weight_sum is not None:
                    weight_sum += dweight
            if propagate_down[0]:
                plan.forward(dy, self.blobs[0].data, None, bottom[0].diff)
            return
        col = geometry.im2col(dy)
        groups = list(zip(self._group_rows(self.channels), self._group_rows(geometry.rows)))
        if self.param_propagate_down[0]:
            x = self._bottom_rows(bottom)
            grad = self._buffers.get("weight_grad", (self.channels, geometry.rows // p.group),
                                     geometry.dtype)
            for g_in, g_col in groups:
                blas.matmul(x[g_in], col[g_col].T, out=grad[g_in])
            self.blobs[0].diff.reshape(self.channels, -1)[...] += grad
        if propagate_down[0]:
            weight = self.blobs[0].data.reshape(self.channels, -1)
            dx = self._buffers.get("bottom_diff_rows", (self.channels, geometry.columns),
                                   geometry.dtype)
            for g_in, g_col in groups:
                blas.matmul(weight[g_in], col[g_col], out=dx[g_in])
            np.copyto(bottom[0].diff.reshape(geometry.n, self.channels, -1),
                      dx.reshape(self.channels, geometry.n, -1).transpose(1, 0, 2))


@register_layer("Pooling")
class Pooling(Layer):
    """MAX or AVE pooling over kh×kw windows (Caffe's PoolingLayer).

    x: (N, C, H, W) -> y: (N, C, OH, OW), OH from ``pool_output_size`` (ceil by default).
    MAX: ``y = max`` over the window's pixels inside the image (padding never wins; ties go
    to the first pixel in row-major order, as Caffe). AVE: the sum over the window's
    pixels inside the image divided by Caffe's ``pool_size = (min(h0 + kh, H + ph) − h0) ·
    (min(w0 + kw, W + pw) − w0)``, ``h0 = oh·s − ph``: padding counts, the ceil overhang
    beyond the padding does not. ``global_pooling`` pools each whole channel to 1×1.
    A second top (MAX only) receives Caffe's mask: the flat index ``h·W + w`` of each max.
    """

    class Params(WindowParams):
        pool: Literal["MAX", "AVE", "STOCHASTIC"] = "MAX"
        global_pooling: bool = False
        round_mode: Literal["CEIL", "FLOOR"] = "CEIL"

    min_bottoms = max_bottoms = 1
    min_tops = 1
    max_tops = 2
    # whether the bottom and the top hold oneDNN's blocked layout (as Convolution's)
    blocked = (False, False)

    def setup(self, bottom, top):
        p = self.params
        if p.pool == "STOCHASTIC":
            # Caffe itself has STOCHASTIC pooling only on the GPU (its CPU path is
            # NOT_IMPLEMENTED), so a CPU framework offers MAX and AVE.
            raise self.error("STOCHASTIC pooling is not available (Caffe implements it on the "
                             "GPU only); use MAX or AVE", field="pool")
        if len(top) == 2 and p.pool != "MAX":
            raise self.error("a second top (the argmax mask) exists only for pool: MAX",
                             field="top")
        self.stride = spatial_pair(p, "stride", default=1)
        self.pad = spatial_pair(p, "pad", default=0)
        if p.global_pooling:
            given = [f for f in ("kernel_size", "kernel_h", "kernel_w")
                     if getattr(p, f) is not None]
            if given:
                raise self.error("global_pooling takes the whole image as the kernel; do not "
                                 "give a kernel size", field=given[0])
            if self.stride != (1, 1) or self.pad != (0, 0):
                raise self.error("global_pooling needs stride 1 and pad 0",
                                 field="stride" if self.stride != (1, 1) else "pad")
        else:
            self.kernel = spatial_pair(p, "kernel_size", field_h="kernel_h", field_w="kernel_w")
            if min(self.kernel) <= 0:
                raise self.error(f"kernel_size must be positive, got {self.kernel}",
                                 field=_field(p, "kernel_size", "kernel_h"))
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                raise self.error(f"pad {self.pad[0]}×{self.pad[1]} must be smaller than the "
                                 f"kernel {self.kernel[0]}×{self.kernel[1]} (Caffe's rule)",
                                 field=_field(p, "pad", "pad_h"))
        if min(self.stride) <= 0:
            raise self.error(f"stride must be positive, got {self.stride}",
                             field=_field(p, "stride", "stride_h"))
        if min(self.pad) < 0:
            raise self.error(f"pad must be non-negative, got {self.pad}",
                             field=_field(p, "pad", "pad_h"))
        self._buffers = Buffers()
        self._shape = None

    def reshape(self, bottom, top):
        p = self.params
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"bottom must be 4-d (N, C, H, W), got shape {shape}", field="bottom")
        n, c, h, w = shape
        if p.global_pooling:
            self.kernel = (h, w)
        if h + 2 * self.pad[0] < self.kernel[0] or w + 2 * self.pad[1] < self.kernel[1]:
            raise self.error(f"kernel {self.kernel[0]}×{self.kernel[1]} is larger than the padded "
                             f"input {h + 2 * self.pad[0]}×{w + 2 * self.pad[1]}",
                             field=_field(p, "kernel_size", "kernel_h"))
        clip = self.pad != (0, 0)
        ceil = p.round_mode == "CEIL"
        out_h = pool_output_size(h, self.kernel[0], self.stride[0], self.pad[0], ceil, clip)
        out_w = pool_output_size(w, self.kernel[1], self.stride[1], self.pad[1], ceil, clip)
        for blob in top:
            blob.reshape((n, c, out_h, out_w))
        if self._shape != (shape, out_h, out_w) and not p.global_pooling:
            self._shape = (shape, out_h, out_w)
            self._plan(n * c, h, w, out_h, out_w, bottom[0].data.dtype)
        self._geometry = (shape, (n, c, out_h, out_w), bottom[0].data.dtype, len(top) == 2)

    @property
    def _method(self) -> tuple[str, str | None]:
        return self._method_for(self.blocked[0])

    def _method_for(self, blocked_source: bool) -> tuple[str, str | None]:
        if self.params.global_pooling and not blocked_source:
            return "phases", None       # a mean or max per channel: numpy's reduction
        x_shape, y_shape, dtype, mask = self._geometry
        return method_choice.pooling_method(self.params.pool, x_shape, y_shape, self.kernel,
                                      self.stride, self.pad, dtype, mask=mask)

    @property
    def method(self) -> str:
        """``dnnl`` or ``phases`` (``method_choice.pooling_method``; global pooling:
        ``phases``, unless its bottom is in the blocked layout)."""
        return self._method[0]

    @property
    def runs_blocked(self) -> bool:
        """Whether the forward reads and writes blobs in the blocked layout now: an inference
        forward on oneDNN (one top: Caffe's mask top stays with numpy)."""
        return self.inference and self._method_for(True)[0] == "dnnl"

    def blocked_kernels(self, source: bool, result: bool) -> bool:
        """Whether oneDNN runs this inference forward with the bottom (``source``) and the
        top (``result``) in the blocked layout on a kernel of its own (see Convolution's)."""
        if not self.runs_blocked:
            return False
        x_shape, y_shape = self._geometry[:2]
        plan = self._dnnl_plan(x_shape, y_shape, training=False, blocked=(source, result))
        return not any(name.startswith("ref") for name in plan.implementations())

    def _dnnl_plan(self, x_shape, y_shape, training: bool = True, relu: float | None = None,
                   blocked: tuple[bool, bool] | None = None):
        """oneDNN's pooling for these shapes and the thread count, kept while they stay: a
        ``training`` plan keeps MAX's indices in a workspace for backward, an inference
        plan keeps nothing (and may rectify its result, ``relu``; ``blocked``: whether
        its bottom and its top are in the blocked layout, by default ``self.blocked``)."""
        if blocked is None:
            blocked = (False, False) if training else self.blocked
        algorithm = self._method_for(blocked[0])[1]
        key = (tuple(x_shape), tuple(y_shape), threads.num_threads(), algorithm, training, relu,
               blocked)
        if getattr(self, "_dnnl_key", None) != key:
            self._dnnl = dnnl.PoolingPlan(x_shape, y_shape, self.kernel, self.stride,
                                          self.pad, algorithm, training=training, relu=relu,
                                          blocked_source=blocked[0], blocked_result=blocked[1])
            self._dnnl_key = key
        return self._dnnl

    def forward_with_relu(self, bottom, top, negative_slope: float) -> bool:
        """The forward followed by an in-place ReLU of ``negative_slope`` in one pass, where
        oneDNN pools in inference (a post-op); False (nothing done) elsewhere."""
        if not (self.inference and self.method == "dnnl" and len(top) == 1):
            return False
        x, y = bottom[0].data, top[0].data
        self._dnnl_plan(x.shape, y.shape, training=False, relu=negative_slope).forward(x, y)
        self._forwarded = None
        self.last_forward = "dnnl inference + ReLU" + _blocked_words(self.blocked)
        return True

    def _plan(self, images, h, w, out_h, out_w, dtype):
        """The phase layout, the blocks of images, AVE's divisors and the empty windows."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        # padding never wins a MAX (Caffe compares image pixels only) and adds 0 to an AVE
        fill = -np.inf if self.params.pool == "MAX" else 0
        self.windows = PoolingWindows(images, h, w, self.kernel, self.stride, self.pad,
                                      out_h, out_w, fill, dtype)
        self._image_bytes = sh * sw * self.windows.cells * np.dtype(dtype).itemsize
        start_h = np.arange(out_h) * sh - ph
        start_w = np.arange(out_w) * sw - pw
        size_h = np.minimum(start_h + kh, h + ph) - start_h
        size_w = np.minimum(start_w + kw, w + pw) - start_w
        pool_size = np.outer(size_h, size_w)
        # AVE's 1 / pool_size on the wide grid (0 on the extra cells and on windows wholly
        # beyond the image, which average to 0 as in Caffe)
        inverse = np.zeros((self.windows.cells_h, self.windows.cells_w), dtype)
        inverse[:out_h, :out_w] = np.where(pool_size > 0, 1.0 / np.maximum(pool_size, 1), 0)
        self.inv_pool_size = inverse
        self.uniform_size = bool(np.all(pool_size == pool_size.flat[0]))
        # windows with no pixel in the image (kernel < stride): Caffe's -FLT_MAX and mask -1
        inside_h = (start_h + kh > 0) & (start_h < h)
        inside_w = (start_w + kw > 0) & (start_w < w)
        covered = np.outer(inside_h, inside_w)
        self.empty_windows = None if covered.all() else ~covered
        self.window_start = (start_h, start_w)

    @property
    def blocks(self) -> list[slice]:
        """Blocks of images whose phases fit in the cache, processed in parallel."""
        return threads.blocks(self.windows.images, self._image_bytes, kernels.CACHE_BLOCK_BYTES)

    # ----- forward -----
    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        self.last_forward = self.method
        if self.method == "dnnl":
            self._dnnl_plan(x.shape, y.shape, training=not self.inference).forward(x, y)
            # the plan whose workspace backward reads (none after an inference forward)
            self._forwarded = None if self.inference else self._dnnl_key
            if self.inference:
                self.last_forward += _blocked_words(self.blocked)
        else:
            self._forward_numpy(x, y, keep_argmax=not self.inference or len(top) == 2)
        if len(top) == 2:
            self._write_mask(x.shape, top[1].data)

    def _forward_numpy(self, x, y, keep_argmax: bool):
        """MAX or AVE on the phases; MAX's window indices kept (``self.argmax``) for
        backward or the mask top only with ``keep_argmax``."""
        self._forwarded = None
        self._argmax_kept = keep_argmax
        if self.params.global_pooling:
            self._forward_global(x, y, keep_argmax)
        else:
            windows = self.windows
            images = x.reshape(-1, windows.height, windows.width)
            outputs = y.reshape(-1, windows.out_h, windows.out_w)
            if self.params.pool == "MAX":
                if keep_argmax:
                    self.argmax = windows.wide("argmax", self._index_type())
                    run = self._forward_max
                else:
                    run = self._forward_max_only
            else:
                run = self._forward_ave
            parallel_for(lambda block: run(images[block], outputs[block], block), self.blocks,
                         elements=x.size)

    def _forward_global(self, x, y, keep_argmax: bool):
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if self.params.pool == "MAX" and not keep_argmax:
            np.max(flat, axis=2, out=y.reshape(flat.shape[:2]))
        elif self.params.pool == "MAX":
            self.argmax = flat.argmax(axis=2)
            y.reshape(self.argmax.shape)[...] = np.take_along_axis(
                flat, self.argmax[..., None], axis=2)[..., 0]
        else:
            np.mean(flat, axis=2, out=y.reshape(flat.shape[:2]))

    def _runs(self, block, *names_and_types):
        """Flat views of the first ``run_length`` wide cells of ``block`` in named buffers."""
        windows = self.windows
        length = windows.run_length(block)
        return [windows.wide(name, dtype)[block].reshape(-1)[:length]
                for name, dtype in names_and_types]

    def _forward_max(self, x, y, block):
        windows = self.windows
        phases = windows.load(x, block)
        index_type = self.argmax.dtype
        best, greater, chosen = self._runs(block, ("best", y.dtype), ("greater", np.bool_),
                                           ("chosen", index_type))
        argmax = self.argmax[block].reshape(-1)[:best.size]
        # Branch-free updates (masked copies are slow on random data): offsets come in
        # increasing k, so where a window value is strictly greater (the first maximum in
        # row-major order keeps the place, as Caffe), k is also the largest index so far.
        # Padding holds -inf: it never wins over a pixel.
        (first_k, a, b, offset), *rest = windows.taps
        np.copyto(best, phases[a, b].reshape(-1)[offset:offset + best.size])
        argmax.fill(first_k)
        for k, a, b, offset in rest:
            window = phases[a, b].reshape(-1)[offset:offset + best.size]
            np.greater(window, best, out=greater)
            np.maximum(best, window, out=best)
            np.multiply(greater, index_type.type(k), out=chosen)
            np.maximum(argmax, chosen, out=argmax)
        np.copyto(y, windows.wide("best", y.dtype)[block, :windows.out_h, :windows.out_w])
        if self.empty_windows is not None:
            y[:, self.empty_windows] = np.finfo(y.dtype).min

    def _fold_taps(self, x, block, dtype, combine):
        """Every window's taps of ``x`` folded with ``combine`` (``np.maximum``, ``np.add``)
        into the ``best`` run; returns it as (block, out_h, out_w) windows."""
        windows = self.windows
        phases = windows.load(x, block)
        (folded,) = self._runs(block, ("best", dtype))
        (_, a, b, offset), *rest = windows.taps
        np.copyto(folded, phases[a, b].reshape(-1)[offset:offset + folded.size])
        for _, a, b, offset in rest:
            combine(folded, phases[a, b].reshape(-1)[offset:offset + folded.size], out=folded)
        return windows.wide("best", dtype)[block, :windows.out_h, :windows.out_w]

    def _forward_max_only(self, x, y, block):
        """MAX without the indices of the maxima (nothing for a backward to read)."""
        np.copyto(y, self._fold_taps(x, block, y.dtype, np.maximum))
        if self.empty_windows is not None:
            y[:, self.empty_windows] = np.finfo(y.dtype).min

    def _index_type(self):
        return np.dtype(np.uint8 if self.kernel[0] * self.kernel[1] <= 256 else np.int32)

    def _forward_ave(self, x, y, block):
        windows = self.windows
        sums = self._fold_taps(x, block, y.dtype, np.add)
        if self.uniform_size:
            np.multiply(sums, self.inv_pool_size[0, 0], out=y)
        else:
            np.multiply(sums, self.inv_pool_size[:windows.out_h, :windows.out_w], out=y)

    def _write_mask(self, shape, mask):
        """Caffe's top_mask: the flat input index ``h·W + w`` of each window's maximum."""
        width = shape[3]
        if self.params.global_pooling:
            mask[...] = self.argmax.reshape(mask.shape)
            return
        windows = self.windows
        argmax = self.argmax[:, :windows.out_h, :windows.out_w].reshape(mask.shape)
        kw = self.kernel[1]
        start_h, start_w = self.window_start
        rows = start_h[:, None] + argmax // kw
        cols = start_w[None, :] + argmax % kw
        np.add(rows * width, cols, out=mask, casting="unsafe")
        if self.empty_windows is not None:
            mask[..., self.empty_windows] = -1                      # Caffe's "no max"

    # ----- backward -----
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.method == "dnnl":
            plan = self._dnnl_plan(dx.shape, dy.shape)
            if getattr(self, "_forwarded", None) != self._dnnl_key:   # MAX's indices
                plan.forward(bottom[0].data, self._buffers.get("top", dy.shape, dy.dtype))
                self._forwarded = self._dnnl_key
            plan.backward(dy, dx)
            return
        if self.params.pool == "MAX" and not getattr(self, "_argmax_kept", False):
            # the forward kept no indices (inference): find them again, into a scratch top
            self._forward_numpy(bottom[0].data, self._buffers.get("top", dy.shape, dy.dtype),
                                keep_argmax=True)
        if self.params.global_pooling:
            flat_dx = dx.reshape(dx.shape[0], dx.shape[1], -1)
            flat_dy = dy.reshape(dx.shape[0], dx.shape[1], 1)
            if self.params.pool == "MAX":
                flat_dx.fill(0)
                np.put_along_axis(flat_dx, self.argmax[..., None], flat_dy, axis=2)
            else:
                np.multiply(flat_dy, 1.0 / flat_dx.shape[2], out=flat_dx)
            return
        windows = self.windows
        top_diffs = dy.reshape(-1, windows.out_h, windows.out_w)
        bottom_diffs = dx.reshape(-1, windows.height, windows.width)
        # dy on the wide grid: its extra cells are zeroed once, at allocation, and stay 0
        wide_dy = windows.wide("top_diff", dy.dtype, fill=0)

        def run(block):
            np.copyto(wide_dy[block, :windows.out_h, :windows.out_w], top_diffs[block])
            routed, share, picked = self._runs(block, ("top_diff", dy.dtype),
                                               ("share", dy.dtype), ("greater", np.bool_))
            if self.params.pool == "MAX":
                argmax = self.argmax[block].reshape(-1)[:routed.size]
            else:
                scale = self.inv_pool_size[0, 0] if self.uniform_size else self.inv_pool_size
                np.multiply(wide_dy[block], scale, out=windows.wide("share", dy.dtype)[block])
            phases = windows.phases("bottom_diff")[:, :, block]
            # A phase's first kernel offset is (a, b) itself, at offset 0: it writes the
            # phase's computed run (the tail beyond it is zeroed), later offsets add to it.
            written = np.zeros(phases.shape[:2], bool)
            for k, a, b, offset in windows.taps:
                flat = phases[a, b].reshape(-1)
                target = flat[offset:offset + routed.size]
                first = not written[a, b]
                if first:
                    assert offset == 0, "offsets come in row-major order"
                    flat[routed.size:] = 0
                    written[a, b] = True
                if self.params.pool == "MAX":
                    np.equal(argmax, k, out=picked)
                    np.multiply(routed, picked, out=target if first else share)
                    if not first:
                        np.add(target, share, out=target)
                elif first:
                    np.copyto(target, share)
                else:
                    np.add(target, share, out=target)
            phases[~written] = 0              # phases no window reads (kernel < stride)
            windows.store(phases, bottom_diffs[block])

        parallel_for(run, self.blocks, elements=dx.size)


@register_layer("SPP")
class SPP(Layer):
    """Spatial pyramid pooling (Caffe's SPP): level l = 0 … pyramid_height−1 pools the
    image into 2^l × 2^l bins and the levels are flattened and concatenated.

    x: (N, C, H, W) → (N, C·Σ_l bins_l) where bins_l is the output of a Pooling with Caffe's
    bin geometry: ``kernel = ceil(H / 2^l)``, ``stride = kernel``,
    ``pad = (kernel·2^l − H + 1) // 2`` (likewise for W). With ``pyramid_height: 1`` the one
    level's (N, C, 1, 1) is the output, unflattened, as in Caffe.
    """

    class Params(LayerParams):
        pyramid_height: int = Field(gt=0)
        pool: Literal["MAX", "AVE", "STOCHASTIC"] = "MAX"

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        if self.params.pool == "STOCHASTIC":
            raise self.error("STOCHASTIC pooling is not available (Caffe implements it on the "
                             "GPU only); use MAX or AVE", field="pool")
        self._image = None

    @staticmethod
    def level_geometry(level: int, height: int, width: int):
        """Caffe's (kernel, pad) pair of pyramid level ``level`` for an H×W image."""
        bins = 2 ** level
        kernel = (-(-height // bins), -(-width // bins))
        pad = ((kernel[0] * bins - height + 1) // 2, (kernel[1] * bins - width + 1) // 2)
        return kernel, pad

    def _levels(self, bottom):
        """One Pooling layer per level, made for this image size, with its scratch blobs."""
        n, c, h, w = bottom[0].shape
        if self._image == (h, w):
            return
        self._image = (h, w)
        self.levels = []
        for level in range(self.params.pyramid_height):
            kernel, pad = self.level_geometry(level, h, w)
            if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
                raise self.error(f"a {h}×{w} image is too small for pyramid level {level} "
                                 f"({2 ** level}×{2 ** level} bins: kernel {kernel[0]}×"
                                 f"{kernel[1]}, pad {pad[0]}×{pad[1]}; Caffe needs pad < kernel)",
                                 field="pyramid_height")
            params = Pooling.Params(pool=self.params.pool, kernel_h=kernel[0],
                                    kernel_w=kernel[1], stride_h=kernel[0], stride_w=kernel[1],
                                    pad_h=pad[0], pad_w=pad[1])
            spec = LayerSpec(name=f"{self.name}/level{level}", type="Pooling", params=params)
            pooling = Pooling(spec, phase=self.phase, dtype=self.dtype, rng=self.rng)
            source = Blob.sharing(bottom[0], name=f"{self.name}/level{level}/in")
            output = Blob((), self.dtype, name=f"{self.name}/level{level}/out")
            pooling.setup([source], [output])
            self.levels.append((pooling, source, output))

    def reshape(self, bottom, top):
        if len(bottom[0].shape) != 4:
            raise self.error(f"bottom must be 4-d (N, C, H, W), got shape "
                             f"{list(bottom[0].shape)}", field="bottom")
        self._levels(bottom)
        sizes = []
        for pooling, source, output in self.levels:
            pooling.reshape([source], [output])
            sizes.append(int(np.prod(output.shape[1:])))
        self.sizes = sizes
        n = bottom[0].shape[0]
        if self.params.pyramid_height == 1:
            top[0].reshape(self.levels[0][2].shape)
        else:
            top[0].reshape((n, sum(sizes)))

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        flat = top[0].data.reshape(n, -1)
        start = 0
        for (pooling, source, output), size in zip(self.levels, self.sizes):
            pooling.forward([source], [output])
            flat[:, start:start + size] = output.data.reshape(n, size)
            start += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        flat = top[0].diff.reshape(n, -1)
        total = np.zeros(bottom[0].shape, self.dtype)
        start = 0
        for (pooling, source, output), size in zip(self.levels, self.sizes):
            output.diff[...] = flat[:, start:start + size].reshape(output.shape)
            pooling.backward([output], [True], [source])
            total += source.diff
            start += size
        bottom[0].diff[...] = total


@register_layer("Im2col")
class Im2colLayer(Layer):
    """Caffe's Im2col layer: every kernel window as a column, laid out as an image.

    x: (N, C, H, W) → (N, C·kh·kw, OH, OW); channel ``(c·kh + i)·kw + j`` at (oh, ow) holds
    ``x[n, c, oh·s_h − p_h + i·d_h, ow·s_w − p_w + j·d_w]`` (0 in the padding). Takes
    Convolution's geometry fields (``convolution_param`` in Caffe's files); ``num_output``
    and the other fields of the weights are not used.
    """

    class Params(ConvolutionParams):
        num_output: int = 0

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        p = self.params
        self.kernel = spatial_pair(p, "kernel_size", field_h="kernel_h", field_w="kernel_w")
        self.stride = spatial_pair(p, "stride", default=1)
        self.pad = spatial_pair(p, "pad", default=0)
        self.dilation = spatial_pair(p, "dilation", default=1)
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 \
                or min(self.pad) < 0:
            raise self.error(f"kernel {self.kernel}, stride {self.stride}, dilation "
                             f"{self.dilation} must be positive and pad {self.pad} non-negative",
                             field="kernel_size")
        if p.axis not in (1, -3):
            raise self.error(f"only axis 1 (channels of NCHW) is supported, got {p.axis}",
                             field="axis")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"bottom must be 4-d (N, C, H, W), got shape {list(shape)}",
                             field="bottom")
        n, c, h, w = shape
        out_h = conv_output_size(h, self.kernel[0], self.stride[0], self.pad[0], self.dilation[0])
        out_w = conv_output_size(w, self.kernel[1], self.stride[1], self.pad[1], self.dilation[1])
        if out_h <= 0 or out_w <= 0:
            raise self.error(f"kernel {self.kernel[0]}×{self.kernel[1]} does not fit the padded "
                             f"input {h + 2 * self.pad[0]}×{w + 2 * self.pad[1]}",
                             field="kernel_size")
        self.columns = Im2col(shape, self.kernel, self.stride, self.pad, self.dilation, self.dtype)
        top[0].reshape((n, c * self.kernel[0] * self.kernel[1], out_h, out_w))

    def forward(self, bottom, top):
        col = self.columns.im2col(bottom[0].data)              # (C·kh·kw, N·OH·OW)
        rows, n = col.shape[0], bottom[0].shape[0]
        np.copyto(top[0].data, col.reshape(rows, n, *top[0].shape[2:]).transpose(1, 0, 2, 3))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            col = np.ascontiguousarray(top[0].diff.transpose(1, 0, 2, 3)).reshape(
                top[0].shape[1], -1)
            self.columns.col2im(col, bottom[0].diff)


def _blocked_words(blocked: tuple[bool, bool]) -> str:
    """How ``last_forward`` names a forward's blobs in the blocked layout."""
    source, result = blocked
    if source and result:
        return ", blocked in and out"
    return ", blocked in" if source else ", blocked out" if result else ""
