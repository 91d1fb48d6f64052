"""scripts/bench_data.py's loader children: each one feeds the same batches shape over the
same JPEG files and reports its time and peak memory (PyTorch's only where it is
installed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_data.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(listing, who: str, workers: int) -> dict:
    case = {"size": 40, "color": True, "crop": 32, "mirror": True, "mean": [104, 117, 123],
            "scale": 1.0, "count": 12, "batch": 4}
    done = subprocess.run([sys.executable, str(SCRIPT), "--child", json.dumps({
        "who": who, "listing": str(listing), "case": case, "workers": workers,
        "batches": 3})], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    return _bench().write_jpegs(tmp_path_factory.mktemp("jpegs"), 12, 40, True)


def test_the_solverkit_loader_child_reports_its_batches(listing):
    lines = listing.read_text().splitlines()
    assert len(lines) == 12 and (listing.parent / lines[0].split()[0]).stat().st_size > 0
    result = _child(listing, "solverkit", 2)
    assert result["shape"] == [4, 3, 32, 32]
    assert result["seconds"] > 0 and result["peak_mib"] > 10
    assert result["workers_peak_mib"] == []


def test_the_solverkit_loader_child_decoding_in_processes_reports_its_workers(listing):
    result = _child(listing, "processes", 2)
    assert result["shape"] == [4, 3, 32, 32]
    assert len(result["workers_peak_mib"]) == 2 and min(result["workers_peak_mib"]) > 10
    assert result["first_batch_s"] > 0


def test_the_pytorch_loader_child_reports_its_batches_and_workers(listing):
    pytest.importorskip("torch")
    result = _child(listing, "torch", 2)
    assert result["shape"] == [4, 3, 32, 32]
    assert len(result["workers_peak_mib"]) == 2 and min(result["workers_peak_mib"]) > 10
