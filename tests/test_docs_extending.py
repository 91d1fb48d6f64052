"""docs/extending.md runs as written: every code block that names a file is written to a
folder, the other Python blocks run there, and the shell block's commands run from the
command line; each must succeed and do what the page says."""

import json
import os
import re
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
FILE_LINE = re.compile(r"#\s*([\w.]+\.(?:py|yaml))\s*$")


def blocks():
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def run(command, cwd, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False, **kwargs)


def test_every_extension_point_has_an_example():
    text = PAGE.read_text(encoding="utf-8")
    for decorator in ("@register_layer", "@register_update", "@register_policy",
                      "@register_callback", "@register_source_format", "@register_exporter",
                      "@register_onnx"):
        assert f"{decorator}(" in text, decorator


@pytest.mark.slow
def test_the_page_runs_as_written(tmp_path):
    scripts, commands = [], []
    for language, code in blocks():
        first = code.split("\n", 1)[0]
        named = FILE_LINE.fullmatch(first.strip())
        if named:
            (tmp_path / named.group(1)).write_text(code, encoding="utf-8")
        elif language == "python":
            scripts.append(code)
        elif language == "sh":
            commands += [line for line in code.splitlines() if line.startswith("solverkit ")]
    assert {"my_layers.py", "my_rules.py", "my_callbacks.py", "my_formats.py",
            "my_exporters.py", "net.yaml", "solver.yaml"} <= {p.name for p in tmp_path.iterdir()}
    for i, script in enumerate(scripts):
        (tmp_path / f"snippet_{i}.py").write_text(script, encoding="utf-8")
        done = run([sys.executable, f"snippet_{i}.py"], tmp_path)
        assert done.returncode == 0, f"snippet {i}:\n{script}\n{done.stderr}"
    assert commands, "the page has no commands to run"
    outputs = {}
    for command in commands:
        args = shlex.split(command)[1:]
        if "model.onnx" in args and (find_spec("onnx") is None or find_spec("onnxruntime")
                                     is None):
            continue
        done = run([sys.executable, "-m", "solverkit", *args], tmp_path)
        assert done.returncode == 0, f"{command}:\n{done.stderr}"
        outputs[args[0]] = outputs.get(args[0], "") + done.stdout

    assert "(tsv format)" in outputs["check"] and "SignSGD" in outputs["check"]
    assert "CountTests" in outputs["check"]
    with np.load(tmp_path / "run_iter_120.solverstate.npz") as state:   # tests at 60, 120
        assert json.loads(str(state["__meta__"]))["callbacks"]["CountTests"]["count"] >= 2
    assert "tsv (.tsv)" in outputs["schema"] and "shapes (.shapes)" in outputs["schema"]
    assert (tmp_path / "model.shapes").read_text().splitlines()[1] == "ip1 [[32, 64], [32]]"
    if (tmp_path / "model.onnx").exists():       # the ScaledTanH converter, run by onnxruntime
        (tmp_path / "compare.py").write_text(COMPARE, encoding="utf-8")
        done = run([sys.executable, "compare.py"], tmp_path)    # its own process: the page's
        assert done.returncode == 0, done.stderr                # plugins stay out of this one


COMPARE = """\
import numpy as np
import onnxruntime
import solverkit as sk

x = np.loadtxt("test.tsv", delimiter="\\t", dtype=np.float32)[:5, :-1]
session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
got = session.run(None, {"data": x})[0]
net = sk.Net(sk.deploy_net("net.yaml"), phase="TEST")
net.load("run_iter_120.model.npz", allow_extra=True)
np.testing.assert_allclose(got, net.forward(data=x)["prob"], rtol=1e-5, atol=1e-6)
"""
