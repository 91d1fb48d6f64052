"""The training loop's own work, as callbacks: the CSV log, the display lines and progress
bar, the periodic tests, the periodic snapshots and what a signal does.

``Solver`` builds these from its spec (``loop_callbacks``) and calls them through the same
hooks as every other callback (``solverkit.solvers.callbacks``); its loop itself only
runs the iterations and emits the events. Each class reads the spec fields named in its
docstring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

from ..runs import file_operation, open_log_at
from .callbacks import Callback, StepResult

logger = logging.getLogger("solverkit")

LOG_HEADER = ("iter", "phase", "name", "value", "lr", "seconds")

SIGHUP = getattr(signal, "SIGHUP", -1)


class CsvLog(Callback):
    """``<prefix>_log.csv``: one row ``iter,phase,name,value,lr,seconds`` per output: the
    TRAIN outputs of every iteration, the averaged outputs of every test, and the events
    other callbacks report (``solver.log_event``: ``best/accuracy``...). Rank 0 writes it.

    A fresh run starts the file; a resumed one cuts it in place back to the rows before
    its iteration (a state written after its test keeps that test's rows) and appends.
    Flushed after every row group, and synced before every snapshot, so the log on disk
    reaches every snapshot, however the run ends."""

    def __init__(self):
        super().__init__()
        self._file = None
        self._writer = None

    def _open(self) -> None:
        solver = self.solver
        path = solver.files.log
        tested = ("TEST", "EVENT") if solver.tested_at == solver.iter else ()
        with file_operation("write the training log", path):
            # stays open for the run, closed by on_train_end
            self._file, self._writer = open_log_at(path, solver.iter, LOG_HEADER, tested)

    def rows(self, it: int, phase: str, values: dict[str, float], rate: float) -> None:
        solver = self.solver
        if not solver.world.is_root:
            return
        if self._writer is None:
            self._open()
        seconds = f"{solver.seconds:.3f}"
        with file_operation("write the training log", solver.files.log):
            self._writer.writerows([it, phase, name, repr(float(value)), repr(rate), seconds]
                                   for name, value in values.items())
            self._file.flush()

    def on_train_start(self):
        if self.solver.world.is_root and self._writer is None:
            self._open()        # cut at the iteration this run starts from

    def on_step_end(self, it, outputs):
        self.rows(it, "TRAIN", outputs, self.solver.step_rate)

    def on_test_end(self, it, outputs):
        self.rows(it, "TEST", outputs, self.solver.rate(it))

    def event(self, name: str, value: float) -> None:
        """A row ``iter,EVENT,name,value,...`` (what ``solverkit plot`` marks)."""
        it = self.solver.iter
        self.rows(it, "EVENT", {name: value}, self.solver.rate(it))

    def before_snapshot(self, it, reason):
        if self._file is not None:
            with file_operation("write the training log", self.solver.files.log):
                self._file.flush()
                os.fsync(self._file.fileno())

    def on_train_end(self):
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


class Display(Callback):
    """``display: N``: every N iterations a line with the speed since the last one, the
    smoothed loss (``average_loss``) and the rate, then each TRAIN output. With
    ``progress`` a tqdm bar up to ``max_iter`` on stderr, the log lines printed above it."""

    def __init__(self, display: int, progress: bool | None):
        super().__init__()
        self.display = display
        self.progress = progress
        self._window = (0.0, 0)         # (perf_counter, iteration) of the last line
        self._bar = None
        self._stack: contextlib.ExitStack | None = None

    def on_train_start(self):
        solver = self.solver
        self._window = (time.perf_counter(), solver.iter)
        show = self.progress
        if show is None:
            show = sys.stderr.isatty() and logger.isEnabledFor(logging.INFO)
        total = solver.spec.max_iter
        if show and total > solver.iter:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm
            self._stack = contextlib.ExitStack()
            self._bar = tqdm(total=total, initial=solver.iter, unit="iter",
                             dynamic_ncols=True, leave=False, file=sys.stderr)
            self._stack.callback(self._bar.close)
            self._stack.enter_context(logging_redirect_tqdm())   # lines above the bar

    def on_step_end(self, it, outputs):
        solver = self.solver
        if self.display and it % self.display == 0:
            now = time.perf_counter()
            start, first = self._window
            speed = (it + 1 - first) / max(now - start, 1e-9)
            self._window = (now, it + 1)
            logger.info("Iteration %d (%.3g iter/s), loss = %.6g, lr = %.6g",
                        it, speed, solver.smoothed_loss, solver.step_rate)
            for i, (name, value) in enumerate(outputs.items()):
                logger.info("    Train net output #%d: %s = %.6g", i, name, value)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{solver.smoothed_loss:.4g}", refresh=False)

    def on_train_end(self):
        if self._stack is not None:
            self._stack.close()
            self._stack = self._bar = None


class PeriodicTest(Callback):
    """``test_interval: N``: a test round (``solver.test()``) before the iteration whose
    number N divides: at 0 only with ``test_initialization``, and not again at the
    iteration a restored state was written after its test."""

    def __init__(self, interval: int, initialization: bool):
        super().__init__()
        self.interval = interval
        self.initialization = initialization

    def on_iteration_start(self, it):
        if (self.interval > 0 and it % self.interval == 0 and (it > 0 or self.initialization)
                and self.solver.tested_at != it):
            self.solver.test()


class PeriodicSnapshot(Callback):
    """``snapshot: N``: a snapshot after every iteration that makes the count a multiple
    of N (``<prefix>_iter_<count>.*``)."""

    def __init__(self, interval: int):
        super().__init__()
        self.interval = interval

    def on_step_end(self, it, outputs):
        if self.interval and (it + 1) % self.interval == 0:
            self.solver.request_snapshot("periodic")


class SignalEffects(Callback):
    """What a signal does (``solver.request_stop`` records it; the loop hands it over with
    the gradients, so that under MPI every rank acts on the one the ranks agreed on, after
    the same iteration). ``sigint_effect`` for SIGINT and SIGTERM, ``sighup_effect`` for
    SIGHUP: ``snapshot`` (a snapshot after this iteration; SIGINT/SIGTERM then stop,
    SIGHUP goes on), ``stop`` (stop after this iteration, no snapshot), ``none``."""

    def __init__(self, sigint_effect: str = "snapshot", sighup_effect: str = "snapshot"):
        super().__init__()
        self.sigint_effect = sigint_effect
        self.sighup_effect = sighup_effect

    def effect(self, signum: int) -> str:
        return self.sighup_effect if signum == SIGHUP else self.sigint_effect

    def on_gradients_ready(self, it, step: StepResult):
        if step.signal is None:
            return
        effect = self.effect(step.signal)
        if effect == "snapshot":
            self.solver.request_snapshot("signal")
        if effect == "stop" or (effect == "snapshot" and step.signal != SIGHUP):
            self.solver.stopped_by = step.signal


def loop_callbacks(spec, progress: bool | None) -> list[Callback]:
    """Display, the periodic tests and snapshots, as the spec sets them (the solver adds
    ``SignalEffects`` and ``CsvLog`` itself, ahead of the policy)."""
    return [Display(spec.display, progress),
            PeriodicTest(spec.test_interval, spec.test_initialization),
            PeriodicSnapshot(spec.snapshot)]
