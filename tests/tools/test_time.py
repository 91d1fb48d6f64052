"""`solverkit time`: a row per layer, the total is the sum of the rows, labels are in range."""

import re

import numpy as np

from solverkit.cli import main
from solverkit.net import Net
from solverkit.reports.timing import random_inputs, time_net


def test_time_prints_a_row_per_layer_and_their_total(mlp_file, capsys):
    assert main(["time", "--net", str(mlp_file), "--iterations", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[2:-2]]
    assert sorted(r[1] for r in rows) == sorted(["input", "ip1", "relu1", "ip2", "loss"])
    totals = [float(r[5]) for r in rows]
    assert totals == sorted(totals, reverse=True)                 # slowest first
    for r in rows:
        assert abs(float(r[3]) + float(r[4]) - float(r[5])) <= 0.0015
    total = re.split(r"\s{2,}", out.splitlines()[-2].strip())
    assert total[0] == "total"
    assert abs(float(total[3]) - sum(totals)) <= 0.001 * len(rows) + 1e-9
    assert abs(sum(float(r[6].rstrip("%")) for r in rows) - 100) < 0.1 * len(rows)


def test_layer_times_add_up_to_at_most_the_measured_pass(shared_file):
    net = Net(shared_file, seed=0)
    report = time_net(net, iterations=5, warmup=1)
    assert [t.name for t in report.layers] == net.layer_names
    assert all(t.forward_ms > 0 for t in report.layers if t.type != "Input")
    assert report.layers[1].backward_ms > 0                 # InnerProduct 'left' ran backward
    measured = report.forward_ms + report.backward_ms
    assert 0 < report.layer_total_ms <= measured * 1.05
    # the clocks are removed afterwards: the layers' own methods run again
    assert "forward" not in vars(net.layers[1])


def test_random_labels_are_integers_in_range(mlp_file):
    net = Net(mlp_file, seed=0)
    inputs = random_inputs(net, np.random.default_rng(1))
    label = inputs["label"]
    assert label.shape == (8,) and np.issubdtype(label.dtype, np.integer)
    assert label.min() >= 0 and label.max() < 3           # ip2 has num_output 3
    assert inputs["data"].shape == (8, 1, 4, 4) and inputs["data"].std() > 0


def test_nets_with_data_layers_read_their_source(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.standard_normal((20, 1, 3, 3)).astype(np.float32),
             y=rng.integers(0, 4, 20))
    net = tmp_path / "data_net.yaml"
    net.write_text("""\
name: from_file
layers:
  - {name: data, type: Data, top: [data, label], source: train.npz, batch_size: 6}
  - {name: ip, type: InnerProduct, bottom: data, top: ip, num_output: 4}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}
""")
    assert main(["time", "--net", str(net), "--iterations", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    names = [re.split(r"\s{2,}", line.strip())[1] for line in out.splitlines()[2:-2]]
    assert sorted(names) == ["data", "ip", "loss"]


def test_a_fused_pair_is_timed_on_the_first_layers_row(mlp_file):
    """ip1 and the in-place relu1 after it run as one product in training: the pair's
    time is ip1's forward, relu1's forward shows none, and the clocks come off again."""
    net = Net(mlp_file, seed=0)
    assert net.layer_specs[net.layer_names.index("relu1")].bottom == ["ip1"]
    report = time_net(net, iterations=3, warmup=1)
    rows = {t.name: t for t in report.layers}
    assert rows["ip1"].forward_ms > 0 and rows["relu1"].forward_ms == 0
    assert rows["relu1"].backward_ms > 0
    assert net.layer("ip1").last_forward.endswith("+ ReLU")
    assert not {"forward", "forward_with_relu"} & set(vars(net.layer("ip1")))
