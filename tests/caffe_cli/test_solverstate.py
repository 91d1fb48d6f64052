"""Caffe's snapshot files: .caffemodel + binary SolverState (and their HDF5 forms), read
back by independent readers (the ``protobuf`` package, h5py), and resumes from states
written field by field from caffe.proto's numbers, as Caffe writes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from protobuf_oracle import build

NET = """
name: tiny
layers:
  - {name: data, type: Data, top: [data, label], include: {phase: TRAIN},
     source: "builtin:digits/train", batch_size: 16, shuffle: true, transform: {scale: 0.0625}}
  - {name: data, type: Data, top: [data, label], include: {phase: TEST},
     source: "builtin:digits/test", batch_size: 40, transform: {scale: 0.0625}}
  - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 12,
     weight_filler: {type: xavier}, bias_filler: {type: constant, value: 0.1}}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 10,
     param: [{lr_mult: 1}, {lr_mult: 0}], weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
  - {name: acc, type: Accuracy, bottom: [ip2, label], top: acc, include: {phase: TEST}}
"""

# caffe.proto's numbers: BlobShape.dim 1 (packed); BlobProto num 1, channels 2, height 3,
# width 4, data 5 (packed), shape 7; SolverState iter 1, learned_net 2, history 3,
# current_step 4; NetParameter name 1, layer 100; LayerParameter name 1, type 2, blobs 7
MESSAGES = {
    "BlobShape": [(1, "dim", "int64", "repeated", True)],
    "BlobProto": [(1, "num", "int32", "optional", None), (2, "channels", "int32", "optional", None),
                  (3, "height", "int32", "optional", None), (4, "width", "int32", "optional", None),
                  (5, "data", "float", "repeated", True),
                  (7, "shape", "message", "optional", "BlobShape")],
    "SolverState": [(1, "iter", "int32", "optional", None),
                    (2, "learned_net", "string", "optional", None),
                    (3, "history", "message", "repeated", "BlobProto"),
                    (4, "current_step", "int32", "optional", None)],
    "LayerParameter": [(1, "name", "string", "optional", None),
                       (2, "type", "string", "optional", None),
                       (7, "blobs", "message", "repeated", "BlobProto")],
    "NetParameter": [(1, "name", "string", "optional", None),
                     (100, "layer", "message", "repeated", "LayerParameter")],
}


@pytest.fixture(scope="module")
def pb():
    return build(MESSAGES)


def _spec(folder: Path, kind: str, extra: dict | None = None) -> dict:
    (folder / "net.yaml").write_text(NET)
    spec = {"net": str(folder / "net.yaml"), "type": kind, "base_lr": 0.05, "max_iter": 8,
            "random_seed": 3, "snapshot_prefix": str(folder / "out" / "run"),
            "test_interval": 4, "test_iter": 2}
    spec.update({"SGD": {"momentum": 0.9, "lr_policy": "multistep", "stepvalue": [3, 8],
                         "gamma": 0.5},
                 "Adam": {}, "AdaDelta": {"momentum": 0.95, "base_lr": 1.0}}[kind])
    spec.update(extra or {})
    return spec


def _blob(pb, array: np.ndarray):
    blob = pb["BlobProto"]()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(np.asarray(array, dtype=np.float32).ravel().tolist())
    return blob


def _array(blob) -> np.ndarray:
    return np.array(blob.data, dtype=np.float32).reshape(tuple(blob.shape.dim))


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdaDelta"])
def test_history_is_in_caffes_order(tmp_path, pb, kind):
    """history = every learnable parameter's first state array, then (Adam, AdaDelta) every
    parameter's second one; a parameter with lr_mult 0 keeps zeros; current_step counts
    the multistep steps taken."""
    solver = sk.Solver(_spec(tmp_path, kind, {"snapshot_format": "BINARYPROTO"}), progress=False)
    solver.step(5)
    path = solver.snapshot()
    assert path == tmp_path / "out" / "run_iter_5.solverstate"
    state = pb["SolverState"].FromString(path.read_bytes())
    assert state.iter == 5
    assert state.learned_net == str(tmp_path / "out" / "run_iter_5.caffemodel")
    assert state.current_step == (1 if kind == "SGD" else 0)     # stepvalue 3 passed
    params = solver.net.learnable_params
    names = {"SGD": ["history"], "Adam": ["m", "v"], "AdaDelta": ["history", "update_history"]}
    arrays = solver.updater.state_arrays()
    assert len(state.history) == len(names[kind]) * len(params)
    for slot, name in enumerate(names[kind]):
        for i, param in enumerate(params):
            saved = _array(state.history[slot * len(params) + i])
            if param.lr_mult == 0:
                assert not saved.any()
            else:
                assert saved.any()
                np.testing.assert_array_equal(saved, arrays[f"{param.key}/{name}"])
    model = pb["NetParameter"].FromString(Path(state.learned_net).read_bytes())
    blobs = {layer.name: [_array(b) for b in layer.blobs] for layer in model.layer if layer.blobs}
    for param in params:
        layer, index = param.key.split("/")
        np.testing.assert_array_equal(blobs[layer][int(index)], param.blob.data)
    solver.close()


def test_hdf5_snapshot_has_caffes_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    solver = sk.Solver(_spec(tmp_path, "Adam", {"snapshot_format": "HDF5"}), progress=False)
    solver.step(3)
    path = solver.snapshot()
    assert path.name == "run_iter_3.solverstate.h5"
    params = solver.net.learnable_params
    with h5py.File(path, "r") as state:
        assert state["iter"].shape == (1,) and state["iter"][0] == 3
        assert state["current_step"][0] == 0
        learned = state["learned_net"][()].split(b"\0")[0].decode()
        assert learned.endswith("run_iter_3.caffemodel.h5")
        assert len(state["history"]) == 2 * len(params)
        for i, param in enumerate(params):
            key = f"{param.key}/v"
            if param.lr_mult:
                np.testing.assert_array_equal(state["history"][str(len(params) + i)][()],
                                              solver.updater.state_arrays()[key])
    with h5py.File(learned, "r") as model:
        assert set(model["data"]) == {layer.name for layer in solver.net.layers}
        np.testing.assert_array_equal(model["data/ip1/0"][()], solver.net.params["ip1"][0].data)
    fresh = sk.Net(tmp_path / "net.yaml", phase="TEST")      # --weights X.caffemodel.h5
    fresh.load(learned, allow_extra=True)
    for name in ("ip1", "ip2"):
        for mine, theirs in zip(fresh.params[name], solver.net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    solver.close()


def _caffe_written_state(folder: Path, pb, solver, *, current_step: int) -> Path:
    """The weights and history of ``solver`` as Caffe's files, written with the protobuf
    package from caffe.proto's numbers (the model named relative to the state's folder)."""
    net = pb["NetParameter"](name="tiny")
    for layer in solver.net.layers:
        entry = net.layer.add(name=layer.name, type=layer.spec.type)
        for blob in layer.blobs:
            entry.blobs.append(_blob(pb, blob.data))
    (folder / "caffe").mkdir()
    (folder / "caffe" / "tiny_iter_6.caffemodel").write_bytes(net.SerializeToString())
    state = pb["SolverState"](iter=solver.iter, learned_net="caffe/tiny_iter_6.caffemodel",
                              current_step=current_step)
    arrays = solver.updater.state_arrays()
    for param in solver.net.learnable_params:
        history = arrays.get(f"{param.key}/history", np.zeros_like(param.blob.data))
        state.history.append(_blob(pb, history))
    path = folder / "caffe" / "tiny_iter_6.solverstate"
    path.write_bytes(state.SerializeToString())
    return path


def test_a_state_written_as_caffe_writes_it_resumes(tmp_path, pb, caplog, monkeypatch):
    first = sk.Solver(_spec(tmp_path, "SGD"), progress=False)
    first.step(6)
    path = _caffe_written_state(tmp_path, pb, first, current_step=1)
    second = sk.Solver(_spec(tmp_path, "SGD", {"snapshot_prefix": str(tmp_path / "b" / "r")}),
                       progress=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    second.restore(path)        # learned_net is not there from the cwd: found beside the state
    assert second.iter == 6
    for p, q in zip(first.net.learnable_params, second.net.learnable_params):
        np.testing.assert_array_equal(p.blob.data, q.blob.data)
    restored = second.updater.state_arrays()
    for key, array in first.updater.state_arrays().items():
        np.testing.assert_array_equal(restored[key], array)
    assert second.smoothed_losses == []            # Caffe's resume: a new loss window
    assert "current_step" not in caplog.text
    second.solve()
    assert second.iter == 8
    first.close()


def test_a_changed_step_count_is_reported(tmp_path, pb, caplog):
    first = sk.Solver(_spec(tmp_path, "SGD"), progress=False)
    first.step(6)
    path = _caffe_written_state(tmp_path, pb, first, current_step=0)
    second = sk.Solver(_spec(tmp_path, "SGD", {"snapshot_prefix": str(tmp_path / "b" / "r")}),
                       progress=False)
    second.restore(path)
    assert "current_step is 0" in caplog.text
    first.close()
    second.close()


def test_without_the_side_file_the_resume_is_caffes(tmp_path):
    solver = sk.Solver(_spec(tmp_path, "Adam", {"snapshot_format": "BINARYPROTO"}),
                       progress=False)
    solver.step(4)
    path = solver.snapshot()
    weights = {p.key: p.blob.data.copy() for p in solver.net.learnable_params}
    history = {k: v.copy() for k, v in solver.updater.state_arrays().items()}
    solver.step(2)
    solver.close()
    Path(f"{path}.sk.npz").unlink()
    again = sk.Solver(_spec(tmp_path, "Adam", {"snapshot_format": "BINARYPROTO"}),
                      progress=False)
    again.restore(path)
    assert again.iter == 4 and again.smoothed_losses == []
    for p in again.net.learnable_params:
        np.testing.assert_array_equal(p.blob.data, weights[p.key])
    for key, array in again.updater.state_arrays().items():
        np.testing.assert_array_equal(array, history[key])
    again.close()


def _cli(cwd: Path, *args):
    return subprocess.run([sys.executable, "-m", "solverkit", "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def _caffe(cwd: Path, *args):
    code = "import sys; from solverkit.caffe_cli.caffe import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def test_solverkit_train_snapshot_resumes_a_solverstate_bit_exactly(tmp_path):
    import yaml
    for name, max_iter in (("straight", 8), ("split", 4)):
        folder = tmp_path / name
        folder.mkdir()
        spec = _spec(folder, "SGD", {"snapshot_format": "BINARYPROTO", "max_iter": max_iter,
                                     "snapshot_prefix": "out/run"})
        (folder / "solver.yaml").write_text(yaml.safe_dump(spec))
        assert _cli(folder, "train", "--solver", "solver.yaml").returncode == 0
    spec["max_iter"] = 8
    (tmp_path / "split" / "solver.yaml").write_text(yaml.safe_dump(spec))
    done = _cli(tmp_path / "split", "train", "--solver", "solver.yaml", "--snapshot",
                "out/run_iter_4.solverstate")
    assert done.returncode == 0, done.stderr
    assert "run_iter_8.caffemodel" in done.stdout
    a = (tmp_path / "straight" / "out" / "run_iter_8.caffemodel").read_bytes()
    b = (tmp_path / "split" / "out" / "run_iter_8.caffemodel").read_bytes()
    assert a == b


@pytest.mark.parametrize("content", [b"\x08", b"\x1a\xff\xff\xff\x0f", b"PK\x03\x04 zip"])
def test_a_corrupt_solverstate_is_exit_2_naming_it(tmp_path, content):
    import yaml
    spec = _spec(tmp_path, "SGD", {"snapshot_prefix": "out/run"})
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "bad.solverstate").write_bytes(content)
    done = _caffe(tmp_path, "train", "--solver=solver.yaml", "--snapshot=bad.solverstate")
    assert done.returncode == 2
    assert "bad.solverstate" in done.stderr and "Traceback" not in done.stderr


def test_a_fifo_as_solverstate_is_refused_at_once(tmp_path):
    import yaml
    spec = _spec(tmp_path, "SGD", {"snapshot_prefix": "out/run"})
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump(spec))
    os.mkfifo(tmp_path / "fifo.solverstate")
    done = _caffe(tmp_path, "train", "--solver", "solver.yaml", "-snapshot",
                  "fifo.solverstate")
    assert done.returncode == 2
    assert "fifo.solverstate" in done.stderr and "not a regular file" in done.stderr
