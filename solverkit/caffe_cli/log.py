"""Caffe's log: glog's line prefix on stderr and the training lines Caffe's solver writes.

A glog line is ``<severity><MMDD> <HH:MM:SS.micro> <thread id, 5 wide> <file>:<line>]
<message>``, e.g. ``I1207 06:49:10.123456  1234 solver.cpp:218] Iteration 100, lr = 0.01``.
Caffe's ``tools/extra/parse_log.py`` reads the date and time from the first two fields,
the iteration from ``Iteration N``, the rate from ``lr = X`` and the outputs from
``Train net output #k: name = X`` and ``Test net output #k: name = X``; its start time is
the line that says ``Solving``. Numbers are written as C++ streams write them by default
(six significant digits: ``%g``).

``CaffeLog`` is a callback: it writes those lines from the hooks the training loop calls.
``install_glog`` sends the ``solverkit`` logger to stderr in glog's format; the loop's own
progress lines (which ``CaffeLog`` replaces) are left out, warnings and notes stay.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

from ..solvers.callbacks import Callback
from ..solvers.nets import output_prefix

logger = logging.getLogger("solverkit.caffe")

_SEVERITY = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
             logging.CRITICAL: "F"}
# the training loop and its own callbacks (display lines, test results, snapshots)
_LOOP_MODULES = ("solverkit/solvers/solver.py", "solverkit/solvers/loop_callbacks.py")
_OTHER_NET = re.compile(r"test\d+/")       # outputs of test nets after the first


def number(value: float) -> str:
    """A float as a default C++ stream prints it (``%g``: 6 significant digits)."""
    return f"{value:g}"


class GlogFormatter(logging.Formatter):
    """``I1207 06:49:10.123456  1234 solver.py:218] message``."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        micro = int(round((record.created - seconds) * 1e6)) % 1000000
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(seconds))
        severity = _SEVERITY.get(record.levelno, "I")
        thread = getattr(record, "native_id", None) or threading.get_native_id()
        text = record.getMessage()
        prefix = f"{severity}{stamp}.{micro:06d} {thread:5d} {record.filename}:{record.lineno}] "
        return "\n".join(prefix + line for line in text.split("\n"))


class _CaffeLines(logging.Filter):
    """Leave out the training loop's own INFO lines (``CaffeLog`` writes Caffe's instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.name == logger.name:
            return True
        return not record.pathname.replace("\\", "/").endswith(_LOOP_MODULES)


def install_glog(stream=None) -> logging.Handler:
    """Send the ``solverkit`` loggers' records to ``stream`` (stderr) as glog lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(GlogFormatter())
    handler.addFilter(_CaffeLines())
    root = logging.getLogger("solverkit")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler


def output_lines(kind: str, outputs: dict[str, float], weights: dict[str, float]) -> list[str]:
    """``    Train net output #k: name = X (* w = w·X loss)`` for each output (``kind``:
    Train or Test); the loss part for outputs with a loss weight, as Caffe writes it."""
    lines = []
    for k, (name, value) in enumerate(outputs.items()):
        weight = weights.get(name, 0.0)
        loss = f" (* {number(weight)} = {number(weight * value)} loss)" if weight else ""
        lines.append(f"    {kind} net output #{k}: {name} = {number(value)}{loss}")
    return lines


def loss_weights(net) -> dict[str, float]:
    """Each output blob's loss weight (outputs without one are left out)."""
    return {blob.name: weight for blob, weight in net.loss_weights if weight}


class CaffeLog(Callback):
    """Caffe's training log lines (see the module's docstring), one hook each:

    - the start: ``Solving <net>``, ``Learning Rate Policy: <policy>``;
    - every ``display`` iterations: ``Iteration N (X iter/s, Ys/D iters), loss = L``,
      the TRAIN outputs, ``Iteration N, lr = R``;
    - every test: ``Iteration N, Testing net (#i)`` and the averaged TEST outputs;
    - every snapshot: the two files written.
    """

    def __init__(self, display: int):
        self.display = display
        self._window: tuple[float, int] | None = None

    def on_train_start(self):
        solver = self.solver
        logger.info("Solving %s", solver.net.name)
        logger.info("Learning Rate Policy: %s", solver.spec.lr_policy)
        self._window = (time.perf_counter(), solver.iter)

    def on_step_end(self, it, outputs):
        if not self.display or it % self.display:
            return
        solver = self.solver
        now = time.perf_counter()
        start, first = self._window or (now, it)
        lapse = now - start
        per_s = (it + 1 - first) / (lapse or 1.0)
        self._window = (now, it + 1)
        lines = [f"Iteration {it} ({number(per_s)} iter/s, {number(lapse)}s/{self.display} "
                 f"iters), loss = {number(solver.smoothed_loss)}"]
        lines += output_lines("Train", outputs, loss_weights(solver.net))
        lines.append(f"Iteration {it}, lr = {number(solver.rate(it))}")
        for line in lines:
            logger.info("%s", line)

    def on_test_end(self, it, outputs):
        solver = self.solver
        for index in range(max(1, len(solver.test_plans))):
            prefix = output_prefix(index)
            own = {name[len(prefix):]: value for name, value in outputs.items()
                   if (name.startswith(prefix) if prefix else not _OTHER_NET.match(name))}
            logger.info("Iteration %d, Testing net (#%d)", it, index)
            for line in output_lines("Test", own, loss_weights(solver.test_net_at(index))):
                logger.info("%s", line)

    def on_snapshot(self, path):
        name = str(path)
        if name.endswith(".solverstate"):
            logger.info("Snapshotting to binary proto file %s",
                        name.removesuffix(".solverstate") + ".caffemodel")
            logger.info("Snapshotting solver state to binary proto file %s", name)
        elif name.endswith(".solverstate.h5"):
            logger.info("Snapshotting to HDF5 file %s",
                        name.removesuffix(".solverstate.h5") + ".caffemodel.h5")
            logger.info("Snapshotting solver state to HDF5 file %s", name)
        else:
            logger.info("Snapshotting solver state to %s", name)
