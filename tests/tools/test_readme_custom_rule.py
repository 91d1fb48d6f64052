"""The extension guide's custom optimizer and lr policy run as written: plugin module and solver spec."""

import re
import sys
from pathlib import Path

import numpy as np
import yaml

import solverkit as sk
from solverkit import registry

README = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def test_custom_rule_and_policy_example(tmp_path, monkeypatch):
    section = README.read_text(encoding="utf-8").split(
        "## Writing a custom optimizer or learning-rate policy")[1].split("\n## ")[0]
    module = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[0]
    solver = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0])
    (tmp_path / "my_rules.py").write_text(module.split("\n", 1)[1])   # drop the file-name line
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_rules", raising=False)
    # other tests may have registered the same names from their own plugin module
    for table in ("_UPDATES", "_POLICIES"):
        copy = dict(getattr(registry, table))
        copy.pop("SignSGD", None)
        copy.pop("halving", None)
        monkeypatch.setattr(registry, table, copy)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.integers(0, 2, size=12).astype(float)
    net = {"name": "tiny", "layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"], "source": {"x": x, "y": y},
         "batch_size": 4},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 2,
         "weight_filler": {"type": "xavier"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]}
    run = sk.Solver({**solver, "stepsize": 2, "max_iter": 4,
                     "snapshot_prefix": str(tmp_path / "run")}, net=net, progress=False)
    assert [run.rate(it) for it in range(4)] == [0.01, 0.01, 0.005, 0.005]
    weight = run.net.params["ip"][0]
    before = weight.data.copy()
    run.step(1)
    np.testing.assert_array_equal(weight.data, before - 0.01 * 0.5 * np.sign(weight.diff))
    assert not np.array_equal(weight.data, before)
    run.close()
