"""Net: the layer graph of a NetSpec for one phase, with forward, backward, blobs and params.

Graph rules (Caffe's): layers run in file order; a bottom must be a top of an earlier
layer; ``bottom == top`` works in place; a blob read by several layers gets the sum of
their diffs; a top nobody reads is an output; the loss is ``sum(loss_weight * top)``.
Shapes are inferred when the net is built, so a wrong shape fails here, naming the layer.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from . import layouts, memory_plan
from .blob import ALIGNMENT, Blob, aligned_copy, freeze_array
from .errors import (
    ConfigError,
    NonFiniteError,
    ShapeError,
    SolverkitError,
    did_you_mean,
    size_refusal,
)
from .folding import ConvolutionFold, find_folds
from .layers.base import DataLayer, Layer
from .registry import layer_class
from .snapshot import load_model, save_model
from .spec.net import LayerSpec, NetSpec, ParamSpec, load_net_spec

PHASES = ("TRAIN", "TEST")


@dataclass
class Param:
    """A learnable parameter as the solver sees it: where it lives and its multipliers."""

    key: str            # "<layer>/<index>", the snapshot key
    layer: str
    index: int
    blob: Blob
    lr_mult: float
    decay_mult: float


@dataclass
class _FanOut:
    """A blob (one version of it) read by several layers: each reader gets its own diff."""

    source: Blob
    readers: list[tuple[int, int, Blob]]    # (layer index, bottom index, reader's blob)


class Net:
    """A net for one phase: ``Net(spec_or_path, phase="TRAIN", level=0, stages=(), seed=None)``.

    ``forward(**inputs)`` returns ``{output name: array or float}``; ``backward(**top_diffs)``
    fills every needed diff (parameter diffs accumulate: ``clear_param_diffs()`` zeroes them).
    ``blobs`` maps blob names to Blobs; ``params`` maps layer names to their parameter Blobs.

    A TEST net runs its forwards as inference (``inference_forward``) until a backward is
    asked for: nothing is kept for backward (indices of maxima, training primitives), a
    Convolution followed by an in-place ReLU runs as one oneDNN primitive and an Eltwise
    SUM and its ReLU as one pass. The first backward turns that off for good (what it
    needs is recomputed from the bottoms once).
    ``inference=True`` (TEST only; ``freeze()`` later does the same) builds a net for
    deployment: its convolution weights are read-only arrays (``load`` replaces them), so
    oneDNN's layout of them is computed once, and an in-place BatchNorm (+ Scale) after a
    Convolution is folded into its weights (``folding.py``); it has no backward. With
    ``outputs_only=True`` as well, only the inputs and outputs keep their values after a
    forward: the blobs between them share memory (``memory_plan``), as onnxruntime's and
    OpenCV's intermediate tensors do — a deep net then holds a few blobs' worth of
    activations instead of all of them — and the blobs between oneDNN's convolutions and
    poolings keep its blocked layout instead of NCHW (``layouts.py``, ``layout_plan``).
    ``share_diffs=True`` (what a ``Solver`` builds its training net with) lets the diffs of
    the blobs between the inputs and the outputs share memory in the same way, each live
    only during the part of a backward that writes and reads it (``memory_plan.plan_diffs``):
    after a backward, only the parameters', inputs', outputs' and loss tops' diffs keep
    their values, as PyTorch frees a gradient once it is used.
    """

    def __init__(self, spec, phase: str = "TRAIN", level: int = 0, stages=(),
                 seed: int | None = None, share_from: Net | None = None,
                 inference: bool = False, outputs_only: bool = False,
                 share_diffs: bool = False):
        self.spec: NetSpec = load_net_spec(spec)
        if phase not in PHASES:
            raise ConfigError(f"phase must be TRAIN or TEST, not {phase!r}"
                              f"{did_you_mean(str(phase).upper(), PHASES)}", field="phase")
        if inference and share_from is not None:
            raise ConfigError("inference=True builds a net with parameters of its own; "
                              "give no share_from", field="share_from")
        if outputs_only and not inference:
            raise ConfigError("outputs_only=True is for a net built for inference (it has no "
                              "backward to keep the other blobs for); add inference=True",
                              field="outputs_only")
        if share_diffs and inference:
            raise ConfigError("share_diffs=True is for a net that runs backward; a net built "
                              "with inference=True has none", field="share_diffs")
        self.inference_only = False
        self._shares_params = False
        self.phase = phase
        self.level = level
        self.stages = tuple([stages] if isinstance(stages, str) else stages)
        self.dtype = np.dtype(self.spec.dtype)
        self.name = self.spec.name
        self.seed = int(np.random.SeedSequence(seed).entropy) if seed is None else int(seed)

        self.layers: list[Layer] = []
        self.layer_specs: list[LayerSpec] = []
        self._spec_index: list[int] = []          # position of each layer in the spec file
        self.bottoms: list[list[Blob]] = []
        self.tops: list[list[Blob]] = []
        self.blobs: dict[str, Blob] = {}
        self.params: dict[str, list[Blob]] = {}
        self.learnable_params: list[Param] = []
        self.loss_weights: list[tuple[Blob, float]] = []
        self.input_blobs: dict[str, Blob] = {}
        self.outputs: list[str] = []
        self._fan_outs: list[_FanOut] = []
        self._plans: dict[frozenset, list] = {}
        self._shared: dict[str, Param] = {}     # param.name -> the Param that owns the Blob
        self._needs_reshape = False
        self.outputs_only = False
        self.memory_slabs: list[memory_plan.Slab] = []
        self.share_diffs = False
        self.diff_slabs: list[memory_plan.Slab] = []
        self._shared_diffs: set[int] = set()     # ids of the blobs whose diffs share slabs
        self.loss = 0.0
        self._seed_values: dict = {}            # diffs given to the last backward(), by blob

        self._build()
        if share_from is not None:
            self.share_params_with(share_from)
        # conv position -> negative slope of the in-place ReLU right after it
        self._fusions = self._find_fusions()
        self._kept_inputs = self._find_kept_inputs()
        # BatchNorm position -> the in-place Scale right after it and the in-place ReLU
        # after that (or None): in training, one sweep each way (``forward_with_scale``)
        self._scales_after = self._find_scales_after()
        # conv position -> the in-place BatchNorm (+ Scale) chain a frozen net folds into it
        self._folds: dict[int, ConvolutionFold] = find_folds(self.layers, self.bottoms,
                                                             self.tops)
        self._set_inference(phase == "TEST")
        if inference:
            self._freeze(copy=False)    # nobody else holds the new arrays yet
        # the blobs kept in oneDNN's blocked layout between layers (outputs_only nets)
        self.layout_plan: layouts.LayoutPlan | None = None
        if outputs_only:
            self.outputs_only = True
            self._share_memory()
        if share_diffs:
            self.share_diffs = True
            self._share_diff_memory()

    # ------------------------------------------------------------------ build
    def _located(self, err: SolverkitError, position: int) -> SolverkitError:
        return self.spec.locate(err, self._spec_index[position] if position is not None else None)

    def _build(self) -> None:
        selected = [(i, s) for i, s in enumerate(self.spec.layers)
                    if s.included(self.phase, self.level, self.stages)]
        seen_names: dict[str, int] = {}
        current: dict[str, Blob] = {}               # blob name -> its latest version
        version: dict[int, int] = {}                # id(blob) -> times written (in place)
        readers: dict[tuple, list[tuple[int, int]]] = {}   # (id, version) -> readers

        for position, (spec_index, lspec) in enumerate(selected):
            self._spec_index.append(spec_index)
            where = {"file": self.spec.file, "layer": lspec.name, "layer_index": spec_index}
            if lspec.name in seen_names:
                raise ConfigError(f"layer name '{lspec.name}' is used twice in the "
                                  f"{self.phase} net", field="name", **where,
                                  line=self.spec.line_of(spec_index, "name"))
            seen_names[lspec.name] = position
            cls = layer_class(lspec.type)
            try:
                self._check_counts(cls, lspec)
            except SolverkitError as err:
                raise self._located(err, position) from None

            bottom = []
            for b_index, name in enumerate(lspec.bottom):
                if name not in current:
                    hint = did_you_mean(name, current)
                    raise ConfigError(f"bottom '{name}' is not a top of any earlier layer in the "
                                      f"{self.phase} net{hint}", field="bottom", **where,
                                      line=self.spec.line_of(spec_index, "bottom"))
                blob = current[name]
                readers.setdefault((id(blob), version[id(blob)]), []).append((position, b_index))
                bottom.append(blob)
            top = []
            for name in lspec.top:
                if name in lspec.bottom:                       # in place
                    if not cls.allows_in_place:
                        raise ConfigError(f"{_article(lspec.type)} {lspec.type} layer cannot "
                                          f"work in place (top '{name}' is also its bottom); "
                                          f"give the top its own name", field="top", **where,
                                          line=self.spec.line_of(spec_index, "top"))
                    blob = current[name]
                elif name in current or name in [b.name for b in top]:
                    raise ConfigError(f"top '{name}' is already produced by an earlier layer; "
                                      f"only an in-place layer (bottom == top) may write a "
                                      f"blob again", field="top", **where,
                                      line=self.spec.line_of(spec_index, "top"))
                else:
                    blob = Blob((), self.dtype, name=name)
                    self.blobs[name] = blob
                current[name] = blob
                version[id(blob)] = version.get(id(blob), -1) + 1
                top.append(blob)

            rng = np.random.default_rng(np.random.SeedSequence(
                self.seed, spawn_key=(zlib.crc32(self.phase.encode()),
                                      zlib.crc32(lspec.name.encode()))))
            layer = cls(lspec, phase=lspec.phase or self.phase, dtype=self.dtype, rng=rng,
                        base_dir=self.spec.base_dir)
            self.layers.append(layer)
            self.layer_specs.append(lspec)
            self.bottoms.append(bottom)
            self.tops.append(top)
            try:
                layer.setup(bottom, top)
                layer.reshape(bottom, top)
            except SolverkitError as err:
                raise self._located(err, position) from None
            except (MemoryError, ValueError, OverflowError) as err:
                reason = size_refusal(err)      # sizes typed by mistake (num_output: 10**12)
                if reason is None:
                    raise
                raise self._located(ShapeError(f"not enough memory for this layer's blobs: "
                                               f"{reason}; check its sizes"), position) from None
            self._check_loss_weights(layer, lspec, position)
            self._setup_params(layer, lspec, position)
            if isinstance(layer, DataLayer) and layer.fed_by_user:
                self.input_blobs.update({b.name: b for b in top})

        self._insert_fan_outs(readers)
        # an output is a blob whose latest version no later layer reads
        self.outputs = [name for name, blob in current.items()
                        if (id(blob), version[id(blob)]) not in readers]
        self._mark_need_backward()

    @staticmethod
    def _check_counts(layer_cls, lspec: LayerSpec) -> None:
        for what, items, low, high in (
                ("bottom", lspec.bottom, layer_cls.min_bottoms, layer_cls.max_bottoms),
                ("top", lspec.top, layer_cls.min_tops, layer_cls.max_tops)):
            n = len(items)
            if (low is not None and n < low) or (high is not None and n > high):
                want = (f"exactly {low}" if low == high else
                        f"at least {low}" if high is None else
                        f"at most {high}" if low in (None, 0) else f"{low} to {high}")
                raise ConfigError(f"{_article(lspec.type)} {lspec.type} layer takes {want} "
                                  f"{what}{'s' if want != 'exactly 1' else ''}, got {n}",
                                  field=what)

    def _check_loss_weights(self, layer: Layer, lspec: LayerSpec, position: int) -> None:
        weights = lspec.loss_weight
        if weights is None:
            weights = [1.0 if (layer.is_loss and j == 0) else 0.0 for j in range(len(lspec.top))]
        elif len(weights) != len(lspec.top):
            raise self._located(ConfigError(
                f"loss_weight has {len(weights)} values for {len(lspec.top)} tops",
                field="loss_weight"), position)
        for blob, weight in zip(self.tops[position], weights):
            if weight != 0:
                # as Caffe, a top of any shape may carry a weight: it adds weight * sum(top)
                self.loss_weights.append((blob, float(weight)))

    def _setup_params(self, layer: Layer, lspec: LayerSpec, position: int) -> None:
        if len(lspec.param) > len(layer.blobs):
            raise self._located(ConfigError(
                f"{len(lspec.param)} param entries given but {_article(lspec.type)} "
                f"{lspec.type} layer here has {len(layer.blobs)} parameter{'s' if len(layer.blobs) != 1 else ''}",
                field="param"), position)
        for j in range(len(layer.blobs)):
            pspec = lspec.param[j] if j < len(lspec.param) else ParamSpec()
            lr_mult = 0.0 if j in layer.fixed_params else pspec.lr_mult
            layer.param_propagate_down[j] = lr_mult != 0
            if pspec.name and pspec.name in self._shared:
                owner = self._shared[pspec.name]
                if owner.blob.shape != layer.blobs[j].shape:
                    raise self._located(ConfigError(
                        f"shared parameter '{pspec.name}' has shape {layer.blobs[j].shape} here "
                        f"but {owner.blob.shape} in layer '{owner.layer}'", field="param"),
                        position)
                for field in ("lr_mult", "decay_mult"):     # Caffe: both given must agree
                    if (field in pspec.model_fields_set
                            and getattr(pspec, field) != getattr(owner, field)):
                        raise self._located(ConfigError(
                            f"shared parameter '{pspec.name}' has {field} "
                            f"{getattr(pspec, field)} here but {getattr(owner, field)} in layer "
                            f"'{owner.layer}' (the owner's settings apply to every user)",
                            field="param"), position)
                layer.blobs[j] = owner.blob
                continue
            key = f"{layer.name}/{j}"
            param = Param(key, layer.name, j, layer.blobs[j], lr_mult, pspec.decay_mult)
            if pspec.name:
                self._shared.setdefault(pspec.name, param)
            self.learnable_params.append(param)
        self.params[layer.name] = layer.blobs

    def _insert_fan_outs(self, readers: dict[tuple, list[tuple[int, int]]]) -> None:
        """Give every reader of a blob read more than once its own diff (Caffe's Split)."""
        for blob_readers in readers.values():
            if len(blob_readers) < 2:
                continue
            position, b_index = blob_readers[0]
            source = self.bottoms[position][b_index]
            fan = _FanOut(source, [])
            for position, b_index in blob_readers:
                if source in self.tops[position]:
                    other = next(self.layers[p].name for p, _ in blob_readers if p != position)
                    raise self._located(ConfigError(
                        f"works in place on '{source.name}', which layer '{other}' also reads; "
                        f"give this layer's top its own name", field="top"), position)
                reader = Blob.sharing(source)
                self.bottoms[position][b_index] = reader
                fan.readers.append((position, b_index, reader))
            self._fan_outs.append(fan)

    def _mark_need_backward(self) -> None:
        """Caffe's need-backward analysis: which layers run backward, to which bottoms."""
        need = {}          # id(blob) -> needs backward
        force = self.spec.force_backward
        self.bottom_need_backward: list[list[bool]] = []
        self.layer_need_backward: list[bool] = []
        fan_source = {id(r): fan.source for fan in self._fan_outs for _, _, r in fan.readers}
        for position, layer in enumerate(self.layers):
            lspec = self.layer_specs[position]
            flags = []
            for b_index, blob in enumerate(self.bottoms[position]):
                source = fan_source.get(id(blob), blob)
                wanted = force or need.get(id(source), False)
                allowed = layer.has_backward and layer.allow_backward_to(b_index)
                if lspec.propagate_down is not None:
                    if len(lspec.propagate_down) != len(lspec.bottom):
                        raise self._located(ConfigError(
                            f"propagate_down has {len(lspec.propagate_down)} values for "
                            f"{len(lspec.bottom)} bottoms", field="propagate_down"), position)
                    wanted = wanted and lspec.propagate_down[b_index]
                flags.append(bool(wanted and allowed))
            runs = layer.has_backward and (any(flags) or any(layer.param_propagate_down))
            self.bottom_need_backward.append(flags)
            self.layer_need_backward.append(runs)
            for blob in self.tops[position]:
                need[id(blob)] = runs or layer.tops_need_backward or (force and layer.has_backward)

    def _find_fusions(self) -> dict[int, float]:
        """Layers with a ``forward_with_relu`` (Convolution, InnerProduct, Pooling, Eltwise)
        whose top an in-place ReLU rectifies right after them: the two run as one where the
        layer can (a oneDNN primitive where oneDNN runs the first, one pass of the sum; in
        an inference forward, and for InnerProduct in training too)."""
        fusions = {}
        for position, layer in enumerate(self.layers[:-1]):
            after = self.layers[position + 1]
            if (hasattr(layer, "forward_with_relu") and after.type == "ReLU"
                    and len(self.tops[position]) == 1
                    and self.bottoms[position + 1][0] is self.tops[position][0]
                    and self.tops[position + 1][0] is self.tops[position][0]):
                fusions[position] = float(after.params.negative_slope)
        return fusions

    def _find_kept_inputs(self) -> set[int]:
        """Positions of in-place layers that keep a copy of their bottom for backward
        (``kept_input``) right after a layer that keeps a copy of that blob as its forward
        wrote it (``kept_top()``: BatchNorm's x̂ before a Scale). When the two run one after
        the other, the first one's copy serves both: a pass and an activation's memory less."""
        return {position for position in range(1, len(self.layers))
                if hasattr(self.layers[position], "kept_input")
                and hasattr(self.layers[position - 1], "kept_top")
                and len(self.tops[position - 1]) == 1 and len(self.bottoms[position]) == 1
                and self.bottoms[position][0] is self.tops[position - 1][0]
                and self.tops[position][0] is self.tops[position - 1][0]}

    def _find_scales_after(self) -> dict[int, tuple[int, int | None]]:
        """BatchNorm positions whose in-place Scale right after reads BatchNorm's x̂ (see
        ``_find_kept_inputs``) -> (Scale position, position of an in-place ReLU without
        negative slope right after the Scale, or None)."""
        chains = {}
        for position in sorted(self._kept_inputs):
            if not hasattr(self.layers[position - 1], "forward_with_scale") \
                    or len(self.bottoms[position]) != 1:
                continue
            blob, relu = self.tops[position][0], position + 1
            if not (relu < len(self.layers) and self.layers[relu].type == "ReLU"
                    and self.layers[relu].params.negative_slope == 0
                    and self.bottoms[relu] == [blob] and self.tops[relu] == [blob]):
                relu = None
            chains[position - 1] = (position, relu)
        return chains

    @property
    def inference_forward(self) -> bool:
        """Whether forwards run as inference (a TEST net before its first backward)."""
        return self._inference

    def _set_inference(self, inference: bool) -> None:
        self._inference = inference
        for layer in self.layers:
            layer.inference = inference

    def _prepare_backward(self) -> None:
        """A backward is asked for: refused by a net built for inference; otherwise forwards
        keep what backward needs from now on."""
        if self.inference_only:
            raise ConfigError("this net was built with inference=True: its parameters are "
                              "frozen and it has no backward; build it without inference=True "
                              "to take gradients", file=self.spec.file)
        if self._inference:
            self._set_inference(False)

    def freeze(self) -> None:
        """Make this TEST net a net for inference (what ``inference=True`` does when it is
        built): the parameters its forward derives something from once (``packed_params``:
        convolution weights, kept in oneDNN's layout) become read-only arrays, ``load``
        replaces them, and backward is refused. Typically after weights were set by hand."""
        self._freeze(copy=True)

    def _freeze(self, copy: bool) -> None:
        if self.phase != "TEST":
            raise ConfigError("only a TEST net is frozen for inference; build it with "
                              "phase='TEST'", file=self.spec.file, field="phase")
        if self._shares_params:
            raise ConfigError("this net shares its parameters with another net, whose "
                              "parameters must stay writable; build a net of its own with "
                              "inference=True", file=self.spec.file)
        self.inference_only = True
        self._set_inference(True)
        for layer in self.layers:
            layer.frozen = True
        self._freeze_params(copy)

    def _share_memory(self) -> None:
        """Blobs other than the inputs, outputs and loss tops share buffers (see
        ``memory_plan``), and those between oneDNN's convolutions and poolings keep its
        blocked layout (see ``layouts``); planned again whenever the net is reshaped."""
        pinned = [*self.input_blobs.values(), *(self.blobs[name] for name in self.outputs),
                  *(blob for blob, _ in self.loss_weights)]
        self.memory_slabs = memory_plan.plan([layer.type for layer in self.layers],
                                             self.bottoms, self.tops, pinned)
        memory_plan.apply(self.memory_slabs)
        folded = {position for fold in self._folds.values()
                  for position in range(fold.position + 1, fold.last + 1)}
        self.layout_plan = layouts.plan(self.layers, self.bottoms, self.tops, pinned, folded)
        self.layout_plan.mark(self.layers, self.bottoms, self.tops)

    def _share_diff_memory(self) -> None:
        """Diffs of the blobs between the inputs and the outputs share buffers (see
        ``memory_plan.plan_diffs``); planned again whenever the net is reshaped."""
        for slab in self.diff_slabs:        # the old plan's blobs: arrays of their own if used
            for blob in slab.blobs:
                blob.release_diff()
        pinned = [*self.input_blobs.values(), *(self.blobs[name] for name in self.outputs),
                  *(blob for blob, _ in self.loss_weights)]
        fan_outs = [(fan.source, [reader for _, _, reader in fan.readers])
                    for fan in self._fan_outs]
        self.diff_slabs = memory_plan.plan_diffs([layer.type for layer in self.layers],
                                                 self.bottoms, self.tops, fan_outs,
                                                 self.bottom_need_backward, pinned)
        memory_plan.apply_diffs(self.diff_slabs)
        self._shared_diffs = {id(blob) for slab in self.diff_slabs for blob in slab.blobs}

    def keep_every_diff(self) -> None:
        """From the next backward on, every blob's diff is an array of its own again (what
        ``share_diffs=False`` builds): for code that reads the diffs of the blobs between
        the inputs and the outputs after a backward (``DebugInfo``)."""
        for slab in self.diff_slabs:
            for blob in slab.blobs:
                blob.release_diff()
        self.share_diffs = False
        self.diff_slabs = []
        self._shared_diffs = set()

    def _packed_blobs(self) -> list[Blob]:
        unique = {id(layer.blobs[j]): layer.blobs[j] for layer in self.layers
                  for j in layer.packed_params}
        return list(unique.values())

    def _freeze_params(self, copy: bool = True) -> None:
        """The packed parameters become read-only arrays over memory nothing else writes
        (``blob.is_frozen``), 64-byte aligned (oneDNN then reads a weight whose layout is
        its own in place): nothing can change them, so what is derived from them stays
        valid. With ``copy`` they are new arrays (a view someone took earlier still writes,
        but not into the net); without, they are the net's own (just made or loaded) and
        copied only to align them."""
        for blob in self._packed_blobs():
            data = blob.data
            if copy or data.ctypes.data % ALIGNMENT:
                data = aligned_copy(data)
                blob.data = data
            freeze_array(data)

    def _thaw_params(self) -> None:
        """Writable copies of the packed parameters (new arrays: nothing derived from the
        old ones is used again)."""
        for blob in self._packed_blobs():
            blob.data = blob.data.copy()

    # ------------------------------------------------------------ sharing
    def share_params_with(self, other: Net) -> None:
        """Use ``other``'s parameter Blobs for every layer of the same name (TEST shares TRAIN's).

        A Blob this net shares by ``param.name`` is replaced everywhere it is used, so a
        layer that only this net has keeps sharing with its partner.
        """
        if self.inference_only:
            raise ConfigError("a net built with inference=True has parameters of its own; "
                              "it does not share them", file=self.spec.file)
        self._shares_params = True
        replace: dict[int, Blob] = {}
        for layer in self.layers:
            theirs = other.params.get(layer.name)
            if theirs is None:
                continue
            if [b.shape for b in theirs] != [b.shape for b in layer.blobs]:
                raise ConfigError(f"layer '{layer.name}' has parameter shapes "
                                  f"{[b.shape for b in layer.blobs]} in the {self.phase} net "
                                  f"but {[b.shape for b in theirs]} in the {other.phase} net",
                                  file=self.spec.file, layer=layer.name)
            for mine, blob in zip(layer.blobs, theirs):
                replace.setdefault(id(mine), blob)
        for layer in self.layers:
            layer.blobs[:] = [replace.get(id(blob), blob) for blob in layer.blobs]
            self.params[layer.name] = layer.blobs
        for param in self.learnable_params:
            param.blob = replace.get(id(param.blob), param.blob)

    # ------------------------------------------------------------ running
    def reshape(self) -> None:
        """Propagate input shapes through every layer (after an input changed its batch size)."""
        self._reshape_from(0)
        if self.outputs_only:
            self._share_memory()
        if self.share_diffs:
            self._share_diff_memory()

    def _with_data_source(self, err: SolverkitError, position: int) -> SolverkitError:
        """A mistake about a layer's bottoms (a label out of range) also names the data files
        those bottoms were read from, and the data layers that read them."""
        if err.field != "bottom":
            return err
        sources = []
        for blob in self.bottoms[position]:
            for earlier in range(position - 1, -1, -1):
                if any(top is blob for top in self.tops[earlier]):
                    layer = self.layers[earlier]
                    if isinstance(layer, DataLayer) and layer.source_title:
                        sources.append(f"{layer.source_title} (read by layer '{layer.name}')")
                    break
        if sources:
            err.message += f"; the data comes from {', '.join(dict.fromkeys(sources))}"
        return err

    def _reshape_from(self, start: int) -> None:
        for position, layer in enumerate(self.layers[start:], start=start):
            try:
                layer.reshape(self.bottoms[position], self.tops[position])
            except SolverkitError as err:
                raise self._located(err, position) from None

    def set_input(self, name: str, value) -> None:
        """Copy ``value`` into the Input blob ``name``, reshaping the net if its shape changed."""
        blob = self.input_blobs.get(name)
        if blob is None:
            raise ConfigError(f"'{name}' is not a blob of an Input layer"
                              f"{did_you_mean(name, self.input_blobs)}; inputs: "
                              f"{', '.join(self.input_blobs) or 'none'}", file=self.spec.file)
        value = np.asarray(value)
        if value.shape != blob.shape:
            if value.ndim != blob.data.ndim:
                raise ShapeError(f"input '{name}' must have {blob.data.ndim} dimensions like "
                                 f"{blob.shape}, got shape {value.shape}", file=self.spec.file)
            blob.reshape(value.shape)
            self._needs_reshape = True
        np.copyto(blob.data, value, casting="unsafe")

    def forward(self, **inputs) -> dict:
        """Run every layer in order; returns copies of the outputs (floats for one element)."""
        self._needs_reshape = False
        for name, value in inputs.items():
            self.set_input(name, value)
        if self._needs_reshape:
            self.reshape()
        position = 0
        try:        # a mistake met in the data (a label out of range) names the net file too
            for position in self._forward_steps(0, len(self.layers) - 1):
                pass
        except SolverkitError as err:
            raise self._with_data_source(self._located(err, position), position) from None
        self.loss = float(sum(weight * float(blob.data.sum())
                              for blob, weight in self.loss_weights))
        return {name: self._export(self.blobs[name]) for name in self.outputs}

    def predict(self, x, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Run any number of samples through this TEST net, ``batch_size`` at a time.

        ``x`` is an array (N, ...) for a net with one Input blob, or ``{input name: array}``
        (equal N). Returns ``{output name: array (N, ...)}``, the batches' outputs stacked
        (the last batch may be smaller). Only forward runs: no diff is allocated or written.
        A train/test net has no Input blobs: predict on ``Net(deploy_net(spec), "TEST")``.
        """
        if self.phase != "TEST":
            raise ConfigError("predict runs a TEST net; build it with phase='TEST'",
                              file=self.spec.file, field="phase")
        if not self.input_blobs:
            raise ConfigError("the net has no Input layer to feed; derive its deploy form "
                              "with solverkit.deploy_net(spec)", file=self.spec.file)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}",
                              field="batch_size")
        if not isinstance(x, dict):
            if len(self.input_blobs) != 1:
                raise ConfigError(f"the net has {len(self.input_blobs)} inputs "
                                  f"({', '.join(self.input_blobs)}); give a dict of arrays",
                                  file=self.spec.file)
            x = {next(iter(self.input_blobs)): x}
        arrays = {name: np.asarray(value) for name, value in x.items()}
        for name in self.input_blobs:
            if name not in arrays:
                raise ConfigError(f"no samples given for input '{name}'", file=self.spec.file)
        counts = {name: (a.shape[0] if a.ndim else 0) for name, a in arrays.items()}
        count = next(iter(counts.values()))
        if any(c != count for c in counts.values()):
            raise ShapeError(f"inputs hold different numbers of samples: {counts}",
                             file=self.spec.file)
        results: dict[str, np.ndarray] = {}
        for start in range(0, count, int(batch_size)):
            stop = min(start + int(batch_size), count)
            self.forward(**{name: a[start:stop] for name, a in arrays.items()})
            for name in self.outputs:
                data = self.blobs[name].data
                if data.ndim == 0 or data.shape[0] != stop - start:
                    raise ShapeError(f"output '{name}' has shape {data.shape}, not one row "
                                     f"per sample of the batch of {stop - start}",
                                     file=self.spec.file)
                if name not in results:
                    results[name] = np.empty((count, *data.shape[1:]), data.dtype)
                results[name][start:stop] = data
        return results

    @staticmethod
    def _export(blob: Blob):
        return float(blob.data.reshape(-1)[0]) if blob.count == 1 else blob.data.copy()

    def backward(self, **top_diffs) -> None:
        """Backpropagate from loss tops (diff = loss_weight) and any output diffs given."""
        self._prepare_backward()
        seeds = {}
        for blob, weight in self.loss_weights:
            seeds[blob.name] = weight
        for name, value in top_diffs.items():
            if name not in self.outputs and name not in seeds:
                raise ConfigError(f"'{name}' is not an output of the net"
                                  f"{did_you_mean(name, self.outputs)}; outputs: "
                                  f"{', '.join(self.outputs)}", file=self.spec.file)
            seeds[name] = value
        self._seed_values = seeds
        for name, value in seeds.items():
            if name not in self.outputs:
                continue        # a weighted top that later layers read: see _backward_plan
            blob = self.blobs[name]
            diff = blob.diff
            diff[...] = value
        plan = self._plans.get(frozenset(seeds))
        if plan is None:
            plan = self._plans[frozenset(seeds)] = self._backward_plan(set(seeds))
        for step in plan:
            step()

    def _backward_plan(self, seeds: set[str]) -> list:
        """The ordered steps of one backward pass: zero unreached diffs, layers, fan-in sums."""
        received = {id(self.blobs[name]): True for name in seeds if name in self.outputs}
        # A weighted top that later layers also read (Caffe puts a Split before its loss):
        # its diff is the readers' gradient plus the weight, added where it was last written.
        consumed_seeds = {id(self.blobs[name]): name for name in seeds
                          if name not in self.outputs}
        fans_by_first_reader = {}
        for fan in self._fan_outs:
            first = min(position for position, _, _ in fan.readers)
            fans_by_first_reader.setdefault(first, []).append(fan)
        # the last layer of a BatchNorm chain -> the chain's positions, first to last
        chain_ending_at = {max(p for p in (norm, *after) if p is not None):
                           [p for p in (norm, *after) if p is not None]
                           for norm, after in self._scales_after.items()}
        plan = []
        joined = set()         # positions whose backward runs in their chain's sweep
        for position in reversed(range(len(self.layers))):
            layer, top, bottom = self.layers[position], self.tops[position], self.bottoms[position]
            for blob in top:
                name = consumed_seeds.pop(id(blob), None)
                if name is not None:
                    plan.append(_add_seed(self, blob, name, received.get(id(blob), False)))
                    received[id(blob)] = True
            reached = [received.get(id(blob), False) for blob in top]
            if self.layer_need_backward[position] and any(reached):
                for blob, r in zip(top, reached):
                    if not r:
                        plan.append(_zero_diff(blob))
                flags = list(self.bottom_need_backward[position])
                chain = chain_ending_at.get(position)
                if position in joined:
                    pass
                elif chain is not None and all(self.layer_need_backward[p]
                                               and self.bottom_need_backward[p][0]
                                               for p in chain):
                    plan.append(_run_chain_backward(
                        [(self.layers[p], self.tops[p], list(self.bottom_need_backward[p]),
                          self.bottoms[p]) for p in chain]))
                    joined.update(chain)
                else:
                    plan.append(_run_backward(layer, top, flags, bottom))
                for blob, flag in zip(bottom, flags):
                    received[id(blob)] = flag
            else:
                for blob in bottom:
                    received[id(blob)] = False
            for fan in fans_by_first_reader.get(position, ()):
                live = [r for _, _, r in fan.readers if received.get(id(r), False)]
                received[id(fan.source)] = bool(live)
                if live:
                    plan.append(_sum_diffs(fan.source, live))
        return plan

    def _forward_steps(self, start: int, end: int):
        """Run the layers at positions ``start..end``, yielding each position before its
        layer runs (for messages); fused pairs and folded chains (a net built for inference)
        run as one where all their layers are in the range."""
        fusions = self._fusions
        folds = self._folds if self.inference_only else {}
        guarded = self.layout_plan.guarded if self.layout_plan is not None else {}
        position = start
        while position <= end:
            yield position
            layer, bottom, top = self.layers[position], self.bottoms[position], self.tops[position]
            if layer.shapes_follow_data:
                self._reshape_from(position)
            blocked = guarded.get(position)
            if blocked is not None and not getattr(layer, "runs_blocked", False):
                self.layout_plan.forward_converted(layer, bottom, top, blocked)
                position += 1
                continue
            fold = folds.get(position)
            if fold is not None and fold.last <= end:
                after = fold.forward(bottom, top, with_relu=fold.last < end)
                if after is not None:
                    position = after
                    continue
            slope = fusions.get(position)
            if slope is not None and position < end and \
                    layer.forward_with_relu(bottom, top, slope):
                position += 2
                continue
            scale_at, relu_at = self._scales_after.get(position, (None, None))
            if scale_at is not None and scale_at <= end:
                rectify = relu_at is not None and relu_at <= end
                if layer.forward_with_scale(bottom, top, self.layers[scale_at], rectify):
                    position = (relu_at if rectify else scale_at) + 1
                    continue
            if position in self._kept_inputs:
                # the copy is the blob's data only if the layer before ran in this sweep
                layer.kept_input = (self.layers[position - 1].kept_top()
                                    if position > start else None)
            layer.forward(bottom, top)
            position += 1

    def forward_from_to(self, start: int, end: int) -> None:
        """Run the layers at positions ``start..end`` (inclusive) on the blobs as they are
        (Caffe's ``ForwardFromTo``); nothing is copied or returned."""
        for _ in self._forward_steps(start, end):
            pass

    def backward_from_to(self, start: int, end: int) -> None:
        """Backward of the layers at positions ``start`` down to ``end`` (inclusive) on the
        diffs their tops hold now (Caffe's ``BackwardFromTo``): nothing is seeded or zeroed.
        A blob several layers read gets the sum of their diffs once its first reader ran."""
        self._prepare_backward()
        fans_by_first_reader: dict[int, list[_FanOut]] = {}
        for fan in self._fan_outs:
            first = min(position for position, _, _ in fan.readers)
            fans_by_first_reader.setdefault(first, []).append(fan)
        for position in range(start, end - 1, -1):
            if self.layer_need_backward[position]:
                self.layers[position].backward(self.tops[position],
                                               list(self.bottom_need_backward[position]),
                                               self.bottoms[position])
            for fan in fans_by_first_reader.get(position, ()):
                _sum_diffs(fan.source, [r for _, _, r in fan.readers])()

    def clear_param_diffs(self) -> None:
        """Zero every parameter diff (the solver does this at the start of each iteration)."""
        for param in self.learnable_params:
            param.blob.clear_diff()

    # ------------------------------------------------------------ inspection
    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def random_generators(self) -> dict[str, np.random.Generator]:
        """Every layer's Generator by layer name (snapshots save and restore their states)."""
        return {layer.name: layer.rng for layer in self.layers}

    def find_nonfinite(self) -> str | None:
        """Name the first layer whose output (forward order) or gradient (backward order)
        holds NaN or infinity, for the solver's non-finite-loss message. A net whose
        intermediate blobs share memory (``outputs_only``) runs its forward again, a layer
        at a time, looking at each layer's tops right after it ran. Diffs shared with
        other blobs (``share_diffs``) hold another blob's gradient after a backward and are
        not looked at."""
        for position, layer in enumerate(self.layers):
            if self.outputs_only:
                self.forward_from_to(position, position)
            for blob in self.tops[position]:
                if not np.all(np.isfinite(blob.data)):
                    bad = [j for j, param in enumerate(layer.blobs)
                           if not np.all(np.isfinite(param.data))]
                    cause = (f" (its parameter {', '.join(map(str, bad))} is non-finite)"
                             if bad else "")
                    return f"layer '{layer.name}' ({layer.type}): output '{blob.name}'{cause}"
        for position in reversed(range(len(self.layers))):
            layer = self.layers[position]
            for j, blob in enumerate(layer.blobs):
                if blob.has_diff and not np.all(np.isfinite(blob._diff)):
                    return f"layer '{layer.name}' ({layer.type}): gradient of parameter {j}"
            for blob, flag in zip(self.bottoms[position], self.bottom_need_backward[position]):
                if id(blob) in self._shared_diffs:
                    continue
                if flag and blob.has_diff and not np.all(np.isfinite(blob._diff)):
                    return f"layer '{layer.name}' ({layer.type}): gradient of bottom '{blob.name}'"
        return None

    def check_finite_outputs(self, context: str) -> None:
        """A NonFiniteError when an output of the last forward holds NaN or infinity, naming
        it and the first layer whose output went non-finite (``context`` leads the message:
        "iteration 200, test")."""
        for name in self.outputs:
            data = self.blobs[name].data
            if not np.all(np.isfinite(data)):
                value = float(data.reshape(-1)[0]) if data.size == 1 else "not finite"
                where = self.find_nonfinite() or f"output '{name}'"
                raise NonFiniteError(f"{context}: output '{name}' is {value}; first "
                                     f"non-finite value: {where}")

    def save(self, path) -> str:
        """Write the parameters to a model file (npz, ``<layer>/<index>`` keys); its SHA-256."""
        return save_model(self, path)

    def load(self, path, allow_missing: bool = False, allow_extra: bool = False) -> list[str]:
        """Copy parameters from a model file, layers matched by name (see snapshot.load_model).
        A net built for inference gets new (read-only) parameter arrays."""
        if not self.inference_only:
            return load_model(self, path, allow_missing=allow_missing, allow_extra=allow_extra)
        self._thaw_params()
        try:
            return load_model(self, path, allow_missing=allow_missing, allow_extra=allow_extra)
        finally:
            self._freeze_params(copy=False)     # the thawed copies are ours alone

    def close(self) -> None:
        """Stop background work (data prefetch threads) of every layer."""
        for layer in self.layers:
            layer.close()

    def __repr__(self) -> str:
        return f"Net({self.name!r}, phase={self.phase}, layers={len(self.layers)})"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _zero_diff(blob: Blob):
    def step():
        blob.diff[...] = 0
    return step


def _add_seed(net: Net, blob: Blob, name: str, add: bool):
    def step():
        value = net._seed_values[name]
        if add:
            blob.diff[...] += value
        else:
            blob.diff[...] = value
    return step


def _run_backward(layer: Layer, top, flags, bottom):
    def step():
        layer.backward(top, flags, bottom)
    return step


def _run_chain_backward(steps):
    """The backward of a BatchNorm, the in-place Scale after it and maybe an in-place ReLU
    after that (each ``(layer, top, propagate_down, bottom)``, first to last), in one sweep
    when the BatchNorm can (``BatchNorm.backward_with_scale``), else one after the other."""
    (norm, top, flags, bottom), scale = steps[0], steps[1][0]
    rectify = len(steps) == 3

    def step():
        if not norm.backward_with_scale(top, flags, bottom, scale, rectify):
            for layer, layer_top, layer_flags, layer_bottom in reversed(steps):
                layer.backward(layer_top, layer_flags, layer_bottom)
    return step


def _sum_diffs(source: Blob, readers: list[Blob]):
    def step():
        out = source.diff
        np.copyto(out, readers[0].diff)
        for reader in readers[1:]:
            out += reader.diff
    return step
