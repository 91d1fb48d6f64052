"""``solverkit draw --values``: the lecture's graphs with their forward values and gradients."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from solverkit import cli

LECTURE = Path(__file__).resolve().parents[2] / "configs" / "lecture"


def listing(path: Path) -> dict[str, dict]:
    """``blob q: shape 1  value [3]  grad [-4]`` lines -> {"blob q": {"value": [...], ...}}."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^((?:blob|param) \S+): shape (\S+)  value (.*)  grad (.*)$", line)
        if match:
            def numbers(text):
                return None if text == "-" else (
                    [float(v) for v in text.strip("[]").split(",")] if text.startswith("[")
                    else text)
            found[match.group(1)] = {"shape": match.group(2), "value": numbers(match.group(3)),
                                     "grad": numbers(match.group(4))}
    return found


def test_x_plus_y_times_z_at_the_lectures_point(tmp_path):
    out = tmp_path / "xyz.txt"
    status = cli.main(["draw", "--net", str(LECTURE / "xyz_net.yaml"), "--values",
                       "--input", "x=-2", "y=5", "z=-4", "-o", str(out)])
    assert status == 0
    blobs = listing(out)
    assert blobs["blob q"]["value"] == [3.0]
    assert blobs["blob f"]["value"] == [-12.0]
    assert blobs["blob f"]["grad"] == [1.0]                 # no loss: df/df = 1
    assert blobs["blob x"]["grad"] == [-4.0]
    assert blobs["blob y"]["grad"] == [-4.0]
    assert blobs["blob z"]["grad"] == [3.0]
    assert blobs["blob q"]["grad"] == [-4.0]
    # the DOT form carries the same numbers on its edges
    dot = tmp_path / "xyz.dot"
    assert cli.main(["draw", "--net", str(LECTURE / "xyz_net.yaml"), "--values", "--input",
                     "x=-2", "y=5", "z=-4", "-o", str(dot)]) == 0
    text = dot.read_text()
    assert '"sum" -> "prod" [label="q\\nshape 1\\nvalue [3]\\ngrad [-4]"]' in text
    assert '"prod" -> "output:f" [label="f\\nshape 1\\nvalue [-12]\\ngrad [1]"]' in text


def test_sigmoid_neuron_gradients_follow_the_sigmoid_rule(tmp_path):
    weights = tmp_path / "neuron.model.npz"
    made = subprocess.run([sys.executable, str(LECTURE / "neuron_weights.py"), "-o",
                           str(weights)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "neuron.txt"
    assert cli.main(["draw", "--net", str(LECTURE / "neuron_net.yaml"), "--weights",
                     str(weights), "--values", "--input", "x=-1,-2", "-o", str(out)]) == 0
    blobs = listing(out)
    w, x, b = np.array([2.0, -3.0]), np.array([-1.0, -2.0]), -3.0

    def f(w, x, b):          # the neuron in float64, independently of the net
        return 1.0 / (1.0 + np.exp(-(w @ x + b)))

    sigma = f(w, x, b)
    local = (1.0 - sigma) * sigma                          # the lecture's rule
    assert blobs["blob s"]["value"] == pytest.approx([1.0])
    assert blobs["blob f"]["value"] == pytest.approx([sigma], rel=1e-6)
    assert blobs["blob s"]["grad"] == pytest.approx([local], rel=1e-5)
    assert blobs["blob x"]["grad"] == pytest.approx(local * w, rel=1e-5)
    assert blobs["param neuron/0"]["grad"] == pytest.approx(local * x, rel=1e-5)
    assert blobs["param neuron/1"]["grad"] == pytest.approx([local], rel=1e-5)
    # and numerically: central differences of f in every variable
    eps = 1e-6
    for name, point, grad in (("x", x, blobs["blob x"]["grad"]),
                              ("w", w, blobs["param neuron/0"]["grad"])):
        numeric = []
        for i in range(2):
            step = np.zeros(2)
            step[i] = eps
            args = {"w": w, "x": x, "b": b}
            plus, minus = dict(args), dict(args)
            plus[name], minus[name] = point + step, point - step
            numeric.append((f(**plus) - f(**minus)) / (2 * eps))
        assert grad == pytest.approx(numeric, rel=1e-5), name
    numeric_b = (f(w, x, b + eps) - f(w, x, b - eps)) / (2 * eps)
    assert blobs["param neuron/1"]["grad"] == pytest.approx([numeric_b], rel=1e-5)


def test_a_large_blob_is_summarised_and_random_inputs_are_said(tmp_path, write_net):
    net = write_net({"name": "big", "layers": [
        {"name": "in", "type": "Input", "top": "x", "shape": [[4, 8]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 3,
         "weight_filler": {"type": "gaussian", "std": 0.1}}]}, "big.yaml")
    out = tmp_path / "big.txt"
    assert cli.main(["draw", "--net", str(net), "--values", "-o", str(out)]) == 0
    text = out.read_text()
    assert "inputs drawn from a standard normal (seed 0): x" in text
    line = next(line for line in text.splitlines() if line.startswith("blob x:"))
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    assert f"mean {x.mean():.6g}" in line and f"norm {np.linalg.norm(x):.6g}" in line
    y_line = next(line for line in text.splitlines() if line.startswith("blob y:"))
    assert "grad [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]" in y_line       # 12 elements: shown


@pytest.mark.parametrize("net, arguments, words", [
    ("neuron_net.yaml", ["--input", "x=1,2,3"], "--input x: 3 values do not fill"),
    ("xyz_net.yaml", ["--input", "x=1,2,3"], "Eltwise needs equal shapes"),
    ("xyz_net.yaml", ["--input", "xx=1"], "did you mean 'x'?"),
    ("xyz_net.yaml", ["--input", "x=a"], "not a list of numbers"),
    ("xyz_net.yaml", ["--input", "x=1"], "--input and --weights go with --values"),
])
def test_bad_inputs_exit_2(tmp_path, capsys, net, arguments, words):
    values = [] if words.startswith("--input and") else ["--values"]
    status = cli.main(["draw", "--net", str(LECTURE / net), *values, *arguments,
                       "-o", str(tmp_path / "g.txt")])
    assert status == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "g.txt").exists()
