"""Layers that move, copy or drop values without arithmetic: Flatten, Reshape, Concat, Slice,
Split, Tile, Crop, Silence (Caffe's semantics)."""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from ..errors import ConfigError
from ..registry import register_layer
from ..spec.net import LayerParams
from .base import Layer, canonical_axis


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
        start = canonical_axis(self, self.params.axis, len(shape), "axis")
        end = canonical_axis(self, self.params.end_axis, len(shape), "end_axis")
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
        self.axis = canonical_axis(self, axis, len(first), field)
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
        self.axis = canonical_axis(self, axis, len(shape), field)
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
        axis = canonical_axis(self, self.params.axis, len(shape))
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
        axis = canonical_axis(self, self.params.axis, len(shape))
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
