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
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
)

from .. import registry
from .models import SourcedSpec, SpecSource, StrictModel
from .training import BestSnapshotParams, CallbackSpec, EarlyStopParams, NetState


class FieldsModel(StrictModel):
    """Base of an update rule's or an lr policy's own solver fields (flat in the spec);
    as every spec model: unknown fields are errors, numbers strict and finite."""


class SolverSpec(SourcedSpec, StrictModel):
    """A solver spec (Caffe's SolverParameter, the fields solverkit implements).

    The fields every solver has are declared here; the fields of its update type and of
    its lr policy are ``rule_params`` and ``policy_params``, each an instance of the
    registered rule's or policy's own ``Params`` model, validated on its own by
    ``load_solver_spec``. They read flat too, as the YAML writes them (``spec.momentum``,
    ``spec.gamma``); a field of another type or policy reads as ``None``. ``model_dump``
    gives all three flat. Field order matters: ``regularization_type`` is validated
    before ``elastic_net_beta``, whose meaning depends on it.
    """

    model_config = ConfigDict(extra="forbid")

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
    snapshot_format: Literal["NPZ", "BINARYPROTO", "HDF5"] = Field(
        "NPZ", description="NPZ: .model.npz + .solverstate.npz; BINARYPROTO: Caffe's "
        ".caffemodel + .solverstate; HDF5: Caffe's .caffemodel.h5 + .solverstate.h5")
    callbacks: list[CallbackSpec] = Field(
        default_factory=list, description="registered callbacks the solver runs, in order: "
        "each entry {type: Name, ...its fields}")

    _source: SpecSource | None = PrivateAttr(default=None)
    _rule: FieldsModel | None = PrivateAttr(default=None)
    _policy: FieldsModel | None = PrivateAttr(default=None)

    def with_parts(self, rule: FieldsModel, policy: FieldsModel,
                   source: SpecSource | None) -> SolverSpec:
        """This spec completed with its update type's and lr policy's validated fields."""
        self._rule, self._policy, self._source = rule, policy, source
        return self

    @property
    def rule_params(self) -> FieldsModel | None:
        """The update type's own fields, as its ``Params`` model."""
        return self._rule

    @property
    def policy_params(self) -> FieldsModel | None:
        """The lr policy's own fields, as its ``Params`` model."""
        return self._policy

    def __getattr__(self, name: str):
        # the rule's and the policy's fields first: the schedule reads them every iteration,
        # and pydantic's lookup raises (slowly) for every name that is not private
        if not name.startswith("_"):
            private = self.__pydantic_private__ or {}       # read directly: no lookup chain
            for part in (private.get("_rule"), private.get("_policy")):
                if part is not None and name in type(part).model_fields:
                    return getattr(part, name)
        try:
            return super().__getattr__(name)    # pydantic's: private attributes
        except AttributeError:
            if not name.startswith("_") and name in rule_and_policy_fields():
                return None                     # another type's or policy's field
            raise

    @model_serializer(mode="wrap")
    def _flat(self, handler, info):
        out = handler(self)
        for part in (self._rule, self._policy):
            if part is not None:
                out.update(part.model_dump(mode=info.mode, exclude_unset=info.exclude_unset,
                                           exclude_defaults=info.exclude_defaults))
        return out

    def given_fields(self) -> list[tuple[str, object, bool]]:
        """Every field of this spec and of its type and policy: ``(name, value, given)``,
        ``given`` when the spec set it (the file or an override), not a default."""
        rows = [(name, getattr(self, name), name in self.model_fields_set)
                for name in type(self).model_fields]
        for part in (self._rule, self._policy):
            if part is not None:
                rows += [(name, getattr(part, name), name in part.model_fields_set)
                         for name in type(part).model_fields]
        return rows

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

    # ----------------------------------------------------------- where it came from
    def resolve(self, path: str) -> Path:
        """A path the spec names (``net:``, ``test_net:``), relative to the solver file's folder."""
        path = Path(path)
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


class _AnyPolicyField(FieldsModel):
    """The fields of a policy that declared none: any known policy field, all optional."""

    def __reduce__(self):
        # the model is made from the registered policies: made again when unpickled
        return (_any_policy_fields, (self.model_dump(exclude_unset=True),))


_LENIENT: dict[tuple, type[_AnyPolicyField]] = {}     # per set of registered policies


def _lenient_policy_model() -> type[_AnyPolicyField]:
    key = tuple(registry.policies().items())
    if key not in _LENIENT:
        fields = {}
        for entry in registry.policies().values():
            params = policy_params(entry)
            for name, info in (params.model_fields.items() if params else ()):
                fields.setdefault(name, (info.annotation | None, None))
        _LENIENT[key] = create_model("AnyPolicyFields", __base__=_AnyPolicyField, **fields)
    return _LENIENT[key]


def _any_policy_fields(values: dict) -> _AnyPolicyField:
    return _lenient_policy_model().model_validate(values)


def policy_model(entry) -> type[FieldsModel]:
    """The model of a registered policy's own fields; for a policy that declared none,
    one that takes any known policy field, none required."""
    return policy_params(entry) or _lenient_policy_model()
