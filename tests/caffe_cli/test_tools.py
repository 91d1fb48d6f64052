"""Caffe's tools run as commands and checked with independent readers: the ``lmdb``
package, Datum and BlobProto decoded by the ``protobuf`` package (caffe.proto's numbers),
numpy computations of what the records must hold."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from protobuf_oracle import build

from solverkit.caffe_cli import caffe, tools

lmdb = pytest.importorskip("lmdb")

# caffe.proto: Datum channels 1, height 2, width 3, data 4, label 5, float_data 6 (not
# packed), encoded 7; BlobProto num 1 … width 4, data 5 (packed), shape 7
MESSAGES = {
    "Datum": [(1, "channels", "int32", "optional", None), (2, "height", "int32", "optional", None),
              (3, "width", "int32", "optional", None), (4, "data", "bytes", "optional", None),
              (5, "label", "int32", "optional", None),
              (6, "float_data", "float", "repeated", False),
              (7, "encoded", "bool", "optional", None)],
    "BlobShape": [(1, "dim", "int64", "repeated", True)],
    "BlobProto": [(1, "num", "int32", "optional", None), (2, "channels", "int32", "optional", None),
                  (3, "height", "int32", "optional", None), (4, "width", "int32", "optional", None),
                  (5, "data", "float", "repeated", True),
                  (7, "shape", "message", "optional", "BlobShape")],
    "V1LayerParameter": [(2, "bottom", "string", "repeated", None),
                         (3, "top", "string", "repeated", None),
                         (4, "name", "string", "optional", None),
                         (5, "type", "int32", "optional", None),
                         (6, "blobs", "message", "repeated", "BlobProto")],
    "LayerParameter": [(1, "name", "string", "optional", None),
                       (2, "type", "string", "optional", None),
                       (3, "bottom", "string", "repeated", None),
                       (4, "top", "string", "repeated", None),
                       (7, "blobs", "message", "repeated", "BlobProto")],
    "NetParameter": [(1, "name", "string", "optional", None),
                     (2, "layers", "message", "repeated", "V1LayerParameter"),
                     (100, "layer", "message", "repeated", "LayerParameter")],
}


@pytest.fixture(scope="module")
def pb():
    return build(MESSAGES)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def tool(capsys, monkeypatch):
    """Run a Caffe tool's ``main`` in this process, in ``cwd``: its status and output."""
    def run(cwd: Path, name: str, *args) -> Done:
        main = caffe.main if name == "caffe" else getattr(tools, f"{name}_main")
        capsys.readouterr()
        with monkeypatch.context() as patch:
            patch.chdir(cwd)
            status = main(list(args))
        out = capsys.readouterr()
        return Done(status, out.out, out.err)
    return run


def records(db: Path) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(db), readonly=True, lock=False)
    with env.begin() as txn:
        found = list(txn.cursor())
    env.close()
    return found


def write_idx(folder: Path, n: int, rows: int, cols: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    (folder / "images").write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes())
    (folder / "labels").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return images, labels


# ---------------------------------------------------------------- converters
@pytest.mark.parametrize("backend", [["--backend=lmdb"], ["-backend", "lmdb"], ["-backend=lmdb"],
                                     ["--backend", "lmdb"], []])
def test_convert_mnist_data_writes_caffes_records(tmp_path, tool, pb, backend):
    images, labels = write_idx(tmp_path, 7, 5, 4)
    done = tool(tmp_path, "convert_mnist_data", "images", "labels", "db", *backend)
    assert done.returncode == 0, done.stderr
    found = records(tmp_path / "db")
    assert [key for key, _ in found] == [b"%08d" % i for i in range(7)]
    for (_, value), image, label in zip(found, images, labels):
        expected = pb["Datum"](channels=1, height=5, width=4, data=image.tobytes(),
                               label=int(label))
        assert value == expected.SerializeToString()      # byte for byte as Caffe writes


def test_convert_cifar_data_takes_batches_of_any_size(tmp_path, tool, pb):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar"
    folder.mkdir()
    batches = {}
    for name, n in [("data_batch_1", 2), ("data_batch_2", 3), ("data_batch_3", 1),
                    ("data_batch_4", 2), ("data_batch_5", 2), ("test_batch", 3)]:
        batch = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        batch[:, 0] = rng.integers(0, 10, n)
        (folder / f"{name}.bin").write_bytes(batch.tobytes())
        batches[name] = batch
    done = tool(tmp_path, "convert_cifar_data", "cifar", "out", "lmdb")
    assert done.returncode == 0, done.stderr
    train = np.concatenate([batches[f"data_batch_{i}"] for i in range(1, 6)])
    for db, rows in (("cifar10_train_lmdb", train), ("cifar10_test_lmdb", batches["test_batch"])):
        found = records(tmp_path / "out" / db)
        assert [key for key, _ in found] == [b"%05d" % i for i in range(len(rows))]
        for (_, value), row in zip(found, rows):
            expected = pb["Datum"](channels=3, height=32, width=32, data=row[1:].tobytes(),
                                   label=int(row[0]))
            assert value == expected.SerializeToString()
    (folder / "test_batch.bin").write_bytes(b"\0" * 3074)
    again = tool(tmp_path, "convert_cifar_data", "cifar", "out2", "lmdb")
    assert again.returncode == 2 and "test_batch.bin" in again.stderr


def test_convert_imageset_and_compute_image_mean(tmp_path, tool, pb):
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    pixels = {}
    for name in ("a.png", "sub/b.png", "c.png"):
        rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        image.fromarray(rgb).save(root / name)
        pixels[name] = rgb
    (tmp_path / "list.txt").write_text("a.png 0\nsub/b.png 3\nc.png 1\n")
    done = tool(tmp_path, "convert_imageset", "--check_size", "root/", "list.txt", "db")
    assert done.returncode == 0, done.stderr
    found = records(tmp_path / "db")
    assert [key for key, _ in found] == [b"00000000_a.png", b"00000001_sub/b.png",
                                         b"00000002_c.png"]
    for (_, value), (name, label) in zip(found, [("a.png", 0), ("sub/b.png", 3), ("c.png", 1)]):
        datum = pb["Datum"].FromString(value)
        assert (datum.channels, datum.height, datum.width, datum.label) == (3, 5, 6, label)
        bgr = pixels[name][:, :, ::-1].transpose(2, 0, 1)      # Caffe stores BGR, C x H x W
        assert datum.data == bgr.tobytes()
    done = tool(tmp_path, "compute_image_mean", "-backend", "lmdb", "db", "mean.binaryproto")
    assert done.returncode == 0, done.stderr
    blob = pb["BlobProto"].FromString((tmp_path / "mean.binaryproto").read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 6)
    mean = np.mean([pixels[n][:, :, ::-1].transpose(2, 0, 1) for n in pixels], axis=0)
    np.testing.assert_allclose(np.array(blob.data).reshape(3, 5, 6), mean, rtol=1e-6)
    assert "mean_value channel [0]" in done.stderr
    (tmp_path / "mean.binaryproto").write_bytes(b"old")       # a second run replaces it, saying so
    again = tool(tmp_path, "compute_image_mean", "db", "mean.binaryproto")
    assert again.returncode == 0 and "replacing it" in again.stderr
    assert pb["BlobProto"].FromString((tmp_path / "mean.binaryproto").read_bytes()) == blob
    image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).save(root / "c.png")
    mixed = tool(tmp_path, "convert_imageset", "--check_size=true", "root/", "list.txt", "db2")
    assert mixed.returncode == 2 and "--check_size" in mixed.stderr
    assert not (tmp_path / "db2").exists()


def test_extract_features_writes_the_forward_values(tmp_path, tool, pb):
    images, _ = write_idx(tmp_path, 6, 4, 4, seed=5)
    assert tool(tmp_path, "convert_mnist_data", "images", "labels", "db").returncode == 0
    (tmp_path / "net.prototxt").write_text(
        'name: "feat"\n'
        'layer { name: "data" type: "Data" top: "data" top: "label"\n'
        '  transform_param { scale: 0.00390625 }\n'
        '  data_param { source: "db" batch_size: 3 backend: LMDB } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
        '  inner_product_param { num_output: 5 } }\n')
    rng = np.random.default_rng(6)
    weight, bias = rng.standard_normal((5, 16)), rng.standard_normal(5)
    net = pb["NetParameter"](name="feat")
    layer = net.layer.add(name="ip", type="InnerProduct")
    for array in (weight, bias):
        blob = layer.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.astype(np.float32).ravel().tolist())
    (tmp_path / "w.caffemodel").write_bytes(net.SerializeToString())
    done = tool(tmp_path, "extract_features", "w.caffemodel", "net.prototxt", "ip,data",
                "ipdb,datadb", "2", "lmdb", "CPU")
    assert done.returncode == 0, done.stderr
    x = images.reshape(6, 16).astype(np.float32) * np.float32(0.00390625)
    expected = x @ weight.astype(np.float32).T + bias.astype(np.float32)
    found = records(tmp_path / "ipdb")
    assert [key for key, _ in found] == [b"%010d" % i for i in range(6)]
    for (_, value), row in zip(found, expected):
        datum = pb["Datum"].FromString(value)
        assert (datum.channels, datum.height, datum.width) == (5, 1, 1)
        np.testing.assert_allclose(datum.float_data, row, rtol=1e-5, atol=1e-5)
        exact = pb["Datum"](channels=5, height=1, width=1, float_data=list(datum.float_data))
        assert value == exact.SerializeToString()       # float_data unpacked, no label
    data = [pb["Datum"].FromString(v) for _, v in records(tmp_path / "datadb")]
    assert (data[0].channels, data[0].height, data[0].width) == (1, 4, 4)
    np.testing.assert_allclose([d.float_data for d in data], x, rtol=1e-6)


def test_leveldb_and_wrong_arguments_are_clear_errors(tmp_path, tool):
    write_idx(tmp_path, 2, 2, 2)
    done = tool(tmp_path, "convert_mnist_data", "images", "labels", "db", "--backend=leveldb")
    assert done.returncode == 2 and "LMDB" in done.stderr and "Traceback" not in done.stderr
    done = tool(tmp_path, "convert_cifar_data", "in", "out", "leveldb")
    assert done.returncode == 2 and "LMDB" in done.stderr
    done = tool(tmp_path, "compute_image_mean", "--backend=leveldb", "db")
    assert done.returncode == 2 and "LMDB" in done.stderr
    done = tool(tmp_path, "convert_mnist_data", "images")
    assert done.returncode == 1 and "Usage" in done.stdout + done.stderr
    done = tool(tmp_path, "convert_imageset", "--gray=maybe", "a", "b", "c")
    assert done.returncode == 1 and "illegal value 'maybe'" in done.stderr


# ---------------------------------------------------------------- caffe
def test_caffe_usage_and_mistakes(tmp_path, tool):
    for args in ([], ["train", "test"]):
        done = tool(tmp_path, "caffe", *args)
        assert done.returncode == 1 and "usage: caffe <command> <args>" in done.stderr
    done = tool(tmp_path, "caffe", "brew")
    assert done.returncode == 1 and "Unknown action: brew" in done.stderr
    done = tool(tmp_path, "caffe", "train", "--solvr=x")
    assert done.returncode == 1 and "unknown command line flag 'solvr'" in done.stderr
    done = tool(tmp_path, "caffe", "train")
    assert done.returncode == 1 and "Need a solver definition to train." in done.stderr
    done = tool(tmp_path, "caffe", "train", "-solver", "missing.prototxt")
    assert done.returncode == 2 and "missing.prototxt" in done.stderr
    done = tool(tmp_path, "caffe", "train", "--solver=s", "--snapshot=a", "--weights=b")
    assert done.returncode == 1 and "not both" in done.stderr
    done = tool(tmp_path, "caffe", "train", "--solver=s", "--sigint_effect=explode")
    assert done.returncode == 1 and 'Invalid signal effect "explode"' in done.stderr
    for done in (tool(tmp_path, "caffe", "--help"), tool(tmp_path, "caffe", "train", "-help")):
        assert "-sighup_effect" in done.stdout and "default: \"snapshot\"" in done.stdout
    assert all("Traceback" not in d.stderr for d in (done,))
    done = tool(tmp_path, "caffe", "--version")
    assert done.returncode == 0 and done.stdout.startswith("caffe version")


def test_caffe_device_query_time_and_test(tmp_path, tool):
    done = tool(tmp_path, "caffe", "device_query", "--gpu=0")
    assert done.returncode == 0 and "Device: CPU" in done.stderr and "no GPU" in done.stderr
    (tmp_path / "net.prototxt").write_text(
        'name: "t"\n'
        'layer { name: "data" type: "Input" top: "data" top: "label"\n'
        '  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
        '  inner_product_param { num_output: 2 } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')
    done = tool(tmp_path, "caffe", "time", "-model", "net.prototxt", "-iterations", "3")
    assert done.returncode == 0, done.stderr
    for line in ("*** Benchmark begins ***", "Testing for 3 iterations.",
                 "        ip\tforward: ", "        ip\tbackward: ", "Average Forward pass: ",
                 "Average Forward-Backward: ", "*** Benchmark ends ***"):
        assert line in done.stderr, line


def test_caffe_test_prints_caffes_batch_and_final_lines(tmp_path, tool, pb):
    images, labels = write_idx(tmp_path, 4, 2, 2, seed=7)
    assert tool(tmp_path, "convert_mnist_data", "images", "labels", "db").returncode == 0
    (tmp_path / "net.prototxt").write_text(
        'name: "t"\n'
        'layer { name: "data" type: "Data" top: "data" top: "label"\n'
        '  data_param { source: "db" batch_size: 2 backend: LMDB } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
        '  inner_product_param { num_output: 10 } }\n'
        'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"\n'
        '  loss_weight: 2 }\n')
    weight = np.random.default_rng(8).standard_normal((10, 4)).astype(np.float32) * 0.01
    net = pb["NetParameter"](name="t")
    layer = net.layer.add(name="ip", type="InnerProduct")
    for array in (weight, np.zeros(10, np.float32)):
        blob = layer.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.ravel().tolist())
    (tmp_path / "w.caffemodel").write_bytes(net.SerializeToString())
    done = tool(tmp_path, "caffe", "test", "--model", "net.prototxt", "--weights",
                "w.caffemodel", "--iterations", "2")
    assert done.returncode == 0, done.stderr
    logits = images.reshape(4, 4).astype(np.float64) @ weight.T
    shifted = logits - logits.max(axis=1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(4), labels]
    batch = losses.reshape(2, 2).mean(axis=1)
    found = dict(re.findall(r"\] Batch (\d), loss = (\S+)", done.stderr))
    assert [float(found[i]) for i in "01"] == pytest.approx(batch, rel=1e-5)
    final = re.search(r"\] loss = (\S+) \(\* 2 = (\S+) loss\)", done.stderr)
    assert float(final.group(1)) == pytest.approx(batch.mean(), rel=1e-5)
    assert float(final.group(2)) == pytest.approx(2 * batch.mean(), rel=1e-5)
    assert re.search(r"\] Loss: (\S+)", done.stderr)
    assert "Running for 2 iterations." in done.stderr and "] acc = " in done.stderr


def test_installed_console_scripts():
    scripts = Path(sys.executable).parent
    if not (scripts / "caffe").exists():
        pytest.skip("console scripts not installed (pip install -e .)")
    for name in ("caffe", "convert_imageset", "compute_image_mean", "convert_mnist_data",
                 "convert_cifar_data", "extract_features", "upgrade_net_proto_text",
                 "upgrade_net_proto_binary", "upgrade_solver_proto_text"):
        assert (scripts / name).exists(), name
    done = subprocess.run([str(scripts / "caffe"), "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and "caffe version" in done.stdout


# ---------------------------------------------------------------- upgrades
V1_NET = """name: "old"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
"""


def test_upgrade_tools(tmp_path, tool, pb):
    from solverkit.caffe.prototxt import solver_text_source
    from solverkit.spec.net import load_net_spec
    (tmp_path / "old.prototxt").write_text(V1_NET)
    done = tool(tmp_path, "upgrade_net_proto_text", "old.prototxt", "new.prototxt")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "new.prototxt").read_text()
    assert "layer {" in text and 'type: "Convolution"' in text and "layers {" not in text
    spec = load_net_spec(tmp_path / "new.prototxt")
    assert [layer.type for layer in spec.layers] == ["Input", "Convolution", "ReLU"]
    again = tool(tmp_path, "upgrade_net_proto_text", "old.prototxt", "new.prototxt")
    assert again.returncode == 2 and "already exists" in again.stderr

    (tmp_path / "old_solver.prototxt").write_text(
        'net: "new.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\nmomentum: 0.9\n'
        'lr_policy: "multistep"\nstepvalue: 10\nstepvalue: 20\ngamma: 0.1\nmax_iter: 30\n')
    done = tool(tmp_path, "upgrade_solver_proto_text", "old_solver.prototxt", "solver.prototxt")
    assert done.returncode == 0, done.stderr
    upgraded = (tmp_path / "solver.prototxt").read_text()
    assert 'type: "Nesterov"' in upgraded and "solver_type" not in upgraded
    assert solver_text_source(tmp_path / "solver.prototxt").raw == \
        solver_text_source(tmp_path / "old_solver.prototxt").raw

    old = pb["NetParameter"](name="old")
    layer = old.layers.add(name="ip", type=14, bottom=["data"], top=["ip"])     # INNER_PRODUCT
    weight = np.arange(6, dtype=np.float32)
    layer.blobs.add(num=1, channels=1, height=2, width=3, data=weight.tolist())
    layer.blobs.add(num=1, channels=1, height=1, width=2, data=[0.5, -0.5])
    (tmp_path / "old.caffemodel").write_bytes(old.SerializeToString())
    done = tool(tmp_path, "upgrade_net_proto_binary", "old.caffemodel", "new.caffemodel")
    assert done.returncode == 0, done.stderr
    new = pb["NetParameter"].FromString((tmp_path / "new.caffemodel").read_bytes())
    assert not new.layers and len(new.layer) == 1
    upgraded = new.layer[0]
    assert (upgraded.name, upgraded.type, list(upgraded.bottom), list(upgraded.top)) == \
        ("ip", "InnerProduct", ["data"], ["ip"])
    assert [list(b.shape.dim) for b in upgraded.blobs] == [[2, 3], [2]]
    assert list(upgraded.blobs[0].data) == weight.tolist()
