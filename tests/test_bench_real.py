"""The real-size cases (CaffeNet, GoogLeNet, ResNet-50) as CI runs them: every case built
and run once at a 64×64 input, solverkit alone and with onnxruntime and OpenCV on its
exports, no thresholds on time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_nets  # noqa: E402


@pytest.mark.slow
def test_every_real_size_case_runs_at_a_small_resolution_and_the_exports_agree():
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench.py"), "--real", "--quick",
                           "--no-torch", "--no-memory", "--resolution", "64", "--steps", "1",
                           "--json"], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    cases = {r["case"]: r for r in json.loads(done.stdout)["real"]}
    assert set(cases) == {f"{net}_{mode}" for net in ("caffenet", "googlenet", "resnet50")
                          for mode in ("train_b8", "infer_b1", "infer_b16")}
    for name, r in cases.items():
        assert r["side"] == 64 and r["solverkit_ms"] > 0
        assert "torch_ms" not in r
        if "infer" in name:
            # the ONNX and Caffe exports compute the same probabilities in other runtimes
            for runtime, diff in r["max_abs_diff"].items():
                assert diff < 1e-3, (name, runtime, diff)   # probabilities after 50 layers
                # every probability to 1% of itself (they are ~1e-3 each: the absolute
                # difference alone says little; ResNet-50 on onnxruntime: some 0.3%)
                assert r["max_log_diff"][runtime] < 1e-2, (name, runtime, r["max_log_diff"])
                assert r[f"{runtime}_ms"] > 0


def test_the_nets_have_their_published_shapes():
    def count(spec, kind):
        return sum(layer["type"] == kind for layer in spec["layers"])

    caffenet, googlenet, resnet = bench_nets.caffenet(), bench_nets.googlenet(), bench_nets.resnet50()
    assert count(caffenet, "Convolution") == 5 and count(caffenet, "InnerProduct") == 3
    assert [l["group"] for l in caffenet["layers"] if l.get("group")] == [2, 2, 2]
    assert count(googlenet, "Concat") == 9 and count(googlenet, "Convolution") == 57
    # 1 + 16 blocks × 3 + 4 projections = 53 convolutions, each with BatchNorm and Scale
    assert count(resnet, "Convolution") == count(resnet, "BatchNorm") == 53
    assert count(resnet, "Scale") == 53 and count(resnet, "Eltwise") == 16
    assert all(l.get("bias_term") is False for l in resnet["layers"] if l["type"] == "Convolution")
