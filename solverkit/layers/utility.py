"""Utility layers: Embed, ArgMax, Reduction, Tile, Crop, Silence (Caffe's semantics)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import ConfigError
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from .base import Layer


def _canonical_axis(axis: int, ndim: int, layer: Layer, field: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise layer.error(f"axis {axis} is out of range for a bottom with {ndim} axes", field=field)
    return axis % ndim


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


@register_layer("ArgMax")
class ArgMax(Layer):
    """Indices (and values) of the ``top_k`` largest entries, no backward.

    Without ``axis``: per sample over all other axes, top (N, 1, top_k) of indices, or
    (N, 2, top_k) with ``out_max_val`` (indices in channel 0, values in channel 1), padded
    with 1s to the bottom's number of axes, as Caffe. With ``axis``: bottom's shape with
    that axis of size top_k, holding indices, or the values with ``out_max_val``.
    Ties go to the larger index (Caffe sorts (value, index) pairs descending).
    """

    class Params(LayerParams):
        out_max_val: bool = False
        top_k: int = Field(default=1, gt=0)
        axis: int | None = None

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1
    has_backward = False

    def reshape(self, bottom, top):
        p = self.params
        shape = bottom[0].shape
        if len(shape) == 0:
            raise self.error("ArgMax needs a bottom with a batch axis", field="bottom")
        if p.axis is not None:
            self.axis = _canonical_axis(p.axis, len(shape), self)
            length = shape[self.axis]
            out = list(shape)
            out[self.axis] = p.top_k
        else:
            self.axis = None
            length = int(np.prod(shape[1:]))
            out = [1] * max(3, len(shape))
            out[0], out[1], out[2] = shape[0], 2 if p.out_max_val else 1, p.top_k
        if p.top_k > length:
            raise self.error(f"top_k {p.top_k} exceeds the {length} values it chooses from",
                             field="top_k")
        top[0].reshape(out)

    def forward(self, bottom, top):
        p = self.params
        x = bottom[0].data
        if self.axis is None:
            x = x.reshape(x.shape[0], -1)
        axis = -1 if self.axis is None else self.axis
        x = np.moveaxis(x, axis, -1)
        # a stable sort of the reversed values, descending, puts larger indices first on ties
        order = np.argsort(-x[..., ::-1], axis=-1, kind="stable")[..., :p.top_k]
        index = x.shape[-1] - 1 - order
        values = np.take_along_axis(x, index, axis=-1)
        if self.axis is None:
            out = top[0].data.reshape(x.shape[0], -1, p.top_k)
            out[:, 0] = index
            if p.out_max_val:
                out[:, 1] = values
        else:
            np.copyto(top[0].data, np.moveaxis(values if p.out_max_val else index, -1, axis))


@register_layer("Reduction")
class Reduction(Layer):
    """Reduce all axes from ``axis`` on, scaled by ``coeff``: top shape ``x.shape[:axis]``.

    SUM ``coeff·Σx`` · ASUM ``coeff·Σ|x|`` · SUMSQ ``coeff·Σx²`` · MEAN ``coeff·mean(x)``;
    gradients ``coeff·dy`` times 1, sign(x), 2x, 1/n respectively.
    """

    class Params(LayerParams):
        operation: Literal["SUM", "ASUM", "SUMSQ", "MEAN"] = "SUM"
        axis: int = 0
        coeff: float = 1.0

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = _canonical_axis(self.params.axis, max(len(shape), 1), self)
        self.view = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        top[0].reshape(shape[:axis])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        op = self.params.operation
        if op == "ASUM":
            x = np.abs(x)
        elif op == "SUMSQ":
            x = x * x
        reduced = x.mean(axis=1) if op == "MEAN" else x.sum(axis=1)
        top[0].data[...] = (self.params.coeff * reduced).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        op = self.params.operation
        dy = self.params.coeff * top[0].diff.reshape(-1, 1)
        if op == "MEAN":
            dy = dy / self.view[1]
        x = bottom[0].data.reshape(self.view)
        if op == "ASUM":
            dy = np.sign(x) * dy
        elif op == "SUMSQ":
            dy = 2 * x * dy
        bottom[0].diff.reshape(self.view)[...] = dy


@register_layer("Tile")
class Tile(Layer):
    """Repeat the block of axes from ``axis`` on ``tiles`` times along ``axis``
    (``numpy.tile``); the gradient sums the copies."""

    class Params(LayerParams):
        axis: int = 1
        tiles: int = Field(gt=0)

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = _canonical_axis(self.params.axis, len(shape), self)
        self.view = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        out = list(shape)
        out[axis] *= self.params.tiles
        top[0].reshape(out)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view[0], 1, self.view[1])
        top[0].data.reshape(self.view[0], self.params.tiles, self.view[1])[...] = x

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.view[0], self.params.tiles, self.view[1])
            bottom[0].diff.reshape(self.view)[...] = dy.sum(axis=1)


@register_layer("Crop")
class Crop(Layer):
    """Crop bottom[0] to bottom[1]'s shape on the axes from ``axis`` on (Caffe's Crop).

    ``offset``: none (all 0), one value for every cropped axis, or one per cropped axis.
    Axes before ``axis`` keep bottom[0]'s size. The gradient goes to bottom[0] only (zero
    outside the crop); bottom[1] only gives the shape.
    """

    class Params(LayerParams):
        axis: int = 2
        offset: list[int] = Field(default_factory=list)

    min_bottoms = max_bottoms = 2
    min_tops = max_tops = 1

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        shape, reference = bottom[0].shape, bottom[1].shape
        if len(shape) != len(reference):
            raise self.error(f"bottoms '{bottom[0].name}' {shape} and '{bottom[1].name}' "
                             f"{reference} need the same number of axes", field="bottom")
        axis = _canonical_axis(self.params.axis, len(shape), self)
        cropped = len(shape) - axis
        offsets = self.params.offset
        if len(offsets) not in (0, 1, cropped):
            raise ConfigError(f"offset takes none, one, or one value per cropped axis "
                              f"({cropped}), got {len(offsets)}", layer=self.name,
                              field="offset")
        offsets = [0] * cropped if not offsets else offsets * cropped if len(offsets) == 1 \
            else offsets
        out, self.window = list(shape[:axis]), [slice(None)] * axis
        for i, offset in enumerate(offsets):
            size, new = shape[axis + i], reference[axis + i]
            if offset < 0 or offset + new > size:
                raise self.error(f"crop of size {new} at offset {offset} does not fit axis "
                                 f"{axis + i} of size {size}", field="offset")
            out.append(new)
            self.window.append(slice(offset, offset + new))
        self.window = tuple(self.window)
        top[0].reshape(out)

    def forward(self, bottom, top):
        np.copyto(top[0].data, bottom[0].data[self.window])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            diff = bottom[0].diff
            diff[...] = 0
            diff[self.window] = top[0].diff


@register_layer("Silence")
class Silence(Layer):
    """Consumes blobs so they are not outputs; no tops. Backward writes zero diffs."""

    min_bottoms = 1
    min_tops = max_tops = 0

    def reshape(self, bottom, top):
        """No tops to shape."""

    def forward(self, bottom, top):
        """Nothing to compute."""

    def backward(self, top, propagate_down, bottom):
        for blob, flag in zip(bottom, propagate_down):
            if flag:
                blob.diff[...] = 0
