"""Running a sweep's trials: the plan, the manifest, J training processes at a time.

Each trial is an ordinary ``solverkit train`` run in its own process, with its snapshot
prefix ``DIR/<trial name>/run`` (so its CSV log is ``DIR/<trial name>/run_log.csv``) and
its output in ``DIR/<trial name>/train.log``. When the process ends, ``status.json`` records
how (``done``, ``diverged`` for exit status 1, a non-finite loss, ``failed`` otherwise);
a trial with a status is finished and a rerun leaves it alone, except a ``failed`` one,
which is tried again (its cause may have been fixed). A trial without one
resumes from its newest complete snapshot (``train --resume latest``), or starts afresh
(replacing a log that a killed run left without a snapshot).

The cores are shared: each of the J processes gets ``max(1, cores // J)`` threads
(``SOLVERKIT_NUM_THREADS`` and the BLAS libraries' variables).

``DIR/sweep.json`` (the manifest, written atomically) records what the sweep tries; a
rerun under the same folder with another grid, other ranges, seeds or solver file is
refused with the difference named, unless told to overwrite.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, SolverkitError, did_you_mean
from ..files import LIMITS, read_text, write_atomic
from ..runs import run_files
from ..snapshot import latest_snapshot
from ..solvers import Solver
from ..solvers.nets import output_prefix
from ..spec.solver import load_solver_spec
from ..threads import available_cores
from . import space

MANIFEST = "sweep.json"
STATUS = "status.json"
THREAD_VARIABLES = ("SOLVERKIT_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")
# the parts of the manifest that define the sweep (a difference refuses a rerun)
DEFINING = ("solver", "solver_sha256", "net", "net_sha256", "set", "grid", "random", "draws",
            "draw_seed", "seeds", "search")


@dataclass
class Trial:
    """One training run: a setting with a seed index, in its own folder."""

    setting: dict
    seed_index: int
    random_seed: int
    folder: Path
    fixed: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def prefix(self) -> Path:
        return self.folder / "run"

    @property
    def log_path(self) -> Path:
        return self.folder / "run_log.csv"

    @property
    def label(self) -> str:
        return space.setting_label(self.setting)

    def status(self) -> dict | None:
        """``{"status": "done"|"diverged"|"failed", "returncode": N}`` once finished."""
        path = self.folder / STATUS
        if not path.is_file():
            return None
        text = read_text(path, what="trial status", limit=LIMITS["record"])
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise SolverkitError(f"cannot read the trial status: {err}", file=str(path)) from None


@dataclass
class Sweep:
    """What a sweep tries and where: built (and every trial validated) by ``plan_sweep``."""

    solver: Path
    net: Path | None
    prefix: Path
    grid: dict
    ranges: list
    draws: int
    draw_seed: int
    seeds: int
    base_seed: int
    metric: str
    mode: str
    test_outputs: list[str]
    settings: list[dict] = field(default_factory=list)
    optuna: int = 0
    fixed: dict = field(default_factory=dict)   # --set: the same for every trial

    def trial(self, setting: dict, seed_index: int) -> Trial:
        return Trial(setting, seed_index, self.base_seed + seed_index,
                     self.prefix / space.trial_name(setting, seed_index), self.fixed)

    @property
    def trials(self) -> list[Trial]:
        return [self.trial(s, r) for s in self.settings for r in range(self.seeds)]

    def manifest(self) -> dict:
        return {"solver": str(self.solver), "solver_sha256": _sha256(self.solver),
                "net": str(self.net) if self.net else None,
                "net_sha256": _sha256(self.net) if self.net else None,
                "set": self.fixed, "grid": self.grid, "random": [r.describe() for r in self.ranges],
                "draws": self.draws, "draw_seed": self.draw_seed, "seeds": self.seeds,
                "search": "optuna" if self.optuna else "grid", "optuna": self.optuna,
                "settings": self.settings,
                "trials": [t.name for t in self.trials]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def metric_default(outputs: list[str]) -> str:
    """The first TEST output that looks like an accuracy, else the first that looks like a
    loss, else the first."""
    for word in ("acc", "loss"):
        for name in outputs:
            if word in name.lower():
                return name
    return outputs[0]


def mode_default(metric: str) -> str:
    """``max`` for an accuracy-like name (``acc`` in it), else ``min``."""
    return "max" if "acc" in metric.lower() else "min"


def plan_sweep(solver, net=None, *, fixed=(), grid_items=(), random_args=(), seeds=1, draw_seed=0,
               prefix="sweep", metric=None, mode=None, optuna=0) -> Sweep:
    """Parse the grid and ranges, draw the random settings and validate every trial's solver
    spec (and the net, by building the first trial's solver) before anything runs.
    ``random_args`` is ``[K, "FIELD=log(a,b)", ...]`` (``--random``)."""
    solver = Path(solver).resolve()
    if not solver.is_file():
        raise ConfigError("the solver spec does not exist", file=str(solver), field="--solver")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}", field="--seeds")
    grid = space.parse_grid(list(grid_items))
    fixed = space.parse_fixed(list(fixed))
    for key in grid:
        if key in fixed:
            raise ConfigError(f"{key} is in both --set and --grid", field=key)
    ranges, count = [], 0
    if random_args:
        try:
            count = int(random_args[0])
        except ValueError:
            raise ConfigError(f"--random K FIELD=RANGE ...: K must be a number, got "
                              f"'{random_args[0]}'", field="--random") from None
        if count < 1 and not optuna:
            raise ConfigError(f"--random K: K must be at least 1, got {count}",
                              field="--random")
        ranges = [space.parse_range(text) for text in random_args[1:]]
        if not ranges:
            raise ConfigError("--random K needs at least one FIELD=log(a,b), "
                              "FIELD=uniform(a,b) or FIELD=choice(A,B)", field="--random")
        for r in ranges:
            if r.field in grid or r.field in fixed:
                raise ConfigError(f"{r.field} is in --random and in --grid or --set", field=r.field)
    if not grid and not ranges:
        raise ConfigError("nothing to sweep: give --grid FIELD=V1,V2,... or --random K "
                          "FIELD=RANGE ...", field="--grid")
    net = Path(net).resolve() if net is not None else None
    base = load_solver_spec(solver, space.overrides(fixed))
    base_seed = base.random_seed if base.random_seed >= 0 else 0
    draws = space.draw_settings(ranges, count, draw_seed) if not optuna else []
    settings = space.settings(grid, draws) if not optuna else []
    sweep = Sweep(solver, net, Path(prefix).resolve(), grid, ranges, count, draw_seed, seeds,
                  base_seed, metric or "", mode or "", [], settings, optuna, fixed)
    checked = settings or _corners(grid, ranges)
    for setting in checked:
        for r in range(seeds):
            trial = sweep.trial(setting, r)
            try:
                load_solver_spec(solver, _overrides(trial))
            except SolverkitError as err:       # say which trial, in the sweep's words
                err.message = (f"the sweep's trial {trial.label} (random_seed "
                               f"{trial.random_seed}): {err.message.removeprefix('--set ')}")
                raise
    # the first trial's solver builds the nets: the net's mistakes, and the TEST outputs
    first = Solver(solver, net=net, overrides=_overrides(sweep.trial(checked[0], 0)),
                   progress=False)
    try:
        if first.spec.test_interval <= 0:
            raise ConfigError("a sweep compares TEST outputs, but test_interval is 0: set "
                              "test_interval (and test_iter) in the solver spec",
                              file=str(solver), field="test_interval")
        outputs = [output_prefix(i) + name for i in range(len(first.test_plans))
                   for name in first.test_net_at(i).outputs]
    finally:
        first.close()
    if metric is not None and metric not in outputs:
        raise ConfigError(f"--metric: '{metric}' is not a TEST output"
                          f"{did_you_mean(metric, outputs)}; TEST outputs: "
                          f"{', '.join(outputs)}", field="--metric")
    sweep.test_outputs = outputs
    sweep.metric = metric or metric_default(outputs)
    sweep.mode = mode or mode_default(sweep.metric)
    return sweep


def _corners(grid: dict, ranges: list) -> list[dict]:
    """Settings that put every ranged value at its ends (what Optuna may draw), for
    validation when the settings are not known in advance."""
    first = {k: v[0] for k, v in grid.items()}
    found = [dict(first)]
    for key, values in grid.items():
        found += [{**first, key: v} for v in values[1:]]
    for r in ranges:
        ends = r.choices if r.kind == "choice" else [r.low, r.high]
        found += [{**first, r.field: v} for v in ends]
    return found


def _overrides(trial: Trial) -> list[str]:
    return [*space.overrides({**trial.fixed, **trial.setting}), f"random_seed={trial.random_seed}",
            f"snapshot_prefix={trial.prefix}"]


# ------------------------------------------------------------------ the manifest
def claim_folder(sweep: Sweep, overwrite: bool = False) -> None:
    """Write the manifest, or check a rerun against it: a sweep with another definition under
    the same folder is refused, naming what differs (``overwrite`` removes the earlier
    sweep's trials first)."""
    path = sweep.prefix / MANIFEST
    ours = sweep.manifest()
    if path.exists():
        try:
            theirs = json.loads(read_text(path, what="sweep manifest", limit=LIMITS["spec"]))
        except json.JSONDecodeError as err:
            raise SolverkitError(f"cannot read the sweep manifest: {err}",
                                 file=str(path)) from None
        differences = _differences(theirs, ours)
        if differences and not overwrite:
            raise SolverkitError(
                f"{sweep.prefix} holds another sweep ({'; '.join(differences)}); rerun it as "
                f"it was, choose another --prefix, or give --overwrite to remove its trials",
                file=str(path), field="--prefix")
        if differences:
            _remove_sweep(sweep.prefix, theirs)
        elif theirs == ours:
            return          # a rerun: nothing to write
    elif sweep.prefix.exists() and any(sweep.prefix.iterdir()) and not overwrite:
        raise SolverkitError(f"{sweep.prefix} is not empty and holds no sweep manifest "
                             f"({MANIFEST}): choose another --prefix", field="--prefix")
    write_atomic(path, json.dumps(ours, indent=1) + "\n", operation="write the sweep manifest")


def _differences(theirs: dict, ours: dict) -> list[str]:
    """What differs between two manifests, field by field for the grid and --set."""
    found = []
    for key in DEFINING:
        before, now = theirs.get(key), ours[key]
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict):
            for field_name in dict.fromkeys([*before, *now]):
                if before.get(field_name) != now.get(field_name):
                    found.append(f"{key} {field_name}: {_show(before.get(field_name))} before, "
                                 f"{_show(now.get(field_name))} now")
        else:
            found.append(f"{key}: {_show(before)} before, {_show(now)} now")
    return found


def _show(value) -> str:
    return "none" if value is None else json.dumps(value) if not isinstance(value, str) else value


def _remove_sweep(prefix: Path, manifest: dict) -> None:
    """The earlier sweep's trials (those its manifest lists, and an Optuna search's, which
    it cannot list: every ``<setting>@seed<r>`` folder) and its Optuna storage."""
    names = set(manifest.get("trials", []))
    for folder in prefix.iterdir():
        if folder.is_dir() and (folder.name in names or (
                manifest.get("search") == "optuna" and "@seed" in folder.name)):
            shutil.rmtree(folder)
    for name in ("optuna.db",):
        with contextlib.suppress(FileNotFoundError):
            (prefix / name).unlink()


# ------------------------------------------------------------------ running
def trial_command(sweep: Sweep, trial: Trial) -> list[str]:
    """The ``python -m solverkit train ...`` command line of a trial, resuming what a
    stopped run left (``--resume latest``) and replacing a log without a snapshot."""
    command = [sys.executable, "-m", "solverkit", "train", "--solver", str(sweep.solver)]
    if sweep.net is not None:
        command += ["--net", str(sweep.net)]
    command += ["--on-signal", "snapshot", "--set", *_overrides(trial)]
    if latest_snapshot(str(trial.prefix)) is not None:
        command += ["--resume", "latest"]
    elif run_files(trial.prefix):
        command += ["--overwrite"]
    return command


def trial_environment(jobs: int) -> dict[str, str]:
    """The environment of a trial's process: ``max(1, cores // jobs)`` threads each."""
    threads = str(max(1, available_cores() // jobs))
    return {**os.environ, **dict.fromkeys(THREAD_VARIABLES, threads)}


def _die_with_parent() -> None:
    """In the child, before exec: end when the sweep's process dies (Linux), so a killed
    sweep leaves no trial running that a rerun would find holding its folder."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG


class Running:
    """A trial's process, its output file and its start time."""

    def __init__(self, sweep: Sweep, trial: Trial, jobs: int):
        self.trial = trial
        trial.folder.mkdir(parents=True, exist_ok=True)
        self.output = open(trial.folder / "train.log", "ab")
        self.output.write(f"$ {' '.join(trial_command(sweep, trial))}\n".encode())
        self.output.flush()
        self.process = subprocess.Popen(
            trial_command(sweep, trial), stdout=self.output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=trial_environment(jobs),
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def finish(self, interrupted: bool) -> str | None:
        """Record how the process ended; ``None`` when it was stopped by a signal (it
        resumes on a rerun)."""
        code = self.process.returncode
        self.output.close()
        text = (self.trial.folder / "train.log").read_bytes()[-4000:].decode(errors="replace")
        if interrupted and (code != 0 or "Stopped by SIG" in text):
            return None
        if code < 0 or code == 130:
            return None     # killed by a signal: resumes on a rerun
        status = {0: "done", 1: "diverged"}.get(code, "failed")
        last = [line for line in text.splitlines() if line.startswith("solverkit:")]
        record = {"status": status, "returncode": code, "message": last[-1] if last else ""}
        write_atomic(self.trial.folder / STATUS, json.dumps(record) + "\n",
                     operation="write the trial's status")
        return status


def run_trials(sweep: Sweep, trials: list[Trial], jobs: int, progress: bool | None = None,
               on_finish=None) -> bool:
    """Run every unfinished trial, ``jobs`` processes at a time. SIGINT/SIGTERM stop the
    sweep: every running trial gets the signal, writes a snapshot and ends; no new one
    starts. Returns whether the sweep was stopped so. ``on_finish(trial, status)`` is
    called as each trial ends."""
    # a failed trial (exit status 2: a data file, the disk, a held lock) is tried again;
    # a diverged one would only diverge again
    pending = [t for t in trials if t.status() is None or t.status()["status"] == "failed"]
    stopped: list[int] = []
    running: list[Running] = []

    def stop(signum, frame):
        stopped.append(signum)
        for job in running:
            with contextlib.suppress(ProcessLookupError):
                job.process.send_signal(signum)

    from tqdm import tqdm       # external, and only a sweep needs it: kept off start-up
    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    bar = tqdm(total=len(trials), initial=len(trials) - len(pending), unit="trial",
               desc="sweep", disable=(not sys.stderr.isatty()) if progress is None
               else not progress, leave=False)
    try:
        while (pending and not stopped) or running:
            while pending and not stopped and len(running) < jobs:
                running.append(Running(sweep, pending.pop(0), jobs))
            time.sleep(0.05)
            for job in [job for job in running if job.process.poll() is not None]:
                running.remove(job)
                status = job.finish(bool(stopped))
                if status is not None:
                    bar.update(1)
                if on_finish is not None:
                    on_finish(job.trial, status)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for job in running:         # an internal error: leave no process behind
            job.process.kill()
            job.process.wait()
        bar.close()
    return bool(stopped)
