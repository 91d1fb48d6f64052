"""The solver spec's fields: the common ones (``SolverSpec``) and those of the registered
update types and lr policies.

The fields every solver has are declared here. The fields of an update type (``momentum``,
``delta``, …) and of an lr policy (``gamma``, ``stepsize``, …) come from the registered rule's
and policy's own ``Params`` models, so a plugin's rule or policy is checked like a built-in
one. ``docs/solvers.md`` lists the fields of every built-in type and policy with their
defaults (``scripts/solver_reference.py`` writes it from the registries). Loading a spec
(reading, plugins, overrides, the checks that name a field) is ``spec.solver``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    create_model,
    field_validator,
)

from .. import registry
from ..errors import ConfigError
from .models import SourcedSpec, SpecSource, StrictModel
from .training import BestSnapshotParams, CallbackSpec, EarlyStopParams, NetState


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
    snapshot_best: BestSnapshotParams | None = None
    snapshot_keep: int = Field(0, ge=0, description="periodic snapshots kept (0: all)")
    early_stop: EarlyStopParams | None = None
    debug_info: bool = False
    log: list[Literal["csv", "tensorboard"]] = Field(default_factory=lambda: ["csv"])
    callbacks: list[CallbackSpec] = Field(
        default_factory=list, description="registered callbacks the solver runs, in order: "
        "each entry {type: Name, ...its fields}")

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
