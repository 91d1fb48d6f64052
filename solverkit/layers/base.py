"""The layer contract (Caffe's): setup, reshape, forward, backward over lists of Blobs.

A layer type is a subclass of ``Layer`` with a ``Params`` model for its own fields,
registered with ``@register_layer("Type")``:

    @register_layer("Scale2")
    class Scale2(Layer):
        class Params(LayerParams):
            factor: float = 2.0
        def reshape(self, bottom, top):
            top[0].reshape(bottom[0].shape)
        def forward(self, bottom, top):
            top[0].data[...] = self.params.factor * bottom[0].data
        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = self.params.factor * top[0].diff

Rules every layer keeps:
- ``reshape`` derives top shapes from bottom shapes and raises ``self.error(...)`` for a
  shape it cannot take; the net calls it at construction, so mistakes show up early.
- ``backward`` *overwrites* bottom diffs (only where ``propagate_down[i]``) and *adds*
  into parameter diffs (only where ``self.param_propagate_down[j]``).
- In place (``top[0] is bottom[0]``) must work for layers that allow it.
- Randomness comes from ``self.rng`` (the net seeds it), never from global state.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import blas
from ..blob import Blob
from ..errors import ConfigError, ShapeError
from ..fillers import fill
from ..spec.models import FillerSpec, LayerParams, LayerSpec


class Layer:
    type: ClassVar[str] = ""
    Params: ClassVar[type[LayerParams]] = LayerParams

    # How many bottoms / tops the type takes (None: any number).
    min_bottoms: ClassVar[int | None] = None
    max_bottoms: ClassVar[int | None] = None
    min_tops: ClassVar[int | None] = None
    max_tops: ClassVar[int | None] = None
    # A loss layer's first top gets loss_weight 1 by default.
    is_loss: ClassVar[bool] = False
    # Whether backward exists at all (Accuracy, data layers: no).
    has_backward: ClassVar[bool] = True
    # Tops that gradient checks and saliency want diffs of (Input: yes, Data: no).
    tops_need_backward: ClassVar[bool] = False
    # Which bottoms may work in place with a top (Caffe allows it for element-wise layers).
    allows_in_place: ClassVar[bool] = False
    # Top shapes depend on bottom values (Filter): the net reshapes this layer before each
    # forward, and the layers after it, as Caffe reshapes before every forward.
    shapes_follow_data: ClassVar[bool] = False
    # Parameters a net built for inference makes read-only, because forward derives
    # something from them once (a Convolution's weights in oneDNN's layout).
    packed_params: ClassVar[tuple[int, ...]] = ()

    def __init__(self, spec: LayerSpec, *, phase: str = "TRAIN", dtype=np.float32,
                 rng: np.random.Generator | None = None, base_dir=None):
        self.spec = spec
        self.name = spec.name
        self.params = spec.params
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.base_dir = base_dir
        self.blobs: list[Blob] = []              # learnable parameters, Caffe order
        self.param_propagate_down: list[bool] = []
        # Parameters the solver must never update (BatchNorm statistics): index -> reason.
        self.fixed_params: set[int] = set()
        # Set by the net: no backward follows this forward (a TEST net until backward is
        # first asked for), so forward may skip what only backward reads (indices of
        # maxima, training primitives); a backward after such a forward recomputes it.
        self.inference = False
        # Set by a net built for inference (``Net.freeze``): no backward ever follows, so
        # forward keeps nothing for one, not even what a backward could not recompute.
        self.frozen = False

    # ----- the contract -----
    def setup(self, bottom: list[Blob], top: list[Blob]) -> None:
        """Read params and create ``self.blobs`` (bottom shapes are known)."""

    def reshape(self, bottom: list[Blob], top: list[Blob]) -> None:
        raise NotImplementedError(f"Layer.reshape is abstract; {type(self).__name__} must define it")

    def forward(self, bottom: list[Blob], top: list[Blob]) -> None:
        raise NotImplementedError(f"Layer.forward is abstract; {type(self).__name__} must define it")

    def backward(self, top: list[Blob], propagate_down: list[bool], bottom: list[Blob]) -> None:
        raise NotImplementedError(f"Layer.backward is abstract; {type(self).__name__} must define it")

    def allow_backward_to(self, bottom_index: int) -> bool:
        """False for bottoms that can have no gradient (labels)."""
        return True

    def close(self) -> None:
        """Release threads or files (data layers); the net calls it from ``Net.close()``."""

    # ----- helpers for layer authors -----
    def error(self, message: str, field: str | None = None) -> ConfigError:
        """A ShapeError/ConfigError about this layer; the net adds file and line."""
        return ShapeError(message, layer=self.name, field=field)

    def make_param(self, shape, filler: FillerSpec | None, name: str = "") -> Blob:
        """A new learnable Blob of ``shape`` initialised by ``filler``, appended to ``self.blobs``."""
        blob = Blob((), self.dtype, name=f"{self.name}/{len(self.blobs)}{name and ' ' + name}")
        blob.data = fill(filler, shape, self.dtype, self.rng)     # (no zeros of shape first)
        self.blobs.append(blob)
        self.param_propagate_down.append(True)
        return blob

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class DataLayer(Layer):
    """Base of the layers that bring data into a net: no bottoms, no backward.

    The solver, data-parallel training and snapshots talk to data layers through this
    contract only: ``num_samples`` and ``batches_per_epoch`` (``None`` when the layer does
    not know, as for ``Input``), ``batch_size``, ``get_state()``/``set_state(state)`` (the
    position of the next batch as arrays, saved in snapshots) and ``set_shard(rank,
    num_ranks)`` (serve one rank's slice of a ``num_ranks`` times larger batch drawn from
    the one stream all ranks share). ``fed_by_user`` marks a layer whose tops the user
    fills (``net.forward(data=x)``); the net computes their diffs.
    """

    max_bottoms = 0
    has_backward = False
    fed_by_user: ClassVar[bool] = False

    def backward(self, top, propagate_down, bottom):
        """A data layer has no bottoms; nothing to propagate."""

    @property
    def source_title(self) -> str | None:
        """The file (database, list file, array file) the tops come from, as messages name
        it; ``None`` for a layer fed from memory."""
        return None

    @property
    def num_samples(self) -> int | None:
        return None

    @property
    def batch_size(self) -> int | None:
        return None

    @property
    def batches_per_epoch(self) -> int | None:
        return None

    def get_state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, state: dict) -> None:
        """Continue exactly from a ``get_state()`` result."""

    def set_shard(self, rank: int, num_ranks: int) -> None:
        """Serve rank ``rank``'s slice of a ``num_ranks``-times larger batch (nothing to do
        for a layer the user feeds)."""


class LossLayer(Layer):
    """Base of the losses: bottoms (prediction, target); one scalar top, loss_weight 1."""

    min_bottoms = 2
    max_bottoms = 2
    min_tops = 1
    max_tops = 1
    is_loss = True

    def allow_backward_to(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def reshape(self, bottom, top):
        top[0].reshape(())


def accumulate_matmul(blob: Blob, a: np.ndarray, b: np.ndarray) -> None:
    """``blob.diff += a @ b``, the diff viewed as ``(a.shape[0], b.shape[1])``.

    Parameter gradients accumulate (Caffe); right after the solver cleared the diff the
    product is written straight into it, which saves zeroing it, a temporary and a pass.
    """
    diff, overwrite = blob.diff_for_accumulation()
    blas.matmul(a, b, out=diff.reshape(a.shape[0], b.shape[1]), accumulate=not overwrite)


def accumulate_sum(blob: Blob, x: np.ndarray, axis) -> None:
    """``blob.diff += x.sum(axis)`` (a bias gradient), written in place when just cleared."""
    diff, overwrite = blob.diff_for_accumulation()
    if overwrite:
        np.sum(x, axis=axis, out=diff.reshape(-1))
    else:
        diff += x.sum(axis=axis).reshape(diff.shape)


def canonical_axis(layer: Layer, axis: int, ndim: int, field: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: ``axis`` in [-ndim, ndim), negative counting from the end."""
    if not -ndim <= axis < ndim:
        raise layer.error(f"axis {axis} is out of range for a bottom with {ndim} axes",
                          field=field)
    return axis % ndim


def spatial_pair(params, name: str, default=None, field_h: str | None = None,
                 field_w: str | None = None) -> tuple[int, int]:
    """Caffe's ``kernel_size``/``kernel_h``/``kernel_w`` style fields as one (h, w) pair.

    ``name`` may be an int or a list of one or two ints; ``name_h``/``name_w`` override it.
    """
    field_h = field_h or f"{name}_h"
    field_w = field_w or f"{name}_w"
    value = getattr(params, name, None)
    h_value = getattr(params, field_h, None)
    w_value = getattr(params, field_w, None)
    if (h_value is None) != (w_value is None):
        raise ConfigError(f"give both {field_h} and {field_w}, or neither",
                          field=field_h if h_value is None else field_w)
    if h_value is not None:
        if value is not None:
            raise ConfigError(f"give {name} or {field_h}/{field_w}, not both", field=name)
        return int(h_value), int(w_value)
    if value is None:
        if default is None:
            raise ConfigError(f"{name} (or {field_h} and {field_w}) is required", field=name)
        value = default
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ConfigError(f"{name} takes one value or two (h, w), got {len(values)}", field=name)
