"""Normalization layers: BatchNorm, Scale, Bias, LRN, MVN (Caffe's semantics and defaults)."""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import ConfigError
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from ..threads import parallel_for, split
from .base import Layer

# BatchNorm and Scale run their passes over blocks of channels, one block after another
# while it stays in a core's cache (memory is read about once instead of once per pass),
# the blocks shared among the threads. The blocks depend on the shape only, not on the
# thread count, and a channel's sums run in the same order in any block (``_channel_sums``),
# so results are bitwise the same for any number of threads.
CHANNEL_BLOCK_BYTES = 512 << 10

_scratch = threading.local()


def _channel_blocks(view, itemsize: int) -> list[slice]:
    """Slices of the channels of an (N, C, S) view, about CHANNEL_BLOCK_BYTES each (one
    slice when S is 1, see ``_channel_sums``)."""
    n, channels, inner = view
    if inner == 1:
        return [slice(0, channels)]
    return split(channels, -(-n * channels * inner * itemsize // CHANNEL_BLOCK_BYTES))


def _channel_sums(block: np.ndarray) -> np.ndarray:
    """Σ over N and S of an (N, C', S) block, per channel: the N samples added one after
    the other, element by element, then a pairwise sum along each channel's S values.
    Neither order depends on C' (the blocks of ``_channel_blocks`` never hold a lone
    channel of one value per sample, which numpy would sum pairwise over N), so a
    channel's sum is the same in any block."""
    return block.sum(axis=0).sum(axis=1)


def _scratch_like(block: np.ndarray) -> np.ndarray:
    """A C-contiguous array of ``block``'s shape and dtype, the calling thread's own,
    reused from call to call (a block's temporary without an allocation per block)."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buffer = buffers.get(block.dtype)
    if buffer is None or buffer.size < block.size:
        buffer = buffers[block.dtype] = np.empty(block.size, block.dtype)
    return buffer[:block.size].reshape(block.shape)


def _canonical_axis(axis: int, ndim: int, layer: Layer, field: str = "axis") -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise layer.error(f"axis {axis} is out of range for a bottom with {ndim} axes", field=field)
    return axis % max(ndim, 1)


@register_layer("BatchNorm")
class BatchNorm(Layer):
    """Normalise each channel to zero mean and unit variance (Caffe's BatchNorm, no scale/shift).

    x: (N, C, ...) -> y of the same shape, statistics per channel over N and the spatial axes:
    ``y = (x − μ) / sqrt(σ² + eps)``. With batch statistics (TRAIN by default) μ and σ² are the
    batch mean and (biased) variance, and the three blobs are updated as Caffe does, with
    ``f = moving_average_fraction`` and m = N·H·W values per channel::

        blobs[2] = f·blobs[2] + 1                 (scale factor, shape (1,))
        blobs[0] = f·blobs[0] + μ                 (running mean sum, shape (C,))
        blobs[1] = f·blobs[1] + σ²·m/(m − 1)      (running unbiased variance sum, shape (C,))

    With ``use_global_stats`` (TEST by default) μ = blobs[0]/blobs[2], σ² = blobs[1]/blobs[2]
    (0 if blobs[2] is 0). The blobs are parameters (snapshots save them) that no solver
    updates: their lr_mult is forced to 0, and a non-zero one is an error, as in Caffe.
    Follow with a ``Scale`` layer (bias_term: true) for the learned γ and β.
    """

    class Params(LayerParams):
        use_global_stats: bool | None = None     # None: true in TEST, false in TRAIN
        moving_average_fraction: float = Field(default=0.999, ge=0, le=1)
        eps: float = Field(default=1e-5, gt=0)

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1
    allows_in_place = True

    def setup(self, bottom, top):
        p = self.params
        self.use_global_stats = (self.phase == "TEST" if p.use_global_stats is None
                                 else p.use_global_stats)
        for j, pspec in enumerate(self.spec.param):
            if pspec.lr_mult != 0:
                raise ConfigError(f"param {j} has lr_mult {pspec.lr_mult:g}: the BatchNorm "
                                  f"statistics are not learned (leave param out or give "
                                  f"lr_mult 0)", layer=self.name, field="param")
        channels = self._channels(bottom[0].shape)
        for shape, name in (((channels,), "mean"), ((channels,), "variance"),
                            ((1,), "scale factor")):
            self.make_param(shape, None, name)
        self.fixed_params = {0, 1, 2}
        self.x_norm = None          # x̂ of the last forward with batch statistics

    @staticmethod
    def _channels(shape) -> int:
        return 1 if len(shape) == 1 else shape[1]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) == 0:
            raise self.error(f"bottom '{bottom[0].name}' is a scalar; BatchNorm needs (N, C, ...)",
                             field="bottom")
        channels = self._channels(shape)
        if channels != self.blobs[0].shape[0]:
            raise self.error(f"bottom '{bottom[0].name}' has {channels} channels but the "
                             f"statistics were made for {self.blobs[0].shape[0]}", field="bottom")
        self.view = (shape[0], channels, int(np.prod(shape[2:])))
        if top[0] is not bottom[0]:
            top[0].reshape(shape)

    def global_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ, σ²) from the stored sums: ``blobs[0]/blobs[2]``, ``blobs[1]/blobs[2]`` (0 when
        blobs[2] is 0, as Caffe). The forward with global statistics is the per-channel
        affine map ``y = (x − μ) / sqrt(σ² + eps)``; a net built for inference folds it
        into the convolution before this layer with these values."""
        stored = self.blobs[2].data[0]
        factor = 0.0 if stored == 0 else 1.0 / stored
        return self.blobs[0].data * factor, self.blobs[1].data * factor

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        if self.use_global_stats:
            mean, variance = self.global_statistics()
        else:
            self._forward_batch(x, top[0].data.reshape(self.view))
            return
        self.inv_std = (1.0 / np.sqrt(variance + self.params.eps)).astype(self.dtype)
        y = top[0].data.reshape(self.view)
        np.subtract(x, mean[:, None].astype(self.dtype), out=y)
        y *= self.inv_std[:, None]

    def _forward_batch(self, x, y, scale=None, bias=None, rectify=False):
        """Batch statistics, block by block of channels of ``x`` and ``y`` (N, C, S): μ,
        ``y = x − μ``, σ² = mean(y²), ``y *= 1/sqrt(σ² + eps)``, and x̂ = y kept for backward
        (apart from top: an in-place Scale/ReLU after us overwrites top's data); then the
        running sums. With ``scale`` (and ``bias``), per channel, the block then becomes
        ``y = x̂·scale (+ bias)``, what a Scale layer after us computes, while in cache, and
        with ``rectify`` ``y = max(y, 0)`` (a ReLU after that)."""
        if self.x_norm is None or self.x_norm.shape != x.shape:
            self.x_norm = np.empty_like(x)
        channels = x.shape[1]
        mean, variance = np.empty(channels, x.dtype), np.empty(channels, x.dtype)
        self.inv_std = np.empty(channels, x.dtype)
        eps = self.params.eps
        m = x.shape[0] * x.shape[2]

        def normalize(block):
            x_block, y_block, kept = x[:, block], y[:, block], self.x_norm[:, block]
            mu = _channel_sums(x_block) / m
            np.subtract(x_block, mu[:, None], out=y_block)      # in place: x read first
            np.square(y_block, out=kept)
            sigma2 = _channel_sums(kept) / m
            inv_std = (1.0 / np.sqrt(sigma2 + eps)).astype(x.dtype)
            np.multiply(y_block, inv_std[:, None], out=kept)
            mean[block], variance[block], self.inv_std[block] = mu, sigma2, inv_std
            if scale is None:
                np.copyto(y_block, kept)
            else:                               # y = x̂·s straight from x̂, no copy of x̂
                np.multiply(kept, scale[block, None], out=y_block)
                if bias is not None:
                    y_block += bias[block, None]
                if rectify:
                    np.maximum(y_block, 0, out=y_block)

        parallel_for(normalize, _channel_blocks(x.shape, x.itemsize), elements=x.size)
        f = self.params.moving_average_fraction
        self.blobs[2].data *= f
        self.blobs[2].data += 1
        self.blobs[0].data *= f
        self.blobs[0].data += mean
        self.blobs[1].data *= f
        self.blobs[1].data += variance * (m / (m - 1) if m > 1 else 1.0)

    def _scale_fits(self, scale_layer) -> bool:
        """Whether ``scale_layer`` (which the net found working in place on our top) scales
        by a learned per-channel blob over our (N, C, S) view, and we use batch statistics."""
        return (not self.use_global_stats and not scale_layer.frozen
                and len(scale_layer.blobs) >= 1 and scale_layer.bias_index in (None, 1)
                and getattr(scale_layer, "view", None) == self.view
                and scale_layer.blobs[0].shape == (self.view[1],))

    def forward_with_scale(self, bottom, top, scale_layer, rectify: bool = False) -> bool:
        """This forward (batch statistics) and that of the one-bottom ``Scale`` working in
        place on our top right after (and with ``rectify`` of the in-place ReLU without
        negative slope after that), in one sweep over the blocks of channels (the same
        values as the layers one after the other; the Scale's backward reads our x̂ as its
        x). False, nothing done, where that does not apply (global statistics, a frozen
        net, a Scale of another shape or with two bottoms): the net then runs the layers
        one by one."""
        if not self._scale_fits(scale_layer):
            return False
        scale = scale_layer.blobs[0].data.reshape(-1)
        index = scale_layer.bias_index
        bias = None if index is None else scale_layer.blobs[index].data.reshape(-1)
        self._forward_batch(bottom[0].data.reshape(self.view), top[0].data.reshape(self.view),
                            scale, bias, rectify)
        scale_layer.x = self.x_norm
        return True

    def backward_with_scale(self, top, propagate_down, bottom, scale_layer,
                            rectify: bool = False) -> bool:
        """The backward of the in-place ``Scale`` right after us (and with ``rectify`` of
        the in-place ReLU without negative slope after it) and ours in one sweep over the
        blocks of channels, when we too work in place and that Scale's x is our x̂
        (``forward_with_scale`` or its ``kept_input``): per block, the ReLU's
        ``dy = dy·(y > 0)``, the Scale's sums and ``dx̂ = dy·s``, then our dx from dx̂,
        while the block is in cache (the same values as the backwards one after the
        other, dy and x̂ read from memory once instead of two or three times). False,
        nothing done, where that does not apply: the net then runs the backwards."""
        x_norm = self.x_norm
        if (not propagate_down[0] or bottom[0] is not top[0] or self.use_global_stats
                or x_norm is None or scale_layer.x is None
                or scale_layer.x.shape != x_norm.shape
                or scale_layer.x.ctypes.data != x_norm.ctypes.data
                or not self._scale_fits(scale_layer)):
            return False
        dy = top[0].diff.reshape(self.view)
        y = top[0].data.reshape(self.view)
        scale = scale_layer.blobs[0].data.reshape(-1)
        index = scale_layer.bias_index
        need_scale = scale_layer.param_propagate_down[0]
        need_bias = index is not None and scale_layer.param_propagate_down[index]
        d_scale = np.empty(self.view[1], dy.dtype) if need_scale else None
        d_bias = np.empty(self.view[1], dy.dtype) if need_bias else None

        def gradient(block):
            dy_block = dy[:, block]
            if rectify:
                np.multiply(dy_block, y[:, block] > 0, out=dy_block)
            scale_layer.block_gradient(dy_block, x_norm[:, block], scale[block], dy_block,
                                       block, d_scale, d_bias)
            self._block_gradient(dy_block, dy_block, block)       # dx̂ → dx, in place

        parallel_for(gradient, _channel_blocks(dy.shape, dy.itemsize), elements=dy.size)
        scale_layer.add_param_gradients(d_scale, d_bias)
        return True

    def kept_top(self) -> np.ndarray | None:
        """x̂ (N, C, S), the copy of top's data that the last forward with batch statistics
        wrote and backward reads, unchanged until the next forward; None with global
        statistics. (An in-place Scale right after uses it instead of a copy of its own.)"""
        return None if self.use_global_stats else self.x_norm

    def backward(self, top, propagate_down, bottom):
        """Batch statistics: ``dx = (dy − mean(dy) − x̂·mean(dy·x̂)) / sqrt(σ² + eps)``, means
        per channel over N and space, x̂ the normalized x; global statistics:
        ``dx = dy / sqrt(σ² + eps)``."""
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.view)
        dx = bottom[0].diff.reshape(self.view)
        if self.use_global_stats:
            np.multiply(dy, self.inv_std[:, None], out=dx)
            return

        def gradient(block):
            self._block_gradient(dy[:, block], dx[:, block], block)

        parallel_for(gradient, _channel_blocks(dy.shape, dy.itemsize), elements=dy.size)

    def _block_gradient(self, dy, dx, block: slice) -> None:
        """dx of the channels ``block`` from their dy (batch statistics; see ``backward``)."""
        m = dy.shape[0] * dy.shape[2]
        x_norm = self.x_norm[:, block]
        scratch = _scratch_like(dy)
        mean_dy = _channel_sums(dy) / m
        np.multiply(dy, x_norm, out=scratch)
        mean_dy_x = _channel_sums(scratch) / m
        np.multiply(x_norm, mean_dy_x[:, None], out=scratch)
        np.subtract(dy, scratch, out=dx)                # in place: dy read first
        dx -= mean_dy[:, None]
        dx *= self.inv_std[block, None]


class _AxisBroadcast(Layer):
    """Scale and Bias: a blob of shape ``x.shape[axis : axis + k]`` broadcast over x.

    The blob is bottom[1] (two-bottom form) or a learned parameter of shape
    ``x.shape[axis : axis + num_axes]`` (one-bottom form; ``num_axes: -1`` means up to the
    last axis, ``0`` a scalar). x is viewed as (outer, dim, inner) around those axes.
    """

    min_bottoms = 1
    max_bottoms = 2
    min_tops = max_tops = 1
    allows_in_place = True

    def _operand_shape_from_params(self, shape) -> tuple[int, ...]:
        p = self.params
        if p.num_axes < -1:
            raise ConfigError(f"num_axes must be -1 (all axes from axis on) or ≥ 0, got "
                              f"{p.num_axes}", layer=self.name, field="num_axes")
        axis = _canonical_axis(p.axis, len(shape), self)
        end = len(shape) if p.num_axes == -1 else axis + p.num_axes
        if end > len(shape):
            raise self.error(f"axis {p.axis} with num_axes {p.num_axes} runs past the "
                             f"{len(shape)} axes of bottom {shape}", field="num_axes")
        return tuple(shape[axis:end])

    def _operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        operand = self._operand(bottom).shape
        # Caffe: a scalar operand ignores axis
        axis = 0 if len(operand) == 0 else _canonical_axis(self.params.axis, len(shape), self)
        if tuple(shape[axis:axis + len(operand)]) != tuple(operand):
            raise self.error(f"{'bottom 1' if len(bottom) > 1 else 'the parameter'} has shape "
                             f"{operand}, which must equal bottom '{bottom[0].name}' {shape} "
                             f"from axis {axis} on", field="axis")
        self.view = (int(np.prod(shape[:axis])), int(np.prod(operand)),
                     int(np.prod(shape[axis + len(operand):])))
        if top[0] is not bottom[0]:
            top[0].reshape(shape)


@register_layer("Scale")
class Scale(_AxisBroadcast):
    """``y = x · s (+ b)``, s broadcast over x from ``axis`` (see ``_AxisBroadcast``).

    s is bottom[1] or the learned blobs[0] (``filler``, default constant 1); with
    ``bias_term`` a learned b of s's shape follows (``bias_filler``, default constant 0).
    Gradients: ``dx = dy·s``, ``ds = Σ dy·x``, ``db = Σ dy`` (sums over outer and inner).
    """

    class Params(LayerParams):
        axis: int = 1
        num_axes: int = 1
        filler: FillerSpec | None = None
        bias_term: bool = False
        bias_filler: FillerSpec | None = None

    def setup(self, bottom, top):
        p = self.params
        if len(bottom) == 1:
            shape = self._operand_shape_from_params(bottom[0].shape)
            self.make_param(shape, p.filler or FillerSpec(type="constant", value=1.0), "scale")
        else:
            shape = bottom[1].shape
        self.bias_index = len(self.blobs) if p.bias_term else None
        if p.bias_term:
            self.make_param(shape, p.bias_filler, "bias")
        self.x = None           # forward's x, for backward's ds (a copy when in place)
        self._copy = None       # this layer's own copy of x (in place)

    # set by the net before each forward of an in-place Scale right after a BatchNorm: a
    # copy of bottom's data that the BatchNorm keeps unchanged until its next forward
    # (``BatchNorm.kept_top``), or None
    kept_input: np.ndarray | None = None

    def forward(self, bottom, top):
        """Block by block of channels: x kept for ``ds`` (in place, where top overwrites
        it, a copy: ``kept_input`` when the net gives one, else this layer's own; nothing
        when frozen), then ``y = x·s (+ b)``."""
        x = bottom[0].data.reshape(self.view)
        y = top[0].data.reshape(self.view)
        scale = self._operand(bottom).data.reshape(-1)
        bias = None if self.bias_index is None else self.blobs[self.bias_index].data.reshape(-1)
        in_place = copy = top[0] is bottom[0]
        if self.frozen:             # a net built for inference has no backward: keep nothing
            self.x = None
            copy = False
        elif not in_place:
            self.x = x
        elif self.kept_input is not None and self.kept_input.size == x.size \
                and self.kept_input.dtype == x.dtype:
            self.x = self.kept_input.reshape(x.shape)
            copy = False
        else:
            if self._copy is None or self._copy.shape != x.shape:
                self._copy = np.empty_like(x)
            self.x = self._copy
        kept = self.x

        def run(block):
            x_block, y_block = x[:, block], y[:, block]
            if copy:
                np.copyto(kept[:, block], x_block)
            np.multiply(x_block, scale[block, None], out=y_block)
            if bias is not None:
                y_block += bias[block, None]

        parallel_for(run, _channel_blocks(x.shape, x.itemsize), elements=x.size)

    def backward(self, top, propagate_down, bottom):
        """``ds = Σ dy·x``, ``db = Σ dy`` and ``dx = dy·s`` block by block of channels (the
        sums of a block before its dx, which in place overwrites dy)."""
        dy = top[0].diff.reshape(self.view)
        two_bottoms = len(bottom) > 1
        need_scale = propagate_down[1] if two_bottoms else self.param_propagate_down[0]
        b = self.bias_index
        need_bias = b is not None and self.param_propagate_down[b]
        dx = bottom[0].diff.reshape(self.view) if propagate_down[0] else None
        scale = self._operand(bottom).data.reshape(-1)
        d_scale = np.empty(self.view[1], dy.dtype) if need_scale else None
        d_bias = np.empty(self.view[1], dy.dtype) if need_bias else None

        def run(block):
            x = self.x[:, block] if need_scale else None
            self.block_gradient(dy[:, block], x, scale[block],
                                None if dx is None else dx[:, block], block, d_scale, d_bias)

        parallel_for(run, _channel_blocks(dy.shape, dy.itemsize), elements=dy.size)
        if need_scale and two_bottoms:
            bottom[1].diff[...] = d_scale.reshape(bottom[1].shape)
            d_scale = None
        self.add_param_gradients(d_scale, d_bias)

    @staticmethod
    def block_gradient(dy, x, scale, dx, block: slice, d_scale, d_bias) -> None:
        """For the channels ``block`` of (N, C, S) views: ``d_bias[block] = Σ dy``,
        ``d_scale[block] = Σ dy·x`` (each where not None), then ``dx = dy·s`` (dx may be
        dy: the sums come first)."""
        if d_bias is not None:
            d_bias[block] = _channel_sums(dy)
        if d_scale is not None:
            d_scale[block] = _channel_sums(np.multiply(dy, x, out=_scratch_like(dy)))
        if dx is not None:
            np.multiply(dy, scale[:, None], out=dx)

    def add_param_gradients(self, d_scale, d_bias) -> None:
        """Add the per-channel sums of ``block_gradient`` to the learned s and b diffs."""
        if d_scale is not None:
            self.blobs[0].diff += d_scale.reshape(self.blobs[0].shape)
        if d_bias is not None:
            self.blobs[self.bias_index].diff += d_bias.reshape(self.blobs[self.bias_index].shape)


@register_layer("Bias")
class Bias(_AxisBroadcast):
    """``y = x + b``, b broadcast over x from ``axis``: bottom[1] or a learned blob
    (``filler``, default constant 0). Gradients: ``dx = dy``, ``db = Σ dy``."""

    class Params(LayerParams):
        axis: int = 1
        num_axes: int = 1
        filler: FillerSpec | None = None

    def setup(self, bottom, top):
        if len(bottom) == 1:
            self.make_param(self._operand_shape_from_params(bottom[0].shape),
                            self.params.filler, "bias")

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        np.add(x, self._operand(bottom).data.reshape(1, -1, 1),
               out=top[0].data.reshape(self.view))

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.view)
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff[...] = dy.sum(axis=(0, 2)).reshape(bottom[1].shape)
        elif self.param_propagate_down[0]:
            self.blobs[0].diff += dy.sum(axis=(0, 2)).reshape(self.blobs[0].shape)
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff


def _window_sum(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Sum over a centred window of odd ``size`` along ``axis``, zero beyond the edges.

    The window is symmetric, so this operator is its own adjoint (backward uses it too).
    """
    pad = (size - 1) // 2
    length = a.shape[axis]
    out = np.zeros_like(a)
    for offset in range(-pad, pad + 1):      # loop over window offsets, not elements
        lo, hi = max(0, -offset), min(length, length - offset)
        if lo >= hi:
            continue
        dst = [slice(None)] * a.ndim
        src = [slice(None)] * a.ndim
        dst[axis] = slice(lo, hi)
        src[axis] = slice(lo + offset, hi + offset)
        out[tuple(dst)] += a[tuple(src)]
    return out


@register_layer("LRN")
class LRN(Layer):
    """Local response normalisation, Caffe's formulas, x and y of shape (N, C, H, W).

    ACROSS_CHANNELS: ``s = k + α/n · Σ x²`` over the n = local_size channels centred on c;
    WITHIN_CHANNEL: ``s = 1 + α/n² · Σ x²`` over the n×n neighbourhood centred on (h, w)
    (Caffe builds it from AVE pooling with zero padding and a Power layer with shift 1, so
    ``k`` is not used there). Then ``y = x · s^(−β)`` and
    ``dx = dy · s^(−β) − (2αβ/n') · x · W(dy · y / s)``, W the same window sum, n' = n or n².
    """

    class Params(LayerParams):
        local_size: int = Field(default=5, gt=0)
        alpha: float = 1.0
        beta: float = 0.75
        norm_region: Literal["ACROSS_CHANNELS", "WITHIN_CHANNEL"] = "ACROSS_CHANNELS"
        k: float = 1.0

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        if self.params.local_size % 2 == 0:
            raise ConfigError(f"local_size must be odd (Caffe's LRN), got "
                              f"{self.params.local_size}", layer=self.name, field="local_size")

    def reshape(self, bottom, top):
        if len(bottom[0].shape) != 4:
            raise self.error(f"LRN needs a 4-d bottom (N, C, H, W); '{bottom[0].name}' has "
                             f"shape {bottom[0].shape}", field="bottom")
        top[0].reshape(bottom[0].shape)

    def _window(self, a: np.ndarray) -> np.ndarray:
        n = self.params.local_size
        if self.params.norm_region == "ACROSS_CHANNELS":
            return _window_sum(a, 1, n)
        return _window_sum(_window_sum(a, 2, n), 3, n)

    def _norm(self) -> tuple[float, float]:
        """(the constant added to the sum, the window size n' dividing α)."""
        n = self.params.local_size
        if self.params.norm_region == "ACROSS_CHANNELS":
            return self.params.k, float(n)
        return 1.0, float(n * n)

    def forward(self, bottom, top):
        x = bottom[0].data
        offset, size = self._norm()
        self.scale = self._window(x * x)
        self.scale *= self.params.alpha / size
        self.scale += offset
        np.multiply(x, np.power(self.scale, -self.params.beta), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.params
        _, size = self._norm()
        x, y, dy = bottom[0].data, top[0].data, top[0].diff
        window = self._window(dy * y / self.scale)
        bottom[0].diff[...] = (dy * np.power(self.scale, -p.beta)
                               - (2 * p.alpha * p.beta / size) * x * window)


@register_layer("MVN")
class MVN(Layer):
    """Mean-variance normalisation per sample and channel (or per sample: ``across_channels``).

    x (N, C, ...): ``z = x − mean(x)``; with ``normalize_variance``, ``y = z / (σ + eps)``,
    ``σ = sqrt(mean(z²))`` (Caffe adds eps to the standard deviation), else ``y = z``.
    Backward is the exact derivative:
    ``dx = (dy − mean(dy) − y·mean(dy·y)·(σ + eps)/σ) / (σ + eps)`` (Caffe drops the factor
    ``(σ + eps)/σ``, which is 1 up to eps/σ).
    """

    class Params(LayerParams):
        normalize_variance: bool = True
        across_channels: bool = False
        eps: float = Field(default=1e-9, ge=0)

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1
    allows_in_place = True

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2:
            raise self.error(f"MVN needs a bottom of at least 2 axes (N, C, ...); "
                             f"'{bottom[0].name}' has shape {shape}", field="bottom")
        groups = shape[0] if self.params.across_channels else shape[0] * shape[1]
        self.view = (groups, int(np.prod(shape)) // groups)
        if top[0] is not bottom[0]:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        y = top[0].data.reshape(self.view)
        np.subtract(x, x.mean(axis=1, keepdims=True), out=y)
        if self.params.normalize_variance:
            self.std = np.sqrt(np.square(y).mean(axis=1, keepdims=True))
            y /= self.std + self.params.eps
            self.y = y.copy()   # a later in-place layer may overwrite top

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.view)
        dx = dy - dy.mean(axis=1, keepdims=True)
        if self.params.normalize_variance:
            denominator = self.std + self.params.eps
            # a constant group has y = 0, so the ratio's value there does not matter
            ratio = np.divide(denominator, self.std, out=np.ones_like(self.std),
                              where=self.std > 0)
            dx -= self.y * (dy * self.y).mean(axis=1, keepdims=True) * ratio
            dx /= denominator
        bottom[0].diff.reshape(self.view)[...] = dx
