"""Common layers: Input, DummyData, InnerProduct, Eltwise, and the blob plumbing ones (Flatten, Reshape,
Concat, Slice, Split), Dropout and Softmax."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from .. import blas, dnnl, threads
from ..fillers import fill
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from . import methods
from .base import DataLayer, Layer, accumulate_matmul, accumulate_sum


@register_layer("Input")
class Input(DataLayer):
    """Blobs the user fills: ``net.forward(data=x)``. ``shape`` gives one shape per top."""

    class Params(LayerParams):
        shape: list[list[int]] = Field(min_length=1)

    min_tops = 1
    fed_by_user = True
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


@register_layer("DummyData")
class DummyData(Layer):
    """Tops filled by fillers (Caffe's DummyData): constant once, random ones every forward.

    ``shape`` gives one shape, or one per top; ``data_filler`` none (zeros), one for every
    top, or one per top. Random fillers draw from the layer's generator.
    """

    class Params(LayerParams):
        shape: list[list[int]] = Field(min_length=1)
        data_filler: list[FillerSpec] = Field(default_factory=list)

        @field_validator("data_filler", mode="before")
        @classmethod
        def _one_or_many(cls, value):
            return [value] if isinstance(value, dict) else value

    min_tops = 1
    has_backward = False

    def setup(self, bottom, top):
        p = self.params
        if len(p.shape) not in (1, len(top)):
            raise self.error(f"shape has {len(p.shape)} entries for {len(top)} tops "
                             f"(give one, or one per top)", field="shape")
        if len(p.data_filler) not in (0, 1, len(top)):
            raise self.error(f"data_filler has {len(p.data_filler)} entries for {len(top)} "
                             f"tops (give none, one, or one per top)", field="data_filler")
        for shape in p.shape:
            if any(d <= 0 for d in shape):
                raise self.error(f"every dimension must be positive, got {shape}", field="shape")
        self.fillers = [p.data_filler[j if len(p.data_filler) > 1 else 0] if p.data_filler
                        else FillerSpec() for j in range(len(top))]
        for j, blob in enumerate(top):
            blob.reshape(p.shape[j if len(p.shape) > 1 else 0])
            blob.data[...] = fill(self.fillers[j], blob.shape, self.dtype, self.rng)

    def reshape(self, bottom, top):
        """The tops keep their shapes."""

    def forward(self, bottom, top):
        for filler, blob in zip(self.fillers, top):
            if filler.type != "constant":
                blob.data[...] = fill(filler, blob.shape, self.dtype, self.rng)


@register_layer("InnerProduct")
class InnerProduct(Layer):
    """Fully connected: ``y = x W^T + b`` over the axes from ``axis`` on, flattened.

    x: (N, ...) with fan_in = prod(shape[axis:]); W: (num_output, fan_in); b: (num_output,).
    The inference forward runs on oneDNN where ``methods.inner_product_method`` says so.
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
        """``dnnl`` or ``blas`` (``methods.inner_product_method``): oneDNN for the inference
        forward of frozen weights (read-only, owning their memory), whose layout it then
        computes once; writable weights would be reordered at every call."""
        weight = self.blobs[0].data
        frozen = not weight.flags.writeable and weight.base is None
        return methods.inner_product_method(weight.dtype, self.params.transpose,
                                            self.inference and frozen)

    def forward_with_relu(self, bottom, top, negative_slope: float) -> bool:
        """The forward and an in-place ReLU after it as one oneDNN primitive (inference);
        False (nothing done) where the forward is a BLAS product."""
        if self.method != "dnnl":
            return False
        self._forward_dnnl(bottom, top, relu=negative_slope)
        return True

    def _forward_dnnl(self, bottom, top, relu=None):
        x = bottom[0].data.reshape(-1, self.fan_in)
        y = top[0].data.reshape(x.shape[0], -1)
        key = (x.shape[0], threads.num_threads(), relu)
        if getattr(self, "_plan_key", None) != key:
            self._plan = dnnl.InnerProductPlan(x.shape[0], self.fan_in, self.params.num_output,
                                               self.params.bias_term, relu=relu)
            self._plan_key = key
        # frozen (see ``method``): the weights cannot change, their layout is computed once
        self._plan.forward(x, self.blobs[0].data,
                           self.blobs[1].data if self.params.bias_term else None, y,
                           constant_weight=True)
        self.last_forward = ("dnnl inference" + (" + ReLU" if relu is not None else "")
                             + ", packed weights")

    def forward(self, bottom, top):
        if self.method == "dnnl":
            self._forward_dnnl(bottom, top)
            return
        self.last_forward = "blas"
        x = bottom[0].data.reshape(-1, self.fan_in)
        y = top[0].data.reshape(x.shape[0], -1)
        blas.matmul(x, self._weight(), out=y)
        if self.params.bias_term:
            y += self.blobs[1].data

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


def _canonical_axis(layer: Layer, axis: int, ndim: int, field: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: ``axis`` in [-ndim, ndim), negative counting from the end."""
    if not -ndim <= axis < ndim:
        raise layer.error(f"axis {axis} is out of range for a bottom with {ndim} axes",
                          field=field)
    return axis % ndim


@register_layer("Eltwise")
class Eltwise(Layer):
    """Element-wise over K bottoms of one shape: SUM ``y = Σ coeff_i x_i``, PROD ``y = Π x_i``,
    MAX ``y = max_i x_i``.

    Gradients: SUM ``coeff_i dy``; PROD ``dy Π_{j≠i} x_j`` (the product of the others, Caffe's
    ``stable_prod_grad``, also used when it is false since it never divides by zero);
    MAX ``dy`` to the first bottom holding the maximum, as Caffe.
    """

    class Params(LayerParams):
        operation: Literal["SUM", "PROD", "MAX"] = "SUM"
        coeff: list[float] = Field(default_factory=list)
        stable_prod_grad: bool = True

    min_bottoms = 2
    min_tops = max_tops = 1
    allows_in_place = True

    def setup(self, bottom, top):
        p = self.params
        if p.coeff and p.operation != "SUM":
            raise self.error(f"coeff only applies to operation SUM, not {p.operation}",
                             field="coeff")
        if p.coeff and len(p.coeff) != len(bottom):
            raise self.error(f"coeff needs one value per bottom ({len(bottom)}), "
                             f"got {len(p.coeff)}", field="coeff")
        self.coeff = p.coeff or [1.0] * len(bottom)

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != bottom[0].shape:
                raise self.error(f"bottom {i} '{blob.name}' has shape {blob.shape} but bottom 0 "
                                 f"'{bottom[0].name}' has {bottom[0].shape}; Eltwise needs "
                                 f"equal shapes", field="bottom")
        if not _in_place(top[0], bottom):
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        op = self.params.operation
        xs = [b.data for b in bottom]
        if op == "SUM":
            out = sum(c * x for c, x in zip(self.coeff, xs))
        elif op == "PROD":
            # in place the output overwrites an input that backward still needs
            self.inputs = [x.copy() for x in xs] if _in_place(top[0], bottom) else None
            out = np.prod(np.stack(xs), axis=0)
        else:
            stacked = np.stack(xs)
            self.argmax = stacked.argmax(axis=0)
            out = np.take_along_axis(stacked, self.argmax[None], axis=0)[0]
        top[0].data[...] = out

    def backward(self, top, propagate_down, bottom):
        op = self.params.operation
        dy = top[0].diff
        if _in_place(top[0], bottom):
            dy = dy.copy()      # writing the in-place bottom's diff overwrites the top's
        if op == "PROD":
            xs = self.inputs if self.inputs is not None else [b.data for b in bottom]
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


def _in_place(blob, bottom) -> bool:
    return any(blob is b for b in bottom)


@register_layer("Flatten")
class Flatten(Layer):
    """Merge axes ``axis..end_axis`` into one: (N, C, H, W) -> (N, C·H·W) with the defaults.

    Caffe's fields: ``axis`` (default 1) and ``end_axis`` (default -1, the last), both may
    be negative. The data is copied, so an in-place layer on the top cannot alter the bottom.
    """

    class Params(LayerParams):
        axis: int = 1
        end_axis: int = -1

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        start = _canonical_axis(self, self.params.axis, len(shape), "axis")
        end = _canonical_axis(self, self.params.end_axis, len(shape), "end_axis")
        if end < start:
            raise self.error(f"end_axis {self.params.end_axis} comes before axis "
                             f"{self.params.axis} for bottom shape {shape}", field="end_axis")
        top[0].reshape((*shape[:start], int(np.prod(shape[start:end + 1])), *shape[end + 1:]))

    def forward(self, bottom, top):
        np.copyto(top[0].data, bottom[0].data.reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.copyto(bottom[0].diff, top[0].diff.reshape(bottom[0].shape))


def _blob_shape(value):
    """Caffe writes ``shape { dim: 0 dim: -1 }``; accept that form as well as a plain list."""
    if isinstance(value, dict) and set(value) == {"dim"}:
        return value["dim"]
    return value


@register_layer("Reshape")
class Reshape(Layer):
    """Change the shape, keeping the data: Caffe's ReshapeLayer.

    ``shape`` replaces bottom axes ``[axis, axis + num_axes)`` (``num_axes: -1``: to the end);
    in it, 0 copies the bottom's dimension at that position and -1 (at most once) is inferred
    so the count stays the same. A negative ``axis`` counts from the end, -1 meaning after
    the last axis (Caffe's rule). Example: ``shape: [0, -1]`` turns (N, C, H, W) into (N, C·H·W).
    """

    class Params(LayerParams):
        shape: list[int]
        axis: int = 0
        num_axes: int = -1

        _dims = field_validator("shape", mode="before")(_blob_shape)

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        dims = self.params.shape
        if any(d < -1 for d in dims):
            raise self.error(f"dimensions must be positive, 0 (copy) or -1 (infer), got {dims}",
                             field="shape")
        if dims.count(-1) > 1:
            raise self.error(f"at most one dimension may be -1 (inferred), got {dims}",
                             field="shape")
        if self.params.num_axes < -1:
            raise self.error(f"num_axes must be -1 (to the end) or >= 0, got "
                             f"{self.params.num_axes}", field="num_axes")

    def reshape(self, bottom, top):
        p, shape = self.params, bottom[0].shape
        ndim = len(shape)
        start = p.axis if p.axis >= 0 else ndim + p.axis + 1
        if not 0 <= start <= ndim:
            raise self.error(f"axis {p.axis} is out of range for bottom shape {shape}",
                             field="axis")
        end = ndim if p.num_axes == -1 else start + p.num_axes
        if end > ndim:
            raise self.error(f"axis {p.axis} + num_axes {p.num_axes} goes past the "
                             f"{ndim} axes of bottom shape {shape}", field="num_axes")
        dims = list(p.shape)
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= ndim:
                    raise self.error(f"shape entry {i} is 0 (copy) but bottom shape {shape} "
                                     f"has no axis {start + i}", field="shape")
                dims[i] = shape[start + i]
        new = [*shape[:start], *dims, *shape[end:]]
        known = int(np.prod([d for d in new if d != -1]))
        count = bottom[0].count
        if -1 in dims:
            if known == 0 or count % known:
                raise self.error(f"cannot infer the -1 in {p.shape}: {count} values of bottom "
                                 f"shape {shape} do not divide by {known}", field="shape")
            new[new.index(-1)] = count // known
        elif known != count:
            raise self.error(f"shape {p.shape} gives {tuple(new)} ({known} values) but bottom "
                             f"shape {shape} has {count}", field="shape")
        top[0].reshape(new)

    def forward(self, bottom, top):
        np.copyto(top[0].data, bottom[0].data.reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.copyto(bottom[0].diff, top[0].diff.reshape(bottom[0].shape))


def _legacy_axis(layer: Layer, axis: int | None, legacy: int | None, legacy_name: str) -> int:
    """Caffe's ``axis`` or its older name (``concat_dim``/``slice_dim``), never both; default 1."""
    if axis is not None and legacy is not None:
        raise layer.error(f"give axis or {legacy_name}, not both", field=legacy_name)
    return legacy if legacy is not None else (axis if axis is not None else 1)


@register_layer("Concat")
class Concat(Layer):
    """Join bottoms along ``axis`` (default 1, channels); every other dimension must agree.

    (N, C_1, H, W), ..., (N, C_K, H, W) -> (N, Σ C_k, H, W); backward slices the top diff.
    ``concat_dim`` is Caffe's older name for ``axis``.
    """

    class Params(LayerParams):
        axis: int | None = None
        concat_dim: int | None = Field(default=None, ge=0)

    min_bottoms = 1
    min_tops = max_tops = 1

    def reshape(self, bottom, top):
        axis = _legacy_axis(self, self.params.axis, self.params.concat_dim, "concat_dim")
        field = "concat_dim" if self.params.concat_dim is not None else "axis"
        first = bottom[0].shape
        self.axis = _canonical_axis(self, axis, len(first), field)
        for i, blob in enumerate(bottom[1:], 1):
            shape = blob.shape
            if len(shape) != len(first) or any(
                    a != b for k, (a, b) in enumerate(zip(shape, first)) if k != self.axis):
                raise self.error(f"bottom {i} '{blob.name}' has shape {shape} but bottom 0 "
                                 f"'{bottom[0].name}' has {first}; all dimensions except "
                                 f"axis {self.axis} must match", field="bottom")
        self.bounds = np.cumsum([0] + [b.shape[self.axis] for b in bottom])
        top[0].reshape((*first[:self.axis], int(self.bounds[-1]), *first[self.axis + 1:]))

    def forward(self, bottom, top):
        np.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        dy = np.moveaxis(top[0].diff, self.axis, 0)
        for i, blob in enumerate(bottom):
            if propagate_down[i]:
                np.copyto(np.moveaxis(blob.diff, self.axis, 0),
                          dy[self.bounds[i]:self.bounds[i + 1]])


@register_layer("Slice")
class Slice(Layer):
    """Cut the bottom along ``axis`` (default 1) into the tops: Concat's inverse.

    ``slice_point`` lists the K-1 cut indices for K tops (strictly increasing, inside the
    axis); without it the axis is split into K equal parts. ``slice_dim`` is Caffe's older
    name for ``axis``.
    """

    class Params(LayerParams):
        axis: int | None = None
        slice_dim: int | None = Field(default=None, ge=0)
        slice_point: list[int] = Field(default_factory=list)

    min_bottoms = max_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        axis = _legacy_axis(self, self.params.axis, self.params.slice_dim, "slice_dim")
        field = "slice_dim" if self.params.slice_dim is not None else "axis"
        shape = bottom[0].shape
        self.axis = _canonical_axis(self, axis, len(shape), field)
        size, points = shape[self.axis], list(self.params.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise self.error(f"{len(top)} tops need {len(top) - 1} slice points, got "
                                 f"{len(points)}", field="slice_point")
            if any(b <= a for a, b in zip([0, *points], [*points, size])):
                raise self.error(f"slice points must increase strictly inside (0, {size}) "
                                 f"(axis {self.axis} of bottom shape {shape}), got {points}",
                                 field="slice_point")
        else:
            if size % len(top):
                raise self.error(f"axis {self.axis} of bottom shape {shape} ({size}) does not "
                                 f"split into {len(top)} equal parts; give slice_point",
                                 field="slice_point")
            points = [size // len(top) * k for k in range(1, len(top))]
        self.bounds = [0, *points, size]
        for j, blob in enumerate(top):
            blob.reshape((*shape[:self.axis], self.bounds[j + 1] - self.bounds[j],
                          *shape[self.axis + 1:]))

    def forward(self, bottom, top):
        x = np.moveaxis(bottom[0].data, self.axis, 0)
        for j, blob in enumerate(top):
            np.copyto(np.moveaxis(blob.data, self.axis, 0),
                      x[self.bounds[j]:self.bounds[j + 1]])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.concatenate([t.diff for t in top], axis=self.axis, out=bottom[0].diff)


@register_layer("Split")
class Split(Layer):
    """Copies of one blob for several readers: every top shares the bottom's data array;
    backward sums the top diffs, ``dx = Σ_j dy_j``.

    The net already gives every reader of a fanned-out blob its own diff, so Split is only
    needed to name the copies, as in Caffe prototxts. Since the data is shared, an in-place
    layer on one top changes what the other tops hold (as in Caffe).
    """

    min_bottoms = max_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        for blob in top:
            blob.data = bottom[0].data

    def forward(self, bottom, top):
        for blob in top:
            if blob.data is not bottom[0].data:     # the bottom was given a new array
                blob.data = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff
            np.copyto(dx, top[0].diff)
            for blob in top[1:]:
                dx += blob.diff


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


@register_layer("Softmax")
class Softmax(Layer):
    """``y_c = exp(x_c) / Σ_k exp(x_k)`` along ``axis`` (default 1, the channels).

    Backward: ``dx = y ⊙ (dy − Σ_c dy_c y_c)``. Works in place.
    """

    class Params(LayerParams):
        axis: int = 1

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1
    allows_in_place = True

    def reshape(self, bottom, top):
        self.axis = _canonical_axis(self, self.params.axis, len(bottom[0].shape))
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        # subtracting the maximum keeps exp from overflowing; the ratio is unchanged
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        e /= e.sum(axis=self.axis, keepdims=True)
        top[0].data[...] = e

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            bottom[0].diff[...] = y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))
