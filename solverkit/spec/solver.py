"""The solver spec of SPEC §4: Caffe's field names, per-type defaults, and loading with overrides.

A field the chosen ``type`` or ``lr_policy`` does not use is an error naming it, and so is
a field they need that is missing. Per-type fields left out take the type's default, so
editing only ``type:`` (or ``--set type=Adam``) gives a sensible run:

=========  =====================================================
type       its own fields (default)
=========  =====================================================
SGD        momentum (0)
Nesterov   momentum (0)
AdaGrad    delta (1e-8)
RMSProp    rms_decay (0.99), delta (1e-8)
AdaDelta   momentum (0.95), delta (1e-6)
Adam       momentum = β1 (0.9), momentum2 = β2 (0.999), delta = ε (1e-8)
AdamW      as Adam; regularization_type absent or L2 (decay is decoupled)
=========  =====================================================

``momentum: 0`` is accepted by every type (it means "no momentum" everywhere).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ..errors import ConfigError, did_you_mean
from .net import StrictModel
from .source import SourcedSpec, SpecSource, read_spec_source, validation_error

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "AdamW")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "cosine")

# type -> {field it uses: default}
TYPE_FIELDS: dict[str, dict[str, float]] = {
    "SGD": {"momentum": 0.0},
    "Nesterov": {"momentum": 0.0},
    "AdaGrad": {"delta": 1e-8},
    "RMSProp": {"rms_decay": 0.99, "delta": 1e-8},
    "AdaDelta": {"momentum": 0.95, "delta": 1e-6},
    "Adam": {"momentum": 0.9, "momentum2": 0.999, "delta": 1e-8},
    "AdamW": {"momentum": 0.9, "momentum2": 0.999, "delta": 1e-8},
}

# lr_policy -> {field it uses: default, or None when the field is required}
POLICY_FIELDS: dict[str, dict[str, float | None]] = {
    "fixed": {},
    "step": {"gamma": None, "stepsize": None},
    "exp": {"gamma": None},
    "inv": {"gamma": None, "power": None},
    "multistep": {"gamma": None, "stepvalue": None},
    "poly": {"power": None},
    "sigmoid": {"gamma": None, "stepsize": None},
    "cosine": {"min_lr": 0.0},
}


def _users(table: dict[str, dict], field: str) -> list[str]:
    return [name for name, fields in table.items() if field in fields]


def _users_of_any(table: dict[str, dict]) -> set[str]:
    return {field for fields in table.values() for field in fields}


class SolverSpec(SourcedSpec, StrictModel):
    """A solver spec (Caffe's SolverParameter, the fields solverkit implements).

    Field order matters: ``type``, ``lr_policy`` and ``regularization_type`` are validated
    before the fields whose meaning depends on them.
    """

    model_config = ConfigDict(extra="forbid")

    net: str | None = None
    type: Literal["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "AdamW"] = "SGD"
    lr_policy: Literal["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid",
                       "cosine"] = "fixed"
    regularization_type: Literal["L2", "L1", "ElasticNet"] = "L2"

    base_lr: float = Field(ge=0)
    max_iter: int = Field(ge=0)

    momentum: float | None = Field(None, validate_default=True, ge=0, lt=1)
    momentum2: float | None = Field(None, validate_default=True, ge=0, lt=1)
    rms_decay: float | None = Field(None, validate_default=True, ge=0, lt=1)
    delta: float | None = Field(None, validate_default=True, gt=0)

    gamma: float | None = Field(None, validate_default=True)
    power: float | None = Field(None, validate_default=True)
    stepsize: int | None = Field(None, validate_default=True, gt=0)
    stepvalue: list[int] | None = Field(None, validate_default=True)
    min_lr: float | None = Field(None, validate_default=True, ge=0)
    warmup_iter: int = Field(0, ge=0)

    weight_decay: float = Field(0.0, ge=0)
    elastic_net_beta: float | None = Field(None, validate_default=True, ge=0)
    iter_size: int = Field(1, ge=1)
    clip_gradients: float = -1.0

    display: int = Field(0, ge=0)
    average_loss: int = Field(1, ge=1)
    test_iter: int | None = Field(None, ge=1)
    test_interval: int = Field(0, ge=0)
    test_initialization: bool = True
    snapshot: int = Field(0, ge=0)
    snapshot_prefix: str | None = None
    snapshot_after_train: bool = True
    random_seed: int = Field(-1, ge=-1)

    _source: SpecSource | None = PrivateAttr(default=None)

    # ----------------------------------------------------------- per-type fields
    @field_validator("regularization_type")
    @classmethod
    def _adamw_decouples(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") == "AdamW" and value != "L2":
            raise ValueError(f"AdamW decays weights itself (decoupled, from weight_decay); "
                             f"regularization_type must be absent or L2, not {value}")
        return value

    @field_validator("momentum", "momentum2", "rms_decay", "delta")
    @classmethod
    def _type_field(cls, value, info: ValidationInfo):
        solver_type = info.data.get("type")
        if solver_type is None:            # the type itself is invalid: that error comes first
            return value
        own = TYPE_FIELDS[solver_type]
        name = info.field_name
        if name not in own:
            if value is not None and not (name == "momentum" and value == 0):
                raise ValueError(f"type {solver_type} does not use {name} (used by "
                                 f"{', '.join(_users(TYPE_FIELDS, name))}); remove it")
            return value
        return own[name] if value is None else value

    @field_validator("gamma", "power", "stepsize", "stepvalue", "min_lr")
    @classmethod
    def _policy_field(cls, value, info: ValidationInfo):
        policy = info.data.get("lr_policy")
        if policy is None:
            return value
        own = POLICY_FIELDS[policy]
        name = info.field_name
        if name not in own:
            if value is not None:
                raise ValueError(f"lr_policy {policy} does not use {name} (used by "
                                 f"{', '.join(_users(POLICY_FIELDS, name))}); remove it")
            return value
        if value is None:
            if own[name] is None:
                raise ValueError(f"lr_policy {policy} needs {name}")
            return own[name]
        if name == "stepvalue":
            if not value:
                raise ValueError("stepvalue needs at least one iteration")
            if any(b <= a for a, b in itertools.pairwise(value)):
                raise ValueError(f"stepvalue must be strictly increasing, got {value}")
        return value

    @field_validator("elastic_net_beta")
    @classmethod
    def _elastic_net_field(cls, value, info: ValidationInfo):
        regularization = info.data.get("regularization_type")
        if regularization is None:
            return value
        if regularization != "ElasticNet":
            if value is not None:
                raise ValueError(f"elastic_net_beta is used only by regularization_type "
                                 f"ElasticNet, not {regularization}; remove it")
            return value
        return 1.0 if value is None else value

    @field_validator("stepvalue", mode="before")
    @classmethod
    def _listify(cls, value):
        return [value] if isinstance(value, int) else value

    # ----------------------------------------------------------- where it came from
    def net_path(self) -> Path | None:
        """``net:`` resolved against the solver file's folder (``None`` when not given)."""
        if self.net is None:
            return None
        path = Path(self.net)
        return path if path.is_absolute() else self.base_dir / path

    def default_snapshot_prefix(self, net_name: str) -> str:
        """``snapshot_prefix`` if given; else the solver file without extension, or ./<net name>."""
        if self.snapshot_prefix is not None:
            return self.snapshot_prefix
        if self.file is not None:
            return str(Path(self.file).with_suffix(""))
        return str(Path(".") / net_name)

    def line_of(self, field: str) -> int | None:
        return self._source.line(field) if self._source else None


def _string_fields() -> set[str]:
    """Fields whose values stay text on the command line (``--set snapshot_prefix=2024``)."""
    return {name for name, info in SolverSpec.model_fields.items()
            if "str" in str(info.annotation) or "Literal" in str(info.annotation)}


def parse_overrides(overrides) -> dict:
    """``{"type": "Adam"}`` or ``["type=Adam", "base_lr=0.001"]`` -> a dict typed for the spec.

    Values of numeric, boolean and list fields are read as YAML (``stepvalue=[100, 200]``,
    ``test_initialization=false``); pydantic then checks them against the field.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            key, sep, value = str(text).partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"--set takes key=value pairs, got '{text}'", field=key or None)
            items.append((key, value.strip()))
    known = SolverSpec.model_fields
    strings = _string_fields()
    parsed = {}
    for key, value in items:
        if key not in known:
            raise ConfigError(f"--set: unknown solver field '{key}'{did_you_mean(key, known)}",
                              field=key)
        if isinstance(value, str) and key not in strings:
            try:
                value = yaml.safe_load(value) if value else None
            except yaml.YAMLError:
                raise ConfigError(f"--set {key}={value}: not a valid value", field=key) from None
        parsed[key] = value
    return parsed


def load_solver_spec(source, overrides=None) -> SolverSpec:
    """A ``SolverSpec`` from a path, YAML text, a dict or a SolverSpec, with ``overrides``.

    ``overrides`` is a dict or a list of ``"key=value"`` strings (the CLI's ``--set``).
    They replace the file's values before validation, so per-type defaults follow an
    overridden ``type``.
    """
    extra = parse_overrides(overrides)
    if extra.get("net") is not None:        # a net named on the command line: from the cwd
        extra["net"] = str(Path(extra["net"]).resolve())
    if isinstance(source, SolverSpec):
        if not extra:
            return source
        src = source._source or SpecSource(raw={})
        raw = source.model_dump(exclude_unset=True)
    else:
        from ..caffe.prototxt import is_prototxt, solver_text_source
        src = solver_text_source(source) if is_prototxt(source) else read_spec_source(
            source, "solver spec")
        raw = dict(src.raw)
    raw.update(extra)
    try:
        spec = SolverSpec.model_validate(raw)
    except ValidationError as err:
        error = validation_error(err, SolverSpec, src)
        if error.field in extra:
            error.message = f"--set {error.field}={extra[error.field]}: {error.message}"
            error.line = None
        elif error.line is None and error.field in _users_of_any(POLICY_FIELDS):
            error.line = src.line("lr_policy")      # a field the policy needs is missing
        raise error from None
    spec._source = src
    return spec
