"""``--optuna N``: Optuna's TPE search over the ranges, pruning by the TEST metric.

Each Optuna trial picks a setting (``--random`` ranges as ``suggest_float``, log or
uniform, rounded as random draws are; ``choice(...)`` and ``--grid`` values as
``suggest_categorical``) and runs it with every seed, one seed after another, as ordinary
trials of the sweep (the same folders, so a setting drawn twice is run once). While the
first seed trains, each new TEST value of the metric in its CSV log is reported to Optuna
at its iteration; when Optuna's median pruner judges the setting hopeless, the run gets
SIGINT (it writes a snapshot and stops) and the trial is marked ``pruned``. The objective
is the mean final metric over the seeds.

The study lives in ``DIR/optuna.db`` (SQLite): a rerun continues it until N trials have
ended. A trial a killed or interrupted sweep left unfinished is asked again with the same
setting, and its runs resume from their snapshots.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time

from ..errors import ConfigError
from ..files import LIMITS, read_text, write_atomic
from . import results, space
from .runner import STATUS, Running, Sweep

OUTCOME = "outcome"         # user attribute set when a trial has really ended


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("--optuna needs Optuna: pip install 'solverkit[optuna]'",
                          field="--optuna") from None
    return optuna


def _suggest(trial, sweep: Sweep) -> dict:
    setting = {}
    for key, values in sweep.grid.items():
        shown = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]
        setting[key] = values[shown.index(trial.suggest_categorical(key, shown))]
    for r in sweep.ranges:
        if r.kind == "choice":
            shown = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in r.choices]
            setting[r.field] = r.choices[shown.index(trial.suggest_categorical(r.field, shown))]
        elif r.integer:
            setting[r.field] = trial.suggest_int(r.field, int(r.low), int(r.high),
                                                 log=r.kind == "log")
        else:
            setting[r.field] = r.rounded(trial.suggest_float(r.field, r.low, r.high,
                                                             log=r.kind == "log"))
    return setting


def run_optuna(sweep: Sweep, jobs: int, progress: bool | None):
    """Run the search to ``sweep.optuna`` ended trials; returns (stopped by a signal,
    ``[(label, [trial per seed]), ...]`` of the settings tried)."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="sweep", storage=f"sqlite:///{sweep.prefix / 'optuna.db'}",
        load_if_exists=True, direction="maximize" if sweep.mode == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=sweep.draw_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    states = optuna.trial.TrialState
    ended = [t for t in study.get_trials(deepcopy=False) if OUTCOME in t.user_attrs]
    ended_params = [t.params for t in ended]
    waiting = [t.params for t in study.get_trials(deepcopy=False, states=(states.WAITING,))]
    for t in study.get_trials(deepcopy=False):
        if OUTCOME in t.user_attrs or t.state == states.WAITING:
            continue
        if t.state == states.RUNNING:       # its sweep was killed
            study.tell(t.number, state=states.FAIL)
        if t.params and t.params not in ended_params and t.params not in waiting:
            study.enqueue_trial(t.params)   # asked again: its runs resume
            waiting.append(t.params)
    stopped: list[int] = []
    live: set[Running] = set()

    def stop(signum, frame):
        stopped.append(signum)
        study.stop()
        for job in list(live):
            with contextlib.suppress(ProcessLookupError):
                job.process.send_signal(signum)

    def objective(trial):
        setting = _suggest(trial, sweep)
        finals = []
        for r in range(sweep.seeds):
            run = sweep.trial(setting, r)
            status = run.status()
            if status is None:
                if stopped:
                    raise optuna.TrialPruned()      # not ended: asked again on a rerun
                job = Running(sweep, run, jobs)
                live.add(job)
                pruned = _watch(job, trial if r == 0 else None, sweep)
                live.discard(job)
                state = job.finish(interrupted=bool(stopped) or pruned)
                if pruned:
                    write_atomic(run.folder / STATUS,
                                 json.dumps({"status": "pruned", "returncode": 0}) + "\n",
                                 operation="write the trial's status")
                    trial.set_user_attr(OUTCOME, "pruned")
                    raise optuna.TrialPruned()
                if state is None:
                    raise optuna.TrialPruned()
                status = run.status()
            if status["status"] == "pruned":
                trial.set_user_attr(OUTCOME, "pruned")
                raise optuna.TrialPruned()
            if status["status"] != "done":
                trial.set_user_attr(OUTCOME, status["status"])
                return float("nan")             # Optuna records a failed trial
            finals.append(results.trial_result(run, sweep.metric, sweep.mode).final)
        trial.set_user_attr(OUTCOME, "done")
        return sum(finals) / len(finals)

    from tqdm import tqdm       # external, and only a sweep needs it: kept off start-up
    remaining = max(0, sweep.optuna - len(ended))
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=sweep.optuna, initial=sweep.optuna - remaining, unit="trial",
               desc="optuna", disable=(not sys.stderr.isatty()) if progress is None
               else not progress, leave=False)
    try:
        if remaining:
            study.optimize(objective, n_trials=remaining, n_jobs=jobs,
                           callbacks=[lambda study, trial: bar.update(
                               OUTCOME in trial.user_attrs)])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bar.close()
    groups, seen = [], set()
    for t in study.get_trials(deepcopy=False):
        if OUTCOME not in t.user_attrs:
            continue
        setting = _setting_of(t.params, sweep)
        label = space.setting_label(setting)
        if label not in seen:
            seen.add(label)
            groups.append((label, [sweep.trial(setting, r) for r in range(sweep.seeds)]))
    return bool(stopped), groups


def _setting_of(params: dict, sweep: Sweep) -> dict:
    """A trial's setting from its Optuna parameters (as ``_suggest`` made it)."""
    setting = {}
    for key, values in sweep.grid.items():
        shown = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]
        setting[key] = values[shown.index(params[key])]
    for r in sweep.ranges:
        value = params[r.field]
        if r.kind == "choice":
            shown = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in r.choices]
            setting[r.field] = r.choices[shown.index(value)]
        else:
            setting[r.field] = int(value) if r.integer else r.rounded(value)
    return setting


def _watch(job: Running, trial, sweep: Sweep) -> bool:
    """Wait for ``job``; with an Optuna ``trial``, report each new TEST value of the metric
    and stop the run (SIGINT: a snapshot, then exit) when Optuna prunes it."""
    reported = set()
    while job.process.poll() is None:
        time.sleep(0.1)
        if trial is None:
            continue
        for it, value in results.test_curve(_safe_rows(job), sweep.metric):
            if it in reported:
                continue
            reported.add(it)
            trial.report(value, it)
            if trial.should_prune():
                job.process.send_signal(signal.SIGINT)
                job.process.wait()
                return True
    return False


def _safe_rows(job: Running) -> list[dict]:
    """The log's complete rows so far (a row being written is left for the next look)."""
    if not job.trial.log_path.exists():
        return []
    text = read_text(job.trial.log_path, what="CSV log", limit=LIMITS["list"])
    complete = text[:text.rfind("\n") + 1]
    rows = []
    for line in complete.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) == 6 and parts[1] == "TEST":
            with contextlib.suppress(ValueError):
                rows.append({"iter": int(parts[0]), "phase": "TEST", "name": parts[2],
                             "value": float(parts[3]), "seconds": float(parts[5] or 0)})
    return rows
