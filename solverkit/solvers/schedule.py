"""Learning-rate policies (Caffe's ``lr_policy``) and linear warm-up: the rate at iteration ``it``.

=========  ==================================================
fixed      base_lr
step       base_lr · gamma^floor(it / stepsize)
exp        base_lr · gamma^it
inv        base_lr · (1 + gamma·it)^(−power)
multistep  base_lr · gamma^k,  k = number of stepvalues ≤ it
poly       base_lr · (1 − it/max_iter)^power
sigmoid    base_lr / (1 + exp(−gamma·(it − stepsize)))
cosine     min_lr + ½(base_lr − min_lr)(1 + cos(π·it/max_iter))
=========  ==================================================

With ``warmup_iter = w > 0`` the rate is multiplied by ``(it + 1)/w`` for ``it < w``.
Rates are computed in double precision; Caffe's LeNet example (inv, base_lr 0.01,
gamma 1e-4, power 0.75) gives 0.00992565 at iteration 100.
"""

from __future__ import annotations

import bisect
import math

from ..spec.solver import SolverSpec


def _fixed(spec: SolverSpec, it: int) -> float:
    return spec.base_lr


def _step(spec: SolverSpec, it: int) -> float:
    return spec.base_lr * spec.gamma ** (it // spec.stepsize)


def _exp(spec: SolverSpec, it: int) -> float:
    return spec.base_lr * spec.gamma ** it


def _inv(spec: SolverSpec, it: int) -> float:
    return spec.base_lr * (1.0 + spec.gamma * it) ** (-spec.power)


def _multistep(spec: SolverSpec, it: int) -> float:
    return spec.base_lr * spec.gamma ** bisect.bisect_right(spec.stepvalue, it)


def _poly(spec: SolverSpec, it: int) -> float:
    if spec.max_iter == 0:
        return spec.base_lr
    # past max_iter (a longer run resumed with a smaller max_iter) the rate stays at 0
    return spec.base_lr * max(0.0, 1.0 - it / spec.max_iter) ** spec.power


def _sigmoid(spec: SolverSpec, it: int) -> float:
    z = spec.gamma * (it - spec.stepsize)
    if z >= 0:
        return spec.base_lr / (1.0 + math.exp(-z))
    return spec.base_lr * math.exp(z) / (1.0 + math.exp(z))     # no overflow far before stepsize


def _cosine(spec: SolverSpec, it: int) -> float:
    if spec.max_iter == 0:
        return spec.base_lr
    progress = min(it, spec.max_iter) / spec.max_iter
    return spec.min_lr + 0.5 * (spec.base_lr - spec.min_lr) * (1.0 + math.cos(math.pi * progress))


POLICIES = {
    "fixed": _fixed,
    "step": _step,
    "exp": _exp,
    "inv": _inv,
    "multistep": _multistep,
    "poly": _poly,
    "sigmoid": _sigmoid,
    "cosine": _cosine,
}


def learning_rate(spec: SolverSpec, it: int) -> float:
    """The rate the update made at iteration ``it`` uses (before each parameter's lr_mult)."""
    rate = POLICIES[spec.lr_policy](spec, it)
    if it < spec.warmup_iter:
        rate *= (it + 1) / spec.warmup_iter
    return float(rate)
