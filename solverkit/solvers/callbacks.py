"""Callbacks: code the training loop calls at fixed points (``Solver.add_callback``, or
``callbacks: [{type: Name, ...}]`` in the solver spec for a registered one).

A callback derives from ``Callback`` and overrides the hooks it needs. One iteration
``it`` calls them in this order (``solver.iter`` is ``it`` until the update is made, then
``it + 1``):

- ``on_train_start()`` — before the first iteration of this run;
- ``on_iteration_start(it)`` — before the forward passes; the periodic test of ``it``
  (a callback of this hook that comes before the spec's own) has run then, as Caffe
  tests before its callbacks' ``on_start``;
- ``on_gradients_ready(it, step)`` — after the ``iter_size`` backward passes: the diffs
  hold the summed gradient; ``step`` (a ``StepResult``) holds the iteration's loss and
  TRAIN outputs and the signal received meanwhile, which a callback may replace (data
  parallelism averages them over the ranks);
- ``before_update(it)`` — just before the update of iteration ``it``;
- ``on_step_end(it, outputs)`` — after the update made at iteration ``it`` with the
  TRAIN outputs of that iteration (``outputs["loss"]`` … as logged);
- ``on_test_end(it, outputs)`` — after a test round at iteration ``it``: the averaged
  outputs of every test net (the first net's under their names, net ``i``'s as
  ``test<i>/name``);
- ``before_snapshot(it, reason)`` — before a snapshot at ``it`` is written (``reason``:
  periodic, signal, final or best), on every rank;
- ``on_snapshot(path)`` — after a snapshot is complete (``path``: its solver state; on
  the rank that wrote it);
- ``on_restore(path)`` — after the solver continued from the state ``path``;
- ``on_net_built(net)`` — after a TEST net is built (the TRAIN net exists before any
  callback);
- ``on_train_end()`` — when the run ends (also after an error or a stop).

A snapshot a hook asks for (``solver.request_snapshot``) is written once every callback
has run that event (after ``on_step_end`` or ``on_test_end``), so it holds every
callback's state of that moment.
A hook asks training to stop by returning a reason (a string; ``True`` also works):
the loop ends after the current step, writes a final snapshot and says why.
``solver`` is set by ``add_callback``. A callback with a ``name`` saves ``get_state()``
(JSON values) in every solver state and gets it back through ``set_state`` on resume; one
named in the spec is named by its type (``CountTests``; a second one ``CountTests#1``).
Its own fields are a ``Params`` model (a ``Callback.Params`` subclass), validated from its
entry and given to the constructor as ``params``.
The solver's own training controls below (best snapshot, retention, early stopping,
debug information, the TensorBoard logger) are registered callbacks too; the loop's own
work (CSV log, display, periodic tests and snapshots, signals) is in ``loop_callbacks``,
data parallelism in ``data_parallel``, and a learning-rate policy with state is a
callback as well (``schedule.Policy``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..registry import callback_class, register_callback
from ..runs import file_operation, open_log_at
from ..spec.training import (
    BestSnapshotParams,
    CallbackParams,
    DisplayParams,
    EarlyStopParams,
    KeepLastParams,
    MonitorParams,
    improved,
)
from ..tensorboard import EventWriter

logger = logging.getLogger("solverkit")


@dataclass
class StepResult:
    """One iteration's results as ``on_gradients_ready`` sees them: the loss and the
    one-element TRAIN outputs (each averaged over ``iter_size``), and the signal
    ``solver.request_stop`` received since the last iteration (or None)."""

    loss: float
    outputs: dict[str, float]
    signal: int | None = None


class Callback:
    """Base class: every hook does nothing. ``Callback(params)``: ``params`` is an instance
    of the class's ``Params`` (default: ``Params()``, every field at its default)."""

    Params: type[CallbackParams] = CallbackParams
    type: str | None = None       # the registered name (set by ``register_callback``)
    name: str | None = None       # the key of this callback's state in solver states
    solver = None

    def __init__(self, params: CallbackParams | None = None):
        self.params = self.Params() if params is None else params

    def attach(self, solver) -> None:
        self.solver = solver

    def on_train_start(self):
        """Before the first iteration of this run."""

    def on_iteration_start(self, it: int):
        """Before the forward passes of iteration ``it``."""

    def on_gradients_ready(self, it: int, step: StepResult):
        """After the backward passes of iteration ``it``; ``step`` may be changed."""

    def on_step_end(self, it: int, outputs: dict[str, float]):
        """After the update of iteration ``it``."""

    def on_test_end(self, it: int, outputs: dict[str, float]):
        """After a test round at iteration ``it``."""

    def before_update(self, it: int):
        """Between the backward passes and the update of iteration ``it``."""

    def before_snapshot(self, it: int, reason: str):
        """Before a snapshot at ``it`` is written; ``reason``: periodic, signal, final, best."""

    def on_snapshot(self, path: Path):
        """After a snapshot is complete; ``path``: its solver state file."""

    def on_restore(self, path: Path):
        """After the solver continued from the solver state ``path``."""

    def on_net_built(self, net):
        """After a TEST net is built."""

    def on_train_end(self):
        """When the run ends."""

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        """Continue from a ``get_state()`` result."""


class Monitor:
    """Best-value tracking of one test output, shared by every control that watches one
    (best snapshot, early stop, the plateau policy; as Keras's MonitorCallback):
    ``watch(it, outputs)`` reads ``output`` and returns it and whether it beats the best
    so far by more than ``min_delta`` in direction ``mode`` (then it is the best)."""

    def __init__(self, output: str, mode: str, min_delta: float = 0.0, field: str = "output"):
        self.output, self.mode, self.min_delta, self.field = output, mode, min_delta, field
        self.best: float | None = None
        self.best_iter: int | None = None

    def watch(self, it: int, outputs: dict[str, float]) -> tuple[float, bool]:
        if self.output not in outputs:
            raise ConfigError(f"the test nets have no output '{self.output}'"
                              f"{did_you_mean(self.output, outputs)}; their outputs: "
                              f"{', '.join(outputs) or 'none'}", field=self.field)
        value = float(outputs[self.output])
        better = improved(value, self.best, self.mode, self.min_delta)
        if better:
            self.best, self.best_iter = value, it
        return value, better


class MonitorCallback(Callback):
    """Base of a callback that watches one test output (``params.output``, ``params.mode``)
    through its ``monitor``."""

    Params = MonitorParams
    min_delta_field: str | None = None      # the Params field that holds min_delta, if any

    def __init__(self, params: MonitorParams):
        super().__init__(params)
        delta = getattr(params, self.min_delta_field) if self.min_delta_field else 0.0
        self.monitor = Monitor(params.output, params.mode, delta,
                               field=f"{self.name or self.type}.output")

    @property
    def output(self) -> str:
        return self.monitor.output


@register_callback("BestSnapshot")
class BestSnapshot(MonitorCallback):
    """``snapshot_best``: after a test whose ``output`` beats every earlier one, write
    ``<prefix>_best.model.npz`` and ``<prefix>_best.solverstate.npz`` (one pair, switched
    atomically: ``snapshot.switch_pair``); the iteration and value go into both files and
    the log."""

    Params = BestSnapshotParams
    name = "snapshot_best"

    def on_test_end(self, it, outputs):
        value, better = self.monitor.watch(it, outputs)
        if better:
            self.solver.log_event(f"best/{self.output}", value)
            logger.info("Best %s so far: %.6g at iteration %d", self.output, value, it)
            self.solver.request_snapshot("best")

    def get_state(self):
        return {"output": self.output, "mode": self.monitor.mode, "value": self.monitor.best,
                "iter": self.monitor.best_iter}

    def set_state(self, state):
        if state.get("output") == self.output and state.get("mode") == self.monitor.mode:
            self.monitor.best, self.monitor.best_iter = state["value"], state["iter"]


@register_callback("EarlyStop")
class EarlyStop(MonitorCallback):
    """``early_stop``: stop when ``output`` has not improved by more than ``min_delta`` for
    ``patience`` test rounds in a row (as Keras's EarlyStopping)."""

    Params = EarlyStopParams
    name = "early_stop"
    min_delta_field = "min_delta"

    def __init__(self, params: EarlyStopParams):
        super().__init__(params)
        self.patience = params.patience
        self.wait = 0

    def on_test_end(self, it, outputs):
        value, better = self.monitor.watch(it, outputs)
        if better:
            self.wait = 0
            return None
        self.wait += 1
        if self.wait < self.patience:
            return None
        self.solver.log_event(f"early_stop/{self.output}", value)
        return (f"early stop: {self.output} has not improved on {self.monitor.best:.6g} "
                f"(iteration {self.monitor.best_iter}) by more than {self.monitor.min_delta:g} "
                f"for {self.wait} tests")

    def get_state(self):
        return {"best": self.monitor.best, "iter": self.monitor.best_iter, "wait": self.wait}

    def set_state(self, state):
        self.monitor.best, self.monitor.best_iter = state["best"], state["iter"]
        self.wait = int(state["wait"])


@register_callback("KeepLast")
class KeepLast(Callback):
    """``snapshot_keep: N``: after each periodic snapshot is complete, delete the periodic
    snapshots older than the newest ``N`` (the state first, then its model). Snapshots
    written for another reason (a signal, the end of training) are never deleted, nor
    is the best one (it has its own name)."""

    Params = KeepLastParams
    name = "snapshot_keep"

    def __init__(self, params: KeepLastParams):
        super().__init__(params)
        self.keep = params.keep
        self.protected: list[int] = []
        self._reason = "periodic"

    def before_snapshot(self, it, reason):
        self._reason = reason
        if reason not in ("periodic", "best") and it not in self.protected:
            self.protected.append(it)

    def on_snapshot(self, path):
        if self._reason != "periodic":
            return
        files = self.solver.files.snapshots()
        now = self.solver.iter
        complete = sorted(it for it, kinds in files.items() if "solverstate" in kinds
                          and it <= now and it not in self.protected)
        kept = set(complete[-self.keep:])
        for it in sorted(files):
            if it in kept or it in self.protected or it > now:
                continue
            if "solverstate" not in files[it] and complete and it >= min(kept):
                continue        # a model whose state is still to come (not ours to judge)
            for kind in ("solverstate", "model"):
                if kind in files[it]:
                    files[it][kind].unlink(missing_ok=True)

    def get_state(self):
        return {"protected": list(self.protected)}

    def set_state(self, state):
        self.protected = [int(it) for it in state.get("protected", [])]


def _mean_abs(array) -> float:
    return float(np.mean(np.abs(array))) if array.size else 0.0


@register_callback("DebugInfo")
class DebugInfo(Callback):
    """``debug_info: true``: every iteration, the mean absolute value of each layer's top
    data and diff, of each parameter's data and diff (the gradient), and of the update
    (the change the update made to the parameter), per layer. Written to
    ``<prefix>_debug.csv`` (``iter,layer,blob,quantity,value``), shown at ``display``
    iterations, and sent to TensorBoard as ``debug/<layer>/<blob>/<quantity>``."""

    Params = DisplayParams
    HEADER = ("iter", "layer", "blob", "quantity", "value")

    def __init__(self, params: DisplayParams | None = None):
        super().__init__(params)
        self.display = self.params.display
        self._before: list[np.ndarray] = []
        self._file = None
        self._writer = None
        self.last: list[tuple[str, str, str, float]] = []

    def attach(self, solver) -> None:
        super().attach(solver)
        # it reads every blob's diff after the step: none may share another's memory
        solver.net.keep_every_diff()

    def _open(self, it: int):
        path = self.solver.files.debug_log
        with file_operation("write the debug log", path):
            self._file, self._writer = open_log_at(path, it, self.HEADER)

    def before_update(self, it):
        self._before = [param.blob.data.copy() for param in self.solver.net.learnable_params]

    def on_step_end(self, it, outputs):
        net = self.solver.net
        rows = []
        for layer, tops in zip(net.layers, net.tops):
            for blob in tops:
                rows.append((layer.name, blob.name, "data", _mean_abs(blob.data)))
                rows.append((layer.name, blob.name, "diff", _mean_abs(blob.diff)))
        owners = {id(p.blob): p for p in net.learnable_params}
        updates = {id(p.blob): _mean_abs(p.blob.data - old)
                   for p, old in zip(net.learnable_params, self._before)}
        for layer in net.layers:
            for j, blob in enumerate(layer.blobs):
                if id(blob) not in owners:
                    continue
                rows.append((layer.name, f"param{j}", "data", _mean_abs(blob.data)))
                rows.append((layer.name, f"param{j}", "diff", _mean_abs(blob.diff)))
                if id(blob) in updates:
                    rows.append((layer.name, f"param{j}", "update", updates.pop(id(blob))))
        self.last = rows
        if self.solver.world.is_root:
            if self._writer is None:
                self._open(it)      # the first row this run writes: iteration it
            self._writer.writerows((it, *row[:3], repr(row[3])) for row in rows)
            self._file.flush()
            if self.display and it % self.display == 0:
                for layer, blob, quantity, value in rows:
                    logger.info("    [debug] %s %s %s: %.6g", layer, blob, quantity, value)

    def on_train_end(self):
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


@register_callback("TensorBoard")
class TensorBoardLog(Callback):
    """``log: [csv, tensorboard]``: TRAIN outputs (``train/<name>``), test outputs
    (``test/<name>``), the rate (``lr``) and with ``debug_info`` the per-layer magnitudes
    as scalars and the parameters as histograms (at ``display`` iterations, every one
    when ``display`` is 0; the debug CSV has every iteration), in an event file under
    ``<prefix>_tensorboard/``."""

    Params = DisplayParams

    def __init__(self, params: DisplayParams | None = None):
        super().__init__(params)
        self.display = self.params.display
        self.writer = None

    def _open(self):
        self.writer = EventWriter(self.solver.files.tensorboard)

    def _write(self, it, values: dict[str, float]):
        if not self.solver.world.is_root:
            return
        if self.writer is None:
            self._open()
        self.writer.scalars(it, values)

    def on_step_end(self, it, outputs):
        values = {f"train/{name}": value for name, value in outputs.items()}
        values["lr"] = self.solver.step_rate
        debug = next((cb for cb in self.solver.callbacks if isinstance(cb, DebugInfo)), None)
        shown = not self.display or it % self.display == 0
        if debug is not None and shown:
            values.update({f"debug/{layer}/{blob}/{quantity}": value
                           for layer, blob, quantity, value in debug.last})
        self._write(it, values)
        if debug is not None and shown and self.writer:
            for layer in self.solver.net.layers:
                for j, blob in enumerate(layer.blobs):
                    self.writer.histogram(it, f"params/{layer.name}/{j}", blob.data)

    def on_test_end(self, it, outputs):
        self._write(it, {f"test/{name}": value for name, value in outputs.items()})

    def on_train_end(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def builtin_callbacks(spec) -> list[Callback]:
    """The callbacks the solver spec asks for, in the order they run."""
    if spec.test_interval <= 0:
        for name in ("snapshot_best", "early_stop", "plateau"):
            if getattr(spec, name, None) is not None:
                raise ConfigError(f"{name} watches test outputs: set test_interval (and a "
                                  f"test net)", file=spec.file, line=spec.line_of(name),
                                  field=name)
    callbacks: list[Callback] = []
    if spec.debug_info:
        callbacks.append(DebugInfo(DisplayParams(display=spec.display)))
    if "tensorboard" in spec.log:
        callbacks.append(TensorBoardLog(DisplayParams(display=spec.display)))
    if spec.snapshot_best is not None:
        callbacks.append(BestSnapshot(spec.snapshot_best))
    if spec.early_stop is not None:
        callbacks.append(EarlyStop(spec.early_stop))
    if spec.snapshot_keep > 0:
        callbacks.append(KeepLast(KeepLastParams(keep=spec.snapshot_keep)))
    return callbacks


def spec_callbacks(spec) -> list[Callback]:
    """The callbacks named in the spec's ``callbacks:``, in their order; each is named by
    its type (the state key in solver states), a repeated type ``Type#1``, ``Type#2``…"""
    callbacks: list[Callback] = []
    seen: dict[str, int] = {}
    for entry in spec.callbacks:
        callback = callback_class(entry.type)(entry.params)
        count = seen.get(entry.type, 0)
        seen[entry.type] = count + 1
        callback.name = entry.type if count == 0 else f"{entry.type}#{count}"
        callbacks.append(callback)
    return callbacks
