"""The digits LeNet with BatchNorm + Scale and PReLU trains at least as well as the plain one."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DIGITS = Path(__file__).resolve().parents[1] / "configs" / "digits"


def _test_accuracy(name: str, folder: Path) -> float:
    """Train ``configs/digits/<name>_{net,solver}.yaml`` via the CLI; the printed accuracy."""
    result = subprocess.run(
        [sys.executable, "-m", "solverkit", "train", "--quiet",
         "--net", str(DIGITS / f"{name}_net.yaml"),
         "--solver", str(DIGITS / f"{name}_solver.yaml"),
         "--set", f"snapshot_prefix={folder / name}"],
        cwd=folder, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    found = re.search(r"^Test net output #\d+: accuracy = ([0-9.eE+-]+)$", result.stdout,
                      re.MULTILINE)
    assert found, result.stdout
    return float(found.group(1))


@pytest.mark.slow
def test_batchnorm_prelu_lenet_matches_plain_lenet(tmp_path):
    with_bn = _test_accuracy("lenet_bn", tmp_path)
    plain = _test_accuracy("lenet", tmp_path)
    assert with_bn >= min(plain, 0.98), (with_bn, plain)
