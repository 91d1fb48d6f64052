"""The benchmark's inference cases as CI runs them: a few iterations, no thresholds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


@pytest.mark.slow
def test_quick_inference_run_times_solverkit_and_onnxruntime_on_the_same_outputs():
    pytest.importorskip("onnxruntime")
    done = subprocess.run([sys.executable, str(BENCH), "--inference", "--quick", "--no-torch",
                           "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    cases = {r["case"]: r for r in json.loads(done.stdout)["inference"]}
    assert set(cases) == {"infer_lenet_b64", "infer_cifar10_quick_b64"}
    for r in cases.values():
        assert r["batch"] == 64 and r["solverkit_ms"] > 0 and r["onnxruntime_ms"] > 0
        assert r["max_abs_diff"]["onnxruntime"] < 1e-5     # the exported model computes the same
        assert "torch_ms" not in r


@pytest.mark.slow
def test_quick_ssd_run_times_solverkit_and_opencv_on_the_same_detections():
    pytest.importorskip("cv2")
    done = subprocess.run([sys.executable, str(BENCH), "--ssd", "--quick", "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["ssd"]
    assert result["solverkit_ms"] > 0 and result["opencv_ms"] > 0
    assert result["detections"] > 0 and result["same_detections"]
    assert result["max_abs_diff"] < 1e-4
