"""The net spec: pydantic models, and loading from a path, a dict or YAML text.

A layer entry holds Caffe's common fields (name, type, bottom, top, include/exclude,
loss_weight, param, propagate_down); every other field belongs to its type and is
validated by that type's params model, which the layer registry provides.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, SolverkitError, did_you_mean
from ..registry import import_plugins, layer_class
from .source import SourcedSpec, SpecSource, read_spec_source, validation_error


class StrictModel(BaseModel):
    """The base of every spec model (layer params of plugins too): unknown fields are
    errors, numbers are numbers (``true``, ``yes`` or ``'64'`` are not 1 or 64), and every
    float is finite (``.nan`` and ``.inf`` are errors)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _python_values(cls, data):
        """Values given from Python: tuples as lists, numpy scalars as Python numbers."""
        if isinstance(data, dict):
            return {key: _plain(value) for key, value in data.items()}
        return data


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class FillerSpec(StrictModel):
    """A weight initialiser (Caffe's FillerParameter)."""

    type: Literal["constant", "uniform", "gaussian", "xavier", "msra",
                  "positive_unitball", "bilinear"] = "constant"
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    variance_norm: Literal["FAN_IN", "FAN_OUT", "AVERAGE"] = "FAN_IN"
    sparse: int = Field(-1, ge=-1, description="gaussian: about this many non-zero weights per "
                        "input (each kept with probability sparse / num_outputs); -1: all")


class ParamSpec(StrictModel):
    """Per-parameter settings (Caffe's ParamSpec)."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str | None = None


class NetStateRule(StrictModel):
    """Caffe's NetStateRule: a layer is in the net when every given condition holds."""

    phase: Literal["TRAIN", "TEST"] | None = None
    min_level: int | None = None
    max_level: int | None = None
    stage: list[str] = Field(default_factory=list)
    not_stage: list[str] = Field(default_factory=list)

    _listify = field_validator("stage", "not_stage", mode="before")(_as_list)

    def met_by(self, phase: str, level: int, stages: tuple[str, ...]) -> bool:
        if self.phase is not None and self.phase != phase:
            return False
        if self.min_level is not None and level < self.min_level:
            return False
        if self.max_level is not None and level > self.max_level:
            return False
        if any(s not in stages for s in self.stage):
            return False
        return not any(s in stages for s in self.not_stage)


class LayerParams(StrictModel):
    """Base of every layer type's own fields (they sit flat in the YAML entry)."""


class LayerSpec(StrictModel):
    """One entry of ``layers:``: the common fields plus the type's ``params``."""

    name: str
    type: str
    bottom: list[str] = Field(default_factory=list)
    top: list[str] = Field(default_factory=list)
    include: list[NetStateRule] = Field(default_factory=list)
    exclude: list[NetStateRule] = Field(default_factory=list)
    loss_weight: list[float] | None = None
    param: list[ParamSpec] = Field(default_factory=list)
    propagate_down: list[bool] | None = None
    phase: Literal["TRAIN", "TEST"] | None = Field(
        None, description="run this layer as in that phase whatever the net's (Caffe's "
        "layer-level phase: Dropout, BatchNorm and data transforms follow it)")
    params: LayerParams = Field(default_factory=LayerParams, exclude=True)

    _listify = field_validator("bottom", "top", "include", "exclude", "loss_weight", "param",
                               "propagate_down", mode="before")(_as_list)

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("a layer name must not be empty")
        return name

    def included(self, phase: str, level: int = 0, stages: tuple[str, ...] = ()) -> bool:
        """Caffe's StateMeetsRule: any include rule met, or no exclude rule met."""
        if self.include:
            return any(r.met_by(phase, level, stages) for r in self.include)
        return not any(r.met_by(phase, level, stages) for r in self.exclude)

    def to_dict(self) -> dict:
        """The flat YAML form (common fields and type fields side by side), defaults omitted."""
        out = self.model_dump(exclude_defaults=True, exclude={"params"})
        out.update(self.params.model_dump(exclude_defaults=True))
        return out


COMMON_FIELDS = tuple(name for name in LayerSpec.model_fields if name != "params")


class NetSpec(SourcedSpec, StrictModel):
    """A whole net: name, dtype, plugins, and the layers in file order."""

    name: str = "net"
    dtype: Literal["float32", "float64"] = "float32"
    plugins: list[str] = Field(default_factory=list)
    force_backward: bool = False
    layers: list[LayerSpec] = Field(default_factory=list)

    _source: SpecSource | None = PrivateAttr(default=None)


    def line_of(self, layer_index: int | None = None, field: str | None = None) -> int | None:
        if self._source is None:
            return None
        if layer_index is None:
            return self._source.line(field) if field else None
        return self._source.line("layers", layer_index, *([field] if field else []))

    def locate(self, err: SolverkitError, layer_index: int | None = None) -> SolverkitError:
        """Add this spec's file, the layer and its line to an error raised about a layer."""
        layer = self.layers[layer_index] if layer_index is not None else None
        line = self.line_of(layer_index, err.field.split(".")[0] if err.field else None)
        return err.located(file=self.file, line=line, layer=layer.name if layer else None,
                           layer_index=layer_index)

    def to_dict(self) -> dict:
        out = self.model_dump(exclude_defaults=True, exclude={"layers"})
        out["layers"] = [layer.to_dict() for layer in self.layers]
        return out


def _layer_spec(raw: Any, index: int, source: SpecSource) -> LayerSpec:
    where = {"layer_index": index, "file": source.file, "line": source.line("layers", index)}
    if not isinstance(raw, dict):
        raise ConfigError(f"a layer must be a mapping of fields, not {type(raw).__name__}", **where)
    name = raw.get("name")
    where["layer"] = str(name) if name is not None else None
    for required in ("name", "type"):
        if required not in raw:
            raise ConfigError("required field is missing", field=required, **where)
    type_name = raw["type"]
    try:
        cls = layer_class(str(type_name))
    except SolverkitError as err:
        where["line"] = source.line("layers", index, "type")
        raise err.located(**where) from None
    common = {k: v for k, v in raw.items() if k in COMMON_FIELDS}
    own = {k: v for k, v in raw.items() if k not in COMMON_FIELDS}
    params_model = cls.Params
    try:
        params = params_model.model_validate(own)
    except ValidationError as err:
        error = validation_error(err, params_model, source, ("layers", index), where["layer"],
                                 index)
        if error.message.startswith("unknown field"):
            common_hint = did_you_mean(error.field, COMMON_FIELDS)
            if common_hint and not did_you_mean(error.field, params_model.model_fields):
                error.message = f"unknown field '{error.field}'{common_hint}"
        raise error from None
    try:
        spec = LayerSpec.model_validate({**common, "params": params})
    except ValidationError as err:
        raise validation_error(err, LayerSpec, source, ("layers", index), where["layer"],
                               index) from None
    if spec.include and spec.exclude:
        raise ConfigError("give include rules or exclude rules, not both", field="include",
                          **{**where, "line": source.line("layers", index, "exclude")})
    return spec


def load_net_spec(source) -> NetSpec:
    """A ``NetSpec`` from a path, YAML or Caffe prototxt text, a dict, or a NetSpec (as is)."""
    if isinstance(source, NetSpec):
        return source
    if isinstance(source, SpecSource):
        src = source
    else:
        from ..caffe.prototxt import is_prototxt, net_text_source
        src = net_text_source(source) if is_prototxt(source) else read_spec_source(source,
                                                                                   "net spec")
    raw = dict(src.raw)
    layers_raw = raw.pop("layers", None)
    if layers_raw is None:
        raise ConfigError("a net spec needs a 'layers:' list", file=src.file, field="layers")
    if not isinstance(layers_raw, list):
        raise ConfigError("'layers' must be a list of layer entries", file=src.file,
                          line=src.line("layers"), field="layers")
    try:
        head = NetSpec.model_validate(raw)
    except ValidationError as err:
        raise validation_error(err, NetSpec, src) from None
    try:
        import_plugins(head.plugins)
    except SolverkitError as err:
        raise err.located(file=src.file, line=src.line("plugins")) from None
    layers = [_layer_spec(layer, i, src) for i, layer in enumerate(layers_raw)]
    spec = NetSpec.model_construct(**{**head.__dict__, "layers": layers})
    spec._source = src
    return spec
