"""One plugin file (tests/plugin_extensions.py) extends every registry: its data format is
read by the Data layer, its update rule and policy train from the command line and resume
bit-exactly with its callback's state, its exporter writes ``solverkit export -o x.shapes``, its layer exports to ONNX
through its own converter, and ``schema``/``check`` list them. Names that clash with a
built-in one are errors naming both."""

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from solverkit.data import register_source_format
from solverkit.export import register_exporter
from solverkit.export.onnx_model import register_onnx

TESTS = Path(__file__).resolve().parent

NET = """\
plugins: [plugin_extensions]
layers:
  - {name: data, type: Data, top: [data, label], source: train.tsv, batch_size: 8,
     include: {phase: TRAIN}}
  - {name: data, type: Data, top: [data, label], source: test.tsv, batch_size: 10,
     include: {phase: TEST}}
  - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 6,
     weight_filler: {type: xavier}}
  - {name: double, type: Doubled, bottom: ip1, top: doubled}
  - {name: ip2, type: InnerProduct, bottom: doubled, top: ip2, num_output: 3,
     weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
"""

SOLVER = """\
net: net.yaml
plugins: [plugin_extensions]
type: ScaledSign
scale: 0.5
lr_policy: quartering
stepsize: 2
base_lr: 0.01
max_iter: 6
test_interval: 3
test_iter: 2
random_seed: 7
callbacks:
  - {type: CountTestRounds, every: 2}
"""


def run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "solverkit", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def write_tsv(path, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = rng.integers(0, 3, n)
    np.savetxt(path, np.column_stack([x, y]), delimiter="\t", fmt="%.6f")
    return np.loadtxt(path, delimiter="\t", dtype=np.float32)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    write_tsv(tmp_path / "train.tsv", 24, seed=1)
    write_tsv(tmp_path / "test.tsv", 20, seed=2)
    (tmp_path / "net.yaml").write_text(NET)
    (tmp_path / "solver.yaml").write_text(SOLVER)
    return tmp_path


def test_the_data_layer_reads_the_plugin_format(files):
    table = np.loadtxt(files / "train.tsv", delimiter="\t", dtype=np.float32)
    net = sk.Net(files / "net.yaml", phase="TRAIN")
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, table[:8, :4])
    np.testing.assert_array_equal(net.blobs["label"].data, table[:8, 4])
    assert net.layer("data").dataset.source_format == "tsv"
    net.close()


def test_train_resume_export_schema_and_check_from_the_command_line(files):
    straight = run("train", "--solver", "solver.yaml", "--set", "snapshot_prefix=straight/run",
                   "--quiet", cwd=files)
    assert straight.returncode == 0, straight.stderr
    first = run("train", "--solver", "solver.yaml", "--set", "max_iter=3",
                "snapshot_prefix=resumed/run", "--quiet", cwd=files)
    assert first.returncode == 0, first.stderr
    resumed = run("train", "--solver", "solver.yaml", "--set", "snapshot_prefix=resumed/run",
                  "--resume", "latest", "--quiet", cwd=files)
    assert resumed.returncode == 0, resumed.stderr
    weights = files / "straight" / "run_iter_6.model.npz"
    with np.load(weights) as a, np.load(files / "resumed" / "run_iter_6.model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if key != "__meta__":
                np.testing.assert_array_equal(a[key], b[key])
    with np.load(files / "straight" / "run_iter_6.solverstate.npz") as state:
        meta = json.loads(str(state["__meta__"]))
        assert meta["type"] == "ScaledSign"
    with np.load(files / "resumed" / "run_iter_6.solverstate.npz") as state:
        resumed_meta = json.loads(str(state["__meta__"]))
    # tests at 3 and 6 (and at 0 when the solver tests first): every second one counted
    counted = meta["callbacks"]["CountTestRounds"]
    assert counted["count"] == counted["seen"] // 2 and counted["seen"] >= 2
    assert resumed_meta["callbacks"]["CountTestRounds"] == counted
    with open(files / "straight" / "run_log.csv", newline="") as log:
        rates = {int(row["iter"]): float(row["lr"]) for row in csv.DictReader(log)}
    assert [rates[it] for it in range(6)] == [0.01, 0.01, 0.0025, 0.0025, 0.000625, 0.000625]

    exported = run("export", "--net", "net.yaml", "--weights", weights, "-o", "model.shapes",
                   cwd=files)
    assert exported.returncode == 0, exported.stderr
    lines = (files / "model.shapes").read_text().splitlines()
    assert lines == ["data []", "ip1 [[6, 4], [6]]", "double []", "ip2 [[3, 6], [3]]",
                     "prob []"]                 # the deploy net: an Input, Softmax 'prob'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((files / "model.shapes").stat().st_mode) == 0o666 & ~mask
    assert not [p for p in files.iterdir() if p.name.startswith(".model")]   # no temporary
    unknown = run("export", "--net", "net.yaml", "--weights", weights, "-o", "model.xyz",
                  cwd=files)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "*.shapes" in unknown.stderr and "*.onnx" in unknown.stderr

    schema = run("schema", "-o", "schemas", "--plugins", "plugin_extensions", cwd=files)
    assert schema.returncode == 0, schema.stderr
    assert "tsv (.tsv)" in schema.stdout and "shapes (.shapes)" in schema.stdout
    net_schema = (files / "schemas" / "net.schema.json").read_text()
    assert '"tsv"' in net_schema and '"Doubled"' in net_schema
    solver_schema = json.loads((files / "schemas" / "solver.schema.json").read_text())
    assert "ScaledSign" in solver_schema["properties"]["type"]["enum"]
    assert "quartering" in solver_schema["properties"]["lr_policy"]["enum"]
    assert "CountTestRounds" in json.dumps(solver_schema)
    checked = run("check", "--solver", "solver.yaml", cwd=files)
    assert checked.returncode == 0, checked.stderr
    assert "reads train.tsv: 24 samples, 3 batches per epoch (tsv format)" in checked.stdout
    assert "ScaledSign" in checked.stdout and "quartering" in checked.stdout
    assert "CountTestRounds" in checked.stdout


def test_the_plugin_rule_and_policy_update_as_written(files):
    solver = sk.Solver(files / "solver.yaml", progress=False)
    assert [solver.rate(it) for it in range(5)] == [0.01, 0.01, 0.0025, 0.0025, 0.000625]
    before = [p.blob.data.copy() for p in solver.updater.params]
    solver.step(1)
    for param, w in zip(solver.updater.params, before):
        np.testing.assert_array_equal(param.blob.data, w - 0.01 * 0.5 * np.sign(param.blob.diff))
    solver.close()


def test_the_plugin_layer_exports_to_onnx_with_its_converter(files):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net = sk.Net(files / "net.yaml", phase="TRAIN", seed=3)
    net.save(files / "w.npz")
    net.close()
    done = run("export", "--net", "net.yaml", "--weights", "w.npz", "-o", "m.onnx", cwd=files)
    assert done.returncode == 0, done.stderr
    deploy = sk.deploy_net(files / "net.yaml")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    reference = sk.Net(deploy, phase="TEST")
    reference.load(files / "w.npz", allow_extra=True)
    expected = reference.forward(data=x)
    session = ort.InferenceSession(str(files / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"data": x})
    np.testing.assert_allclose(got[0], next(iter(expected.values())), rtol=1e-5, atol=1e-6)


def test_names_clashing_with_built_ins_are_errors_naming_both():
    def reader(path, params):
        return np.zeros((1, 1)), None

    with pytest.raises(sk.ConfigError, match=r"source format 'npz' is registered twice "
                       r"\(solverkit\.data\.sources\.Npz and .*reader\)"):
        register_source_format("npz", suffixes=[".npz"])(reader)
    with pytest.raises(sk.ConfigError, match=r"exporter 'onnx' is registered twice "
                       r"\(solverkit\.export\.onnx_model\.OnnxExporter and .*writer\)"):
        def writer(net, path):
            pass
        register_exporter("onnx", suffixes=[".onnx2"])(writer)
    with pytest.raises(sk.ConfigError, match=r"suffix '\.onnx' of exporter 'mine'.* taken by "
                       r"exporter 'onnx'"):
        register_exporter("mine", suffixes=[".onnx"])(writer)
    with pytest.raises(sk.ConfigError, match=r"ONNX converter of layer type 'ReLU' is "
                       r"registered twice \(solverkit\.export\.onnx_model\._relu and "):
        register_onnx("ReLU")(reader)

