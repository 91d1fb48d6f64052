"""Parameter updates (SPEC §4): Caffe's SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam, plus AdamW.

One update, after the gradients of ``iter_size`` passes were summed into the diffs:

1. normalize  ``g /= iter_size``
2. clip       if ``clip_gradients = c > 0`` and ``L = sqrt(Σ_params Σ g²) > c``: ``g *= c/L``
3. regularize ``λ = weight_decay·decay_mult``: L2 ``g += λW``, L1 ``g += λ·sign(W)``,
              ElasticNet ``g += λ(βW + sign(W))`` (AdamW skips this and decays in its step)
4. step       with ``lr = rate·lr_mult`` and ``t = it + 1``: one class per type below.

Parameters with ``lr_mult == 0`` are frozen: left out of every step, the global norm
included. State arrays (Caffe's "history") are allocated once, start at zero, and are
updated in place. ``state_arrays()`` / ``load_state_arrays()`` expose them by name
(``"<layer>/<index>/<state>"``) for snapshots.

A new optimizer is one subclass: ``state_names`` and ``step``.
"""

from __future__ import annotations

import math
import threading
from typing import ClassVar

import numpy as np

from .. import blas
from ..errors import SnapshotError
from ..spec.solver import SolverSpec
from ..threads import parallel_for

# elements per block of an update: W, g, two state arrays and a work array of this size
# (256 KiB each in float32) fit in a core's L2 cache together
BLOCK = 1 << 16


class Update:
    """The shared part of every update: normalize, clip, regularize, then ``step`` per parameter.

    ``params`` are ``Net.learnable_params`` (``Param``: ``key``, ``blob``, ``lr_mult``,
    ``decay_mult``); the update writes ``param.blob.data`` in place, so nets sharing
    those Blobs see the new values.
    """

    type: ClassVar[str] = ""
    state_names: ClassVar[tuple[str, ...]] = ()
    # AdamW: weight decay is applied to W in the step, not added to the gradient.
    decoupled_decay: ClassVar[bool] = False

    def __init__(self, spec: SolverSpec, params):
        self.spec = spec
        self.params = [p for p in params if p.lr_mult != 0]
        self.state: list[dict[str, np.ndarray]] = [
            {name: np.zeros_like(p.blob.data) for name in self.state_names} for p in self.params]
        self._work: dict[tuple, np.ndarray] = {}

    def work_array(self, like: np.ndarray, slot: int = 0) -> np.ndarray:
        """A scratch array of ``like``'s shape and dtype, reused from step to step (rules
        write their intermediate products here instead of allocating temporaries); one per
        thread and ``slot``, as blocks are updated in parallel."""
        key = (like.shape, like.dtype, threading.get_ident(), slot)
        work = self._work.get(key)
        if work is None:
            work = self._work[key] = np.empty_like(like)
        return work

    # ---------------------------------------------------------------- the update
    def update(self, rate: float, it: int) -> None:
        """Steps 1–4 for every learnable parameter, from the summed diffs, at iteration ``it``."""
        self.normalize()
        self.clip()
        if self.whole_arrays(rate, it):
            return
        # Every rule is element-wise, so it runs block by block: the few passes a rule makes
        # over W, g, its state and a work array then stay in the CPU cache, and the blocks
        # are spread over the intra-op threads.
        blocks, elements = [], 0
        for param, state in zip(self.params, self.state):
            decay = self.spec.weight_decay * param.decay_mult
            lr = rate * param.lr_mult
            w, g = param.blob.data.reshape(-1), param.blob.diff.reshape(-1)
            history = {name: array.reshape(-1) for name, array in state.items()}
            elements += w.size
            for start in range(0, w.size, BLOCK):
                block = slice(start, start + BLOCK)
                blocks.append((w[block], g[block], lr, decay,
                               {name: array[block] for name, array in history.items()}))

        def run(job):
            w, g, lr, decay, history = job
            if decay and not self.decoupled_decay:
                self.regularize(w, g, decay)
            self.step(w, g, lr, decay, history, it + 1)

        parallel_for(run, blocks, elements=elements)

    def whole_arrays(self, rate: float, it: int) -> bool:
        """Regularize and step every parameter at once, on whole arrays, where a rule can do
        it faster than block by block (and return True); the base class cannot."""
        return False

    def normalize(self) -> None:
        """``g /= iter_size``: the diffs hold the sum over ``iter_size`` forward/backward passes."""
        if self.spec.iter_size > 1:
            scale = 1.0 / self.spec.iter_size
            for param in self.params:
                param.blob.diff *= scale

    def gradient_norm(self) -> float:
        """``L = sqrt(Σ over all updated parameters of Σ g²)``."""
        total = 0.0
        for param in self.params:
            g = param.blob.diff.reshape(-1)
            total += float(np.dot(g, g))
        return math.sqrt(total)

    def clip(self) -> None:
        """Scale every diff by ``c/L`` when the global norm ``L`` exceeds ``clip_gradients``."""
        limit = self.spec.clip_gradients
        if limit <= 0:
            return
        norm = self.gradient_norm()
        if norm > limit:
            scale = limit / norm
            for param in self.params:
                param.blob.diff *= scale

    def regularize(self, w: np.ndarray, g: np.ndarray, decay: float) -> None:
        """Add the gradient of ``decay·R(W)`` to ``g`` (L2: ½ΣW², L1: Σ|W|, ElasticNet: Σ(½βW²+|W|))."""
        kind = self.spec.regularization_type
        work = self.work_array(w)
        if kind == "L2":
            np.multiply(w, decay, out=work)
        elif kind == "L1":
            np.sign(w, out=work)
            work *= decay
        else:
            np.sign(w, out=work)
            work += self.spec.elastic_net_beta * w
            work *= decay
        g += work

    def step(self, w: np.ndarray, g: np.ndarray, lr: float, decay: float,
             state: dict[str, np.ndarray], t: int) -> None:
        """Change ``w`` in place from the (normalized, clipped, regularized) gradient ``g``.

        ``w``, ``g`` and the state arrays are one flat block of the parameter (see
        ``update``): a rule is element-wise.
        """
        raise NotImplementedError(f"Update.step is abstract; {type(self).__name__} must define it")

    # ---------------------------------------------------------------- state for snapshots
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every state array by ``"<layer>/<index>/<state name>"`` (the arrays themselves)."""
        return {f"{param.key}/{name}": array
                for param, state in zip(self.params, self.state) for name, array in state.items()}

    def load_state_arrays(self, arrays) -> None:
        """Copy saved state arrays back in place; a missing key or another shape is an error."""
        for key, array in self.state_arrays().items():
            if key not in arrays:
                raise SnapshotError(f"{self.type} state '{key}' is missing from the saved state")
            saved = np.asarray(arrays[key])
            if saved.shape != array.shape:
                raise SnapshotError(f"{self.type} state '{key}' has shape {saved.shape} in the "
                                    f"saved state but {array.shape} in this net")
            np.copyto(array, saved, casting="same_kind")


class SGD(Update):
    """Caffe's SGD with momentum: ``V = momentum·V + lr·g;  W −= V``.

    With MKL (see ``blas``) and L2 (or no) decay, each parameter takes three one-pass
    vector operations on MKL's threads instead of six numpy passes per block:
    ``V = lr·g + momentum·V;  V += lr·λ·W;  W −= V`` (g itself is left unregularized).
    """

    type = "SGD"
    state_names = ("history",)

    def whole_arrays(self, rate, it):
        jobs = _momentum_vector_jobs(self, rate)
        if jobs is None:
            return False
        for lr, decay, w, g, v in jobs:
            blas.axpby(lr, g, self.spec.momentum, v)
            if decay:
                blas.axpby(lr * decay, w, 1.0, v)
            blas.axpby(-1.0, v, 1.0, w)
        return True

    def step(self, w, g, lr, decay, state, t):
        v = state["history"]
        v *= self.spec.momentum
        v += np.multiply(g, lr, out=self.work_array(g))
        w -= v


def _momentum_vector_jobs(update: Update, rate: float) -> list[tuple] | None:
    """``(lr, decay, W, g, V)`` per parameter of a rule with a ``history``, when its steps
    can be whole-array ``axpby`` passes (MKL chosen, L2 or no decay), else None."""
    spec = update.spec
    if spec.regularization_type != "L2" and spec.weight_decay:
        return None
    jobs = [(rate * param.lr_mult, spec.weight_decay * param.decay_mult, param.blob.data,
             param.blob.diff, state["history"])
            for param, state in zip(update.params, update.state)]
    if not all(blas.axpby_ready(w, g, v) for _, _, w, g, v in jobs):
        return None                         # numpy's backend: block by block
    return jobs


class Nesterov(Update):
    """``V' = momentum·V + lr·g;  W −= (1+momentum)·V' − momentum·V;  V = V'``.

    With MKL and L2 (or no) decay, four one-pass vector operations per parameter on MKL's
    threads, as for SGD: ``g += λ·W;  W += momentum·V;  V = lr·g + momentum·V;
    W −= (1+momentum)·V``.
    """

    type = "Nesterov"
    state_names = ("history",)

    def whole_arrays(self, rate, it):
        jobs = _momentum_vector_jobs(self, rate)
        if jobs is None:
            return False
        m = self.spec.momentum
        for lr, decay, w, g, v in jobs:
            if decay:
                blas.axpby(decay, w, 1.0, g)
            blas.axpby(m, v, 1.0, w)
            blas.axpby(lr, g, m, v)
            blas.axpby(-(1.0 + m), v, 1.0, w)
        return True

    def step(self, w, g, lr, decay, state, t):
        m = self.spec.momentum
        v = state["history"]
        work = self.work_array(g)
        w += np.multiply(v, m, out=work)            # + momentum·V (the old V)
        v *= m
        v += np.multiply(g, lr, out=work)           # V' (stored as the new V)
        w -= np.multiply(v, 1.0 + m, out=work)


class AdaGrad(Update):
    """``H += g²;  W −= lr·g / (sqrt(H) + delta)``."""

    type = "AdaGrad"
    state_names = ("history",)

    def step(self, w, g, lr, decay, state, t):
        h = state["history"]
        work = self.work_array(g)
        h += np.multiply(g, g, out=work)
        _scaled_step(w, g, h, lr, self.spec.delta, work)


class RMSProp(Update):
    """``H = rms_decay·H + (1−rms_decay)·g²;  W −= lr·g / (sqrt(H) + delta)``."""

    type = "RMSProp"
    state_names = ("history",)

    def step(self, w, g, lr, decay, state, t):
        h = state["history"]
        work = self.work_array(g)
        _running_mean_of_squares(h, g, self.spec.rms_decay, work)
        _scaled_step(w, g, h, lr, self.spec.delta, work)


class AdaDelta(Update):
    """``H = m·H + (1−m)·g²;  u = g·sqrt((D+delta)/(H+delta));  D = m·D + (1−m)·u²;  W −= lr·u``.

    ``m`` is ``momentum``; H is the running mean of g² ("history"), D of u² ("update_history").
    """

    type = "AdaDelta"
    state_names = ("history", "update_history")

    def step(self, w, g, lr, decay, state, t):
        m, delta = self.spec.momentum, self.spec.delta
        h, d = state["history"], state["update_history"]
        u, work = self.work_array(g), self.work_array(g, slot=1)
        _running_mean_of_squares(h, g, m, work)
        np.add(d, delta, out=u)
        u /= np.add(h, delta, out=work)
        np.sqrt(u, out=u)
        u *= g                                      # u = g·sqrt((D+delta)/(H+delta))
        _running_mean_of_squares(d, u, m, work)
        u *= lr
        w -= u


class Adam(Update):
    """``M = β1·M + (1−β1)·g;  V = β2·V + (1−β2)·g²;  W −= lr·sqrt(1−β2^t)/(1−β1^t)·M/(sqrt(V)+ε)``.

    β1 = ``momentum``, β2 = ``momentum2``, ε = ``delta`` (Caffe's form: ε outside the correction).
    """

    type = "Adam"
    state_names = ("m", "v")

    def adam_step(self, w, g, lr, state, t):
        beta1, beta2 = self.spec.momentum, self.spec.momentum2
        m, v = state["m"], state["v"]
        work = self.work_array(g)
        m *= beta1
        m += np.multiply(g, 1.0 - beta1, out=work)
        _running_mean_of_squares(v, g, beta2, work)
        correction = math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        _scaled_step(w, m, v, lr * correction, self.spec.delta, work)

    def step(self, w, g, lr, decay, state, t):
        self.adam_step(w, g, lr, state, t)


class AdamW(Adam):
    """Adam on the unregularized ``g`` plus decoupled decay on the old weights:
    ``W ← W − lr·λ·W_old − lr·sqrt(1−β2^t)/(1−β1^t)·M/(sqrt(V)+ε)``, ``λ = weight_decay·decay_mult``.
    """

    type = "AdamW"
    decoupled_decay = True

    def step(self, w, g, lr, decay, state, t):
        if decay:
            w *= 1.0 - lr * decay       # the Adam term does not depend on W: same as using W_old
        self.adam_step(w, g, lr, state, t)


def _running_mean_of_squares(h, g, rho, work) -> None:
    """``H = rho·H + (1−rho)·g²`` in place (``work``: scratch of g's shape)."""
    h *= rho
    np.multiply(g, g, out=work)
    work *= 1.0 - rho
    h += work


def _scaled_step(w, g, h, lr, delta, work) -> None:
    """``W −= lr·g / (sqrt(H) + delta)`` in place (``work``: scratch of g's shape)."""
    np.sqrt(h, out=work)
    work += delta
    np.divide(g, work, out=work)
    work *= lr
    w -= work


UPDATES: dict[str, type[Update]] = {cls.type: cls for cls in
                                    (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam, AdamW)}


def make_update(spec: SolverSpec, params) -> Update:
    """The update of ``spec.type`` over ``params`` (those with ``lr_mult == 0`` are left out)."""
    return UPDATES[spec.type](spec, params)
