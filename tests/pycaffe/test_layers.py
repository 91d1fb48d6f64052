"""The layer types pycaffe code needs: Python, MemoryData, Parameter (in prototxt and YAML)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import solverkit as sk
from solverkit.errors import ConfigError, DataError, ShapeError
from solverkit.gradient_check import check_layer_gradients

from .conftest import HERE

PY_LAYER = {"name": "scale", "type": "Python", "bottom": "x", "top": "y",
            "module": "pylayers", "layer": "ChannelScale", "param_str": "1.5"}


def test_python_layer_forward_and_numeric_gradients(pylayers_path):
    rng = np.random.default_rng(0)
    worst = check_layer_gradients(PY_LAYER, {"x": rng.normal(size=(4, 3))})
    assert worst        # the input and the parameter were both checked
    net = sk.Net({"name": "t", "layers": [
        {"name": "in", "type": "Input", "top": "x", "shape": [[2, 3]]}, PY_LAYER]})
    assert net.params["scale"][0].data.tolist() == [1.5, 1.5, 1.5]
    net.params["scale"][0].data[...] = [1, 2, 3]
    out = net.forward(x=np.ones((2, 3)))["y"]
    assert out.tolist() == [[1, 2, 3], [1, 2, 3]]


PROTOTXT = """name: "p"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "scale" type: "Python" bottom: "x" top: "y"
        python_param { module: "pylayers" layer: "ChannelScale" param_str: "2" } }
layer { name: "ph" type: "Python" bottom: "y" top: "z"
        python_param { module: "pylayers" layer: "PhaseTimes" share_in_parallel: true } }
"""


def test_python_layer_module_found_beside_the_net_file(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(HERE / "pylayers.py", folder / "pylayers.py")
    (folder / "net.prototxt").write_text(PROTOTXT)
    monkeypatch.chdir(tmp_path)                 # not the net's folder
    monkeypatch.delitem(sys.modules, "pylayers", raising=False)
    for phase, factor in (("TRAIN", 2), ("TEST", 4)):
        net = sk.Net(str(folder / "net.prototxt"), phase)
        assert net.forward(x=np.ones((2, 3)))["z"].tolist() == [[factor] * 3] * 2
    assert str(folder) not in sys.path          # the lookup leaves sys.path as it was


def test_python_layer_missing_module_or_class_is_a_config_error(tmp_path, pylayers_path):
    (tmp_path / "a.prototxt").write_text(PROTOTXT.replace('"pylayers"', '"no_such_mod"', 1))
    with pytest.raises(ConfigError, match="no_such_mod"):
        sk.Net(str(tmp_path / "a.prototxt"), "TRAIN")
    (tmp_path / "b.prototxt").write_text(PROTOTXT.replace("ChannelScale", "Nope"))
    with pytest.raises(ConfigError, match="no class 'Nope'"):
        sk.Net(str(tmp_path / "b.prototxt"), "TRAIN")


def test_exception_in_setup_reaches_the_net_constructor(pylayers_path):
    spec = {"name": "t", "layers": [
        {"name": "in", "type": "Input", "top": "x", "shape": [[1]]},
        {"name": "bad", "type": "Python", "bottom": "x", "top": "y", "module": "pylayers",
         "layer": "FailsInSetup", "param_str": "because"}]}
    with pytest.raises(ValueError, match="setup refused: because"):
        sk.Net(spec)


def memory_net(batch_size=2):
    return sk.Net({"name": "m", "layers": [
        {"name": "mem", "type": "MemoryData", "top": ["data", "label"],
         "batch_size": batch_size, "channels": 1, "height": 2, "width": 2}]}, "TEST")


def test_memory_data_serves_batches_in_order_and_wraps():
    net = memory_net()
    data = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2)
    net.layer("mem").set_arrays(data, np.arange(6))
    seen = [net.forward()["label"].tolist() for _ in range(4)]
    assert seen == [[0, 1], [2, 3], [4, 5], [0, 1]]
    assert np.array_equal(net.blobs["data"].data, data[:2])
    with pytest.raises(ShapeError, match="multiple of batch_size"):
        net.layer("mem").set_arrays(data[:5], np.arange(5))
    with pytest.raises(DataError, match="set_input_arrays"):
        memory_net().forward()


def test_memory_data_from_prototxt(tmp_path):
    (tmp_path / "m.prototxt").write_text(
        'layer { name: "mem" type: "MemoryData" top: "data" top: "label" '
        'memory_data_param { batch_size: 3 channels: 2 height: 1 width: 4 } }')
    net = sk.Net(str(tmp_path / "m.prototxt"), "TEST")
    assert net.blobs["data"].shape == (3, 2, 1, 4) and net.blobs["label"].shape == (3,)


def test_parameter_layer_is_learnable_and_its_top_is_the_parameter(tmp_path):
    (tmp_path / "p.prototxt").write_text(
        'layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "prod" type: "Eltwise" bottom: "w" bottom: "x" top: "y" '
        'eltwise_param { operation: PROD } }')
    net = sk.Net(str(tmp_path / "p.prototxt"), "TRAIN")
    w = net.params["w"][0]
    assert w.shape == (2, 3) and not w.data.any()          # Caffe: zeros, no filler
    assert [p.key for p in net.learnable_params] == ["w/0"]
    w.data[...] = np.arange(6).reshape(2, 3)
    x = np.full((2, 3), 2.0)
    assert np.array_equal(net.forward(x=x)["y"], 2 * w.data)
    net.backward(y=np.ones((2, 3)))
    net.backward(y=np.ones((2, 3)))                         # parameter diffs accumulate
    assert np.array_equal(w.diff, 2 * x)
    check_layer_gradients({"name": "w", "type": "Parameter", "top": "w", "shape": [3]}, {"x": np.zeros(1)})


def _train_spec(tmp_path, prefix):
    net = {"name": "pynet", "layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"],
         "source": "builtin:digits/train", "batch_size": 16, "shuffle": True,
         "transform": {"scale": 0.0625}},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip",
         "num_output": 10, "weight_filler": {"type": "xavier"}},
        {"name": "scale", "type": "Python", "bottom": "ip", "top": "scaled",
         "module": "pylayers", "layer": "ChannelScale", "param_str": "1"},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scaled", "label"],
         "top": "loss"}]}
    solver = {"base_lr": 0.1, "momentum": 0.9, "max_iter": 40, "snapshot": 20,
              "display": 0, "random_seed": 3, "snapshot_prefix": str(tmp_path / prefix)}
    return net, solver


def test_python_layer_trains_snapshots_and_resumes_exactly(tmp_path, pylayers_path):
    net, solver = _train_spec(tmp_path, "straight")
    straight = sk.Solver(solver, net=net, progress=False)
    straight.solve()
    scale = straight.net.params["scale"][0].data.copy()
    assert not np.allclose(scale, 1)                # the Python layer's parameter learned
    net, solver = _train_spec(tmp_path, "resumed")
    first = sk.Solver(solver, net=net, progress=False)
    first.step(20)
    first.snapshot()
    resumed = sk.Solver(solver, net=net, progress=False)
    resumed.restore(str(tmp_path / "resumed_iter_20.solverstate.npz"))
    resumed.solve()
    for name in ("ip", "scale"):
        for a, b in zip(straight.net.params[name], resumed.net.params[name]):
            assert np.array_equal(a.data, b.data)


def test_python_layer_under_solverkit_train(tmp_path):
    import yaml
    net, solver = _train_spec(tmp_path, "cli")
    solver["max_iter"] = 10
    solver["snapshot"] = 10
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(net))
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump(solver))
    shutil.copy(HERE / "pylayers.py", tmp_path / "pylayers.py")
    run = subprocess.run([sys.executable, "-m", "solverkit", "train", "--net", "net.yaml",
                          "--solver", "solver.yaml", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    model = np.load(tmp_path / "cli_iter_10.model.npz", allow_pickle=False)
    assert model["scale/0"].shape == (10,)
