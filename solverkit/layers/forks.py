"""Layers of widely used Caffe forks: SegNet's Upsample, ShuffleNet's ShuffleChannel and
the depthwise fork's DepthwiseConvolution (each with its fork's fields and semantics)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..registry import register_layer
from ..spec.net import LayerParams
from .base import Layer
from .vision import Convolution, ConvolutionParams


@register_layer("Upsample")
class Upsample(Layer):
    """Max unpooling with the pooling's mask (SegNet's UpsampleLayer).

    Bottoms: x (N, C, H, W) and the mask of the same shape, the second top of a MAX
    ``Pooling`` (the flat index ``h·OW + w`` of each maximum in the pooled-from map). Top
    (N, C, OH, OW), zero but ``y[n, c].flat[mask[n, c, i]] = x[n, c, i]``. The size is
    ``upsample_h``/``upsample_w`` when given, else ``H·scale_h − pad_out_h`` (``scale``, or
    ``scale_h``/``scale_w``, default 2; ``pad_out_h`` takes 1 off an odd size and needs scale
    2). Backward: ``dx[n, c, i] = dy[n, c].flat[mask[n, c, i]]``.
    """

    class Params(LayerParams):
        scale: int | None = Field(None, gt=0, description="size factor (default 2)")
        scale_h: int | None = Field(None, gt=0)
        scale_w: int | None = Field(None, gt=0)
        pad_out_h: bool = Field(False, description="one row less (an odd size; scale 2)")
        pad_out_w: bool = Field(False, description="one column less (an odd size; scale 2)")
        upsample_h: int | None = Field(None, gt=0, description="the top's height (instead "
                                       "of the scale)")
        upsample_w: int | None = Field(None, gt=0, description="the top's width")

    min_bottoms = max_bottoms = 2
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        p = self.params
        if (p.upsample_h is None) != (p.upsample_w is None):
            raise self.error("give both upsample_h and upsample_w", field="upsample_h")
        if p.scale is not None and (p.scale_h is not None or p.scale_w is not None):
            raise self.error("give scale or scale_h/scale_w, not both", field="scale")
        if (p.scale_h is None) != (p.scale_w is None):
            raise self.error("give both scale_h and scale_w", field="scale_h")
        self.scale = (p.scale_h or p.scale or 2, p.scale_w or p.scale or 2)
        for name, pad, scale in (("pad_out_h", p.pad_out_h, self.scale[0]),
                                 ("pad_out_w", p.pad_out_w, self.scale[1])):
            if pad and scale != 2:
                raise self.error(f"{name} works with scale 2 only", field=name)

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        p = self.params
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"bottom must be 4-d (N, C, H, W), got shape {shape}",
                             field="bottom")
        if bottom[1].shape != shape:
            raise self.error(f"the mask '{bottom[1].name}' has shape {bottom[1].shape}, the "
                             f"data {shape}: they must match", field="bottom")
        if p.upsample_h is not None:
            out_h, out_w = p.upsample_h, p.upsample_w
        else:
            out_h = shape[2] * self.scale[0] - int(p.pad_out_h)
            out_w = shape[3] * self.scale[1] - int(p.pad_out_w)
        top[0].reshape((shape[0], shape[1], out_h, out_w))

    def _index(self, mask, plane):
        index = mask.reshape(mask.shape[0] * mask.shape[1], -1).astype(np.int64)
        bad = (index < 0) | (index >= plane) | (index != mask.reshape(index.shape))
        if np.any(bad):
            raise self.error(f"mask index {mask.reshape(index.shape)[bad][0]:g} is outside the "
                             f"{plane} cells of the upsampled map", field="bottom")
        return index

    def forward(self, bottom, top):
        n, c, out_h, out_w = top[0].shape
        self.index = self._index(bottom[1].data, out_h * out_w)
        y = top[0].data.reshape(n * c, out_h * out_w)
        y[...] = 0
        np.put_along_axis(y, self.index, bottom[0].data.reshape(n * c, -1), axis=1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            n, c = top[0].shape[:2]
            dy = top[0].diff.reshape(n * c, -1)
            bottom[0].diff.reshape(n * c, -1)[...] = np.take_along_axis(dy, self.index, axis=1)


@register_layer("ShuffleChannel")
class ShuffleChannel(Layer):
    """Interleave channel groups (ShuffleNet's ShuffleChannelLayer).

    x: (N, C, ...) with C = g·k -> y of the same shape, ``y[:, j·g + i] = x[:, i·k + j]``:
    viewed as (N, g, k, ...), the two group axes swap. Backward swaps them back.
    """

    class Params(LayerParams):
        group: int = Field(1, gt=0, description="channel groups interleaved")

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2 or shape[1] % self.params.group:
            raise self.error(f"group {self.params.group} does not divide the channels of "
                             f"bottom '{bottom[0].name}' (shape {shape})", field="group")
        top[0].reshape(shape)

    @staticmethod
    def _swap(x, rows, columns):
        n, c = x.shape[:2]
        rest = x.shape[2:]
        return x.reshape(n, rows, columns, *rest).swapaxes(1, 2).reshape(n, c, *rest)

    def forward(self, bottom, top):
        g = self.params.group
        top[0].data[...] = self._swap(bottom[0].data, g, bottom[0].shape[1] // g)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = self.params.group
            bottom[0].diff[...] = self._swap(top[0].diff, top[0].shape[1] // g, g)


@register_layer("DepthwiseConvolution")
class DepthwiseConvolution(Convolution):
    """The depthwise fork's name for a grouped Convolution: Convolution's fields and
    semantics, with ``group`` the bottom's channel count when not given (so each output
    channel reads one input channel: W is (num_output, 1, kh, kw))."""

    class Params(ConvolutionParams):
        group: int | None = Field(None, gt=0, description="default: the bottom's channels")

    def setup(self, bottom, top):
        if self.params.group is None and len(bottom[0].shape) == 4:
            self.params = self.params.model_copy(update={"group": bottom[0].shape[1]})
        super().setup(bottom, top)
