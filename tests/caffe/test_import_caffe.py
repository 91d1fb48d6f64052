"""``solverkit import-caffe`` writes YAML that builds the same net or solver, and a Caffe
LeNet trains from its prototxt solver as the YAML config does, resuming bit-exactly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import caffe_texts as caffe
import numpy as np
import pytest

import solverkit as sk
from solverkit.spec import load_net_spec, load_solver_spec

CAFFE_DIGITS = Path(__file__).resolve().parents[2] / "configs" / "digits" / "caffe"
YAML_DIGITS = CAFFE_DIGITS.parent
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def cli(*args, cwd=None, check=True):
    done = subprocess.run([sys.executable, "-m", "solverkit", *map(str, args)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=600, check=False)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def params(net) -> dict[str, np.ndarray]:
    return {f"{layer.name}/{j}": blob.data for layer in net.layers
            for j, blob in enumerate(layer.blobs)}


@pytest.mark.parametrize("text", ["LENET_V1", "INCEPTION"])
def test_imported_net_yaml_builds_the_identical_net(tmp_path, text):
    source = tmp_path / "net.prototxt"
    source.write_text(getattr(caffe, text))
    out = tmp_path / "converted" / "net.yaml"
    cli("import-caffe", source, "-o", out)
    assert out.read_text().startswith("# converted from the Caffe net")
    assert load_net_spec(out).to_dict() == load_net_spec(source).to_dict()
    a = sk.Net(source, phase="TRAIN", seed=7)
    b = sk.Net(out, phase="TRAIN", seed=7)
    assert a.blobs.keys() == b.blobs.keys()
    for key, value in params(a).items():
        assert np.array_equal(value, params(b)[key]), key
    if text == "INCEPTION":
        return                          # a big forward; the same parameters are enough
    x = np.random.default_rng(0).standard_normal(a.blobs["data"].shape).astype(np.float32)
    np.testing.assert_array_equal(a.forward(data=x)[a.spec.layers[-1].top[0]],
                                  b.forward(data=x)[b.spec.layers[-1].top[0]])


def test_imported_solver_yaml_is_the_same_solver(tmp_path, monkeypatch):
    root = tmp_path / "caffe"
    (root / "examples" / "mnist").mkdir(parents=True)
    (root / "examples/mnist/lenet_train_test.prototxt").write_text(caffe.LENET_V1)
    (root / "examples/mnist/lenet_solver.prototxt").write_text(caffe.LENET_SOLVER)
    out = tmp_path / "yaml" / "solver.yaml"
    cli("import-caffe", "examples/mnist/lenet_solver.prototxt", "-o", out, cwd=root)
    text = out.read_text()
    assert "solver_mode" not in text and "net: ../caffe/examples/mnist/lenet_train_test" in text
    ours = load_solver_spec(out)
    monkeypatch.chdir(root)                     # Caffe's paths start at its root
    caffe_spec = load_solver_spec("examples/mnist/lenet_solver.prototxt")
    assert ours.model_dump(exclude={"net"}) == caffe_spec.model_dump(exclude={"net"})
    assert ours.resolve(ours.net).resolve() == Path(caffe_spec.net).resolve()


def _train(solver, prefix, *extra):
    done = cli("train", "--quiet", "--solver", solver, "--set", f"snapshot_prefix={prefix}",
               *extra)
    outputs = dict(re.findall(r"Test net output #\d+: (\w+) = (\S+)", done.stdout))
    return {name: float(value) for name, value in outputs.items()}


def _model(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files if k != "__meta__"}


@pytest.mark.slow
def test_caffe_lenet_trains_like_the_yaml_config_and_resumes_bit_exactly(tmp_path):
    solver = CAFFE_DIGITS / "lenet_solver.prototxt"
    caffe_run = _train(solver, tmp_path / "caffe" / "run")
    yaml_run = _train(YAML_DIGITS / "lenet_solver.yaml", tmp_path / "yaml" / "run")
    assert caffe_run["accuracy"] >= 0.97 and yaml_run["accuracy"] >= 0.97
    assert abs(caffe_run["accuracy"] - yaml_run["accuracy"]) <= 0.02
    # resumed from the snapshot of iteration 300: the same weights, bit for bit
    _train(solver, tmp_path / "split" / "run", "--resume",
           tmp_path / "caffe" / "run_iter_300.solverstate.npz")
    straight = _model(tmp_path / "caffe" / "run_iter_600.model.npz")
    resumed = _model(tmp_path / "split" / "run_iter_600.model.npz")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert np.array_equal(straight[key], resumed[key]), key
    # the YAML import-caffe writes of net and solver trains to the same weights too
    net_yaml, solver_yaml = tmp_path / "net.yaml", tmp_path / "solver.yaml"
    cli("import-caffe", CAFFE_DIGITS / "lenet_train_test.prototxt", "-o", net_yaml)
    cli("import-caffe", solver, "-o", solver_yaml)
    _train(solver_yaml, tmp_path / "imported" / "run", "max_iter=300", "--net", net_yaml)
    halfway = _model(tmp_path / "caffe" / "run_iter_300.model.npz")
    converted = _model(tmp_path / "imported" / "run_iter_300.model.npz")
    assert halfway.keys() == converted.keys()
    for key in halfway:
        assert np.array_equal(halfway[key], converted[key]), key


@pytest.mark.slow
def test_imported_net_finds_its_data_from_another_folder(tmp_path, rng):
    (tmp_path / "caffe").mkdir()
    (tmp_path / "caffe" / "cifar10_quick_train_test.prototxt").write_text(caffe.CIFAR10_QUICK)
    for name in ("cifar10_train", "cifar10_test"):
        np.savez(tmp_path / "caffe" / f"{name}.npz",
                 x=rng.uniform(0, 255, (100, 3, 32, 32)).astype(np.float32),
                 y=rng.integers(0, 10, 100))
    from solverkit.caffe.messages import encode_blobproto
    (tmp_path / "caffe" / "mean.binaryproto").write_bytes(
        encode_blobproto(np.full((1, 3, 32, 32), 100.0, np.float32)))
    out = tmp_path / "yaml" / "net.yaml"
    cli("import-caffe", tmp_path / "caffe" / "cifar10_quick_train_test.prototxt", "-o", out)
    assert "source: ../caffe/cifar10_train.npz" in out.read_text()
    a = sk.Net(tmp_path / "caffe" / "cifar10_quick_train_test.prototxt", seed=2)
    b = sk.Net(out, seed=2)
    np.testing.assert_array_equal(a.forward()["loss"], b.forward()["loss"])
