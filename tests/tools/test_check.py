"""`solverkit check`: the per-phase table holds every layer, its tops' shapes and its
parameter count; the totals count shared parameters once."""

import re
import subprocess
import sys

import pytest

from solverkit.cli import main


def _rows(text: str, phase: str) -> dict[str, list[str]]:
    """The table rows of one phase, split on runs of two or more spaces."""
    block = text.split(f"{phase} net ")[1].split("\n\n")[0]
    lines = block.splitlines()[2:]           # title, header
    rows = {}
    for line in lines:
        if line.startswith("  ") and not line.startswith("  total") and ":" not in line:
            cells = re.split(r"\s{2,}", line.strip())
            rows[cells[0]] = cells
    return rows


def test_check_lists_layers_shapes_and_params_per_phase(mlp_file, capsys):
    assert main(["check", "--net", str(mlp_file)]) == 0
    out = capsys.readouterr().out
    train, test = _rows(out, "TRAIN"), _rows(out, "TEST")
    assert list(train) == ["input", "ip1", "relu1", "ip2", "loss"]
    assert list(test) == [*train, "accuracy"]        # include: {phase: TEST}
    # InnerProduct: weight (num_output, fan_in) + bias (num_output,)
    ip1_params, ip2_params = 16 * 16 + 16, 3 * 16 + 3
    assert train["ip1"] == ["ip1", "InnerProduct", "data -> ip1", "8x16", f"{ip1_params:,}"]
    assert train["ip2"][3:] == ["8x3", f"{ip2_params:,}"]
    assert train["input"][2:4] == ["-> data, label", "8x1x4x4, 8"]
    assert train["relu1"][2] == "ip1 -> ip1"
    assert train["loss"][3] == "scalar"
    assert out.count(f"total parameters: {ip1_params + ip2_params:,}") == 2
    assert "outputs: loss, accuracy" in out


def test_shared_parameters_are_counted_once(shared_file, capsys):
    assert main(["check", "--net", str(shared_file)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out, "TRAIN")
    assert rows["left"][4] == f"{5 * 6 + 5}"
    assert rows["right"][4] == f"{5 * 6 + 5}*"
    assert f"total parameters: {5 * 6 + 5}" in out
    assert "TEST net" not in out                    # no phase rules: TRAIN only


def test_check_runs_as_a_command(mlp_file):
    done = subprocess.run([sys.executable, "-m", "solverkit", "check", "--net", str(mlp_file)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "SoftmaxWithLoss" in done.stdout and f"{mlp_file}: OK" in done.stdout


SOLVER = """\
net: mlp_net.yaml
base_lr: 0.01
lr_policy: multistep
gamma: 0.1
stepvalue: [100, 200]
max_iter: 300
test_interval: 50
test_iter: 2
random_seed: 1
"""


def test_solver_settings_with_defaults_and_rates(mlp_file, capsys):
    solver = mlp_file.parent / "mlp_solver.yaml"
    solver.write_text(SOLVER)
    assert main(["check", "--solver", str(solver), "--set", "type=Adam", "warmup_iter=10"]) == 0
    out = capsys.readouterr().out
    settings = {}
    for line in out.split("\nsolver ")[1].split("learning rate")[0].splitlines()[2:]:
        name, value, origin = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        settings[name] = (value, origin)
    assert settings["type"] == ("Adam", "--set")
    assert settings["base_lr"] == ("0.01", "file")
    assert settings["momentum2"] == ("0.999", "default")       # Adam's own default
    assert settings["weight_decay"] == ("0.0", "default")
    assert "rms_decay" not in settings and "stepsize" not in settings
    rates = {}
    for line in out.split("lr_mult):")[1].split("\n\n")[0].splitlines()[2:]:
        it, rate = line.split()
        rates[int(it.replace(",", ""))] = float(rate)
    # multistep: 0.01 · 0.1^k (k = stepvalues ≤ it), times (it+1)/10 during warm-up
    def expected(it):
        k = sum(s <= it for s in (100, 200))
        return 0.01 * 0.1 ** k * (min(it + 1, 10) / 10)
    assert {0, 9, 10, 99, 100, 199, 200, 299} <= set(rates)
    for it, rate in rates.items():
        assert rate == pytest.approx(expected(it), rel=1e-5)
    assert "TEST net 'tiny_mlp'" in out                       # test_interval > 0


def test_solver_without_tests_checks_the_train_net_only(mlp_file, capsys):
    solver = mlp_file.parent / "mlp_solver.yaml"
    solver.write_text("base_lr: 0.1\nmax_iter: 10\n")
    assert main(["check", "--net", str(mlp_file), "--solver", str(solver)]) == 0
    out = capsys.readouterr().out
    assert "TRAIN net" in out and "TEST net" not in out
    assert re.search(r"lr_policy\s+fixed\s+default", out)


def test_step_policy_rates_around_each_step(tmp_path):
    from solverkit.spec.solver import load_solver_spec
    from solverkit.reports.summary import rate_checkpoints
    spec = load_solver_spec({"base_lr": 0.1, "max_iter": 300, "lr_policy": "step",
                             "gamma": 0.1, "stepsize": 100})
    assert {0, 99, 100, 199, 200, 299} <= set(rate_checkpoints(spec))
    assert max(rate_checkpoints(spec)) == 299


def test_data_sources_are_read_and_counted(tmp_path, capsys):
    import numpy as np
    np.savez(tmp_path / "train.npz", x=np.zeros((20, 1, 3, 3), np.float32),
             y=np.arange(20) % 4)
    net = tmp_path / "data_net.yaml"
    net.write_text("""\
layers:
  - {name: data, type: Data, top: [data, label], source: train.npz, batch_size: 6}
  - {name: ip, type: InnerProduct, bottom: data, top: ip, num_output: 4}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}
""")
    assert main(["check", "--net", str(net)]) == 0
    out = capsys.readouterr().out
    assert "data 'data' reads train.npz: 20 samples, 4 batches per epoch" in out   # ceil(20/6)
    assert re.search(r"data\s+Data\s+-> data, label\s+6x1x3x3, 6\s+-", out)
