"""Train many runs over a grid of solver settings and seeds, and say which setting won:
solverkit sweep --solver S --grid FIELD=V1,V2 ... [--seeds R] [--jobs J]

Each trial is an ordinary training run under ``--prefix DIR`` (one folder per trial, its
own log and snapshots), ``--jobs`` at a time in separate processes sharing the cores.
``--random K FIELD=log(a,b) FIELD=uniform(a,b) FIELD=choice(A,B)`` adds K random draws
(the same for the same ``--draw-seed``); ``--optuna N`` runs N trials of Optuna's TPE search
over the ranges instead (extra ``optuna``). Rerunning the same command skips finished trials
and resumes interrupted ones. Prints one row per setting, best first: the metric's final and
best TEST value as mean ± std over seeds. Exit status 1 when a trial diverged or failed.
"""

from __future__ import annotations

import sys

from ..errors import ConfigError
from ..sweep import claim_folder, format_rows, plan_sweep, plot, run_trials, summarize
from ..sweep.search import require_optuna, run_optuna


def add_arguments(parser) -> None:
    parser.add_argument("--solver", required=True, metavar="SOLVER", help="solver spec")
    parser.add_argument("--net", metavar="NET", help="net spec; wins over the solver's 'net:'")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="solver fields set alike in every trial")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                        help="a solver field and the values to try (repeatable: the product)")
    parser.add_argument("--random", nargs="+", default=[], metavar="K FIELD=RANGE",
                        help="K random settings from ranges: FIELD=log(a,b), "
                             "FIELD=uniform(a,b), FIELD=choice(A,B,...)")
    parser.add_argument("--draw-seed", type=int, default=0, metavar="N",
                        help="the seed of the random draws (default 0)")
    parser.add_argument("--seeds", type=int, default=1, metavar="R",
                        help="run each setting with R seeds: random_seed = the solver's + "
                             "0..R-1 (default 1)")
    parser.add_argument("--jobs", type=int, default=1, metavar="J",
                        help="trials run at once, each on max(1, cores // J) threads")
    parser.add_argument("--metric", metavar="NAME",
                        help="the TEST output compared (default: the first accuracy-like "
                             "one, else the loss)")
    parser.add_argument("--mode", choices=("max", "min"),
                        help="higher or lower is better (default max for an accuracy, "
                             "min otherwise)")
    parser.add_argument("--prefix", default="sweep", metavar="DIR",
                        help="the folder of the sweep's trials (default ./sweep)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="how the answer is printed")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the learning curves and the metric per setting (extra plot)")
    parser.add_argument("--optuna", type=int, default=0, metavar="N",
                        help="N trials of Optuna's TPE search over the --random ranges and "
                             "--grid choices, pruning by the TEST metric (extra optuna)")
    parser.add_argument("--overwrite", action="store_true",
                        help="remove an earlier, different sweep's trials under --prefix")


def run(args) -> int:
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}", field="--jobs")
    if args.optuna < 0:
        raise ConfigError(f"--optuna must be at least 1, got {args.optuna}", field="--optuna")
    if args.optuna:
        require_optuna()
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib: pip install 'solverkit[plot]'",
                              field="--plot") from None
    random_args = args.random
    if args.optuna and random_args and not random_args[0].lstrip("-").isdigit():
        random_args = ["0", *random_args]       # with --optuna, K may be left out
    sweep = plan_sweep(args.solver, args.net, fixed=args.overrides, grid_items=args.grid, random_args=random_args,
                       seeds=args.seeds, draw_seed=args.draw_seed, prefix=args.prefix,
                       metric=args.metric, mode=args.mode, optuna=args.optuna)
    claim_folder(sweep, overwrite=args.overwrite)
    progress = False if args.quiet else None
    if args.optuna:
        stopped, groups = run_optuna(sweep, args.jobs, progress)
    else:
        stopped = run_trials(sweep, sweep.trials, args.jobs, progress)
        groups = [(t.label, [sweep.trial(t.setting, r) for r in range(sweep.seeds)])
                  for t in sweep.trials if t.seed_index == 0]
    rows = summarize(sweep, groups, sweep.mode)
    sys.stdout.write(format_rows(rows, sweep.metric, sweep.mode, args.format))
    if args.plot:
        plot(sweep, groups, rows, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if stopped:
        print(f"solverkit: sweep stopped; the interrupted trials wrote snapshots: rerun the "
              f"same command to finish them", file=sys.stderr)
        return 0
    failed = [r for r in rows if "diverged" in r.status or "failed" in r.status]
    if failed:
        print(f"solverkit: {len(failed)} setting(s) had a trial that diverged or failed "
              f"(see each trial's train.log under {sweep.prefix})", file=sys.stderr)
        return 1
    return 0
