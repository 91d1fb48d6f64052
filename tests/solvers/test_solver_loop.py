"""The training loop: every type trains, tests and display on schedule, the CSV log,
non-finite losses, seeds, one pass of TEST data by default."""

import csv
import logging
import math

import numpy as np
import pytest
from solver_data import blobs_classification, classifier_net, regression_net, write_arrays

import solverkit as sk
from solverkit.registry import update_types

SOLVER_TYPES = tuple(update_types())     # the registered update types


@pytest.fixture
def classifier(tmp_path):
    x, y = blobs_classification(120, seed=0)
    train = write_arrays(tmp_path / "train.npz", x[:90], y[:90])
    test = write_arrays(tmp_path / "test.npz", x[90:], y[90:])
    return classifier_net(train, test, batch_size=10)


@pytest.fixture
def regression(tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 2))
    return write_arrays(tmp_path / "regression.npz", x, y), x, y


def read_log(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.mark.parametrize("solver_type", SOLVER_TYPES)
def test_changing_only_type_trains_every_solver(solver_type, classifier, tmp_path):
    text = (f"type: {solver_type}\nbase_lr: 0.05\nmax_iter: 40\nweight_decay: 0.0005\n"
            f"random_seed: 11\nsnapshot_prefix: {tmp_path / solver_type}\n")
    solver = sk.Solver(text, net=classifier, progress=False)
    before = solver.test()["loss"]
    solver.step(40)
    after = solver.test()["loss"]
    assert math.isfinite(after) and after < before, (solver_type, before, after)


def test_test_iter_defaults_to_one_pass_and_test_averages(classifier, tmp_path):
    solver = sk.Solver({"base_lr": 0.1, "max_iter": 3, "test_interval": 3,
                        "snapshot_prefix": str(tmp_path / "r")}, net=classifier, progress=False)
    assert solver.test_iter == 3           # 30 TEST samples, batch 10
    solver.step(3)
    results = solver.test()
    # the TEST data wrapped around to its start: the same batches again, by hand
    outputs = [solver.test_net.forward() for _ in range(3)]
    for name in ("loss", "accuracy"):
        assert results[name] == pytest.approx(np.mean([o[name] for o in outputs]), rel=1e-6)
    # TEST shares TRAIN's parameter Blobs
    assert solver.test_net.params["ip1"][0] is solver.net.params["ip1"][0]


def test_without_a_data_layer_test_iter_is_required(tmp_path):
    net = {"name": "n", "layers": [
        {"name": "x", "type": "Input", "top": ["x", "y"], "shape": [[2, 3], [2, 3]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "ip", "num_output": 3},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["ip", "y"], "top": "loss"}]}
    spec = {"base_lr": 0.1, "max_iter": 3, "snapshot_prefix": str(tmp_path / "r")}
    with pytest.raises(sk.ConfigError) as info:
        sk.Solver({**spec, "test_interval": 2}, net=net)
    assert info.value.field == "test_iter"
    assert sk.Solver({**spec, "test_interval": 2, "test_iter": 4}, net=net).test_iter == 4


@pytest.mark.parametrize("initialization, tested", [(True, [0, 5, 10, 12]),
                                                    (False, [5, 10, 12])])
def test_tests_and_display_follow_their_intervals(initialization, tested, classifier, tmp_path,
                                                  caplog):
    prefix = tmp_path / "logs" / "run"
    solver = sk.Solver({"base_lr": 0.1, "max_iter": 12, "test_interval": 5, "display": 4,
                        "average_loss": 3, "test_initialization": initialization,
                        "random_seed": 1, "snapshot_prefix": str(prefix)},
                       net=classifier, progress=False)
    with caplog.at_level(logging.INFO, logger="solverkit"):
        solver.solve()
    header, rows = read_log(f"{prefix}_log.csv")
    assert header == ["iter", "phase", "name", "value", "lr", "seconds"]
    test_iters = sorted({int(r[0]) for r in rows if r[1] == "TEST"})
    assert test_iters == tested
    assert {r[2] for r in rows if r[1] == "TEST"} == {"loss", "accuracy"}
    shown = [m for m in caplog.messages if m.startswith("Iteration") and "lr =" in m]
    assert [int(m.split()[1]) for m in shown] == [0, 4, 8]
    assert all("iter/s" in m for m in shown)
    # the displayed loss is the mean of the last average_loss (3) losses in the log
    train = [float(r[3]) for r in rows if r[1] == "TRAIN" and r[2] == "loss"]
    assert f"loss = {np.mean(train[6:9]):.6g}" in shown[2]
    assert f"    Train net output #0: loss = {train[8]:.6g}" in caplog.messages


def test_csv_log_rows_and_rates(regression, tmp_path):
    path, x, y = regression
    net = regression_net(path, batch_size=4)
    solver = sk.Solver({"base_lr": 0.01, "max_iter": 6, "lr_policy": "step", "gamma": 0.5,
                        "stepsize": 2, "iter_size": 2, "random_seed": 4,
                        "snapshot_prefix": str(tmp_path / "reg")}, net=net, progress=False)
    w = {k: solver.net.params[k[0]][k[1]].data.copy()
         for k in [("ip1", 0), ("ip1", 1), ("ip2", 0), ("ip2", 1)]}
    solver.solve()
    _, rows = read_log(tmp_path / "reg_log.csv")
    assert [int(r[0]) for r in rows] == list(range(6))        # one TRAIN output: one row each
    assert all(r[1] == "TRAIN" and r[2] == "loss" for r in rows)
    for r in rows:
        assert float(r[4]) == solver.rate(int(r[0])) == 0.01 * 0.5 ** (int(r[0]) // 2)
    seconds = [float(r[5]) for r in rows]
    assert seconds == sorted(seconds)
    # iteration 0: the raw loss averaged over the two passes (samples 0-3 and 4-7)
    def loss(xb, yb):
        p = (xb @ w["ip1", 0].T + w["ip1", 1]) @ w["ip2", 0].T + w["ip2", 1]
        return ((p - yb) ** 2).sum() / (2 * len(xb))
    expected = (loss(x[:4], y[:4]) + loss(x[4:8], y[4:8])) / 2
    assert float(rows[0][3]) == pytest.approx(expected, rel=1e-12)


def test_snapshot_prefix_defaults(tmp_path, monkeypatch, classifier):
    folder = tmp_path / "configs"
    folder.mkdir()
    solver_file = folder / "quick_solver.yaml"
    solver_file.write_text("base_lr: 0.1\nmax_iter: 2\n")
    sk.Solver(solver_file, net=classifier, progress=False).solve()
    assert (folder / "quick_solver_log.csv").exists()
    monkeypatch.chdir(tmp_path)
    sk.Solver({"base_lr": 0.1, "max_iter": 2}, net=classifier, progress=False).solve()
    assert (tmp_path / "classifier_log.csv").exists()


def test_solve_closes_the_nets(regression, tmp_path):
    path, _, _ = regression
    solver = sk.Solver({"base_lr": 0.1, "max_iter": 2, "test_interval": 2,
                        "snapshot_prefix": str(tmp_path / "r")}, net=regression_net(path, 4),
                       progress=False)
    solver.solve()
    assert solver.net.layer("data").closed and solver.test_net.layer("data").closed


def test_random_seed_drives_initial_weights(classifier, tmp_path, caplog):
    def first_weights(seed):
        spec = {"base_lr": 0.1, "max_iter": 1, "random_seed": seed,
                "snapshot_prefix": str(tmp_path / "r")}
        return sk.Solver(spec, net=classifier).net.params["ip1"][0].data.copy()

    np.testing.assert_array_equal(first_weights(5), first_weights(5))
    assert not np.array_equal(first_weights(5), first_weights(6))
    with caplog.at_level(logging.INFO, logger="solverkit"):
        first_weights(-1)
    assert any("random_seed is -1: using seed" in m for m in caplog.messages)


def test_nan_in_data_names_iteration_and_layer(regression, tmp_path):
    _path, x, y = regression
    x = x.copy()
    x[13, 2] = np.nan                           # batch 4: reached at iteration 3
    bad = write_arrays(tmp_path / "bad.npz", x, y)
    solver = sk.Solver({"base_lr": 0.01, "max_iter": 10, "snapshot_prefix": str(tmp_path / "r")},
                       net=regression_net(bad, 4), progress=False)
    with pytest.raises(sk.NonFiniteError, match=r"iteration 3: .*layer 'data'"):
        solver.solve()
    assert solver.iter == 3


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_diverging_rate_is_caught_at_the_first_layer_that_overflows(regression, tmp_path):
    path, _x, _y = regression
    solver = sk.Solver({"base_lr": 1e25, "max_iter": 10, "snapshot_prefix": str(tmp_path / "r")},
                       net=regression_net(path, 4, dtype="float32"), progress=False)
    with pytest.raises(sk.NonFiniteError) as info:
        solver.solve()
    message = str(info.value)
    assert f"iteration {solver.iter}:" in message and solver.iter >= 1
    assert "layer 'ip" in message


def test_progress_bar_on_request_and_not_when_stderr_is_no_terminal(regression, tmp_path,
                                                                       capsys):
    path, _, _ = regression
    spec = {"base_lr": 0.01, "max_iter": 3, "snapshot_prefix": str(tmp_path / "r")}
    sk.Solver(spec, net=regression_net(path, 4), progress=True).step(3)
    assert "0/3 [" in capsys.readouterr().err
    sk.Solver(spec, net=regression_net(path, 4)).step(3)      # pytest's stderr is no TTY
    assert "/3" not in capsys.readouterr().err
