"""``scripts/bench.py --mpi 2``: the scaling report runs end to end and is consistent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import find_mpirun, mpi_env

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


@pytest.mark.slow
def test_bench_mpi_reports_one_and_two_ranks():
    launcher, reason = find_mpirun()
    if launcher is None:
        pytest.skip(reason)
    result = subprocess.run([sys.executable, str(BENCH), "--mpi", "2", "--quick", "--json"],
                            capture_output=True, text=True, env=mpi_env(), timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    runs = report["runs"]
    assert [r["ranks"] for r in runs["1"]] == [1] and [r["ranks"] for r in runs["2"]] == [2]
    for run in runs["1"] + runs["2"]:
        samples = run["steps"] * run["batch_per_rank"] * run["ranks"]
        assert run["samples_per_s"] == pytest.approx(samples / run["seconds"])
    one, two = report["samples_per_s"]["1"], report["samples_per_s"]["2"]
    assert report["speedup"] == pytest.approx(two / one)
    assert report["efficiency"] == pytest.approx(two / one / 2)
    assert report["blas_threads_per_rank"] == 1 and report["case"] == "lenet_b64"
    assert 0 < report["allreduce_ms"] < report["step_ms"]
    assert report["gradient_count"] == 431080          # Caffe's LeNet: 430,500 weights + 580 biases
    # the yardstick: two independent one-rank processes, their throughputs summed
    (independent,) = runs["independent"]
    assert independent["processes"] == 2
    assert report["independent_samples_per_s"] == independent["samples_per_s"]
    assert report["share_of_independent"] == pytest.approx(two / independent["samples_per_s"])
