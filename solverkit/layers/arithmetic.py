"""Arithmetic over the bottoms or along an axis: Eltwise, Softmax, Reduction, ArgMax
(Caffe's semantics)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..registry import register_layer
from ..spec.net import LayerParams
from ..threads import parallel_for, split
from .base import Layer, canonical_axis


def _in_place(blob, bottom) -> bool:
    return any(blob is b for b in bottom)


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

    def _in_place_index(self, bottom, top) -> int | None:
        return next((i for i, b in enumerate(bottom) if b is top[0]), None)

    def forward(self, bottom, top):
        op = self.params.operation
        if op == "SUM":
            self._forward_sum(bottom, top)
            return
        xs = [b.data for b in bottom]
        if op == "PROD":
            # in place the output overwrites an input that backward still needs
            self.inputs = [x.copy() for x in xs] if _in_place(top[0], bottom) else None
            out = np.prod(np.stack(xs), axis=0)
        else:
            stacked = np.stack(xs)
            self.argmax = stacked.argmax(axis=0)
            out = np.take_along_axis(stacked, self.argmax[None], axis=0)[0]
        top[0].data[...] = out

    def _forward_sum(self, bottom, top):
        """``y = Σ c_i x_i`` in one pass per bottom over each thread's part, starting from
        the bottom that ``y`` is (in place) so that no bottom is read after it is written."""
        y = top[0].data.reshape(-1)
        shared = self._in_place_index(bottom, top)
        first = shared or 0
        order = [first] + [i for i in range(len(bottom)) if i != first]
        xs = [bottom[i].data.reshape(-1) for i in order]
        coeff = [self.coeff[i] for i in order]

        def run(part):
            out = y[part]
            if len(xs) > 1 and coeff[0] == coeff[1] == 1:
                np.add(xs[0][part], xs[1][part], out=out)
                rest = 2
            else:
                if coeff[0] != 1 or shared is None:
                    np.multiply(xs[0][part], coeff[0], out=out)
                rest = 1
            for x, c in zip(xs[rest:], coeff[rest:]):
                if c == 1:
                    out += x[part]
                elif c == -1:
                    out -= x[part]
                else:
                    out += c * x[part]

        parallel_for(run, split(y.size), elements=y.size)

    def backward(self, top, propagate_down, bottom):
        op = self.params.operation
        if op == "SUM":
            self._backward_sum(top, propagate_down, bottom)
            return
        dy = top[0].diff
        if _in_place(top[0], bottom):
            dy = dy.copy()      # writing the in-place bottom's diff overwrites the top's
        if op == "PROD":
            xs = self.inputs if self.inputs is not None else [b.data for b in bottom]
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if op == "PROD":
                others = [x for j, x in enumerate(xs) if j != i]
                blob.diff[...] = dy * np.prod(np.stack(others), axis=0)
            else:
                blob.diff[...] = dy * (self.argmax == i)

    def _backward_sum(self, top, propagate_down, bottom):
        """``dx_i = c_i dy``: a copy of dy for c_i = 1, in one pass over each thread's part;
        the bottom whose diff is dy's (in place) last, scaled where it lies."""
        dy = top[0].diff.reshape(-1)
        shared = self._in_place_index(bottom, top)
        targets = [(bottom[i].diff.reshape(-1), self.coeff[i]) for i in range(len(bottom))
                   if propagate_down[i] and i != shared]
        scale_shared = (shared is not None and propagate_down[shared]
                        and self.coeff[shared] != 1)

        def run(part):
            for dx, c in targets:
                if c == 1:
                    np.copyto(dx[part], dy[part])
                else:
                    np.multiply(dy[part], c, out=dx[part])
            if scale_shared:
                dy[part] *= self.coeff[shared]

        parallel_for(run, split(dy.size), elements=dy.size)

    # elements per piece of the fused SUM + ReLU: three pieces (two bottoms, the top) stay
    # in a core's cache between the sum and the rectification
    RELU_PIECE = 32768

    def forward_with_relu(self, bottom, top, negative_slope: float) -> bool:
        """SUM and the in-place ReLU after it (``negative_slope``) in one pass over
        cache-sized pieces, split over the threads, in an inference forward (the net then
        skips the ReLU); False (nothing done) for PROD and MAX, or for a forward that a
        backward may follow."""
        if self.params.operation != "SUM" or not self.inference:
            return False
        xs = [b.data.reshape(-1) for b in bottom]
        y = top[0].data.reshape(-1)
        # in place on a later bottom: a piece is summed aside, as writing the first term
        # into y would overwrite that bottom's piece before it is read
        aside = any(np.may_share_memory(y, x) for x in xs[1:])

        def run(part: slice) -> None:
            for start in range(part.start, part.stop, self.RELU_PIECE):
                piece = slice(start, min(start + self.RELU_PIECE, part.stop))
                out = np.empty_like(y[piece]) if aside else y[piece]
                terms = [(c, x[piece]) for c, x in zip(self.coeff, xs)]
                if terms[0][0] == 1 and terms[1][0] == 1:
                    np.add(terms[0][1], terms[1][1], out=out)
                    terms = terms[2:]
                else:
                    np.multiply(terms[0][1], terms[0][0], out=out)
                    terms = terms[1:]
                for c, x in terms:
                    if c == 1:
                        out += x
                    else:
                        out += c * x
                if negative_slope == 0:
                    np.maximum(out, 0, out=out)
                else:           # as the ReLU layer computes it
                    np.multiply(out, np.where(out > 0, 1, negative_slope).astype(out.dtype),
                                out=out)
                if aside:
                    y[piece] = out

        parallel_for(run, split(y.size), elements=y.size)
        return True


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
        self.axis = canonical_axis(self, self.params.axis, len(bottom[0].shape))
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
        axis = canonical_axis(self, self.params.axis, max(len(shape), 1))
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
            self.axis = canonical_axis(self, p.axis, len(shape))
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
