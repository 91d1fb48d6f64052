"""Parameter updates: the one gradient path every rule shares; Caffe's rules, AdamW, Lion, RAdam
and LAMB.

One update, after the gradients of ``iter_size`` passes were summed into the diffs:

1. normalize  ``g /= iter_size``
2. clip       if ``clip_gradients = c > 0`` and ``L = sqrt(Σ_params Σ g²) > c``: ``g *= c/L``
3. regularize ``λ = weight_decay·decay_mult``: L2 ``g += λW``, L1 ``g += λ·sign(W)``,
              ElasticNet ``g += λ(βW + sign(W))`` — skipped for a rule with
              ``decoupled_decay`` (AdamW), which gets λ as ``param.decay`` and decays W itself
4. step       with ``lr = rate·lr_mult`` and ``t = it + 1``: the rule's ``step``.

``Updater`` does steps 1–3 and calls the rule; a rule is a registered ``UpdateRule``
subclass (``@register_update("Name")``) with its own solver fields in ``Params``.
``step(param, state, lr, t)`` sees one whole parameter (``param.data``, ``param.diff``)
and its state arrays; an ``ElementwiseRule`` is handed cache-sized blocks of every
parameter spread over the intra-op threads instead (same result, block by block).

Parameters with ``lr_mult == 0`` are frozen: left out of every step, the global norm
included. State arrays (Caffe's "history") start at zero and are updated in place;
``state_arrays()`` / ``load_state_arrays()`` expose them by name
(``"<layer>/<index>/<state>"``) for snapshots.
"""

from __future__ import annotations

import abc
import math
import threading
from typing import ClassVar

import numpy as np
from pydantic import Field

from .. import blas, registry
from ..errors import SnapshotError
from ..registry import register_update
from ..spec.solver_fields import FieldsModel, SolverSpec
from ..threads import parallel_for

# elements per block of an element-wise rule: W, g, two state arrays and a work array of
# this size (256 KiB each in float32) fit in a core's L2 cache together
BLOCK = 1 << 16


class UpdateTarget:
    """What a rule's ``step`` sees of one parameter (or, for an element-wise rule, of one
    block of it): ``data`` (W, updated in place), ``diff`` (the gradient after steps 1–3),
    ``key`` (``"<layer>/<index>"``) and ``decay`` (λ, for a rule with decoupled decay)."""

    __slots__ = ("data", "decay", "diff", "key")

    def __init__(self, data: np.ndarray, diff: np.ndarray, key: str, decay: float):
        self.data, self.diff, self.key, self.decay = data, diff, key, decay


class UpdateRule(abc.ABC):
    """An optimizer: how one parameter changes given its gradient, lr and state.

    ``Params`` holds the rule's own solver fields and defaults (``self.params``);
    ``state_names`` are the arrays per parameter that start at zero (a rule may also add
    entries to ``state`` in its first ``step``); ``decoupled_decay = True`` means the
    rule applies the weight decay itself from ``param.decay`` (its gradient arrives
    unregularized).
    """

    type: ClassVar[str] = ""
    state_names: ClassVar[tuple[str, ...]] = ()
    decoupled_decay: ClassVar[bool] = False

    class Params(FieldsModel):
        """The rule's own solver fields (none here)."""

    def __init__(self, params: FieldsModel | None = None, spec: SolverSpec | None = None):
        self.params = params if params is not None else self.Params()
        self.spec = spec

    def init_state(self, data: np.ndarray) -> dict[str, np.ndarray]:
        """The state of one parameter before its first step."""
        return {name: np.zeros_like(data) for name in self.state_names}

    @abc.abstractmethod
    def step(self, param: UpdateTarget, state: dict[str, np.ndarray], lr: float, t: int) -> None:
        """Change ``param.data`` in place from ``param.diff``; ``t`` is the 1-based update count."""

    def apply(self, jobs, t: int, regularize) -> None:
        """Regularize (unless decoupled) and step every ``(param, state, lr)`` of ``jobs``."""
        for param, state, lr in jobs:
            if param.decay and not self.decoupled_decay:
                regularize(param.data, param.diff, param.decay)
            self.step(param, state, lr, t)


class ElementwiseRule(UpdateRule):
    """A rule whose step treats every element alone: it runs block by block.

    The few passes a rule makes over W, g, its state and a work array then stay in the CPU
    cache, and the blocks of all parameters are spread over the intra-op threads. Blocks
    have a fixed size, so the result does not depend on the number of threads. ``state``
    holds blocks of the ``state_names`` arrays (a block's dict is not kept: declare every
    array there).
    """

    def __init__(self, params=None, spec=None):
        super().__init__(params, spec)
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

    def block_size(self, jobs) -> int | None:
        """Elements per block, or ``None`` to step whole parameters one after another
        (a rule whose step runs on a threaded vector library)."""
        return BLOCK

    def apply(self, jobs, t, regularize):
        size = self.block_size(jobs)
        if size is None:
            super().apply(jobs, t, regularize)
            return
        blocks, elements = [], 0
        for param, state, lr in jobs:
            w, g = param.data.reshape(-1), param.diff.reshape(-1)
            flat = {name: array.reshape(-1) for name, array in state.items()}
            elements += w.size
            for start in range(0, w.size, size):
                part = slice(start, start + size)
                blocks.append((UpdateTarget(w[part], g[part], param.key, param.decay),
                               {name: array[part] for name, array in flat.items()}, lr))
        coupled = not self.decoupled_decay

        def run(job):
            param, state, lr = job
            if param.decay and coupled:     # numpy here: the blocks already share the cores
                regularize(param.data, param.diff, param.decay, vector_library=False)
            self.step(param, state, lr, t)

        parallel_for(run, blocks, elements=elements)


class Updater:
    """The one gradient path: normalize, clip, regularize, then the rule's step.

    ``params`` are ``Net.learnable_params`` (``Param``: ``key``, ``blob``, ``lr_mult``,
    ``decay_mult``); the update writes ``param.blob.data`` in place, so nets sharing
    those Blobs see the new values. ``get_state``/``set_state`` save and restore the
    rule's state arrays.
    """

    def __init__(self, spec: SolverSpec, params):
        self.spec = spec
        self.type = spec.type
        rule_class = registry.update_class(spec.type)
        self.rule: UpdateRule = rule_class(spec.rule_params, spec)
        self.params = [p for p in params if p.lr_mult != 0]
        self.state: list[dict[str, np.ndarray]] = [self.rule.init_state(p.blob.data)
                                                   for p in self.params]
        self._work: dict[tuple, np.ndarray] = {}

    # ---------------------------------------------------------------- the update
    def update(self, rate: float, it: int) -> None:
        """Steps 1–4 for every learnable parameter, from the summed diffs, at iteration ``it``."""
        self.normalize()
        self.clip()
        jobs = [(UpdateTarget(p.blob.data, p.blob.diff, p.key,
                             self.spec.weight_decay * p.decay_mult), state, rate * p.lr_mult)
                for p, state in zip(self.params, self.state)]
        self.rule.apply(jobs, it + 1, self.regularize)

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

    def regularize(self, w: np.ndarray, g: np.ndarray, decay: float,
                   vector_library: bool = True) -> None:
        """Add the gradient of ``decay·R(W)`` to ``g`` (L2: ½ΣW², L1: Σ|W|, ElasticNet: Σ(½βW²+|W|)).

        L2 on whole arrays takes one pass of MKL or oneDNN when one of them is chosen
        (``blas.axpby``), unless ``vector_library`` is False (blocks already spread over
        solverkit's threads)."""
        kind = self.spec.regularization_type
        if kind == "L2" and vector_library and blas.axpby_ready(w, g):
            blas.axpby(decay, w, 1.0, g)        # one pass of MKL or oneDNN
            return
        key = (w.shape, w.dtype, threading.get_ident())
        work = self._work.get(key)
        if work is None:
            work = self._work[key] = np.empty_like(w)
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

    # ---------------------------------------------------------------- state for snapshots
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every state array by ``"<layer>/<index>/<state name>"`` (the arrays themselves)."""
        return {f"{param.key}/{name}": array
                for param, state in zip(self.params, self.state) for name, array in state.items()}

    def load_state_arrays(self, arrays) -> None:
        """Copy saved state arrays back in place; a missing key or another shape is an error.
        A saved array the rule has not created yet (it fills its state on first use) is
        taken as it is."""
        for key, array in self.state_arrays().items():
            if key not in arrays:
                raise SnapshotError(f"{self.type} state '{key}' is missing from the saved state")
            saved = np.asarray(arrays[key])
            if saved.shape != array.shape:
                raise SnapshotError(f"{self.type} state '{key}' has shape {saved.shape} in the "
                                    f"saved state but {array.shape} in this net")
            np.copyto(array, saved, casting="same_kind")
        by_key = {param.key: state for param, state in zip(self.params, self.state)}
        for key, saved in arrays.items():
            owner, _, name = key.rpartition("/")
            if owner in by_key and name not in by_key[owner]:
                by_key[owner][name] = np.array(saved)

    def get_state(self) -> dict[str, np.ndarray]:
        """The state arrays by ``"<layer>/<index>/<state name>"`` (copies)."""
        return {key: array.copy() for key, array in self.state_arrays().items()}

    def set_state(self, state: dict) -> None:
        self.load_state_arrays(state)


# ------------------------------------------------------------------ Caffe's rules, AdamW
class _Momentum(FieldsModel):
    momentum: float = Field(0.0, ge=0, lt=1)


def _vector_ready(jobs) -> bool:
    """Whether every parameter's W, g and history can take ``blas.axpby``'s whole-array
    passes (MKL or oneDNN)."""
    return all(blas.axpby_ready(param.data, param.diff, state["history"])
               for param, state, _ in jobs)


@register_update("SGD")
class SGD(ElementwiseRule):
    """Caffe's SGD with momentum: ``V = momentum·V + lr·g;  W −= V``.

    With MKL or oneDNN (see ``blas.axpby``) each parameter takes two one-pass vector
    operations (``V = lr·g + momentum·V;  W −= V``), and its L2 decay one more, instead of
    numpy passes per block.
    """

    Params = _Momentum
    state_names = ("history",)

    def block_size(self, jobs):
        return None if _vector_ready(jobs) else BLOCK

    def step(self, param, state, lr, t):
        w, g, v = param.data, param.diff, state["history"]
        m = self.params.momentum
        if blas.axpby_ready(w, g, v):
            blas.axpby(lr, g, m, v)
            blas.axpby(-1.0, v, 1.0, w)
            return
        v *= m
        v += np.multiply(g, lr, out=self.work_array(g))
        w -= v


@register_update("Nesterov")
class Nesterov(ElementwiseRule):
    """``V' = momentum·V + lr·g;  W −= (1+momentum)·V' − momentum·V;  V = V'``.

    With MKL or oneDNN, three one-pass vector operations per parameter, as for SGD:
    ``W += momentum·V;  V = lr·g + momentum·V;  W −= (1+momentum)·V``.
    """

    Params = _Momentum
    state_names = ("history",)

    def block_size(self, jobs):
        return None if _vector_ready(jobs) else BLOCK

    def step(self, param, state, lr, t):
        w, g, v = param.data, param.diff, state["history"]
        m = self.params.momentum
        if blas.axpby_ready(w, g, v):
            blas.axpby(m, v, 1.0, w)
            blas.axpby(lr, g, m, v)
            blas.axpby(-(1.0 + m), v, 1.0, w)
            return
        work = self.work_array(g)
        w += np.multiply(v, m, out=work)            # + momentum·V (the old V)
        v *= m
        v += np.multiply(g, lr, out=work)           # V' (stored as the new V)
        w -= np.multiply(v, 1.0 + m, out=work)


class _Delta(FieldsModel):
    delta: float = Field(1e-8, gt=0)


@register_update("AdaGrad")
class AdaGrad(ElementwiseRule):
    """``H += g²;  W −= lr·g / (sqrt(H) + delta)``."""

    Params = _Delta
    state_names = ("history",)

    def step(self, param, state, lr, t):
        w, g, h = param.data, param.diff, state["history"]
        work = self.work_array(g)
        h += np.multiply(g, g, out=work)
        scaled_step(w, g, h, lr, self.params.delta, work)


class _RMSPropParams(FieldsModel):
    rms_decay: float = Field(0.99, ge=0, lt=1)
    delta: float = Field(1e-8, gt=0)


@register_update("RMSProp")
class RMSProp(ElementwiseRule):
    """``H = rms_decay·H + (1−rms_decay)·g²;  W −= lr·g / (sqrt(H) + delta)``."""

    Params = _RMSPropParams
    state_names = ("history",)

    def step(self, param, state, lr, t):
        w, g, h = param.data, param.diff, state["history"]
        work = self.work_array(g)
        running_mean_of_squares(h, g, self.params.rms_decay, work)
        scaled_step(w, g, h, lr, self.params.delta, work)


class _AdaDeltaParams(FieldsModel):
    momentum: float = Field(0.95, ge=0, lt=1)
    delta: float = Field(1e-6, gt=0)


@register_update("AdaDelta")
class AdaDelta(ElementwiseRule):
    """``H = m·H + (1−m)·g²;  u = g·sqrt((D+delta)/(H+delta));  D = m·D + (1−m)·u²;  W −= lr·u``.

    ``m`` is ``momentum``; H is the running mean of g² ("history"), D of u² ("update_history").
    """

    Params = _AdaDeltaParams
    state_names = ("history", "update_history")

    def step(self, param, state, lr, t):
        m, delta = self.params.momentum, self.params.delta
        w, g = param.data, param.diff
        h, d = state["history"], state["update_history"]
        u, work = self.work_array(g), self.work_array(g, slot=1)
        running_mean_of_squares(h, g, m, work)
        np.add(d, delta, out=u)
        u /= np.add(h, delta, out=work)
        np.sqrt(u, out=u)
        u *= g                                      # u = g·sqrt((D+delta)/(H+delta))
        running_mean_of_squares(d, u, m, work)
        u *= lr
        w -= u


class AdamParams(FieldsModel):
    """β1 = ``momentum``, β2 = ``momentum2``, ε = ``delta`` (Caffe's names and defaults)."""

    momentum: float = Field(0.9, ge=0, lt=1, description="β1")
    momentum2: float = Field(0.999, ge=0, lt=1, description="β2")
    delta: float = Field(1e-8, gt=0, description="ε")


@register_update("Adam")
class Adam(ElementwiseRule):
    """``M = β1·M + (1−β1)·g;  V = β2·V + (1−β2)·g²;  W −= lr·sqrt(1−β2^t)/(1−β1^t)·M/(sqrt(V)+ε)``.

    β1 = ``momentum``, β2 = ``momentum2``, ε = ``delta`` (Caffe's form: ε outside the correction).
    """

    Params = AdamParams
    state_names = ("m", "v")

    def step(self, param, state, lr, t):
        beta1, beta2 = self.params.momentum, self.params.momentum2
        w, g, m, v = param.data, param.diff, state["m"], state["v"]
        work = self.work_array(g)
        moving_average(m, g, beta1, work)
        running_mean_of_squares(v, g, beta2, work)
        correction = math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        scaled_step(w, m, v, lr * correction, self.params.delta, work)


@register_update("AdamW")
class AdamW(Adam):
    """Adam on the unregularized ``g`` plus decoupled decay on the old weights:
    ``W ← W − lr·λ·W_old − lr·sqrt(1−β2^t)/(1−β1^t)·M/(sqrt(V)+ε)``, ``λ = weight_decay·decay_mult``.
    """

    decoupled_decay = True

    def step(self, param, state, lr, t):
        if param.decay:
            param.data *= 1.0 - lr * param.decay    # the Adam term does not depend on W
        super().step(param, state, lr, t)


# ------------------------------------------------------------------ shared in-place steps
def moving_average(m, g, beta, work) -> None:
    """``M = beta·M + (1−beta)·g`` in place (``work``: scratch of g's shape)."""
    m *= beta
    m += np.multiply(g, 1.0 - beta, out=work)


def running_mean_of_squares(h, g, rho, work) -> None:
    """``H = rho·H + (1−rho)·g²`` in place (``work``: scratch of g's shape)."""
    h *= rho
    np.multiply(g, g, out=work)
    work *= 1.0 - rho
    h += work


def scaled_step(w, g, h, lr, delta, work) -> None:
    """``W −= lr·g / (sqrt(H) + delta)`` in place (``work``: scratch of g's shape)."""
    np.sqrt(h, out=work)
    work += delta
    np.divide(g, work, out=work)
    work *= lr
    w -= work


# ------------------------------------------------------------------ beyond Caffe
class _LionParams(FieldsModel):
    momentum: float = Field(0.9, ge=0, lt=1, description="β1: mixes the step direction")
    momentum2: float = Field(0.99, ge=0, lt=1, description="β2: the momentum kept")


@register_update("Lion")
class Lion(ElementwiseRule):
    """``c = β1·M + (1−β1)·g;  W ← W − lr·λ·W_old − lr·sign(c);  M = β2·M + (1−β2)·g``.

    Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023): the step is
    the sign of an interpolation of momentum and gradient, so every element moves by lr.
    β1 = ``momentum``, β2 = ``momentum2``; decoupled decay λ = weight_decay·decay_mult.
    """

    Params = _LionParams
    state_names = ("m",)
    decoupled_decay = True

    def step(self, param, state, lr, t):
        beta1, beta2 = self.params.momentum, self.params.momentum2
        w, g, m = param.data, param.diff, state["m"]
        work = self.work_array(g)
        np.multiply(m, beta1, out=work)
        work += np.multiply(g, 1.0 - beta1, out=self.work_array(g, slot=1))
        np.sign(work, out=work)                     # sign(c)
        if param.decay:
            w *= 1.0 - lr * param.decay
        work *= lr
        w -= work
        moving_average(m, g, beta2, work)


class _RAdamParams(AdamParams):
    """Adam's fields and defaults."""


@register_update("RAdam")
class RAdam(ElementwiseRule):
    """``M, V`` as Adam;  ``ρt = ρ∞ − 2t·β2^t/(1−β2^t)``, ``ρ∞ = 2/(1−β2) − 1``;  if ``ρt > 5``:
    ``W −= lr·r·sqrt(1−β2^t)/(1−β1^t)·M/(sqrt(V)+ε)``, ``r = sqrt((ρt−4)(ρt−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρt))``;
    else ``W −= lr·M/(1−β1^t)``.

    RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", 2020):
    Adam whose adaptive step is switched on gradually, as the variance of its estimate
    allows; until then it is momentum SGD. The threshold 5 is the authors' code's and
    PyTorch's (the paper's Algorithm 2 writes 4); ε is placed as in Adam. β1 = ``momentum``,
    β2 = ``momentum2``, ε = ``delta``.
    """

    Params = _RAdamParams
    state_names = ("m", "v")

    def step(self, param, state, lr, t):
        beta1, beta2 = self.params.momentum, self.params.momentum2
        w, g, m, v = param.data, param.diff, state["m"], state["v"]
        work = self.work_array(g)
        moving_average(m, g, beta1, work)
        running_mean_of_squares(v, g, beta2, work)
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * beta2 ** t / (1.0 - beta2 ** t)
        first = 1.0 - beta1 ** t
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                             / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
            scaled_step(w, m, v, lr * rect * math.sqrt(1.0 - beta2 ** t) / first,
                        self.params.delta, work)
        else:
            w -= np.multiply(m, lr / first, out=work)


class _LambParams(FieldsModel):
    momentum: float = Field(0.9, ge=0, lt=1, description="β1")
    momentum2: float = Field(0.999, ge=0, lt=1, description="β2")
    delta: float = Field(1e-6, gt=0, description="ε")


@register_update("LAMB")
class LAMB(UpdateRule):
    """``M, V`` as Adam;  ``u = (M/(1−β1^t)) / (sqrt(V/(1−β2^t)) + ε) + λ·W``;  ``W −= lr·‖W‖/‖u‖·u``.

    LAMB (You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", 2020, Algorithm 2): Adam's direction plus decoupled decay, scaled per
    parameter by a trust ratio whose norms run over the whole parameter (the ratio is 1
    when either norm is 0, as for a bias that starts at zero). λ = weight_decay·decay_mult;
    β1 = ``momentum``, β2 = ``momentum2``, ε = ``delta``.
    """

    Params = _LambParams
    state_names = ("m", "v")
    decoupled_decay = True

    def __init__(self, params=None, spec=None):
        super().__init__(params, spec)
        self._work: dict[tuple, np.ndarray] = {}

    def _scratch(self, like: np.ndarray) -> np.ndarray:
        work = self._work.get((like.shape, like.dtype))
        if work is None:
            work = self._work[(like.shape, like.dtype)] = np.empty_like(like)
        return work

    def step(self, param, state, lr, t):
        beta1, beta2 = self.params.momentum, self.params.momentum2
        w, g, m, v = param.data, param.diff, state["m"], state["v"]
        u = self._scratch(g)
        moving_average(m, g, beta1, u)
        running_mean_of_squares(v, g, beta2, u)
        np.divide(v, 1.0 - beta2 ** t, out=u)
        np.sqrt(u, out=u)
        u += self.params.delta
        np.divide(m, u, out=u)
        u /= 1.0 - beta1 ** t                       # the Adam direction
        if param.decay:
            u += param.decay * w
        w_norm, u_norm = _norm(w), _norm(u)
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        u *= lr * ratio
        w -= u


def _norm(x: np.ndarray) -> float:
    """The L2 norm of a whole array, summed in float64 (numpy's pairwise sum: the same
    result whatever the thread count)."""
    flat = x.reshape(-1)
    return math.sqrt(float(np.square(flat, dtype=np.float64).sum()))
