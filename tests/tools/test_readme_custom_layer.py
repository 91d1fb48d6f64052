"""The extension guide's custom-layer example runs as written: plugin, gradient check, net spec."""

import math
import re
import runpy
import sys
from pathlib import Path

import yaml

from solverkit.net import Net

README = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def test_custom_layer_example(tmp_path, monkeypatch):
    section = README.read_text(encoding="utf-8").split("## Writing a custom layer")[1]
    section = section.split("\n## ")[0]
    module, snippet = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    net_yaml = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0]
    (tmp_path / "my_layers.py").write_text(module.split("\n", 1)[1])   # drop the file-name line
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_layers", raising=False)
    (tmp_path / "check_snippet.py").write_text(snippet)
    runpy.run_path(str(tmp_path / "check_snippet.py"))                  # the gradient check
    spec = yaml.safe_load(net_yaml)
    spec["layers"][:0] = [{"name": "input", "type": "Input", "top": "ip1", "shape": [[2, 3]]}]
    net = Net(spec, seed=0)
    x = [[-1.0, 0.0, 2.0], [0.5, -0.5, 3.0]]
    out = net.forward(ip1=x)["act1"]
    assert abs(out[0][2] - 1.7159 * math.tanh(2 / 3 * 2.0)) < 1e-5
