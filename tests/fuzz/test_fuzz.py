"""Seeded mutation fuzzing of every reader of a user's file: the protobuf decoder (through
``.caffemodel``, ``.binaryproto`` and Datum records), the prototxt and YAML spec loaders,
model and solver-state ``.npz`` files, LMDB records, ``.npz``/``.npy``/IDX/CIFAR/CSV data
files and image list files. Every outcome must be a success or a ``SolverkitError``: no
other exception, no stray warning, no case over its time limit, no allocation beyond the
worker's memory cap. Each target runs in its own process (``worker.py``) so that the caps
apply to it alone.

The normal suite runs 300 cases per target; ``-m slow`` (or ``-m long_fuzz``) adds 10,000
per target, which the default run leaves out (pyproject's ``addopts``).
A failure prints the target, the case index and the mutation; ``worker.py`` with the same
seed reproduces it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from targets import TARGETS

WORKER = Path(__file__).resolve().parent / "worker.py"


def run(target: str, cases: int, seed: int, folder: Path, timeout: float) -> dict:
    done = subprocess.run([sys.executable, str(WORKER), target, str(cases), str(seed),
                           str(folder)], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"the {target} worker died:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.splitlines()[-1])


def check(report: dict) -> None:
    failures = report["failures"]
    shown = "\n".join(f"  case {f['index']} ({f['mutation']}, {f['size']} bytes): {f['error']}"
                      f"\n    {' | '.join(f['where'])}" for f in failures[:10])
    assert not failures, (f"{report['target']}: {len(failures)} of {report['cases']} cases "
                          f"ended outside SolverkitError:\n{shown}")
    # the mutations must reach the reader's error paths, and the seeds its success path
    assert report["refused"] > 0, report
    assert report["accepted"] + report["refused"] == report["cases"]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_few_hundred_mutations_end_in_success_or_a_solverkit_error(target, tmp_path):
    check(run(target, 300, seed=1, folder=tmp_path, timeout=600))


@pytest.mark.slow
@pytest.mark.long_fuzz
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_ten_thousand_mutations_end_in_success_or_a_solverkit_error(target, tmp_path):
    check(run(target, 10_000, seed=2, folder=tmp_path, timeout=3000))
