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

from ..registry import import_plugins, layer_types
from .net import NetSpec, NetStateRule, ParamSpec

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
    users = [f"{name} ({default})" if default is not None else f"{name} (required)"
             for name, fields in table.items() for f, default in fields.items() if f == field]
    return f"used by {kind} " + ", ".join(users) if users else None


def solver_schema() -> dict:
    """The JSON Schema of a solver spec; per-type and per-policy fields say who uses them."""
    from .solver import POLICY_FIELDS, TYPE_FIELDS, SolverSpec

    class SolverSpecYaml(SolverSpec):
        model_config = ConfigDict(title="solverkit solver")

        stepvalue: int | list[int] | None = Field(None, validate_default=True)

    schema = model_schema(SolverSpecYaml, "solverkit solver")
    for name, prop in schema["properties"].items():
        notes = [note for note in (_which_use(TYPE_FIELDS, name, "type"),
                                   _which_use(POLICY_FIELDS, name, "lr_policy")) if note]
        if name == "momentum":
            notes.append("0 is accepted by every type")
        if name == "elastic_net_beta":
            notes.append("used by regularization_type ElasticNet (1)")
        if notes:
            prop["description"] = "; ".join(notes) + "; an error with any other"
    return schema
