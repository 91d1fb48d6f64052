"""The training loop runs iterations and emits events; the CSV log, display, tests,
snapshots, signals, the plateau policy and data parallelism are callbacks in its list."""

import signal

from control_data import log_rows, series_of, write_run

import solverkit as sk
from solverkit.solvers.loop_callbacks import CsvLog, Display, PeriodicSnapshot, PeriodicTest
from solverkit.solvers.schedule import PlateauPolicy


def _solver(tmp_path, **fields):
    tmp_path.mkdir(parents=True, exist_ok=True)
    _, solver_path = write_run(tmp_path, **fields)
    return sk.Solver(solver_path, progress=False)


def _without(solver, kind):
    solver.callbacks[:] = [c for c in solver.callbacks if not isinstance(c, kind)]


def test_the_loop_work_is_in_the_callback_list_in_its_order(tmp_path):
    solver = _solver(tmp_path, max_iter=4, lr_policy="plateau",
                     plateau={"output": "loss", "patience": 1}, snapshot_best={"output": "loss"})
    names = [type(c).__name__ for c in solver.callbacks]
    assert names == ["SignalEffects", "PlateauPolicy", "CsvLog", "Display", "PeriodicTest",
                     "PeriodicSnapshot", "BestSnapshot"]
    assert isinstance(solver.schedule.policy, PlateauPolicy)
    assert solver.schedule.policy in solver.callbacks


def test_without_the_periodic_test_callback_the_loop_tests_nothing(tmp_path):
    tested = _solver(tmp_path / "a", max_iter=8, test_interval=4)
    tested.solve()
    assert [it for it, _ in series_of(tmp_path / "a" / "run_log.csv", "loss")] == [0, 4, 8]

    untested = _solver(tmp_path / "b", max_iter=8, test_interval=4)
    _without(untested, PeriodicTest)
    untested.solve()
    # only solve()'s test after the last update is left
    assert [it for it, _ in series_of(tmp_path / "b" / "run_log.csv", "loss")] == [8]


def test_without_the_csv_and_snapshot_callbacks_no_log_rows_and_no_periodic_snapshots(tmp_path):
    solver = _solver(tmp_path, max_iter=6, test_interval=0, snapshot=2,
                     snapshot_after_train=False)
    _without(solver, CsvLog)
    _without(solver, PeriodicSnapshot)
    _without(solver, Display)
    solver.solve()
    assert not (tmp_path / "run_log.csv").exists()
    assert not list(tmp_path.glob("run_iter_*"))

    again = _solver(tmp_path / "b", max_iter=6, test_interval=0, snapshot=2,
                    snapshot_after_train=False)
    again.solve()
    assert sorted(p.name for p in (tmp_path / "b").glob("run_iter_*.solverstate.npz")) == \
        ["run_iter_2.solverstate.npz", "run_iter_4.solverstate.npz",
         "run_iter_6.solverstate.npz"]


class _Scale(sk.Callback):
    """What data parallelism does at this hook (replace the step's loss and outputs)."""

    def on_gradients_ready(self, it, step):
        step.loss *= 10.0
        step.outputs = {name: value * 10.0 for name, value in step.outputs.items()}


def test_a_callback_replacing_the_step_results_changes_what_is_logged(tmp_path):
    plain = _solver(tmp_path / "a", max_iter=3, test_interval=0)
    plain.solve()
    scaled = _solver(tmp_path / "b", max_iter=3, test_interval=0)
    scaled.callbacks.insert(0, _Scale())       # first, as data parallelism is
    scaled.callbacks[0].attach(scaled)
    scaled.solve()
    a = series_of(tmp_path / "a" / "run_log.csv", "loss", "TRAIN")
    b = series_of(tmp_path / "b" / "run_log.csv", "loss", "TRAIN")
    assert [it for it, _ in a] == [it for it, _ in b] == [0, 1, 2]
    # the same weights at each step (the gradient is untouched), ten times the logged loss
    for (_, x), (_, y) in zip(a, b):
        assert abs(y - 10.0 * x) <= 1e-9 * abs(y)
    assert abs(scaled.smoothed_loss - 10.0 * plain.smoothed_loss) <= 1e-9 * scaled.smoothed_loss


def test_a_signal_during_the_forward_pass_acts_after_that_iteration(tmp_path):
    solver = _solver(tmp_path, max_iter=10, test_interval=0)

    class Interrupt(sk.Callback):
        def on_iteration_start(self, it):
            if it == 3:
                solver.request_stop(signal.SIGTERM)

    solver.add_callback(Interrupt())
    assert solver.solve() == {}
    assert solver.iter == 4 and solver.stopped_by == signal.SIGTERM
    assert solver.last_snapshot == tmp_path / "run_iter_4.solverstate.npz"
    assert [r[0] for r in log_rows(tmp_path / "run_log.csv")] == ["0", "1", "2", "3"]
