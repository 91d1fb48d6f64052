"""``caffe``: Caffe's command-line brew — ``train``, ``test``, ``time``, ``device_query``.

``caffe train --solver=S [--snapshot=STATE | --weights=A,B] [--stage=a,b] [--level=N]``
trains with Caffe's snapshot files (``snapshot_format`` BINARYPROTO unless the solver
says HDF5 or NPZ) and Caffe's log on stderr. ``--snapshot`` resumes from a
``.solverstate`` (bit-exactly when its ``.sk.npz`` side file is beside it) or from a
solverkit ``.solverstate.npz``. ``--sigint_effect``/``--sighup_effect`` (``stop``,
``snapshot``, ``none``; defaults ``stop`` and ``snapshot``) say what the signals do.
``--gpu`` is accepted and noted: everything runs on the CPU.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
from pathlib import Path

import numpy as np

from .. import __version__, compute_libraries
from ..caffe.solverstate import h5py_module
from ..errors import ConfigError, SolverkitError
from ..runs import run_files
from ..net import Net
from ..solvers import Solver
from ..spec.solver import load_solver_spec
from ..reports.timing import time_net
from . import run_tool
from .flags import Flag, FlagError, parse_flags, usage_text
from .log import CaffeLog, install_glog, loss_weights, number

logger = logging.getLogger("solverkit.caffe")

CAFFE_VERSION = "1.0.0"
SOURCE = "tools/caffe.cpp"
MESSAGE = ("command line brew\nusage: caffe <command> <args>\n\ncommands:\n"
           "  train           train or finetune a model\n"
           "  test            score a model\n"
           "  device_query    show GPU diagnostic information\n"
           "  time            benchmark model execution time")
EFFECTS = ("stop", "snapshot", "none")

FLAGS = [
    Flag("gpu", "string", "", "Optional; run in GPU mode on given device IDs separated by "
         "','.Use '-gpu all' to run on all available GPUs. The effective training batch size "
         "is multiplied by the number of devices. (solverkit: noted, runs on the CPU)"),
    Flag("solver", "string", "", "The solver definition protocol buffer text file."),
    Flag("model", "string", "", "The model definition protocol buffer text file."),
    Flag("phase", "string", "", "Optional; network phase (TRAIN or TEST). Only used for "
         "'time'."),
    Flag("level", "int32", 0, "Optional; network level."),
    Flag("stage", "string", "", "Optional; network stages (not to be confused with phase), "
         "separated by ','."),
    Flag("snapshot", "string", "", "Optional; the snapshot solver state to resume training."),
    Flag("weights", "string", "", "Optional; the pretrained weights to initialize "
         "finetuning, separated by ','. Cannot be set simultaneously with snapshot."),
    Flag("iterations", "int32", 50, "The number of iterations to run."),
    Flag("sigint_effect", "string", "stop", "Optional; action to take when a SIGINT signal "
         "is received: snapshot, stop or none."),
    Flag("sighup_effect", "string", "snapshot", "Optional; action to take when a SIGHUP "
         "signal is received: snapshot, stop or none."),
    Flag("overwrite", "bool", False, "solverkit: start a fresh run even though the snapshot "
         "prefix holds an earlier run's files (they are removed first)."),
    Flag("logtostderr", "bool", True, "glog: the log goes to stderr (always)."),
    Flag("alsologtostderr", "bool", True, "glog: the log goes to stderr (always)."),
]


def usage() -> str:
    return usage_text("caffe", MESSAGE, FLAGS, SOURCE)


def stages_of(flags) -> tuple[str, ...]:
    return tuple(name for name in flags.stage.split(",") if name)


def _note_gpu(flags) -> None:
    if flags.gpu:
        logger.warning("--gpu %s: this build has no GPU code; running on the CPU", flags.gpu)
    logger.info("Use CPU.")


def _require(value: str, message: str) -> None:
    if not value:
        raise FlagError(f"caffe: {message} (caffe --help lists the flags)")


# ---------------------------------------------------------------- train
def _signal_actions(flags, spec) -> tuple[str, str]:
    """Caffe's effects as the solver's: Caffe's ``stop`` ends training with the final
    snapshot ``snapshot_after_train`` asks for; SIGINT's ``snapshot`` writes one and stops."""
    on_int = flags.sigint_effect
    if on_int == "stop" and spec.snapshot_after_train:
        on_int = "snapshot"
    return on_int, flags.sighup_effect


def _refuse_earlier_run(prefix: str, flags) -> None:
    """A fresh run on a prefix holding another run's files: say how to go on, in caffe's
    flags (the files are never overwritten unasked)."""
    earlier = [] if flags.snapshot or flags.overwrite else run_files(prefix)
    if not earlier:
        return
    states = sorted((p for p in earlier if p.name.endswith((".solverstate", ".solverstate.h5"))),
                    key=lambda p: int(p.name[len(Path(prefix).name) + 6:].split(".")[0]))
    again = f"continue it with --snapshot={states[-1]}, " if states else ""
    shown = ", ".join(p.name for p in earlier[:3]) + (" …" if len(earlier) > 3 else "")
    raise SolverkitError(f"snapshot_prefix '{prefix}' already holds the files of an earlier "
                         f"run ({shown}): {again}start over with --overwrite (removes them "
                         f"first), or give this run another snapshot_prefix",
                         field="snapshot_prefix")


def train(flags) -> int:
    _require(flags.solver, "Need a solver definition to train.")
    if flags.snapshot and flags.weights:
        raise FlagError("caffe: Give a snapshot to resume training or weights to finetune "
                        "but not both.")
    if flags.snapshot and flags.overwrite:
        raise FlagError("caffe: --overwrite starts afresh; it does not go with --snapshot")
    for name in ("sigint_effect", "sighup_effect"):
        if getattr(flags, name) not in EFFECTS:
            raise FlagError(f'caffe: Invalid signal effect "{getattr(flags, name)}" was '
                            f"specified (--{name}: snapshot, stop or none)")
    _note_gpu(flags)
    spec = load_solver_spec(flags.solver)
    overrides = {}
    if "snapshot_format" not in spec.model_fields_set:     # Caffe's default format
        overrides["snapshot_format"] = "BINARYPROTO"
    level = flags.level if "level" in flags.given else None
    solver = Solver(spec, overrides=overrides or None, progress=False, stages=stages_of(flags),
                    level=level)
    try:
        if solver.spec.snapshot_format == "HDF5":
            h5py_module()           # before training: a missing extra is not found at the end
        solver.signals.sigint_effect, solver.signals.sighup_effect = \
            _signal_actions(flags, solver.spec)
        solver.add_callback(CaffeLog(solver.spec.display))
        _refuse_earlier_run(solver.snapshot_prefix, flags)
        solver.claim_prefix(fresh="keep" if flags.snapshot else
                            "overwrite" if flags.overwrite else "refuse")
        if flags.snapshot:
            logger.info("Resuming from %s", flags.snapshot)
            solver.restore(flags.snapshot)
        for weights in filter(None, flags.weights.split(",")):
            logger.info("Finetuning from %s", weights)
            solver.net.load(weights, allow_missing=True)
        logger.info("Starting Optimization")
        handlers = {sig: signal.signal(sig, lambda signum, frame: solver.request_stop(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                    if sig is not None}
        try:
            solver.solve()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    finally:
        solver.close()
    if solver.stopped_by is not None or solver.stop_reason is not None:
        logger.info("Optimization stopped early.")
    logger.info("Optimization Done.")
    return 0


# ---------------------------------------------------------------- test
def _load_weights(net: Net, weights: str) -> None:
    for path in filter(None, weights.split(",")):
        net.load(path, allow_missing=True)


def test(flags) -> int:
    _require(flags.model, "Need a model definition to score.")
    _require(flags.weights, "Need model weights to score.")
    if flags.iterations < 1:
        raise ConfigError(f"must be at least 1, got {flags.iterations}", field="--iterations")
    _note_gpu(flags)
    net = Net(flags.model, phase="TEST", seed=0, stages=stages_of(flags), level=flags.level)
    try:
        _load_weights(net, flags.weights)
        logger.info("Running for %d iterations.", flags.iterations)
        sums: dict[str, np.ndarray] = {}
        loss = 0.0
        for i in range(flags.iterations):
            outputs = net.forward()
            net.check_finite_outputs(f"{flags.weights}: test batch {i + 1} of "
                                     f"{flags.iterations}")
            loss += net.loss
            for name, value in outputs.items():
                scores = np.asarray(value, dtype=np.float64).reshape(-1)
                sums[name] = sums[name] + scores if name in sums else scores.copy()
                for score in scores:
                    logger.info("Batch %d, %s = %s", i, name, number(score))
        logger.info("Loss: %s", number(loss / flags.iterations))
        weights = loss_weights(net)
        for name, total in sums.items():
            for mean in total / flags.iterations:
                weight = weights.get(name, 0.0)
                extra = f" (* {number(weight)} = {number(weight * mean)} loss)" if weight else ""
                logger.info("%s = %s%s", name, number(mean), extra)
    finally:
        net.close()
    return 0


# ---------------------------------------------------------------- time
def time_command(flags) -> int:
    _require(flags.model, "Need a model definition to time.")
    phase = flags.phase or "TRAIN"
    if phase not in ("TRAIN", "TEST"):
        raise FlagError('caffe: phase must be "TRAIN" or "TEST"')
    if flags.iterations < 1:
        raise ConfigError(f"must be at least 1, got {flags.iterations}", field="--iterations")
    _note_gpu(flags)
    net = Net(flags.model, phase=phase, seed=0, stages=stages_of(flags), level=flags.level)
    try:
        logger.info("Performing Forward")
        report = time_net(net, iterations=flags.iterations, warmup=1)
        logger.info("Initial loss: %s", number(net.loss))
        logger.info("Performing Backward")
    finally:
        net.close()
    logger.info("*** Benchmark begins ***")
    logger.info("Testing for %d iterations.", flags.iterations)
    logger.info("Average time per layer: ")
    for layer in report.layers:
        logger.info("%10s\tforward: %s ms.", layer.name, number(layer.forward_ms))
        logger.info("%10s\tbackward: %s ms.", layer.name, number(layer.backward_ms))
    both = report.forward_ms + report.backward_ms
    logger.info("Average Forward pass: %s ms.", number(report.forward_ms))
    logger.info("Average Backward pass: %s ms.", number(report.backward_ms))
    logger.info("Average Forward-Backward: %s ms.", number(both))
    logger.info("Total Time: %s ms.", number(both * flags.iterations))
    logger.info("*** Benchmark ends ***")
    return 0


# ---------------------------------------------------------------- device_query
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_query(flags) -> int:
    logger.info("Querying GPUs %s", flags.gpu)
    if flags.gpu:
        logger.warning("--gpu %s: this build has no GPU code; describing the CPU", flags.gpu)
    logger.info("Device: CPU")
    logger.info("Name:                          %s", _cpu_name())
    logger.info("Cores:                         %s", os.cpu_count())
    logger.info("Machine:                       %s %s", platform.system(), platform.machine())
    logger.info("Python:                        %s", platform.python_version())
    logger.info("numpy:                         %s", np.__version__)
    logger.info("solverkit:                     %s", __version__)
    logger.info("%s", compute_libraries.summary())
    return 0


COMMANDS = {"train": train, "test": test, "time": time_command, "device_query": device_query}


def _run(argv: list[str]) -> int:
    flags, positional = parse_flags(argv, FLAGS, usage=usage(),
                                    version=f"caffe version {CAFFE_VERSION} "
                                            f"(solverkit {__version__})")
    if len(positional) != 1:
        print(usage(), file=sys.stderr)
        return 1
    command = COMMANDS.get(positional[0])
    install_glog()
    if command is None:
        logger.error("Available caffe actions:")
        for name in sorted(COMMANDS):
            logger.error("\t%s", name)
        logger.critical("Unknown action: %s", positional[0])
        return 1
    compute_libraries.check_choices()
    return command(flags)


def main(argv: list[str] | None = None) -> int:
    return run_tool("caffe", _run, argv)


if __name__ == "__main__":
    sys.exit(main())
