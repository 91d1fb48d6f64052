"""The plugin example of the solver side, as a user writes it: an update rule and an lr
policy registered from outside the package (solver specs list it under ``plugins``)."""

import numpy as np

from solverkit import UpdateRule, register_policy, register_update


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
