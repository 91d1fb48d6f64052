"""The spec's schema: pydantic models of a net spec and its parts, and where a spec came from.

These are leaves: they import nothing of solverkit but its errors, so layers, fillers and
the loaders above can all name them. A layer entry holds Caffe's common fields (name,
type, bottom, top, include/exclude, loss_weight, param, propagate_down); the type's own
fields are its ``LayerParams`` model, which the loader (``spec.net``) finds in the layer
registry. ``StrictModel`` is the base of every spec model, plugins' too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from ..errors import SolverkitError


@dataclass
class SpecSource:
    """The raw mapping of a spec file plus where it came from (for messages and relative paths)."""

    raw: dict
    file: str | None = None          # the path as the user gave it, for messages
    base_dir: Path = field(default_factory=Path.cwd)   # relative paths in the spec start here
    lines: dict[tuple, int] = field(default_factory=dict)   # key path -> 1-based line
    nets: list[SpecSource] = field(default_factory=list)    # net specs written inside it

    def line(self, *path) -> int | None:
        """The line of the deepest known prefix of ``path`` (e.g. ``("layers", 3, "pad")``)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None



class SourcedSpec:
    """Mixin for a spec model that remembers its ``SpecSource`` in ``_source``."""

    @property
    def file(self) -> str | None:
        """The file the spec was read from, as the user named it (None for a dict or text)."""
        return self._source.file if self._source else None

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths inside the spec are relative to."""
        return self._source.base_dir if self._source else Path.cwd()


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


def as_list(value):
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

    _listify = field_validator("stage", "not_stage", mode="before")(as_list)

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
                               "propagate_down", mode="before")(as_list)

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
