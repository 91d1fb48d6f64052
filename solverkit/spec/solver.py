"""The solver spec: Caffe's field names, per-type and per-policy fields, loading with overrides.

The fields every solver has are declared here. The fields of an update type (``momentum``,
``delta``, …) and of an lr policy (``gamma``, ``stepsize``, …) come from the registered rule's
and policy's own ``Params`` models, so a plugin's rule or policy is checked like a built-in
one: a field the chosen ``type`` or ``lr_policy`` does not use is an error naming it, and so
is a field they need that is missing. Per-type fields left out take the type's default, so
editing only ``type:`` (or ``--set type=Adam``) gives a sensible run. ``momentum: 0`` is
accepted by every type (it means "no momentum" everywhere). ``docs/solvers.md`` lists the
fields of every built-in type and policy with their defaults (``scripts/solver_reference.py``
writes it from the registries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from .. import registry
from ..errors import ConfigError, SolverkitError, did_you_mean
from .net import StrictModel
from .source import (
    SourcedSpec,
    SpecSource,
    load_yaml_value,
    read_spec_source,
    validation_error,
)
from .training import BestSnapshot, EarlyStop, NetState


class FieldsModel(StrictModel):
    """Base of an update rule's or an lr policy's own solver fields (flat in the spec);
    as every spec model: unknown fields are errors, numbers strict and finite."""


class SolverSpec(SourcedSpec, StrictModel):
    """A solver spec (Caffe's SolverParameter, the fields solverkit implements).

    A spec read by ``load_solver_spec`` is an instance of a subclass that adds the fields
    of its update type (``rule_class``) and lr policy; a known field that neither uses
    reads as ``None``. Field order matters: ``regularization_type`` is validated before
    ``elastic_net_beta``, whose meaning depends on it.
    """

    model_config = ConfigDict(extra="forbid")

    # the registered update rule class and lr policy this spec was validated for
    rule_class: ClassVar[Any] = None
    policy_entry: ClassVar[Any] = None

    net: str | None = None
    net_param: dict | None = Field(None, description="the net spec inline (train and test)")
    train_net: str | None = Field(None, description="the training net's spec file")
    train_net_param: dict | None = Field(None, description="the training net inline")
    test_net: list[str] = Field(default_factory=list, description="test nets' spec files")
    test_net_param: list[dict] = Field(default_factory=list, description="test nets inline")
    train_state: NetState = Field(default_factory=NetState,
                                  description="stage and level of the training net")
    test_state: list[NetState] = Field(default_factory=list,
                                       description="stage and level of each test net")
    plugins: list[str] = Field(default_factory=list, description="modules imported first: "
                               "their update types and lr policies become usable")
    type: str = Field("SGD", description="the update rule, a registered type")
    lr_policy: str = Field("fixed", description="the learning-rate policy, a registered one")
    regularization_type: Literal["L2", "L1", "ElasticNet"] = "L2"

    base_lr: float = Field(ge=0)
    max_iter: int = Field(ge=0)
    warmup_iter: int = Field(0, ge=0)

    weight_decay: float = Field(0.0, ge=0)
    elastic_net_beta: float | None = Field(None, validate_default=True, ge=0)
    iter_size: int = Field(1, ge=1)
    clip_gradients: float = -1.0

    display: int = Field(0, ge=0)
    average_loss: int = Field(1, ge=1)
    test_iter: int | list[int] | None = None
    test_interval: int = Field(0, ge=0)
    test_initialization: bool = True
    snapshot: int = Field(0, ge=0)
    snapshot_prefix: str | None = None
    snapshot_after_train: bool = True
    random_seed: int = Field(-1, ge=-1)
    snapshot_best: BestSnapshot | None = None
    snapshot_keep: int = Field(0, ge=0, description="periodic snapshots kept (0: all)")
    early_stop: EarlyStop | None = None
    debug_info: bool = False
    log: list[Literal["csv", "tensorboard"]] = Field(default_factory=lambda: ["csv"])
    snapshot_format: Literal["NPZ", "BINARYPROTO", "HDF5"] = Field(
        "NPZ", description="NPZ: .model.npz + .solverstate.npz; BINARYPROTO: Caffe's "
        ".caffemodel + .solverstate; HDF5: Caffe's .caffemodel.h5 + .solverstate.h5")

    _source: SpecSource | None = PrivateAttr(default=None)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in rule_and_policy_fields():     # another type's or policy's field
                return None
            raise

    def __reduce__(self):
        # the model class is made per type and policy: pickle by their names instead
        # (field values as they are: nested models such as train_state stay models)
        if self.rule_class is None:
            return super().__reduce__()
        return (_unpickle, (self.rule_class.type, self.policy_entry.policy_name,
                            dict(self), self.model_fields_set, self._source))

    @field_validator("test_net", "test_net_param", "test_state", "log", mode="before")
    @classmethod
    def _listify(cls, value):
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    @field_validator("test_iter")
    @classmethod
    def _positive_test_iter(cls, value):
        for count in value if isinstance(value, list) else [value]:
            if count is not None and count < 1:
                raise ValueError(f"test_iter must be at least 1, got {count}")
        return value

    @field_validator("log")
    @classmethod
    def _csv_always(cls, value):
        if "csv" not in value:
            raise ValueError("the CSV log is always written: list csv (and tensorboard)")
        return list(dict.fromkeys(value))

    @field_validator("regularization_type")
    @classmethod
    def _decoupled_decay(cls, value: str) -> str:
        rule = cls.rule_class
        if rule is not None and rule.decoupled_decay and value != "L2":
            raise ValueError(f"{rule.type} decays weights itself (decoupled, from "
                             f"weight_decay); regularization_type must be absent or L2, "
                             f"not {value}")
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

    # ----------------------------------------------------------- what it uses
    @property
    def rule_params(self) -> BaseModel:
        """The update type's own fields, as its ``Params`` model."""
        params = self.rule_class.Params
        return params.model_validate({name: getattr(self, name) for name in params.model_fields})

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


# ------------------------------------------------------------------ fields from the registry
def policy_params(entry) -> type[BaseModel] | None:
    """The fields model of a registered lr policy (``None``: it declared none)."""
    return getattr(entry, "Params", None)


def rule_fields() -> dict[str, dict[str, object]]:
    """update type -> {its own field: default (``PydanticUndefined`` when required)}."""
    return {name: {f: info.default for f, info in cls.Params.model_fields.items()}
            for name, cls in registry.update_types().items()}


def policy_fields() -> dict[str, dict[str, object]]:
    """lr_policy -> {its own field: default (``PydanticUndefined`` when required)};
    a policy without a fields model is left out (it takes any policy field)."""
    table = {}
    for name, entry in registry.policies().items():
        params = policy_params(entry)
        if params is not None:
            table[name] = {f: info.default for f, info in params.model_fields.items()}
    return table


def rule_and_policy_fields() -> dict[str, object]:
    """Every field some registered type or policy uses -> its ``FieldInfo`` (the first one)."""
    found = {}
    for cls in registry.update_types().values():
        for name, info in cls.Params.model_fields.items():
            found.setdefault(name, info)
    for entry in registry.policies().values():
        params = policy_params(entry)
        for name, info in (params.model_fields.items() if params else ()):
            found.setdefault(name, info)
    return found


def known_fields() -> set[str]:
    return set(SolverSpec.model_fields) | set(rule_and_policy_fields())


def _users(table: dict[str, dict], field: str) -> list[str]:
    return [name for name, fields in table.items() if field in fields]


_MODELS: dict[tuple, type[SolverSpec]] = {}


class _AnyPolicyField(FieldsModel):
    """The fields of a policy that declared none: any known policy field, all optional."""


def _lenient_policy_model() -> type[BaseModel]:
    fields = {}
    for entry in registry.policies().values():
        params = policy_params(entry)
        for name, info in (params.model_fields.items() if params else ()):
            fields.setdefault(name, (info.annotation | None, None))
    return create_model("AnyPolicyFields", __base__=_AnyPolicyField, **fields)


def spec_model(rule_cls: type, policy_entry) -> type[SolverSpec]:
    """The spec model for one update type and one lr policy: the common fields plus theirs."""
    params = policy_params(policy_entry)
    key = (rule_cls, policy_entry, params)
    model = _MODELS.get(key)
    if model is None:
        if params is None:
            params = _lenient_policy_model()
        clash = set(rule_cls.Params.model_fields) & set(params.model_fields)
        if clash:
            raise ConfigError(f"type {rule_cls.type} and lr_policy "
                              f"{policy_entry.policy_name} both declare {sorted(clash)}")
        model = type(SolverSpec)("SolverSpec", (SolverSpec, rule_cls.Params, params),
                                 {"__module__": __name__, "__qualname__": "SolverSpec"})
        model.rule_class = rule_cls
        model.policy_entry = policy_entry
        _MODELS[key] = model
    return model


def _unpickle(type_name: str, policy_name: str, fields: dict, fields_set: set, source):
    registry.import_plugins(fields.get("plugins"))
    model = spec_model(registry.update_class(type_name), registry.policy(policy_name))
    spec = model.model_construct(fields_set, **fields)
    spec._source = source
    return spec


# ------------------------------------------------------------------ loading
def _string_fields() -> set[str]:
    """Fields whose values stay text on the command line (``--set snapshot_prefix=2024``)."""
    infos = {**rule_and_policy_fields(), **SolverSpec.model_fields}
    return {name for name, info in infos.items()
            if ("str" in str(info.annotation) or "Literal" in str(info.annotation))
            and not str(info.annotation).startswith(("list", "dict"))}


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
    known = known_fields()
    strings = _string_fields()
    parsed = {}
    for key, value in items:
        if key not in known:
            raise ConfigError(f"--set: unknown solver field '{key}'{did_you_mean(key, known)}",
                              field=key)
        if isinstance(value, str) and not value:
            if key in SolverSpec.model_fields:
                raise ConfigError(f"--set {key}= has no value (to keep the spec's value, "
                                  f"leave --set {key} out)", field=key)
            parsed[key] = None      # a type's or policy's field: the spec's value is dropped
            continue
        if isinstance(value, str) and key not in strings:
            try:
                value = load_yaml_value(value)
            except (yaml.YAMLError, ConfigError):
                raise ConfigError(f"--set {key}={value}: not a valid value", field=key) from None
        parsed[key] = value
    return parsed


def _choose(raw: dict, src: SpecSource):
    """The registered rule and policy ``raw`` names (plugins imported first)."""
    plugins = raw.get("plugins") or []
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError("plugins must be a list of module names", field="plugins",
                          line=src.line("plugins"))
    registry.import_plugins(plugins)
    chosen = []
    for field, default, table in (("type", "SGD", registry.update_types()),
                                  ("lr_policy", "fixed", registry.policies())):
        name = raw.get(field, default)
        if name not in table:
            choices = ", ".join(f"'{n}'" for n in table)
            raise ConfigError(f"'{name}' is not one of {choices}{did_you_mean(name, table)}",
                              field=field, line=src.line(field))
        chosen.append(table[name])
    return chosen


def _check_fields(raw: dict, rule_cls, policy_entry, src: SpecSource) -> None:
    """Unknown, unused and missing fields, each an error naming it (in file order)."""
    known = known_fields()
    own_rule = rule_cls.Params.model_fields
    params = policy_params(policy_entry)
    own_policy = params.model_fields if params is not None else None
    rules, policies = rule_fields(), policy_fields()
    for name in list(raw):
        line = src.line(name)
        if name not in known:
            raise ConfigError(f"unknown field '{name}'{did_you_mean(name, known)}",
                              field=name, line=line)
        if name in SolverSpec.model_fields:
            continue
        if raw[name] is None:                   # null: not given (``--set stepsize=``)
            del raw[name]
            continue
        if name in own_rule:
            continue
        if name in _users_of_any(rules):
            if name == "momentum" and raw[name] == 0:
                del raw[name]                   # "no momentum" is fine for every type
                continue
            raise ConfigError(f"type {rule_cls.type} does not use {name} (used by "
                              f"{', '.join(_users(rules, name))}); remove it",
                              field=name, line=line)
        if own_policy is not None and name not in own_policy:
            raise ConfigError(f"lr_policy {policy_entry.policy_name} does not use {name} "
                              f"(used by {', '.join(_users(policies, name))}); remove it",
                              field=name, line=line)
    for what, name_of, fields in (("type", rule_cls.type, own_rule),
                                  ("lr_policy", policy_entry.policy_name, own_policy or {})):
        for name, info in fields.items():
            if info.is_required() and name not in raw:
                raise ConfigError(f"{what} {name_of} needs {name}", field=name,
                                  line=src.line(what))


def _users_of_any(table: dict[str, dict]) -> set[str]:
    return {field for fields in table.values() for field in fields}


def load_solver_spec(source, overrides=None) -> SolverSpec:
    """A ``SolverSpec`` from a path, YAML text, a dict or a SolverSpec, with ``overrides``.

    ``overrides`` is a dict or a list of ``"key=value"`` strings (the CLI's ``--set``).
    They replace the file's values before validation, so per-type defaults follow an
    overridden ``type``. The spec's ``plugins`` are imported before anything is checked.
    """
    if isinstance(source, SolverSpec):
        src = source._source or SpecSource(raw={})
        if overrides is None:
            return source
        raw = source.model_dump(exclude_unset=True)
    else:
        from ..caffe.prototxt import is_prototxt, solver_text_source
        src = solver_text_source(source) if is_prototxt(source) else read_spec_source(
            source, "solver spec")
        raw = dict(src.raw)
    try:
        registry.import_plugins(raw.get("plugins") if isinstance(raw.get("plugins"), list)
                                else None)
        extra = parse_overrides(overrides)
    except SolverkitError as err:
        line = src.line("plugins") if err.field == "plugins" else None
        raise err.located(file=src.file, line=line) from None
    if extra.get("net") is not None:        # a net named on the command line: from the cwd
        extra["net"] = str(Path(extra["net"]).resolve())
    raw.update(extra)
    try:
        rule_cls, policy_entry = _choose(raw, src)
        _check_fields(raw, rule_cls, policy_entry, src)
        model = spec_model(rule_cls, policy_entry)
        try:
            spec = model.model_validate(raw)
        except ValidationError as err:
            raise validation_error(err, model, src) from None
    except ConfigError as error:
        error.file = error.file or src.file
        if error.field in extra:
            error.message = f"--set {error.field}={extra[error.field]}: {error.message}"
            error.line = None
        raise error from None
    spec._source = src
    return spec


def __getattr__(name: str):
    if name == "SOLVER_TYPES":      # the registered update types, plugins' included
        return tuple(registry.update_types())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
