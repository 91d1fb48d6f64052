"""Solver fields for training control: several nets and their states, best and last-N
snapshots, early stopping, callbacks named in the spec (Caffe's names where Caffe has
the field)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_serializer

from .models import StrictModel, as_list


class NetState(StrictModel):
    """Caffe's NetState for a net the solver builds: its ``stage`` names and ``level``
    (the phase is the net's role: TRAIN for the training net, TEST for test nets; a
    ``phase`` given must agree)."""

    phase: Literal["TRAIN", "TEST"] | None = None
    stage: list[str] = Field(default_factory=list)
    level: int = 0

    _listify = field_validator("stage", mode="before")(as_list)


class CallbackParams(StrictModel):
    """Base of a callback's own fields (``callbacks: [{type: Name, field: value}]``)."""


class CallbackSpec(StrictModel):
    """One entry of ``callbacks:``: the registered ``type`` and its validated ``params``
    (written back flat, as in the YAML)."""

    type: str
    params: CallbackParams = Field(default_factory=CallbackParams)

    @model_serializer
    def _flat(self) -> dict:
        return {"type": self.type, **self.params.model_dump()}


class MonitorParams(CallbackParams):
    """A test output to watch: its name (``accuracy``; an output of the second test net
    is ``test1/accuracy``) and whether smaller (``min``) or larger (``max``) is better."""

    output: str
    mode: Literal["min", "max"] = "min"


class BestSnapshotParams(MonitorParams):
    """``snapshot_best``: keep ``<prefix>_best.model.npz`` of the best test so far."""

    mode: Literal["min", "max"] = "max"


class KeepLastParams(CallbackParams):
    """``snapshot_keep``: the periodic snapshots kept (the newest ``keep``)."""

    keep: int = Field(ge=1)


class DisplayParams(CallbackParams):
    """A callback that shows values every ``display`` iterations (0: its own choice)."""

    display: int = Field(0, ge=0)


class EarlyStopParams(MonitorParams):
    """``early_stop``: stop when ``output`` has not improved by more than ``min_delta`` for
    ``patience`` test rounds."""

    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


class PlateauParams(MonitorParams):
    """``plateau``: the fields of ``lr_policy: plateau`` (as Keras's ReduceLROnPlateau):
    multiply the rate by ``gamma`` (not below ``min_lr``) after ``patience`` test rounds
    without an improvement larger than ``threshold``, then wait ``cooldown`` rounds."""

    patience: int = Field(2, ge=0)
    cooldown: int = Field(0, ge=0)
    threshold: float = Field(0.0, ge=0)


def improved(value: float, best: float | None, mode: str, delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``delta`` (``best`` None: always)."""
    if best is None:
        return True
    return value < best - delta if mode == "min" else value > best + delta
