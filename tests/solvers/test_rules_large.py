"""Every built-in update rule on a parameter of several blocks, against the formulas written
out here in float64 (and RAdam against torch.optim.RAdam), on 1 and 2 threads, with results
bitwise equal across thread counts; then an exact resume for every rule.

The rules run through ``Updater`` (the solver's gradient path: coupled L2 decay or the
rule's own decoupled decay, lr_mult, decay_mult) on a weight of 600,000 elements (ten
blocks, enough work for two threads) and a bias that starts at zero.
"""

import math

import numpy as np
import pytest
from solver_data import blobs_classification, classifier_net, write_arrays

import solverkit as sk
from solverkit.solvers.updates import BLOCK, Updater
from solverkit.threads import ELEMENTS_PER_THREAD

SHAPE = (600, 1000)
STEPS = 6
DECAY = 0.01
assert SHAPE[0] * SHAPE[1] >= max(2 * ELEMENTS_PER_THREAD, 4 * BLOCK)

CASES = {
    "SGD": {"base_lr": 0.05, "momentum": 0.9},
    "Nesterov": {"base_lr": 0.05, "momentum": 0.9},
    "AdaGrad": {"base_lr": 0.05},
    "RMSProp": {"base_lr": 0.01, "rms_decay": 0.9},
    "AdaDelta": {"base_lr": 1.0, "momentum": 0.9},
    "Adam": {"base_lr": 0.01, "momentum2": 0.99},
    "AdamW": {"base_lr": 0.01, "momentum2": 0.99},
    "Lion": {"base_lr": 0.001},
    "LAMB": {"base_lr": 0.01},
    "RAdam": {"base_lr": 0.01, "momentum2": 0.9},     # rho_t passes 5 within the steps
}


class _Param:
    def __init__(self, key, data, lr_mult, decay_mult):
        self.key, self.lr_mult, self.decay_mult = key, lr_mult, decay_mult
        self.blob = sk.Blob(data.shape, data.dtype)
        self.blob.data[...] = data


def _problem(dtype):
    rng = np.random.default_rng(0)
    w0 = {"w": rng.normal(size=SHAPE), "b": np.zeros(7)}
    grads = [{"w": rng.normal(size=SHAPE), "b": rng.normal(size=7)} for _ in range(STEPS)]
    return ({k: v.astype(dtype) for k, v in w0.items()},
            [{k: v.astype(dtype) for k, v in g.items()} for g in grads])


MULTS = {"w": (1.0, 1.0), "b": (2.0, 0.0)}      # (lr_mult, decay_mult)


def _rate(base_lr, it):
    return base_lr * 0.9 ** it


def run_solverkit(rule, dtype, threads):
    spec = sk.load_solver_spec({"type": rule, "max_iter": STEPS, "weight_decay": DECAY,
                                **CASES[rule]})
    w0, grads = _problem(dtype)
    params = [_Param(f"{k}/0", w0[k], *MULTS[k]) for k in ("w", "b")]
    updater = Updater(spec, params)
    before = sk.num_threads()
    sk.set_num_threads(threads)
    try:
        for it, g in enumerate(grads):
            for param, key in zip(params, ("w", "b")):
                param.blob.diff[...] = g[key]
            updater.update(_rate(spec.base_lr, it), it)
    finally:
        sk.set_num_threads(before)
    return {k: p.blob.data.copy() for k, p in zip(("w", "b"), params)}, spec


def reference(rule, spec):
    """The rule's formula, step by step, in float64."""
    w0, grads = _problem(np.float64)
    w = {k: v.copy() for k, v in w0.items()}
    s = {k: {"a": np.zeros_like(v), "b": np.zeros_like(v)} for k, v in w.items()}
    for it, g_all in enumerate(grads):
        t = it + 1
        for k in list(w):
            lr_mult, decay_mult = MULTS[k]
            lr, lam = _rate(spec.base_lr, it) * lr_mult, DECAY * decay_mult
            W, g, a, b = w[k], g_all[k], s[k]["a"], s[k]["b"]
            if rule not in ("AdamW", "Lion", "LAMB"):
                g = g + lam * W
            m = spec.momentum
            if rule == "SGD":
                a = m * a + lr * g
                W = W - a
            elif rule == "Nesterov":
                new = m * a + lr * g
                W = W - ((1 + m) * new - m * a)
                a = new
            elif rule == "AdaGrad":
                a = a + g * g
                W = W - lr * g / (np.sqrt(a) + spec.delta)
            elif rule == "RMSProp":
                a = spec.rms_decay * a + (1 - spec.rms_decay) * g * g
                W = W - lr * g / (np.sqrt(a) + spec.delta)
            elif rule == "AdaDelta":
                a = m * a + (1 - m) * g * g
                u = g * np.sqrt((b + spec.delta) / (a + spec.delta))
                b = m * b + (1 - m) * u * u
                W = W - lr * u
            elif rule == "Lion":
                c = m * a + (1 - m) * g
                W = W - lr * lam * W - lr * np.sign(c)
                a = spec.momentum2 * a + (1 - spec.momentum2) * g
            else:
                b1, b2 = m, spec.momentum2
                a = b1 * a + (1 - b1) * g
                b = b2 * b + (1 - b2) * g * g
                if rule in ("Adam", "AdamW"):
                    step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * a / (
                        np.sqrt(b) + spec.delta)
                    W = W - (lr * lam * W if rule == "AdamW" else 0) - step
                elif rule == "LAMB":
                    u = (a / (1 - b1 ** t)) / (np.sqrt(b / (1 - b2 ** t)) + spec.delta) + lam * W
                    wn, un = np.linalg.norm(W), np.linalg.norm(u)
                    W = W - lr * (wn / un if wn > 0 and un > 0 else 1.0) * u
                else:       # RAdam
                    rho_inf = 2 / (1 - b2) - 1
                    rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
                    if rho > 5:
                        r = math.sqrt((rho - 4) * (rho - 2) * rho_inf
                                      / ((rho_inf - 4) * (rho_inf - 2) * rho))
                        W = W - lr * r * (a / (1 - b1 ** t)) * math.sqrt(1 - b2 ** t) / (
                            np.sqrt(b) + spec.delta)
                    else:
                        W = W - lr * a / (1 - b1 ** t)
            w[k], s[k]["a"], s[k]["b"] = W, a, b
    return w


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rule", list(CASES))
def test_rule_matches_its_formula_on_a_large_parameter(rule, threads, blas_backend):
    got, spec = run_solverkit(rule, np.float64, threads)
    w0, _ = _problem(np.float64)
    expected = reference(rule, spec)
    for k in ("w", "b"):
        assert not np.allclose(got[k], w0[k])
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{rule} {k}")


@pytest.mark.parametrize("rule", list(CASES))
def test_rule_gives_the_same_bits_on_1_and_2_threads(rule, blas_backend):
    one, _ = run_solverkit(rule, np.float32, 1)
    two, _ = run_solverkit(rule, np.float32, 2)
    for k in ("w", "b"):
        np.testing.assert_array_equal(one[k], two[k], err_msg=f"{rule} {k}")


def test_radam_matches_torch():
    torch = pytest.importorskip("torch")
    got, spec = run_solverkit("RAdam", np.float64, 2)
    w0, grads = _problem(np.float64)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in w0.items()}
    groups = [{"params": [tensors[k]], "weight_decay": DECAY * MULTS[k][1],
               "lr": spec.base_lr * MULTS[k][0]} for k in ("w", "b")]
    optimizer = torch.optim.RAdam(groups, betas=(spec.momentum, spec.momentum2),
                                  eps=spec.delta)
    for it, g in enumerate(grads):
        for group, k in zip(optimizer.param_groups, ("w", "b")):
            group["lr"] = _rate(spec.base_lr, it) * MULTS[k][0]
            tensors[k].grad = torch.tensor(g[k])
        optimizer.step()
    for k in ("w", "b"):
        np.testing.assert_allclose(got[k], tensors[k].detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", list(CASES))
def test_rule_resumes_exactly(rule, tmp_path):
    x, y = blobs_classification(30, seed=5)
    path = write_arrays(tmp_path / "data.npz", x, y)
    spec = {"type": rule, "max_iter": 6, "weight_decay": DECAY, "random_seed": 3,
            "lr_policy": "step", "gamma": 0.5, "stepsize": 2, **CASES[rule]}

    def solver(prefix):
        return sk.Solver({**spec, "snapshot_prefix": str(tmp_path / prefix)},
                         net=classifier_net(path, path, 4), progress=False)

    straight = solver("straight")
    straight.step(6)
    first = solver("resumed")
    first.step(3)
    state = first.snapshot()
    resumed = solver("resumed")
    resumed.restore(state)
    at_3 = [p.blob.data.copy() for p in resumed.updater.params]
    resumed.step(3)
    for a, b, c in zip(straight.updater.params, resumed.updater.params, at_3):
        np.testing.assert_array_equal(a.blob.data, b.blob.data)
        assert not np.array_equal(b.blob.data, c)
    for key, array in straight.updater.state_arrays().items():
        np.testing.assert_array_equal(array, resumed.updater.state_arrays()[key])
