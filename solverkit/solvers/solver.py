"""The training loop: TRAIN and TEST nets, the iterations, and the events they emit.

Each iteration: ``on_iteration_start``; clear the parameter diffs, ``iter_size`` ×
(forward, backward) so the diffs hold the summed gradient; ``on_gradients_ready``;
``before_update``; one update (``Updater.update``: normalize, clip, regularize, step) with
the rate computed once for the iteration; ``iter += 1``; ``on_step_end``; the snapshots
the hooks asked for. Everything else happens in callbacks, in this order: data
parallelism (``data_parallel``), what a signal does, the learning-rate policy, the CSV
log, the display lines, the periodic tests and snapshots (``loop_callbacks``), then the
training controls the spec asks for and the spec's own ``callbacks:``. ``solve()`` ends
with the final snapshot and test.

The loop's parts save themselves: ``get_state()`` collects the iteration, the
loss-smoothing window, the seconds already trained, the update rule's state arrays
(``Updater.get_state``), the schedule's state (``Schedule.get_state``), and every net's
random generators and data layers' positions (``DataLayer.get_state``); ``set_state``
gives each part its own back. Snapshots store that dict.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from .. import parallel
from ..caffe.solverstate import is_caffe_state
from ..data.image_sources import write_class_names
from ..errors import ConfigError, NonFiniteError, did_you_mean
from ..layers.base import DataLayer
from ..layers.data import Data
from ..net import Net
from ..runs import RunFiles, claim_prefix, new_run_id
from ..snapshot import restore_solver, save_solver
from ..spec.solver import SolverSpec, load_solver_spec
from .caffe_snapshot import restore_caffe_snapshot, save_caffe_snapshot
from .callbacks import Callback, StepResult, builtin_callbacks, spec_callbacks
from .data_parallel import DataParallel
from .loop_callbacks import CsvLog, SignalEffects, loop_callbacks
from .nets import output_prefix, plan_nets
from .schedule import Schedule
from .updates import Updater

logger = logging.getLogger("solverkit")


def batches_per_pass(net: Net) -> int | None:
    """Batches for one pass over the net's data: ceil of the largest ``batches_per_epoch``
    among its data layers, or ``None`` when none knows it."""
    counts = [layer.batches_per_epoch for layer in net.layers
              if isinstance(layer, DataLayer) and layer.batches_per_epoch is not None]
    return math.ceil(max(counts)) if counts else None


def _scalar_outputs(outputs: dict) -> dict[str, float]:
    """The one-element outputs (losses, accuracies): those the loop logs and averages."""
    return {name: value for name, value in outputs.items() if isinstance(value, float)}


def average_test_outputs(net: Net, count: int, world, where: str = "") -> dict[str, float]:
    """The test loop (the solver's and ``solverkit test``'s): ``count`` forward passes of
    ``net``, each one-element output averaged over the passes, then over the ranks of
    ``world`` (each rank tests its slice of every batch). A non-finite output is an error
    naming ``where`` (``"iteration 500, "``), the batch and the first layer at fault."""
    sums: dict[str, float] = {}
    for batch in range(count):
        outputs = _scalar_outputs(net.forward())
        net.check_finite_outputs(f"{where}test batch {batch + 1} of {count}")
        for name, value in outputs.items():
            sums[name] = sums.get(name, 0.0) + value
    means = [value / count for value in sums.values()]
    return dict(zip(sums, map(float, world.average(means))))


class Solver:
    """``Solver(solver_spec_or_path, net=net_spec_or_path, overrides=None)``.

    ``net`` wins over the spec's ``net:`` (which is relative to the solver file).
    ``overrides`` is a dict or ``["key=value", ...]`` (the CLI's ``--set``).
    ``progress``: show a tqdm bar (default: when stderr is a terminal and INFO is logged).
    ``stages``/``level`` add to the training net's ``train_state`` (the CLI's ``--stage``).
    The training net shares the memory of its intermediate diffs (``Net(share_diffs=True)``:
    after a step, only the parameters', inputs', outputs' and loss tops' diffs hold their
    gradients) unless ``keep_diffs`` or the spec's ``debug_info``, which reads every diff.
    """

    @parallel.abort_on_error
    def __init__(self, spec, net=None, overrides=None, progress: bool | None = None,
                 stages=(), level: int | None = None, keep_diffs: bool = False):
        self.spec: SolverSpec = load_solver_spec(spec, overrides)
        override = None
        if stages or level is not None:
            state = self.spec.train_state
            override = ([*state.stage, *stages], state.level if level is None else level)
        self.train_plan, self.test_plans = plan_nets(self.spec, net, override)
        self.net_source = self.train_plan.source
        if self.spec.random_seed >= 0:
            self.seed = self.spec.random_seed
        else:
            self.seed = time.time_ns() % 2**32
            logger.info("random_seed is -1: using seed %d (set random_seed to repeat this run)",
                        self.seed)
        # MPI (mpirun -n K): every rank builds from rank 0's seed; only rank 0 shows progress
        self.world = parallel.world()
        self.seed = self.world.broadcast(self.seed)
        progress = progress if self.world.is_root else False

        self.net = Net(self.net_source, phase="TRAIN", seed=self._net_seed("TRAIN"),
                       stages=self.train_plan.stages, level=self.train_plan.level,
                       share_diffs=not (keep_diffs or self.spec.debug_info))
        self.callbacks: list[Callback] = []
        self.stop_reason: str | None = None      # why a callback ended training early
        if self.world.distributed:      # first: it prepares every net built from now on
            self.add_callback(DataParallel(self.world, self.net, self.spec.iter_size))
        self._test_nets: list[Net | None] = [None] * len(self.test_plans)
        self.test_iters: list[int | None] = [None] * len(self.test_plans)
        # with tests in the loop, build the TEST nets now so their mistakes show before training
        if self.spec.test_interval > 0:
            for i in range(len(self.test_plans)):
                self.test_net_at(i)
                self.test_iters[i] = self.test_iterations(i)
        self._warn_if_it_cannot_learn()
        self.schedule = Schedule(self.spec)
        self.updater = Updater(self.spec, self.net.learnable_params)

        self.iter = 0
        self.smoothed_losses: list[float] = []   # the last average_loss losses
        self.seconds_before = 0.0                # training time of earlier runs (resume)
        self.snapshot_prefix = self.spec.default_snapshot_prefix(self.net.name)
        self.files = RunFiles(self.snapshot_prefix)  # the name of every file of the run
        self._clock: float | None = None         # perf_counter when this run started
        self._received_signal: int | None = None  # from request_stop, for the next step
        self.stopped_by: int | None = None       # the signal that ended training early
        self.last_snapshot: Path | None = None
        self.step_rate: float | None = None      # rate(iter) of the update being made
        self.last_test: tuple[int, dict[str, float]] | None = None   # (iter, outputs)
        # the iteration of a restored state written after its test (not tested again)
        self.tested_at: int | None = None
        self._snapshot_requests: list[str] = []
        self._started = False
        self.signals = SignalEffects()           # what SIGINT/SIGTERM and SIGHUP do
        self.csv_log = CsvLog()
        for callback in [self.signals, self.schedule.policy, self.csv_log,
                         *loop_callbacks(self.spec, progress), *builtin_callbacks(self.spec),
                         *spec_callbacks(self.spec)]:
            self.add_callback(callback)
        self.run_id = new_run_id()               # carried by every snapshot of this run
        self._claim = None                       # the lock on the prefix (claim_prefix)

    # ------------------------------------------------------------------ nets
    def _net_seed(self, phase: str, index: int = 0) -> int:
        """Each net's seed, derived from ``random_seed`` (so TRAIN and every TEST net differ)."""
        key = {"TRAIN": (0,), "TEST": (1,)}[phase] + ((index,) if index else ())
        return int(np.random.SeedSequence(self.seed, spawn_key=key).generate_state(1)[0])

    @property
    def test_net(self) -> Net:
        """The first TEST net, sharing the TRAIN net's parameters (built when first needed)."""
        return self.test_net_at(0)

    def test_net_at(self, index: int) -> Net:
        """Test net ``index`` (built when first needed, sharing the TRAIN net's parameters)."""
        if not self.test_plans:
            raise ConfigError("no test net: give test_net, or net/net_param for both phases",
                              file=self.spec.file, field="test_net")
        if self._test_nets[index] is None:
            plan = self.test_plans[index]
            self._test_nets[index] = net = Net(
                plan.source, phase="TEST", seed=self._net_seed("TEST", index),
                stages=plan.stages, level=plan.level, share_from=self.net)
            self._emit("on_net_built", net)
        return self._test_nets[index]

    def test_output_names(self) -> list[str]:
        """The names a test round reports (one-element outputs of every test net, net ``i``'s
        as ``test<i>/<name>``), known from the nets' shapes before any test runs."""
        names = []
        for index in range(len(self.test_plans)):
            net = self.test_net_at(index)
            names += [output_prefix(index) + name for name in net.outputs
                      if net.blobs[name].data.size == 1]
        return names

    def _check_watched_outputs(self) -> None:
        """Every control that watches a test output (best snapshot, early stop, the plateau
        policy) names one the test nets have: checked before the first iteration, naming
        the solver file and the field, not after the first test."""
        monitors = [c.monitor for c in self.callbacks if getattr(c, "monitor", None) is not None]
        if not monitors or not self.test_plans or self.spec.test_interval <= 0:
            return
        names = self.test_output_names()
        for monitor in monitors:
            if monitor.output not in names:
                raise ConfigError(f"the test nets have no output '{monitor.output}'"
                                  f"{did_you_mean(monitor.output, names)}; their outputs: "
                                  f"{', '.join(names) or 'none'}", file=self.spec.file,
                                  field=monitor.field)

    @property
    def test_nets(self) -> list[Net]:
        return [self.test_net_at(i) for i in range(len(self.test_plans))]

    @property
    def test_iter(self) -> int | None:
        """The first test net's batches per test."""
        return self.test_iters[0] if self.test_iters else None

    def _warn_if_it_cannot_learn(self) -> None:
        """Warnings for runs that are valid but cannot learn or test what they seem to."""
        spec = self.spec
        if not self.net.layers:
            logger.warning("warning: the TRAIN net has no layers: training changes nothing")
        elif not self.net.loss_weights:
            logger.warning("warning: the TRAIN net has no loss (no layer with a loss weight): "
                           "no gradient reaches any weight, training changes nothing")
        if spec.base_lr == 0 and spec.max_iter > 0:
            logger.warning("warning: base_lr is 0: no update changes any weight")
        if spec.test_interval <= 0:
            return
        for index, plan in enumerate(self.test_plans):
            one_pass = batches_per_pass(self.test_net_at(index))
            if plan.test_iter is not None and one_pass is not None and plan.test_iter > one_pass:
                which = "" if len(self.test_plans) == 1 else f" of test net #{index}"
                logger.warning("warning: test_iter %d%s passes over the TEST data %.3g times "
                               "(one pass is %d batches): samples are counted more than once",
                               plan.test_iter, which, plan.test_iter / one_pass, one_pass)

    def test_iterations(self, index: int = 0) -> int:
        """``test_iter`` (of test net ``index``), or one pass over its data when not given."""
        count = self.test_plans[index].test_iter if self.test_plans else self.spec.test_iter
        count = count or batches_per_pass(self.test_net_at(index))
        if count is None:
            raise ConfigError("test_iter is needed: the TEST net has no data layer to count "
                              "one pass over its data", file=self.spec.file,
                              line=self.spec.line_of("test_interval"), field="test_iter")
        return count

    def rate(self, it: int | None = None) -> float:
        """The learning rate of the update made at iteration ``it`` (default: the current one)."""
        return self.schedule.rate(self.iter if it is None else it)

    # ------------------------------------------------------------------ the loop
    @parallel.abort_on_error
    def solve(self) -> dict[str, float]:
        """Train to ``max_iter``, test after the last update (if ``test_interval > 0``),
        close the nets and the log; returns the final test outputs (``{}`` without tests)."""
        try:
            self.step(self.spec.max_iter - self.iter)
            if self.stopped_by is not None:     # the signal's snapshot is written
                return {}
            if self.stop_reason is not None:
                self.snapshot("final")
                logger.info("Stopped at iteration %d: %s", self.iter, self.stop_reason)
                return dict(self.last_test[1]) if self.last_test else {}
            spec = self.spec
            if spec.snapshot_after_train and (not spec.snapshot or self.iter % spec.snapshot):
                self.snapshot("final")  # before the final test, as a resumed run would test next
            results = {}
            if self.spec.test_interval > 0:
                if self.tested_at == self.iter and self.last_test is not None:
                    results = dict(self.last_test[1])   # restored after this very test
                else:
                    results = self.test()
            logger.info("Optimization done at iteration %d", self.iter)
            return results
        finally:
            self.close()

    # ------------------------------------------------------------------ callbacks
    def add_callback(self, callback: Callback) -> Callback:
        """Call ``callback``'s hooks from now on (see ``solverkit.solvers.callbacks``)."""
        if callback.name is not None and any(c.name == callback.name for c in self.callbacks):
            raise ConfigError(f"a callback named '{callback.name}' is already added")
        callback.attach(self)
        self.callbacks.append(callback)
        return callback

    def _emit(self, hook: str, *args) -> None:
        """Call ``hook`` on every callback; a callback returning a reason asks to stop."""
        for callback in self.callbacks:
            answer = getattr(callback, hook)(*args)
            if answer and self.stop_reason is None:
                self.stop_reason = (answer if isinstance(answer, str)
                                    else f"stopped by {type(callback).__name__}")

    def request_snapshot(self, reason: str = "best") -> None:
        """Write a snapshot once every callback has run the current event (``best``: the
        best one; ``periodic``, ``signal``: the iteration's)."""
        if reason not in self._snapshot_requests:
            self._snapshot_requests.append(reason)

    def _write_requested_snapshots(self) -> None:
        """The best snapshot, and one of the iteration: a signal's, else the periodic one
        (retention never deletes a signal's)."""
        requests, self._snapshot_requests = self._snapshot_requests, []
        if "best" in requests:
            self.snapshot("best")
        for reason in ("signal", "periodic"):
            if reason in requests:
                self.snapshot(reason)
                break

    def log_event(self, name: str, value: float) -> None:
        """A row ``iter,EVENT,name,value,...`` in the CSV log (``best/accuracy``,
        ``early_stop/loss``): what ``solverkit plot`` marks on the curves."""
        self.csv_log.event(name, value)

    def request_stop(self, signum: int) -> None:
        """Note a signal (a signal handler calls this); the callbacks act on it after the
        current iteration (``signals``: snapshot, stop or ignore it)."""
        self._received_signal = signum

    @parallel.abort_on_error
    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (tests and display lines fall where their intervals say)."""
        stop = self.iter + max(0, iters)
        self._start_clock()
        if not self._started:
            self._started = True
            self._check_watched_outputs()
            self._emit("on_train_start")
        while self.iter < stop and self.stopped_by is None and self.stop_reason is None:
            it = self.iter
            self._emit("on_iteration_start", it)
            if self.stop_reason is not None:
                break
            step = self._forward_backward()
            step.signal, self._received_signal = self._received_signal, None
            self._emit("on_gradients_ready", it, step)
            self._smooth(step.loss)
            rate = self.step_rate = self.rate()      # once per iteration, for all
            self._emit("before_update", it)
            self.updater.update(rate, it)
            self.iter += 1
            self._emit("on_step_end", it, step.outputs)
            self._write_requested_snapshots()

    def _forward_backward(self) -> StepResult:
        """``iter_size`` forward/backward passes summing into cleared parameter diffs;
        returns the loss and the scalar outputs, both averaged over the passes."""
        self.net.clear_param_diffs()
        loss, sums = 0.0, {}
        for _ in range(self.spec.iter_size):
            outputs = _scalar_outputs(self.net.forward())
            if not math.isfinite(self.net.loss):
                where = self.net.find_nonfinite() or "no layer holds a non-finite value"
                raise NonFiniteError(f"iteration {self.iter}: the loss is {self.net.loss}; "
                                     f"first non-finite value: {where}")
            self.net.backward()
            loss += self.net.loss
            for name, value in outputs.items():
                sums[name] = sums.get(name, 0.0) + value
        n = self.spec.iter_size
        return StepResult(loss / n, {name: value / n for name, value in sums.items()})

    def _smooth(self, loss: float) -> None:
        self.smoothed_losses.append(loss)
        del self.smoothed_losses[:-self.spec.average_loss]

    @property
    def smoothed_loss(self) -> float:
        """The mean of the last ``average_loss`` iteration losses (Caffe's displayed loss)."""
        losses = self.smoothed_losses
        return sum(losses) / len(losses) if losses else float("nan")

    # ------------------------------------------------------------------ testing
    @parallel.abort_on_error
    def test(self) -> dict[str, float]:
        """A test round: ``test_iter`` forward passes of each test net, each one-element
        output averaged; the first net's outputs keep their names, net ``i``'s are named
        ``test<i>/<name>``. The schedule and the callbacks see them all."""
        results: dict[str, float] = {}
        for index in range(len(self.test_plans) or 1):
            results.update(self._test_one(index))
        self.last_test = (self.iter, dict(results))
        self._emit("on_test_end", self.iter, dict(results))
        self._write_requested_snapshots()
        return results

    def _test_one(self, index: int) -> dict[str, float]:
        net = self.test_net_at(index)
        if self.test_iters[index] is None:
            self.test_iters[index] = self.test_iterations(index)
        count = self.test_iters[index]
        self._start_clock()
        results = average_test_outputs(net, count, self.world, f"iteration {self.iter}, ")
        which = "" if len(self.test_plans) <= 1 else f" net #{index}"
        logger.info("Iteration %d, test%s (%d batches): %s", self.iter, which, count,
                    ", ".join(f"{name} = {value:.6g}" for name, value in results.items()))
        prefix = output_prefix(index)
        return {prefix + name: value for name, value in results.items()}

    # ------------------------------------------------------------------ CSV log, progress
    def _start_clock(self) -> None:
        if self._clock is None:
            self._clock = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds of training so far (earlier runs of a resumed training included)."""
        running = time.perf_counter() - self._clock if self._clock is not None else 0.0
        return self.seconds_before + running

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict:
        """Everything a resumed run needs, by part: ``iter``, ``smoothed_losses``,
        ``seconds``, ``update`` (the rule's state arrays), ``schedule`` (the policy's
        state) and per phase ``nets[phase]``: ``generators`` (every random generator's
        state) and ``data`` (each data layer's ``get_state()``)."""
        nets = {}
        for phase, net in self._nets_by_phase().items():
            nets[phase] = {
                "generators": {name: generator.bit_generator.state
                               for name, generator in net.random_generators().items()},
                "data": {layer.name: layer.get_state() for layer in net.layers
                         if isinstance(layer, DataLayer)},
            }
        return {"iter": self.iter, "run_id": self.run_id,
                "smoothed_losses": list(self.smoothed_losses),
                "seconds": self.seconds, "update": self.updater.get_state(),
                "schedule": self.schedule.get_state(), "nets": nets,
                "callbacks": {c.name: c.get_state() for c in self.callbacks if c.name},
                "last_test": ({"iter": self.last_test[0], "outputs": self.last_test[1]}
                              if self.last_test else None)}

    def set_state(self, state: dict) -> None:
        """Continue from a ``get_state()`` result (parts it lacks stay as they are)."""
        self.updater.set_state(state.get("update", {}))
        if state.get("schedule"):
            self.schedule.set_state(state["schedule"])
        for phase, saved in state.get("nets", {}).items():
            net = self._net_for_phase(phase)
            if net is None:
                continue
            generators = saved.get("generators", {})
            for name, generator in net.random_generators().items():
                if name in generators:
                    generator.bit_generator.state = generators[name]
            data = saved.get("data", {})
            for layer in net.layers:
                if isinstance(layer, DataLayer) and data.get(layer.name):
                    layer.set_state(data[layer.name])
        self.iter = int(state.get("iter", self.iter))
        self.run_id = state.get("run_id") or self.run_id     # a resumed run goes on as itself
        self.smoothed_losses = [float(x) for x in state.get("smoothed_losses", [])]
        self.seconds_before = float(state.get("seconds", 0.0))
        saved = state.get("callbacks") or {}
        for callback in self.callbacks:
            if callback.name in saved:
                callback.set_state(saved[callback.name])
        last = state.get("last_test")
        self.last_test = (int(last["iter"]), dict(last["outputs"])) if last else None
        self.tested_at = self.iter if last and self.last_test[0] == self.iter else None

    def _nets_by_phase(self) -> dict[str, Net]:
        """TRAIN, then ``TEST`` for the first test net and ``TEST<i>`` for net ``i``."""
        nets = {"TRAIN": self.net}
        for i, net in enumerate(self._test_nets):
            if net is not None:
                nets["TEST" if i == 0 else f"TEST{i}"] = net
        return nets

    def _net_for_phase(self, phase: str) -> Net | None:
        if phase == "TRAIN":
            return self.net
        index = 0 if phase == "TEST" else int(phase[4:]) if phase[4:].isdigit() else -1
        if self.spec.test_interval <= 0 or not 0 <= index < len(self.test_plans):
            return None
        return self.test_net_at(index)

    # ------------------------------------------------------------------ snapshots
    @parallel.abort_on_error
    def snapshot(self, reason: str = "periodic") -> Path | None:
        """Write ``<prefix>_iter_<N>.model.npz`` and ``.solverstate.npz`` (rank 0 only);
        returns the state's path. ``reason`` ``best`` writes ``<prefix>_best.*`` instead;
        the others (periodic, signal, final) tell retention what it may delete."""
        self._emit("before_snapshot", self.iter, reason)
        stem = "best" if reason == "best" else None
        caffe_files = stem is None and self.spec.snapshot_format != "NPZ"
        path = None if not self.world.is_root else (
            save_caffe_snapshot(self) if caffe_files else save_solver(self, stem=stem))
        if path is not None:
            self._write_class_names()
        self.world.barrier()
        if path is not None:
            logger.info("Snapshotting solver state to %s", path)
            if stem is None:
                self.last_snapshot = path
            self._emit("on_snapshot", path)
        return path

    def _write_class_names(self) -> None:
        """``<prefix>_labels.txt`` beside the snapshots: the class names of the TRAIN data
        (a folder of class folders), one per line, line k naming class k."""
        for layer in self.net.layers:
            if isinstance(layer, Data) and layer.class_names:
                path = self.files.labels
                if write_class_names(path, layer.class_names):
                    logger.info("Class names written to %s", path)
                return

    @parallel.abort_on_error
    def restore(self, path, allow_world_size_change: bool = False) -> None:
        """Continue exactly from a ``.solverstate.npz`` (its model file sits beside it).

        A state written by another number of MPI ranks is an error unless
        ``allow_world_size_change`` (the effective batch then changes)."""
        restore = restore_caffe_snapshot if is_caffe_state(path) else restore_solver
        restore(self, path, warn=logger.warning, allow_world_size_change=allow_world_size_change)
        self._emit("on_restore", path)
        if self._claim is not None:     # the prefix now belongs to the resumed run
            self._claim.record(self.run_id)
        logger.info("Resumed from %s at iteration %d", path, self.iter)

    @parallel.abort_on_error
    def claim_prefix(self, fresh: str = "refuse") -> None:
        """Claim ``snapshot_prefix`` for this run before any work (rank 0; see
        ``solverkit.runs``): its folder writable, the lock held until ``close()``, stale
        temporary files removed. ``fresh``: what to do with an earlier run's files there —
        ``"refuse"``, ``"overwrite"`` (remove them) or ``"keep"`` (resuming that run)."""
        if not self.world.is_root or self._claim is not None:
            return
        self._claim = claim_prefix(self.snapshot_prefix, fresh=fresh, warn=logger.warning)
        if fresh != "keep":
            self._claim.record(self.run_id)

    def nets(self) -> list[Net]:
        """The TRAIN net, then every TEST net built so far."""
        return list(self._nets_by_phase().values())

    def close(self) -> None:
        """End the callbacks, close the CSV log, stop the nets' background work."""
        if self._started:
            self._started = False
            self._emit("on_train_end")
        self.csv_log.close()            # also written to by a test outside training
        for net in self.nets():
            net.close()
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def __repr__(self) -> str:
        return f"Solver({self.spec.type}, iter={self.iter}, net={self.net.name!r})"
