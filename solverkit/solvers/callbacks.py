"""Callbacks: code the training loop calls at fixed points (``Solver.add_callback``).

A callback derives from ``Callback`` and overrides the hooks it needs:

- ``on_train_start()`` — before the first iteration of this run;
- ``on_step_end(it, outputs)`` — after the update made at iteration ``it`` with the
  TRAIN outputs of that iteration (``outputs["loss"]`` … as logged);
- ``on_test_end(it, outputs)`` — after a test round at iteration ``it``: the averaged
  outputs of every test net (the first net's under their names, net ``i``'s as
  ``test<i>/name``);
- ``on_snapshot(path)`` — after a snapshot is complete (``path``: its solver state);
- ``on_train_end()`` — when the run ends (also after an error or a stop).

A hook asks training to stop by returning a reason (a string; ``True`` also works):
the loop ends after the current step, writes a final snapshot and says why.
``solver`` is set by ``add_callback``. A callback with a ``name`` saves ``get_state()``
(JSON values) in every solver state and gets it back through ``set_state`` on resume.
The solver's own training controls below (best snapshot, retention, early stopping,
debug information, the TensorBoard logger) are callbacks too.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..runs import file_operation, keep_log_rows_before
from ..spec.training import improved

logger = logging.getLogger("solverkit")


class Callback:
    """Base class: every hook does nothing."""

    name: str | None = None       # the key of this callback's state in solver states
    solver = None

    def attach(self, solver) -> None:
        self.solver = solver

    def on_train_start(self):
        """Before the first iteration of this run."""

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

    def on_train_end(self):
        """When the run ends."""

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        """Continue from a ``get_state()`` result."""


def _watched(field: str, name: str, outputs: dict[str, float]) -> float:
    if name not in outputs:
        raise ConfigError(f"the test nets have no output '{name}'{did_you_mean(name, outputs)}"
                          f"; their outputs: {', '.join(outputs) or 'none'}", field=field)
    return float(outputs[name])


class BestSnapshot(Callback):
    """``snapshot_best``: after a test whose ``output`` beats every earlier one, write
    ``<prefix>_best.model.npz`` and ``<prefix>_best.solverstate.npz`` (one pair, switched
    atomically: ``snapshot.switch_pair``); the iteration and value go into both files and
    the log."""

    name = "snapshot_best"

    def __init__(self, output: str, mode: str):
        self.output, self.mode = output, mode
        self.best: float | None = None
        self.best_iter: int | None = None

    def on_test_end(self, it, outputs):
        value = _watched("snapshot_best.output", self.output, outputs)
        if improved(value, self.best, self.mode):
            self.best, self.best_iter = value, it
            self.solver.log_event(f"best/{self.output}", value)
            logger.info("Best %s so far: %.6g at iteration %d", self.output, value, it)
            self.solver.request_snapshot("best")

    def get_state(self):
        return {"output": self.output, "mode": self.mode, "value": self.best,
                "iter": self.best_iter}

    def set_state(self, state):
        if state.get("output") == self.output and state.get("mode") == self.mode:
            self.best, self.best_iter = state["value"], state["iter"]


class EarlyStop(Callback):
    """``early_stop``: stop when ``output`` has not improved by more than ``min_delta`` for
    ``patience`` test rounds in a row (as Keras's EarlyStopping)."""

    name = "early_stop"

    def __init__(self, output: str, mode: str, patience: int, min_delta: float):
        self.output, self.mode = output, mode
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.best_iter: int | None = None
        self.wait = 0

    def on_test_end(self, it, outputs):
        value = _watched("early_stop.output", self.output, outputs)
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_iter, self.wait = value, it, 0
            return None
        self.wait += 1
        if self.wait < self.patience:
            return None
        self.solver.log_event(f"early_stop/{self.output}", value)
        return (f"early stop: {self.output} has not improved on {self.best:.6g} (iteration "
                f"{self.best_iter}) by more than {self.min_delta:g} for {self.wait} tests")

    def get_state(self):
        return {"best": self.best, "iter": self.best_iter, "wait": self.wait}

    def set_state(self, state):
        self.best, self.best_iter, self.wait = state["best"], state["iter"], int(state["wait"])


class KeepLast(Callback):
    """``snapshot_keep: N``: after each periodic snapshot is complete, delete the periodic
    snapshots older than the newest ``N`` (the state first, then its model). Snapshots
    written for another reason (a signal, the end of training) are never deleted, nor
    is the best one (it has its own name)."""

    name = "snapshot_keep"

    def __init__(self, keep: int):
        self.keep = keep
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


class DebugInfo(Callback):
    """``debug_info: true``: every iteration, the mean absolute value of each layer's top
    data and diff, of each parameter's data and diff (the gradient), and of the update
    (the change the update made to the parameter), per layer. Written to
    ``<prefix>_debug.csv`` (``iter,layer,blob,quantity,value``), shown at ``display``
    iterations, and sent to TensorBoard as ``debug/<layer>/<blob>/<quantity>``."""

    HEADER = ("iter", "layer", "blob", "quantity", "value")

    def __init__(self, display: int):
        self.display = display
        self._before: list[np.ndarray] = []
        self._file = None
        self._writer = None
        self.last: list[tuple[str, str, str, float]] = []

    def _open(self):
        path = self.solver.files.debug_log
        with file_operation("write the debug log", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            # a resumed run cuts the file back to the rows before its iteration in place
            # (never rewritten from the start), then appends
            it = self.solver.iter
            kept = it > 0 and keep_log_rows_before(path, it, ",".join(self.HEADER))
            self._file = open(path, "a" if kept else "w", newline="")  # noqa: SIM115
            self._writer = csv.writer(self._file)
            if not kept:
                self._writer.writerow(self.HEADER)

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
                self._open()
            self._writer.writerows((it, *row[:3], repr(row[3])) for row in rows)
            self._file.flush()
            if self.display and it % self.display == 0:
                for layer, blob, quantity, value in rows:
                    logger.info("    [debug] %s %s %s: %.6g", layer, blob, quantity, value)

    def on_train_end(self):
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


class TensorBoardLog(Callback):
    """``log: [csv, tensorboard]``: TRAIN outputs (``train/<name>``), test outputs
    (``test/<name>``), the rate (``lr``) and with ``debug_info`` the per-layer magnitudes
    as scalars and the parameters as histograms (at ``display`` iterations, every one
    when ``display`` is 0; the debug CSV has every iteration), in an event file under
    ``<prefix>_tensorboard/``."""

    def __init__(self, display: int):
        self.display = display
        self.writer = None

    def _open(self):
        from ..tools.events import EventWriter
        self.writer = EventWriter(self.solver.files.tensorboard)

    def _write(self, it, values: dict[str, float]):
        if not self.solver.world.is_root:
            return
        if self.writer is None:
            self._open()
        self.writer.scalars(it, values)

    def on_step_end(self, it, outputs):
        values = {f"train/{name}": value for name, value in outputs.items()}
        values["lr"] = self.solver.rate(it)
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
        callbacks.append(DebugInfo(spec.display))
    if "tensorboard" in spec.log:
        callbacks.append(TensorBoardLog(spec.display))
    if spec.snapshot_best is not None:
        callbacks.append(BestSnapshot(spec.snapshot_best.output, spec.snapshot_best.mode))
    if spec.early_stop is not None:
        stop = spec.early_stop
        callbacks.append(EarlyStop(stop.output, stop.mode, stop.patience, stop.min_delta))
    if spec.snapshot_keep > 0:
        callbacks.append(KeepLast(spec.snapshot_keep))
    return callbacks
