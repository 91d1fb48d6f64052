"""JSON Schemas of the net and solver specs, for editors that validate and complete YAML.

The net schema is built from the layer registry: one model per registered type, with
Caffe's common fields (name, type, bottom, top, ...) and the type's own flat fields, joined
in a union discriminated by ``type``. Fields that accept one value or a list
(``bottom: data`` or ``bottom: [data, label]``) are described as accepting both. The
schemas describe the YAML an editor sees; the loaders stay the authority (cross-field
rules, shapes and paths are checked when the net is built).
"""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import GenerateJsonSchema

from ..registry import callback_types, import_plugins, layer_types, update_types
from ..registry import policies as registry_policies
from .models import NetSpec, NetStateRule, ParamSpec
from .solver_fields import SolverSpec, policy_fields, rule_and_policy_fields, rule_fields

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _AnyForArbitrary(GenerateJsonSchema):
    """Fields only Python can fill (arrays as an in-memory data source) accept anything."""

    def handle_invalid_for_json_schema(self, schema, error_info):
        return {}


class NetStateRuleYaml(NetStateRule):
    model_config = ConfigDict(title="NetStateRule")

    stage: str | list[str] = Field(default_factory=list)
    not_stage: str | list[str] = Field(default_factory=list)


def _common_fields(type_name: str) -> dict[str, Any]:
    """The fields every layer entry has, typed as YAML may write them."""
    one_or_list = "a single value or a list"
    return {
        "name": (str, Field(description="unique among the layers of one phase")),
        "type": (Literal[type_name], Field(description="the layer type")),
        "bottom": (str | list[str], Field(default_factory=list,
                                          description=f"input blob names ({one_or_list})")),
        "top": (str | list[str], Field(default_factory=list,
                                       description=f"output blob names ({one_or_list})")),
        "include": (NetStateRuleYaml | list[NetStateRuleYaml], Field(
            default_factory=list, description="in the net when any rule holds")),
        "exclude": (NetStateRuleYaml | list[NetStateRuleYaml], Field(
            default_factory=list, description="left out when any rule holds")),
        "loss_weight": (float | list[float] | None, Field(
            default=None, description="one per top; default 1 on a loss layer's first top")),
        "param": (ParamSpec | list[ParamSpec], Field(
            default_factory=list, description="per parameter: lr_mult, decay_mult, name")),
        "propagate_down": (bool | list[bool] | None, Field(
            default=None, description="one per bottom: whether it gets a gradient")),
        "phase": (Literal["TRAIN", "TEST"] | None, Field(
            default=None, description="run the layer as in this phase whatever the net's")),
    }


def layer_entry_model(type_name: str, cls) -> type[BaseModel]:
    """A model of one ``layers:`` entry of type ``type_name``: common and own fields, flat."""
    own = {name: (info.annotation, info) for name, info in cls.Params.model_fields.items()}
    doc = (cls.__doc__ or "").strip().splitlines()
    return create_model(
        f"{type_name}Layer",
        __config__=ConfigDict(extra="forbid", title=f"{type_name} layer",
                              json_schema_extra={"description": doc[0]} if doc else None),
        **_common_fields(type_name), **own)


def net_schema(plugins=()) -> dict:
    """The JSON Schema of a net spec, for every registered layer type (and ``plugins``)."""
    import_plugins(plugins)
    entries = [layer_entry_model(name, cls) for name, cls in sorted(layer_types().items())]
    union = functools.reduce(operator.or_, entries)
    entry = union if len(entries) == 1 else Annotated[union, Field(discriminator="type")]
    fields = {name: (info.annotation, info) for name, info in NetSpec.model_fields.items()
              if name != "layers"}
    model = create_model("NetSpec", __config__=ConfigDict(extra="forbid", title="solverkit net"),
                         **fields, layers=(list[entry], ...))
    schema = model.model_json_schema(schema_generator=_AnyForArbitrary)
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def model_schema(model: type[BaseModel], title: str) -> dict:
    """The JSON Schema of any spec model (the solver spec), with the dialect named."""
    schema = model.model_json_schema(schema_generator=_AnyForArbitrary)
    schema["title"] = title
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def _which_use(table: dict[str, dict], field: str, kind: str) -> str | None:
    from pydantic_core import PydanticUndefined
    users = [f"{name} (required)" if default is PydanticUndefined else f"{name} ({default})"
             for name, fields in table.items() for f, default in fields.items() if f == field]
    return f"used by {kind} " + ", ".join(users) if users else None


def callback_entry_model(type_name: str, cls) -> type[BaseModel]:
    """A model of one ``callbacks:`` entry of type ``type_name``: ``type`` and its fields."""
    own = {name: (info.annotation, info) for name, info in cls.Params.model_fields.items()}
    doc = (cls.__doc__ or "").strip().splitlines()
    return create_model(
        f"{type_name}Callback",
        __config__=ConfigDict(extra="forbid", title=f"{type_name} callback",
                              json_schema_extra={"description": doc[0]} if doc else None),
        type=(Literal[type_name], Field(description="the callback type")), **own)


def _callback_entry():
    entries = [callback_entry_model(name, cls) for name, cls in sorted(callback_types().items())]
    union = functools.reduce(operator.or_, entries)
    return union if len(entries) == 1 else Annotated[union, Field(discriminator="type")]


def solver_schema(plugins=()) -> dict:
    """The JSON Schema of a solver spec, from the registered update types and lr policies
    (and ``plugins``'); per-type and per-policy fields say who uses them."""
    import copy

    import_plugins(plugins)
    rules, policies = rule_fields(), policy_fields()
    fields: dict[str, Any] = {name: (info.annotation, info)
                              for name, info in SolverSpec.model_fields.items()}
    fields["type"] = (Literal[tuple(update_types())], Field("SGD", description="update rule"))
    fields["lr_policy"] = (Literal[tuple(registry_policies())],
                           Field("fixed", description="learning-rate policy"))
    fields["callbacks"] = (list[_callback_entry()], SolverSpec.model_fields["callbacks"])
    for name, info in rule_and_policy_fields().items():
        optional = copy.copy(info)
        optional.default = None
        annotation = int | list[int] if name == "stepvalue" else info.annotation
        fields[name] = (annotation | None, optional)
    model = create_model("SolverSpecYaml", __config__=ConfigDict(extra="forbid",
                                                                 title="solverkit solver"),
                         **fields)
    schema = model_schema(model, "solverkit solver")
    for name, prop in schema["properties"].items():
        notes = [note for note in (_which_use(rules, name, "type"),
                                   _which_use(policies, name, "lr_policy")) if note]
        if name == "momentum":
            notes.append("0 is accepted by every type")
        if name == "elastic_net_beta":
            notes.append("used by regularization_type ElasticNet (1)")
        if notes:
            prop["description"] = "; ".join(notes) + "; an error with any other"
    return schema
