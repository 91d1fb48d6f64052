"""Learning-rate policies against their formulas, Caffe's LeNet number, and warm-up."""

import math

import pytest

import solverkit as sk
from solverkit.solvers import learning_rate

ITERS = [0, 1, 7, 100, 999, 2500, 5000]


def spec(**fields):
    return sk.load_solver_spec({"base_lr": 0.01, "max_iter": 5000, **fields})


def test_lenet_inv_rate_at_100_is_caffes():
    lenet = spec(lr_policy="inv", gamma=0.0001, power=0.75)
    assert f"{learning_rate(lenet, 100):.6g}" == "0.00992565"     # Caffe's log line
    assert learning_rate(lenet, 100) == pytest.approx(0.00992565, abs=5e-9)


@pytest.mark.parametrize("fields, formula", [
    ({"lr_policy": "fixed"}, lambda it: 0.01),
    ({"lr_policy": "step", "gamma": 0.1, "stepsize": 1000},
     lambda it: 0.01 * 0.1 ** math.floor(it / 1000)),
    ({"lr_policy": "exp", "gamma": 0.999}, lambda it: 0.01 * 0.999 ** it),
    ({"lr_policy": "inv", "gamma": 0.0001, "power": 0.75},
     lambda it: 0.01 * (1 + 0.0001 * it) ** -0.75),
    ({"lr_policy": "multistep", "gamma": 0.5, "stepvalue": [7, 1000, 2500]},
     lambda it: 0.01 * 0.5 ** sum(v <= it for v in (7, 1000, 2500))),
    ({"lr_policy": "poly", "power": 2.0}, lambda it: 0.01 * (1 - it / 5000) ** 2),
    ({"lr_policy": "sigmoid", "gamma": -0.01, "stepsize": 2500},
     lambda it: 0.01 / (1 + math.exp(0.01 * (it - 2500)))),
    ({"lr_policy": "cosine", "min_lr": 0.001},
     lambda it: 0.001 + 0.5 * (0.01 - 0.001) * (1 + math.cos(math.pi * it / 5000))),
    ({"lr_policy": "cosine"}, lambda it: 0.5 * 0.01 * (1 + math.cos(math.pi * it / 5000))),
])
def test_policy_matches_formula(fields, formula):
    s = spec(**fields)
    for it in ITERS:
        assert learning_rate(s, it) == pytest.approx(formula(it), rel=1e-12, abs=1e-18), it


def test_multistep_boundaries():
    s = spec(lr_policy="multistep", gamma=0.1, stepvalue=[10, 20])
    rates = [learning_rate(s, it) for it in (9, 10, 19, 20, 21)]
    assert rates == pytest.approx([0.01, 0.001, 0.001, 0.0001, 0.0001])


def test_linear_warmup_multiplies_the_first_iterations():
    s = spec(lr_policy="step", gamma=0.5, stepsize=3, warmup_iter=4)
    for it in range(8):
        base = 0.01 * 0.5 ** (it // 3)
        factor = (it + 1) / 4 if it < 4 else 1.0
        assert learning_rate(s, it) == pytest.approx(base * factor, rel=1e-12)
    assert learning_rate(s, 0) == pytest.approx(0.0025)


def test_solver_rate_is_the_schedule(tmp_path):
    net = {"name": "n", "layers": [{"name": "x", "type": "Input", "top": "x", "shape": [[1, 2]]}]}
    solver = sk.Solver({"base_lr": 0.01, "max_iter": 10, "lr_policy": "inv", "gamma": 0.0001,
                        "power": 0.75, "snapshot_prefix": str(tmp_path / "r")}, net=net)
    assert solver.rate(100) == learning_rate(solver.spec, 100)
    assert solver.rate() == 0.01
