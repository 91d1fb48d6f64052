"""Train a net with a solver: solverkit train --net NET --solver SOLVER [--set key=value ...]

Prints each final averaged TEST output as ``Test net output #<i>: <name> = <value>``.
``--resume PATH|latest`` continues bit-exactly from a snapshot; ``--weights MODEL`` starts a
fresh solver from given weights (fine-tuning). SIGINT/SIGTERM write a snapshot and exit 0
(``--on-signal stop`` skips the snapshot, ``none`` ignores them); SIGHUP writes a snapshot and
training goes on (``--sighup-effect stop|none``). ``--stage``/``--level`` add to the
training net's ``train_state``.

One run owns a snapshot prefix: it is locked while the run lasts, and a fresh run refuses a
prefix that holds an earlier run's files unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from pathlib import Path

from ..errors import ConfigError, SolverkitError
from ..runs import RunFiles
from ..solvers import Solver
from . import add_state_arguments, stages_of

logger = logging.getLogger("solverkit")

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                 if hasattr(signal, name))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solver", required=True, metavar="SOLVER",
                        help="solver spec (YAML)")
    parser.add_argument("--net", metavar="NET",
                        help="net spec (YAML); wins over the solver spec's 'net:'")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE",
                        help="override solver fields, e.g. --set type=Adam base_lr=0.001 "
                             "(repeatable)")
    parser.add_argument("--resume", "--snapshot", metavar="STATE|latest",
                        help="continue from a .solverstate.npz, a Caffe .solverstate(.h5), "
                             "or the newest complete snapshot (--snapshot: Caffe's name)")
    parser.add_argument("--weights", metavar="MODEL",
                        help="start from the weights of a .model.npz (layers matched by name)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --weights: leave layers the file lacks as initialised "
                             "(fine-tuning a new head) and ignore layers the net lacks")
    parser.add_argument("--allow-world-size-change", action="store_true",
                        help="with --resume: accept a state written by another number of "
                             "MPI ranks (the effective batch changes)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a fresh run even though the snapshot prefix holds an "
                             "earlier run's snapshots and log: they are removed first")
    parser.add_argument("--on-signal", choices=("snapshot", "stop", "none"), default="snapshot",
                        help="on SIGINT/SIGTERM: write a snapshot and stop (default), just "
                             "stop, or ignore the signal")
    parser.add_argument("--sighup-effect", choices=("snapshot", "stop", "none"),
                        default="snapshot",
                        help="on SIGHUP: write a snapshot and go on training (default), stop "
                             "(no snapshot), or ignore it")
    add_state_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.resume and args.weights:
        raise SolverkitError("give --resume or --weights, not both: --resume continues a run "
                             "(its weights come with it), --weights starts a fresh one",
                             field="--weights")
    if args.allow_missing and not args.weights:
        raise SolverkitError("--allow-missing goes with --weights", field="--allow-missing")
    if args.overwrite and args.resume:
        raise SolverkitError("give --resume or --overwrite, not both: --resume continues the "
                             "run on the prefix, --overwrite removes it and starts afresh",
                             field="--overwrite")
    solver = Solver(args.solver, net=args.net, overrides=args.overrides,
                    progress=False if args.quiet else None, stages=stages_of(args),
                    level=args.level)
    claimed: list[bool] = []
    failed = False
    try:
        return _train(solver, args, claimed)
    except ConfigError as err:
        _locate_in_solver_file(err, solver)
        failed = True
        raise
    finally:
        solver.close()
        if failed and claimed and not args.resume:
            # a fresh run stopped by its configuration: every file on the prefix is its own
            # (an earlier run's were refused or removed); none stays to block the rerun
            for path in solver.files.existing():
                RunFiles.remove(path)


def _locate_in_solver_file(err: ConfigError, solver: Solver) -> None:
    """A mistake in a solver field found while training names the solver file and line."""
    field = (err.field or "").split(".")[0]
    if err.file is None and field in type(solver.spec).model_fields:
        err.located(file=solver.spec.file, line=solver.spec.line_of(field))


def _train(solver: Solver, args: argparse.Namespace, claimed: list[bool]) -> int:
    solver.signals.sigint_effect = args.on_signal
    solver.signals.sighup_effect = args.sighup_effect
    # one run per prefix: locked for the run's life; an earlier run's files are kept only
    # when resuming it and removed only when asked to
    if args.overwrite and args.weights:
        if Path(args.weights).resolve() in [p.resolve() for p in solver.files.existing()]:
            raise SolverkitError(f"--overwrite would remove {args.weights}, the weights this run "
                                 f"starts from: copy them elsewhere or use another prefix",
                                 field="--overwrite")
    solver.claim_prefix(fresh="keep" if args.resume else
                        "overwrite" if args.overwrite else "refuse")
    claimed.append(True)
    if args.resume:
        from ..snapshot import resolve_resume
        solver.restore(resolve_resume(args.resume, solver.snapshot_prefix, warn=logger.warning),
                       allow_world_size_change=args.allow_world_size_change)
    elif args.weights:
        # (under MPI every rank starts from rank 0's weights: the data-parallel callback)
        skipped = solver.net.load(args.weights, allow_missing=args.allow_missing)
        if skipped:
            logger.info("Layers without weights in %s (left as initialised): %s",
                        args.weights, ", ".join(skipped))
    previous = {sig: signal.signal(sig, lambda signum, frame: solver.request_stop(signum))
                for sig in _SIGNALS}
    try:
        results = solver.solve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not solver.world.is_root:    # under mpirun, rank 0 prints the run's results
        return 0
    if solver.stopped_by is not None:
        name = signal.Signals(solver.stopped_by).name
        action = solver.signals.effect(solver.stopped_by)
        if action == "snapshot" and solver.last_snapshot is not None:
            again = [a for a in sys.argv[1:] if a not in ("--resume", args.resume or "")]
            print(f"Stopped by {name} at iteration {solver.iter}; snapshot written to "
                  f"{solver.last_snapshot}\nResume with: solverkit {shlex.join(again)} "
                  f"--resume {solver.last_snapshot}")
        else:
            print(f"Stopped by {name} at iteration {solver.iter} (no snapshot written)")
        return 0
    if solver.stop_reason is not None:     # the log said why, unless --quiet hid it
        why = f": {solver.stop_reason}" if args.quiet else ""
        print(f"Stopped early at iteration {solver.iter}{why}; snapshot written to "
              f"{solver.last_snapshot}")
    for i, (name, value) in enumerate(results.items()):
        print(f"Test net output #{i}: {name} = {value:.6g}")
    if solver.last_snapshot is not None:
        state = solver.last_snapshot
        name = state.name
        model = state.with_name(
            name.removesuffix(".solverstate.npz") + ".model.npz" if name.endswith(".npz")
            else name.replace(".solverstate", ".caffemodel"))      # Caffe's snapshot files
        print(f"Trained weights: {model}")
    else:
        print("No snapshot written (snapshot_after_train is false)")
    return 0
