"""Every update type, regularization and clipping against the formulas written out here.

The net is linear (x -> ip1 -> ip2 -> EuclideanLoss) so the reference computes its own
gradients by hand; only the initial weights are taken from the solver.
"""

import math

import numpy as np
import pytest
from solver_data import regression_net, write_arrays

import solverkit as sk

N, BATCH = 8, 4
PARAMS = [("ip1", 0), ("ip1", 1), ("ip2", 0), ("ip2", 1)]
# lr_mult 2 on biases, decay_mult 0.5 on ip1's bias and 0 on ip2's bias
IP1_PARAM = [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0.5}]
IP2_PARAM = [{"lr_mult": 1, "decay_mult": 1}, {"lr_mult": 2, "decay_mult": 0}]
MULTS = {("ip1", 0): (1, 1), ("ip1", 1): (2, 0.5), ("ip2", 0): (1, 1), ("ip2", 1): (2, 0)}


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, 4))
    y = rng.normal(size=(N, 2))
    return write_arrays(tmp_path / "regression.npz", x, y), x, y


def hand_gradients(w, x, y):
    """Gradients of 1/(2B) Σ‖ip2(ip1(x)) − y‖² for the linear two-layer net."""
    h = x @ w["ip1", 0].T + w["ip1", 1]
    p = h @ w["ip2", 0].T + w["ip2", 1]
    d = (p - y) / len(x)
    dh = d @ w["ip2", 0]
    return {("ip2", 0): d.T @ h, ("ip2", 1): d.sum(0), ("ip1", 0): dh.T @ x, ("ip1", 1): dh.sum(0)}


def reference_run(solver_fields, w0, x, y, batch, iters):
    """The update formulas step by step, with the step lr policy, per parameter, from weights ``w0``."""
    f = {"momentum": 0.0, "weight_decay": 0.0, "regularization_type": "L2", "iter_size": 1,
         "clip_gradients": -1.0, "elastic_net_beta": 1.0, **solver_fields}
    w = {k: v.copy() for k, v in w0.items()}
    state = {k: {"a": np.zeros_like(v), "b": np.zeros_like(v)} for k, v in w.items()}
    cursor = 0
    for it in range(iters):
        g = {k: np.zeros_like(v) for k, v in w.items()}
        for _ in range(f["iter_size"]):
            index = (cursor + np.arange(batch)) % len(x)
            cursor = (cursor + batch) % len(x)
            for k, v in hand_gradients(w, x[index], y[index]).items():
                g[k] = g[k] + v
        g = {k: v / f["iter_size"] for k, v in g.items()}
        if f["clip_gradients"] > 0:
            norm = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
            if norm > f["clip_gradients"]:
                g = {k: v * f["clip_gradients"] / norm for k, v in g.items()}
        rate = f["base_lr"] * f["gamma"] ** (it // f["stepsize"])
        t = it + 1
        for k, W in list(w.items()):
            lr_mult, decay_mult = MULTS[k]
            lam = f["weight_decay"] * decay_mult
            lr = rate * lr_mult
            gk, s = g[k], state[k]
            if f["type"] != "AdamW":
                if f["regularization_type"] == "L2":
                    gk = gk + lam * W
                elif f["regularization_type"] == "L1":
                    gk = gk + lam * np.sign(W)
                else:
                    gk = gk + lam * (f["elastic_net_beta"] * W + np.sign(W))
            m = f["momentum"]
            if f["type"] == "SGD":
                s["a"] = m * s["a"] + lr * gk
                w[k] = W - s["a"]
            elif f["type"] == "Nesterov":
                v_new = m * s["a"] + lr * gk
                w[k] = W - ((1 + m) * v_new - m * s["a"])
                s["a"] = v_new
            elif f["type"] == "AdaGrad":
                s["a"] = s["a"] + gk ** 2
                w[k] = W - lr * gk / (np.sqrt(s["a"]) + f["delta"])
            elif f["type"] == "RMSProp":
                s["a"] = f["rms_decay"] * s["a"] + (1 - f["rms_decay"]) * gk ** 2
                w[k] = W - lr * gk / (np.sqrt(s["a"]) + f["delta"])
            elif f["type"] == "AdaDelta":
                s["a"] = m * s["a"] + (1 - m) * gk ** 2
                u = gk * np.sqrt((s["b"] + f["delta"]) / (s["a"] + f["delta"]))
                s["b"] = m * s["b"] + (1 - m) * u ** 2
                w[k] = W - lr * u
            else:       # Adam, AdamW
                b1, b2 = m, f["momentum2"]
                s["a"] = b1 * s["a"] + (1 - b1) * gk
                s["b"] = b2 * s["b"] + (1 - b2) * gk ** 2
                adam = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * s["a"] / (
                    np.sqrt(s["b"]) + f["delta"])
                decay = lr * lam * W if f["type"] == "AdamW" else 0.0
                w[k] = W - decay - adam
    return w


STEP = {"lr_policy": "step", "gamma": 0.5, "stepsize": 2, "weight_decay": 0.01}
CASES = {
    "SGD": {"type": "SGD", "base_lr": 0.05, "momentum": 0.9},
    "Nesterov": {"type": "Nesterov", "base_lr": 0.05, "momentum": 0.9},
    "AdaGrad": {"type": "AdaGrad", "base_lr": 0.05, "delta": 1e-8},
    "RMSProp": {"type": "RMSProp", "base_lr": 0.01, "rms_decay": 0.9, "delta": 1e-8},
    "AdaDelta": {"type": "AdaDelta", "base_lr": 1.0, "momentum": 0.9, "delta": 1e-6},
    "Adam": {"type": "Adam", "base_lr": 0.01, "momentum": 0.9, "momentum2": 0.99, "delta": 1e-8},
    "AdamW": {"type": "AdamW", "base_lr": 0.01, "momentum": 0.9, "momentum2": 0.99,
              "delta": 1e-8, "weight_decay": 0.1},
    "SGD-L1": {"type": "SGD", "base_lr": 0.05, "momentum": 0.5, "regularization_type": "L1"},
    "SGD-ElasticNet": {"type": "SGD", "base_lr": 0.05, "momentum": 0.5,
                       "regularization_type": "ElasticNet", "elastic_net_beta": 0.5},
    "Adam-clip": {"type": "Adam", "base_lr": 0.01, "momentum": 0.9, "momentum2": 0.99,
                  "delta": 1e-8, "clip_gradients": 0.05},
    "SGD-clip-iter_size": {"type": "SGD", "base_lr": 0.05, "momentum": 0.9,
                           "clip_gradients": 0.1, "iter_size": 2},
}


def make_solver(source_path, tmp_path, fields, batch=BATCH, iters=6):
    spec = {**STEP, **fields, "max_iter": iters, "random_seed": 3,
            "snapshot_prefix": str(tmp_path / "run")}
    net = regression_net(source_path, batch, ip1_param=IP1_PARAM, ip2_param=IP2_PARAM)
    return sk.Solver(spec, net=net, progress=False)


def weights(solver):
    return {(layer, i): solver.net.params[layer][i].data.copy() for layer, i in PARAMS}


@pytest.mark.parametrize("case", list(CASES))
def test_update_matches_spec_formulas(case, source, tmp_path, blas_backend):
    """On numpy's backend every rule runs block by block; on MKL, SGD and Nesterov take
    whole-array vector operations instead (inside their ``step``)."""
    path, x, y = source
    fields = {**STEP, **CASES[case]}
    solver = make_solver(path, tmp_path, fields)
    w0 = weights(solver)
    iters = 6
    solver.step(iters)
    expected = reference_run(fields, w0, x, y, BATCH, iters)
    for key in PARAMS:
        assert not np.allclose(expected[key], w0[key])        # the test moves every parameter
        np.testing.assert_allclose(solver.net.params[key[0]][key[1]].data, expected[key],
                                   rtol=1e-10, atol=1e-12, err_msg=f"{case} {key}")


def test_iter_size_2_equals_double_batch(source, tmp_path):
    path, _, _ = source
    fields = {"type": "SGD", "base_lr": 0.05, "momentum": 0.9}
    accumulated = make_solver(path, tmp_path, {**fields, "iter_size": 2}, batch=BATCH)
    whole = make_solver(path, tmp_path, fields, batch=2 * BATCH)
    w0 = weights(accumulated)
    for key in PARAMS:                   # same seed: same initial weights
        np.testing.assert_array_equal(weights(whole)[key], w0[key])
    accumulated.step(5)
    whole.step(5)
    for key in PARAMS:
        np.testing.assert_allclose(weights(accumulated)[key], weights(whole)[key], rtol=1e-12)
        assert not np.allclose(weights(whole)[key], w0[key])


def test_lr_mult_zero_freezes_and_leaves_the_norm(source, tmp_path):
    path, _, _ = source
    spec = {"type": "Adam", "base_lr": 0.01, "max_iter": 3, "weight_decay": 0.1,
            "snapshot_prefix": str(tmp_path / "run"), "random_seed": 1}
    net = regression_net(path, BATCH, ip1_param=[{"lr_mult": 0}, {"lr_mult": 1}])
    solver = sk.Solver(spec, net=net, progress=False)
    frozen = solver.net.params["ip1"][0].data.copy()
    moving = solver.net.params["ip1"][1].data.copy()
    solver.step(3)
    np.testing.assert_array_equal(solver.net.params["ip1"][0].data, frozen)
    assert not np.allclose(solver.net.params["ip1"][1].data, moving)
    assert "ip1/0/m" not in solver.updater.state_arrays()
    assert {p.key for p in solver.updater.params} == {"ip1/1", "ip2/0", "ip2/1"}


def test_clip_scales_all_gradients_to_the_global_norm(source, tmp_path):
    path, _, _ = source
    solver = make_solver(path, tmp_path, {"type": "SGD", "base_lr": 0.1, "clip_gradients": 0.5})
    rng = np.random.default_rng(0)
    before = {}
    for param in solver.updater.params:
        param.blob.diff[...] = rng.normal(size=param.blob.shape)
        before[param.key] = param.blob.diff.copy()
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in before.values()))
    assert norm > 0.5
    solver.updater.clip()
    assert solver.updater.gradient_norm() == pytest.approx(0.5, rel=1e-12)
    for param in solver.updater.params:     # one common factor: directions are kept
        np.testing.assert_allclose(param.blob.diff, before[param.key] * 0.5 / norm, rtol=1e-12)
    # below the threshold nothing changes
    small = {p.key: p.blob.diff.copy() for p in solver.updater.params}
    solver.updater.clip()
    for param in solver.updater.params:
        np.testing.assert_array_equal(param.blob.diff, small[param.key])


@pytest.mark.parametrize("kind, expected", [
    ("L2", lambda w, lam: lam * w),
    ("L1", lambda w, lam: lam * np.sign(w)),
    ("ElasticNet", lambda w, lam: lam * (0.25 * w + np.sign(w))),
])
def test_regularization_adds_the_penalty_gradient_with_decay_mult(kind, expected, source,
                                                                   tmp_path):
    path, _, _ = source
    fields = {"type": "SGD", "base_lr": 0.1, "weight_decay": 0.2, "regularization_type": kind}
    if kind == "ElasticNet":
        fields["elastic_net_beta"] = 0.25
    solver = make_solver(path, tmp_path, fields)
    updater = solver.updater
    for param in updater.params:
        param.blob.diff[...] = 0.0
        w_before = param.blob.data.copy()
        decay = 0.2 * param.decay_mult
        if decay:
            updater.regularize(param.blob.data, param.blob.diff, decay)
        np.testing.assert_allclose(param.blob.diff, expected(w_before, decay), rtol=1e-12)
    # decay_mult 0 on ip2's bias: no penalty at all
    assert np.all(solver.net.params["ip2"][1].diff == 0)
    assert np.any(solver.net.params["ip1"][1].diff != 0)


def test_state_arrays_round_trip(source, tmp_path):
    path, _, _ = source
    solver = make_solver(path, tmp_path, {"type": "AdaDelta", "base_lr": 1.0})
    solver.step(2)
    saved = {k: v.copy() for k, v in solver.updater.state_arrays().items()}
    assert set(saved) == {f"{layer}/{i}/{name}" for layer, i in PARAMS
                          for name in ("history", "update_history")}
    other = make_solver(path, tmp_path, {"type": "AdaDelta", "base_lr": 1.0})
    other.updater.load_state_arrays(saved)
    for key, array in other.updater.state_arrays().items():
        np.testing.assert_array_equal(array, saved[key])
    with pytest.raises(sk.SolverkitError, match="ip1/0/history"):
        other.updater.load_state_arrays({k: v for k, v in saved.items() if k != "ip1/0/history"})
