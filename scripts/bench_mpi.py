#!/usr/bin/env python3
"""Data-parallel scaling: training throughput with 1 and K MPI ranks, one BLAS thread each.

Each run trains a case of ``scripts/bench.py`` (default Caffe's MNIST LeNet, batch 64 per
rank, synthetic data, SGD with momentum) through the real ``Solver``: 1 rank is a plain
process, K ranks are ``mpirun -n K``, every rank with ``OMP_NUM_THREADS=1`` /
``OPENBLAS_NUM_THREADS=1``, so that the ranks, not BLAS threads, are what is compared. The batch per rank stays
the same, so K ranks train on a K-times larger global batch (weak scaling, as Caffe's
multi-GPU training). Timed: ``--steps`` iterations after ``--warmup``, between two
barriers, on rank 0. The runs alternate over ``--rounds`` (medians reported), so that
load from other processes hits all alike.

As a yardstick for the machine itself, K *independent* 1-rank processes also run at the
same time (no MPI, no communication): their summed throughput is what K cores give when
nothing is shared, so ``throughput(K) / throughput(K independent)`` is the share of it
that data-parallel training keeps (communication and waiting for the slowest rank).

    throughput  = steps x batch x ranks / seconds                (samples/s)
    speedup     = throughput(K) / throughput(1)
    efficiency  = speedup / K

    python scripts/bench_mpi.py --ranks 2                 # a table
    python scripts/bench_mpi.py --ranks 2 --json
    python scripts/bench.py --mpi 2                       # the same, from the main benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def find_mpirun() -> str:
    """The launcher beside the interpreter (the MPICH wheel's), else the one on PATH."""
    for name in ("mpirun", "mpiexec"):
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
    found = shutil.which("mpirun") or shutil.which("mpiexec")
    if found is None:
        raise SystemExit("bench_mpi: no mpirun/mpiexec found; pip install 'solverkit[mpi]'")
    return found


# --------------------------------------------------------------------------- one run
def worker(case_name: str, steps: int, warmup: int, workdir: Path) -> None:
    """Train ``case_name`` on this rank; rank 0 prints one JSON line with its timing."""
    sys.path.insert(0, str(HERE))
    from bench import CASES, make_solver, net_dict, synthetic

    from solverkit import parallel

    world = parallel.world()
    case = CASES[case_name]
    net = net_dict(case.net, case.batch, {"source": synthetic(case)})
    solver = make_solver(net, case.solver, workdir, f"mpi{world.size}_{os.getpid()}")
    solver.step(warmup)
    world.barrier()
    start = time.perf_counter()
    solver.step(steps)
    world.barrier()
    seconds = time.perf_counter() - start
    report = {"ranks": world.size, "batch_per_rank": case.batch, "steps": steps,
              "seconds": seconds, "samples_per_s": steps * case.batch * world.size / seconds}
    if world.distributed:
        # the step's communication alone: the gradient Allreduce, timed without compute
        blobs = [param.blob for param in solver.net.learnable_params if param.lr_mult != 0]
        reduce = parallel.GradientAllreduce(world, blobs)
        world.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            reduce()
        report["allreduce_ms"] = (time.perf_counter() - start) / steps * 1000
        report["gradient_count"] = int(reduce.buffer.size)
    solver.close()
    if world.is_root:
        print(json.dumps(report), flush=True)


def run_once(ranks: int, args, workdir: Path, independent: bool = False) -> dict:
    """One run with ``ranks`` MPI ranks, or ``ranks`` independent processes at once."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--case", args.case,
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--workdir", str(workdir)]
    copies = 1
    if independent:
        copies = ranks
    elif ranks > 1:
        command = [find_mpirun(), "-n", str(ranks), *command]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "OMPI_", "MPI_LOCAL", "HYDRA_"))}
    env.update(ONE_THREAD)
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(copies)]
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=args.timeout)
        if process.returncode != 0:
            raise SystemExit(f"bench_mpi: {' '.join(command)} failed:\n{stderr}")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    if not independent:
        return reports[0]
    return {"ranks": 1, "processes": copies, "batch_per_rank": reports[0]["batch_per_rank"],
            "steps": args.steps, "seconds": max(r["seconds"] for r in reports),
            "samples_per_s": sum(r["samples_per_s"] for r in reports)}


# --------------------------------------------------------------------------- the comparison
def scaling(ranks: int, case: str = "lenet_b64", steps: int = 30, warmup: int = 5,
            rounds: int = 3, timeout: float = 600) -> dict:
    """Median throughput with 1 and ``ranks`` ranks, the speedup and the efficiency, and
    the yardstick: ``ranks`` independent 1-rank processes at once."""
    args = argparse.Namespace(case=case, steps=steps, warmup=warmup, timeout=timeout)
    kinds = ["1", str(ranks), "independent"]
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="sk-bench-mpi-") as workdir:
        for round_ in range(rounds):
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                runs[kind].append(run_once(1 if kind == "1" else ranks, args, Path(workdir),
                                           independent=kind == "independent"))
    median = {kind: statistics.median(r["samples_per_s"] for r in runs[kind]) for kind in kinds}
    single, multi = median["1"], median[str(ranks)]
    step_ms = statistics.median(r["seconds"] / r["steps"] * 1000 for r in runs[str(ranks)])
    return {"case": case, "batch_per_rank": runs["1"][0]["batch_per_rank"], "steps": steps,
            "rounds": rounds, "blas_threads_per_rank": 1, "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
            "samples_per_s": {"1": single, str(ranks): multi},
            "speedup": multi / single, "efficiency": multi / single / ranks,
            "step_ms": step_ms, "gradient_count": runs[str(ranks)][0]["gradient_count"],
            "allreduce_ms": statistics.median(r["allreduce_ms"] for r in runs[str(ranks)]),
            "independent_samples_per_s": median["independent"],
            "share_of_independent": multi / median["independent"],
            "runs": runs}


def print_table(report: dict) -> None:
    (_, single), (k, multi) = report["samples_per_s"].items()
    print(f"{report['case']}: batch {report['batch_per_rank']} per rank, 1 BLAS thread per "
          f"rank, {report['cpus']} CPUs (load average {report['load_average']:.1f}), median "
          f"of {report['rounds']} runs of {report['steps']} steps")
    print(f"{'run':<28}  {'samples/s':>10}  {'speedup':>7}  {'efficiency':>10}")
    print(f"{'1 rank':<28}  {single:>10.1f}  {1.0:>7.2f}  {1.0:>10.0%}")
    print(f"{k + ' ranks (mpirun)':<28}  {multi:>10.1f}  {report['speedup']:>7.2f}  "
          f"{report['efficiency']:>10.0%}")
    independent = report["independent_samples_per_s"]
    print(f"{k + ' independent processes':<28}  {independent:>10.1f}  "
          f"{independent / single:>7.2f}  {independent / single / int(k):>10.0%}")
    print(f"Allreduce of the {report['gradient_count']:,} gradients alone: "
          f"{report['allreduce_ms']:.2f} ms, of a {report['step_ms']:.1f} ms step with {k} ranks")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, help="K, compared with 1 rank")
    parser.add_argument("--case", default="lenet_b64", help="a case of scripts/bench.py")
    parser.add_argument("--steps", type=int, default=30, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.case, args.steps, args.warmup, args.workdir)
        return 0
    if args.ranks < 2:
        parser.error("--ranks must be at least 2")
    report = scaling(args.ranks, args.case, args.steps, args.warmup, args.rounds, args.timeout)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
