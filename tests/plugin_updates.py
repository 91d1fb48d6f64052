"""The plugin example of the solver side, as a user writes it: an update rule and lr
policies registered from outside the package (solver specs list it under ``plugins``)."""

import numpy as np

from solverkit import Policy, UpdateRule, register_policy, register_update
from solverkit.solvers import PolicyParams


@register_update("SignSGD")                 # usable as `type: SignSGD`, `--set type=SignSGD`
class SignSGD(UpdateRule):
    """W -= lr · sign(g)."""
    class Params(UpdateRule.Params):         # this rule's own solver fields and defaults
        scale: float = 1.0
    def step(self, param, state, lr, t):     # one whole parameter: param.data, param.diff
        param.data -= lr * self.params.scale * np.sign(param.diff)


@register_policy("halving")                 # usable as `lr_policy: halving`
def halving(base_lr, it, params):           # params: the solver spec's fields
    return base_lr * 0.5 ** (it // params.stepsize)


class _StallParams(PolicyParams):
    patience: int = 1


@register_policy("halve_on_stall")
class HalveOnStall(Policy):
    """A policy with state: the rate halves after ``patience`` tests whose loss did not
    improve on the best one seen."""
    Params = _StallParams

    def __init__(self, spec):
        super().__init__(spec)
        self.best, self.stalls, self.factor = float("inf"), 0, 1.0

    def rate(self, it):
        return self.spec.base_lr * self.factor

    def observe(self, it, outputs):
        if outputs["loss"] < self.best:
            self.best, self.stalls = outputs["loss"], 0
            return
        self.stalls += 1
        if self.stalls >= self.spec.patience:
            self.factor, self.stalls = self.factor / 2, 0

    def get_state(self):
        return {"best": self.best, "stalls": self.stalls, "factor": self.factor}

    def set_state(self, state):
        self.best, self.stalls, self.factor = state["best"], state["stalls"], state["factor"]
