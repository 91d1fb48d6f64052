"""Learning-rate policies (Caffe's ``lr_policy``) and linear warm-up: the rate at iteration ``it``.

Caffe's policies are below, each with its formula; ``docs/solvers.md`` lists them all
with their fields (generated from the registry by ``scripts/solver_reference.py``).
A policy is registered by name (``@register_policy``): a function
``rate(base_lr, it, spec)`` for a rate that depends on the iteration only, or a ``Policy``
subclass for one with state (``get_state``/``set_state`` go into snapshots). A ``Policy``
is also a callback of the loop (the solver adds it), so it may follow the test outputs
through ``on_test_end`` (a rate that drops when the test loss stops improving).
With ``warmup_iter = w > 0`` the rate is multiplied by ``(it + 1)/w`` for ``it < w``.
Rates are computed in double precision; Caffe's LeNet example (inv, base_lr 0.01,
gamma 1e-4, power 0.75) gives 0.00992565 at iteration 100.
"""

from __future__ import annotations

import bisect
import itertools
import math

from pydantic import Field, field_validator

from .. import registry
from ..registry import register_policy
from ..spec.solver_fields import FieldsModel, SolverSpec
from ..spec.training import PlateauParams
from .callbacks import Callback, Monitor


class PolicyParams(FieldsModel):
    """Base of a policy's own solver fields."""


class Policy(Callback):
    """An lr policy with state. ``rate(it)`` is the rate before warm-up; the policy is a
    callback of the loop (``on_test_end(it, outputs)`` sees every test's averaged outputs);
    ``get_state()`` returns JSON-able values that ``set_state`` takes back (snapshots store
    them with the schedule, not under a callback name). ``Params`` are the policy's own
    solver fields."""

    Params: type[PolicyParams] = PolicyParams

    def __init__(self, spec: SolverSpec):     # its fields are the spec's, no params of its own
        self.spec = spec

    def rate(self, it: int) -> float:
        return self.spec.base_lr

    def on_test_end(self, it: int, outputs: dict[str, float]):
        self.observe(it, outputs)

    def observe(self, it: int, outputs: dict[str, float]) -> None:
        """What ``on_test_end`` calls unless overridden (the name policies written for
        earlier versions use)."""

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        """Continue from a ``get_state()`` result."""


class _FunctionPolicy(Policy):
    """A registered rate function ``f(base_lr, it, spec)`` as a (stateless) policy."""

    def __init__(self, spec: SolverSpec, function):
        super().__init__(spec)
        self.function = function

    def rate(self, it: int) -> float:
        return self.function(self.spec.base_lr, it, self.spec)


class Schedule:
    """The rate of every iteration: the spec's policy, then warm-up. It saves itself."""

    def __init__(self, spec: SolverSpec):
        self.spec = spec
        entry = registry.policy(spec.lr_policy)
        if isinstance(entry, type) and issubclass(entry, Policy):
            self.policy = entry(spec)
        else:
            self.policy = _FunctionPolicy(spec, entry)

    def rate(self, it: int) -> float:
        """The rate the update made at iteration ``it`` uses (before each parameter's lr_mult)."""
        rate = self.policy.rate(it)
        if it < self.spec.warmup_iter:
            rate *= (it + 1) / self.spec.warmup_iter
        return float(rate)

    def get_state(self) -> dict:
        return self.policy.get_state()

    def set_state(self, state: dict) -> None:
        self.policy.set_state(state)


def learning_rate(spec: SolverSpec, it: int) -> float:
    """The rate of a stateless policy at iteration ``it`` (warm-up included)."""
    return Schedule(spec).rate(it)


# ------------------------------------------------------------------ Caffe's policies
class _Gamma(PolicyParams):
    gamma: float


class _GammaStep(_Gamma):
    stepsize: int = Field(gt=0)


class _GammaPower(_Gamma):
    power: float


class _Power(PolicyParams):
    power: float


class _Multistep(_Gamma):
    stepvalue: list[int]

    @field_validator("stepvalue", mode="before")
    @classmethod
    def _listify(cls, value):
        return [value] if isinstance(value, int) else value

    @field_validator("stepvalue")
    @classmethod
    def _increasing(cls, value):
        if not value:
            raise ValueError("stepvalue needs at least one iteration")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"stepvalue must be strictly increasing, got {value}")
        return value


class _Cosine(PolicyParams):
    min_lr: float = Field(0.0, ge=0)


@register_policy("fixed", params=PolicyParams)
def _fixed(base_lr, it, spec):
    """base_lr"""
    return base_lr


@register_policy("step", params=_GammaStep)
def _step(base_lr, it, spec):
    """base_lr · gamma^floor(it / stepsize)"""
    return base_lr * spec.gamma ** (it // spec.stepsize)


@register_policy("exp", params=_Gamma)
def _exp(base_lr, it, spec):
    """base_lr · gamma^it"""
    return base_lr * spec.gamma ** it


@register_policy("inv", params=_GammaPower)
def _inv(base_lr, it, spec):
    """base_lr · (1 + gamma·it)^(−power)"""
    return base_lr * (1.0 + spec.gamma * it) ** (-spec.power)


@register_policy("multistep", params=_Multistep)
def _multistep(base_lr, it, spec):
    """base_lr · gamma^k, k = number of stepvalues ≤ it"""
    return base_lr * spec.gamma ** bisect.bisect_right(spec.stepvalue, it)


@register_policy("poly", params=_Power)
def _poly(base_lr, it, spec):
    """base_lr · (1 − it/max_iter)^power"""
    if spec.max_iter == 0:
        return base_lr
    # past max_iter (a longer run resumed with a smaller max_iter) the rate stays at 0
    return base_lr * max(0.0, 1.0 - it / spec.max_iter) ** spec.power


@register_policy("sigmoid", params=_GammaStep)
def _sigmoid(base_lr, it, spec):
    """base_lr / (1 + exp(−gamma·(it − stepsize)))"""
    z = spec.gamma * (it - spec.stepsize)
    if z >= 0:
        return base_lr / (1.0 + math.exp(-z))
    return base_lr * math.exp(z) / (1.0 + math.exp(z))     # no overflow far before stepsize


@register_policy("cosine", params=_Cosine)
def _cosine(base_lr, it, spec):
    """min_lr + ½(base_lr − min_lr)(1 + cos(π·it/max_iter))"""
    if spec.max_iter == 0:
        return base_lr
    progress = min(it, spec.max_iter) / spec.max_iter
    return spec.min_lr + 0.5 * (base_lr - spec.min_lr) * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------ a policy with state
class _PlateauFields(PolicyParams):
    plateau: PlateauParams
    gamma: float = Field(0.1, gt=0, lt=1)
    min_lr: float = Field(0.0, ge=0)


@register_policy("plateau")
class PlateauPolicy(Policy):
    """base_lr, times gamma (not below min_lr) each time plateau.output has not improved by
    more than plateau.threshold for plateau.patience tests; then plateau.cooldown tests
    without counting (Keras's ReduceLROnPlateau)"""

    Params = _PlateauFields

    def __init__(self, spec: SolverSpec):
        super().__init__(spec)
        self.lr = float(spec.base_lr)
        watch = spec.plateau
        self.monitor = Monitor(watch.output, watch.mode, watch.threshold, field="plateau.output")
        self.wait = 0
        self.cooldown = 0

    def rate(self, it: int) -> float:
        return self.lr

    def on_test_end(self, it: int, outputs: dict[str, float]) -> None:
        watch = self.spec.plateau
        _, better = self.monitor.watch(it, outputs)
        if self.cooldown > 0:
            self.cooldown -= 1
            self.wait = 0
        if better:
            self.wait = 0
        elif self.cooldown == 0:
            self.wait += 1
            if self.wait >= watch.patience and self.lr > self.spec.min_lr:
                self.lr = max(self.lr * self.spec.gamma, self.spec.min_lr)
                self.cooldown, self.wait = watch.cooldown, 0

    def get_state(self) -> dict:
        return {"lr": self.lr, "best": self.monitor.best, "wait": self.wait,
                "cooldown": self.cooldown}

    def set_state(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.monitor.best = None if state["best"] is None else float(state["best"])
        self.wait, self.cooldown = int(state["wait"]), int(state["cooldown"])
