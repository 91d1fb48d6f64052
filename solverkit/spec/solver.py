"""Loading a solver spec: reading it (YAML or Caffe prototxt), plugins, ``--set`` overrides,
and the checks that name a field.

A field the chosen ``type`` or ``lr_policy`` does not use is an error naming it, and so is
a field they need that is missing. Per-type fields left out take the type's default, so
editing only ``type:`` (or ``--set type=Adam``) gives a sensible run. ``momentum: 0`` is
accepted by every type (it means "no momentum" everywhere). Each ``callbacks:`` entry is
validated by its registered type's ``Params``. The models are in ``spec.solver_fields``
(re-exported here).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from .. import registry
from ..caffe.prototxt import is_prototxt, solver_text_source
from ..errors import ConfigError, SolverkitError, did_you_mean
from .net import load_net_spec
from .solver_fields import (  # noqa: F401  (the models, re-exported for `from spec.solver import`)
    FieldsModel,
    SolverSpec,
    known_fields,
    policy_fields,
    policy_model,
    policy_params,
    rule_and_policy_fields,
    rule_fields,
)
from .source import SpecSource, load_yaml_value, read_spec_source, validation_error
from .training import CallbackSpec


# ------------------------------------------------------------------ loading
def _string_fields(infos: dict) -> set[str]:
    """Fields whose values stay text on the command line (``--set snapshot_prefix=2024``)."""
    return {name for name, info in infos.items()
            if ("str" in str(info.annotation) or "Literal" in str(info.annotation))
            and not str(info.annotation).startswith(("list", "dict"))}


def parse_overrides(overrides, known: dict | None = None) -> dict:
    """``{"type": "Adam"}`` or ``["type=Adam", "base_lr=0.001"]`` -> a dict typed for the spec.

    Values of numeric, boolean and list fields are read as YAML (``stepvalue=[100, 200]``,
    ``test_initialization=false``); pydantic then checks them against the field.
    ``known``: every known field and its ``FieldInfo`` (``known_field_infos()``).
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
    known = known_field_infos() if known is None else known
    strings = _string_fields(known)
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


def known_field_infos() -> dict:
    """Every solver field, the common ones and those of every registered type and policy
    (plugins' included), with its ``FieldInfo``."""
    return {**rule_and_policy_fields(), **SolverSpec.model_fields}


def _plugins(raw: dict, src: SpecSource) -> list[str]:
    plugins = raw.get("plugins") or []
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError("plugins must be a list of module names", field="plugins",
                          line=src.line("plugins"))
    return plugins


def _choose(raw: dict, src: SpecSource):
    """The registered rule and policy ``raw`` names."""
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


def _check_fields(raw: dict, rule_cls, policy_entry, src: SpecSource, known) -> None:
    """Unknown, unused and missing fields, each an error naming it (in file order)."""
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


def _users(table: dict[str, dict], field: str) -> list[str]:
    return [name for name, fields in table.items() if field in fields]


def _users_of_any(table: dict[str, dict]) -> set[str]:
    return {field for fields in table.values() for field in fields}


def _callback_specs(entries, src: SpecSource) -> list[CallbackSpec]:
    """``callbacks:`` entries, each validated by its registered type's ``Params``."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError("callbacks must be a list of {type: Name, ...} entries",
                          field="callbacks", line=src.line("callbacks"))
    specs = []
    for index, entry in enumerate(entries):
        if isinstance(entry, CallbackSpec):
            specs.append(entry)
            continue
        where = f"callbacks[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"a callback must be a mapping with a type, not "
                              f"{type(entry).__name__}", field=where,
                              line=src.line("callbacks", index))
        if "type" not in entry:
            raise ConfigError("required field is missing", field=f"{where}.type",
                              line=src.line("callbacks", index))
        try:
            cls = registry.callback_class(str(entry["type"]))
        except ConfigError as err:
            err.field = f"{where}.type"
            err.line = src.line("callbacks", index, "type")
            raise
        fields = {name: value for name, value in entry.items() if name != "type"}
        try:
            params = cls.Params.model_validate(fields)
        except ValidationError as err:
            error = validation_error(err, cls.Params, src, ("callbacks", index))
            error.field = f"{where}.{error.field}" if error.field else where
            raise error from None
        specs.append(CallbackSpec(type=cls.type, params=params))
    return specs


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
    elif isinstance(source, SpecSource):       # already read (a prototxt read as such)
        src = source
        raw = dict(src.raw)
    else:
        src = solver_text_source(source) if is_prototxt(source) else read_spec_source(
            source, "solver spec")
        for net in src.nets:        # a net inside the file: its mistakes name their lines
            load_net_spec(net)
        raw = dict(src.raw)
    try:
        plugins = _plugins(raw, src)
        registry.import_plugins(plugins)            # their types and fields are known next
        known = known_field_infos()
        extra = parse_overrides(overrides, known)
        if extra.get("plugins") and extra["plugins"] != plugins:
            registry.import_plugins(_plugins(extra, src))
            known = known_field_infos()
    except SolverkitError as err:
        line = src.line("plugins") if err.field == "plugins" else None
        raise err.located(file=src.file, line=line) from None
    if extra.get("net") is not None:        # a net named on the command line: from the cwd
        extra["net"] = str(Path(extra["net"]).resolve())
    raw.update(extra)
    try:
        rule_cls, policy_entry = _choose(raw, src)
        _check_fields(raw, rule_cls, policy_entry, src, known)
        if "callbacks" in raw:
            raw["callbacks"] = _callback_specs(raw["callbacks"], src)
        spec = _validate(raw, rule_cls, policy_model(policy_entry), src)
    except ConfigError as error:
        error.file = error.file or src.file
        if error.field in extra:
            error.message = f"--set {error.field}={extra[error.field]}: {error.message}"
            error.line = None
        raise error from None
    return spec


def _validate(raw: dict, rule_cls, policy_params_model, src: SpecSource) -> SolverSpec:
    """The common fields, the rule's and the policy's, each validated by its own model."""
    rule_fields = rule_cls.Params.model_fields
    policy_fields = policy_params_model.model_fields
    clash = set(rule_fields) & set(policy_fields)
    if clash:
        raise ConfigError(f"type {rule_cls.type} and lr_policy {raw.get('lr_policy', 'fixed')} "
                          f"both declare {sorted(clash)}")
    parts: dict[type, dict] = {SolverSpec: {}, rule_cls.Params: {}, policy_params_model: {}}
    for name, value in raw.items():
        model = (rule_cls.Params if name in rule_fields else
                 policy_params_model if name in policy_fields else SolverSpec)
        parts[model][name] = value
    validated = {}
    for model, fields in parts.items():
        try:
            validated[model] = model.model_validate(fields)
        except ValidationError as err:
            raise validation_error(err, model, src) from None
        if model is SolverSpec:
            regularization = validated[model].regularization_type
            if rule_cls.decoupled_decay and regularization != "L2":
                raise ConfigError(f"{rule_cls.type} decays weights itself (decoupled, from "
                                  f"weight_decay); regularization_type must be absent or L2, "
                                  f"not {regularization}", field="regularization_type",
                                  line=src.line("regularization_type"))
    return validated[SolverSpec].with_parts(validated[rule_cls.Params],
                                            validated[policy_params_model], src)


