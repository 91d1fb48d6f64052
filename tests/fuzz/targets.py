"""What the fuzz suite feeds damaged files to: each target makes its valid seed files and
reads one candidate file the way a user's command would.

A target is ``Target(seeds, read, text)``: ``seeds(folder)`` returns the valid files
(bytes) that mutations start from, writing any fixed companions (a model beside a state,
images beside a list) into ``folder``; ``read(data, folder)`` writes the candidate where
the reader expects it and reads it through the public entry point (``sk.Net`` with a data
layer, ``load_net_spec``, ``Net.load``, ``Solver.restore``...). Every outcome must be a
success or a ``SolverkitError``.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

import solverkit as sk
from solverkit.caffe import messages, weights

RNG = np.random.default_rng(0)


@dataclass
class Target:
    seeds: Callable[[Path], list[bytes]]
    read: Callable[[bytes, Path], None]
    text: bool = False


def data_net(source, phase="TRAIN", **fields):
    """A net of one Data layer reading ``source``, one batch read."""
    layer = {"name": "data", "type": "Data", "top": ["data", "label"], "source": str(source),
             "batch_size": 2, "prefetch": 0, **fields}
    net = sk.Net({"name": "fuzz", "layers": [layer]}, phase=phase, seed=0)
    try:
        net.forward()
    finally:
        net.close()


# ------------------------------------------------------------------ array files

def npz_seeds(folder):
    x = RNG.random((6, 1, 4, 4)).astype(np.float32)
    y = np.arange(6) % 3
    out = []
    for save in (np.savez, np.savez_compressed):
        buffer = io.BytesIO()
        save(buffer, x=x, y=y)
        out.append(buffer.getvalue())
    return out


def npz_read(data, folder):
    path = folder / "train.npz"
    path.write_bytes(data)
    data_net(path)


def npy_seeds(folder):
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6))
    (folder / "labels.npy").write_bytes(buffer.getvalue())
    out = []
    for array in (RNG.random((6, 3)).astype(np.float32), RNG.integers(0, 255, (6, 2, 3, 3),
                                                                       dtype=np.uint8)):
        buffer = io.BytesIO()
        np.save(buffer, array)
        out.append(buffer.getvalue())
    return out


def npy_read(data, folder):
    path = folder / "train.npy"
    path.write_bytes(data)
    # half the cases read the file whole, half stream it from a memory map
    data_net(path, label_source=str(folder / "labels.npy"), stream=len(data) % 2 == 0)


def idx_file(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_seeds(folder):
    images = RNG.integers(0, 255, (6, 28, 28), dtype=np.uint8)
    labels = np.arange(6, dtype=np.uint8) % 10
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_file(labels))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_file(labels), mtime=0))
    return [idx_file(images), gzip.compress(idx_file(images), mtime=0)]


def idx_read(data, folder):
    name = "train-images-idx3-ubyte" + (".gz" if data[:2] == b"\x1f\x8b" else "")
    for old in folder.glob("train-images-idx3-ubyte*"):
        old.unlink()
    path = folder / name
    path.write_bytes(data)
    data_net(folder / "train-images-idx3-ubyte")


def cifar_seeds(folder):
    records = RNG.integers(0, 255, (4, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    return [records.tobytes()]


def cifar_read(data, folder):
    path = folder / "data_batch_1.bin"
    path.write_bytes(data)
    data_net(path)


def csv_seeds(folder):
    rows = ["0.5,1.25,-3,1", "1e-3,2,4.5,0", "7,8,9,2", "0,0,0,1"]
    return ["\n".join(rows).encode(), ("\n".join(rows) + "\n").encode()]


def csv_read(data, folder):
    path = folder / "train.csv"
    path.write_bytes(data)
    data_net(path)


# ------------------------------------------------------------------ specs

NET_YAML = """\
name: fuzz
layers:
  - name: data
    type: Input
    top: data
    shape: [[2, 1, 8, 8]]
  - name: conv1
    type: Convolution
    bottom: data
    top: conv1
    num_output: 4
    kernel_size: 3
    pad: 1
    weight_filler: {type: xavier}
    param: [{lr_mult: 1}, {lr_mult: 2}]
  - name: pool1
    type: Pooling
    bottom: conv1
    top: pool1
    pool: MAX
    kernel_size: 2
    stride: 2
  - name: relu1
    type: ReLU
    bottom: pool1
    top: pool1
  - name: ip1
    type: InnerProduct
    bottom: pool1
    top: ip1
    num_output: 3
    weight_filler: {type: gaussian, std: 0.01}
"""

SOLVER_YAML = """\
net: net.yaml
type: SGD
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: multistep
gamma: 0.1
stepvalue: [10, 20]
max_iter: 30
display: 5
test_interval: 0
snapshot: 10
random_seed: 3
"""

NET_PROTOTXT = """\
name: "fuzz"
input: "data"
input_shape { dim: 2 dim: 1 dim: 8 dim: 8 }
layer {
  name: "conv1"  type: "Convolution"  bottom: "data"  top: "conv1"
  param { lr_mult: 1 }  param { lr_mult: 2 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } }
}
layer {
  name: "pool1"  type: "Pooling"  bottom: "conv1"  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" relu_param { negative_slope: 0.1 } }
layer {
  name: "ip1"  type: "InnerProduct"  bottom: "pool1"  top: "ip1"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.01 } }
}
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""

SOLVER_PROTOTXT = """\
net: "net.prototxt"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.1
stepsize: 10
max_iter: 30
display: 5
snapshot: 10
snapshot_prefix: "fuzz"
solver_type: SGD
"""


def spec_read(name: str, loader):
    def read(data, folder):
        path = folder / name
        path.write_bytes(data)
        loader(path)
    return read


def yaml_net_seeds(folder):
    return [NET_YAML.encode(), yaml.safe_dump(yaml.safe_load(NET_YAML)).encode()]


def yaml_solver_seeds(folder):
    (folder / "net.yaml").write_text(NET_YAML)
    return [SOLVER_YAML.encode()]


def prototxt_net_seeds(folder):
    return [NET_PROTOTXT.encode()]


def prototxt_solver_seeds(folder):
    (folder / "net.prototxt").write_text(NET_PROTOTXT)
    return [SOLVER_PROTOTXT.encode()]


# ------------------------------------------------------------------ weights and states

_NETS: dict[str, sk.Net] = {}


def small_net() -> sk.Net:
    if "net" not in _NETS:
        _NETS["net"] = sk.Net(yaml.safe_load(NET_YAML), phase="TEST", seed=0)
    return _NETS["net"]


def caffemodel_seeds(folder):
    types = {"conv1": "Convolution", "ip1": "InnerProduct"}
    layers = [(name, types[name], [], [], [b.data.copy() for b in blobs])
              for name, blobs in small_net().params.items() if blobs]
    return [weights.encode_caffemodel("fuzz", layers)]


def caffemodel_read(data, folder):
    path = folder / "weights.caffemodel"
    path.write_bytes(data)
    small_net().load(path)


def model_npz_seeds(folder):
    path = folder / "seed.model.npz"
    small_net().save(path)
    return [path.read_bytes()]


def model_npz_read(data, folder):
    path = folder / "weights.model.npz"
    path.write_bytes(data)
    small_net().load(path)


_SOLVERS: dict[str, object] = {}


def solverstate_seeds(folder):
    (folder / "net.yaml").write_text(NET_YAML.replace(
        "    shape: [[2, 1, 8, 8]]",
        "    shape: [[2, 1, 8, 8]]\n  - {name: label, type: Input, top: label, shape: [[2]]}"
    ) + "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip1, label], top: loss}\n")
    spec = yaml.safe_load(SOLVER_YAML)
    spec["snapshot_prefix"] = str(folder / "run")
    solver = sk.Solver(spec, net=str(folder / "net.yaml"))
    solver.net.set_input("data", RNG.random((2, 1, 8, 8)).astype(np.float32))
    solver.net.set_input("label", np.array([0, 1], dtype=np.float32))
    solver.step(2)
    solver.snapshot()
    _SOLVERS["solver"] = solver
    states = sorted(folder.glob("run_iter_*.solverstate.npz"))
    return [states[-1].read_bytes()]


def solverstate_read(data, folder):
    states = sorted(folder.glob("run_iter_*.solverstate.npz"))
    path = states[-1]
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        _SOLVERS["solver"].restore(path)
    finally:
        path.write_bytes(original)


# ------------------------------------------------------------------ Caffe records

def binaryproto_seeds(folder):
    return [messages.encode_blobproto(RNG.random((1, 1, 8, 8)).astype(np.float32)),
            messages.encode_blobproto(RNG.random((1, 8, 8)), double=True, legacy=True)]


def binaryproto_read(data, folder):
    path = folder / "mean.binaryproto"
    path.write_bytes(data)
    x = RNG.random((4, 1, 8, 8)).astype(np.float32)
    np.savez(folder / "d.npz", x=x, y=np.arange(4) % 2)
    data_net(folder / "d.npz", transform={"mean_file": str(path)})


def datum_seeds(folder):
    pixels = RNG.integers(0, 255, (3, 4, 5), dtype=np.uint8)
    return [messages.encode_datum(pixels, label=3),
            messages.encode_datum(pixels.astype(np.float32), label=1)]


def datum_read(data, folder):
    datum = messages.decode_datum(data, file="record")
    if not datum.encoded:
        datum.array(file="record")


def lmdb_seeds(folder):
    import lmdb
    db = folder / "train_lmdb"
    env = lmdb.open(str(db), map_size=1 << 22)
    pixels = RNG.integers(0, 255, (4, 1, 6, 6), dtype=np.uint8)
    with env.begin(write=True) as txn:
        for i in range(4):
            txn.put(b"%08d" % i, messages.encode_datum(pixels[i], label=i % 2))
    env.close()
    return [messages.encode_datum(pixels[0], label=1)]


def lmdb_read(data, folder):
    import lmdb
    db = folder / "train_lmdb"
    env = lmdb.open(str(db), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"%08d" % 2, data)
    env.close()
    from solverkit.data.lmdb_source import Database
    Database.of(db).close()
    data_net(db, backend="LMDB", batch_size=4)


# ------------------------------------------------------------------ list files

def list_seeds(folder):
    from PIL import Image
    for i in range(3):
        Image.fromarray(RNG.integers(0, 255, (5, 6, 3), dtype=np.uint8)).save(
            folder / f"img{i}.png")
    return [b"img0.png 0\nimg1.png 1\nimg2.png 0\n", b"img2.png 2\r\nimg1.png 0"]


def list_read(data, folder):
    path = folder / "list.txt"
    path.write_bytes(data)
    layer = {"name": "data", "type": "ImageData", "top": ["data", "label"],
             "source": str(path), "root_folder": str(folder) + "/", "batch_size": 2,
             "prefetch": 0}
    net = sk.Net({"name": "fuzz", "layers": [layer]}, phase="TRAIN", seed=0)
    try:
        net.forward()
    finally:
        net.close()


TARGETS: dict[str, Target] = {
    "npz": Target(npz_seeds, npz_read),
    "npy": Target(npy_seeds, npy_read),
    "idx": Target(idx_seeds, idx_read),
    "cifar10": Target(cifar_seeds, cifar_read),
    "csv": Target(csv_seeds, csv_read, text=True),
    "yaml_net": Target(yaml_net_seeds, spec_read("net.yaml", sk.load_net_spec), text=True),
    "yaml_solver": Target(yaml_solver_seeds, spec_read("solver.yaml", sk.load_solver_spec),
                          text=True),
    "prototxt_net": Target(prototxt_net_seeds, spec_read("net.prototxt", sk.load_net_spec),
                           text=True),
    "prototxt_solver": Target(prototxt_solver_seeds,
                              spec_read("solver.prototxt", sk.load_solver_spec), text=True),
    "caffemodel": Target(caffemodel_seeds, caffemodel_read),
    "model_npz": Target(model_npz_seeds, model_npz_read),
    "solverstate_npz": Target(solverstate_seeds, solverstate_read),
    "binaryproto": Target(binaryproto_seeds, binaryproto_read),
    "datum": Target(datum_seeds, datum_read),
    "lmdb": Target(lmdb_seeds, lmdb_read),
    "list_file": Target(list_seeds, list_read, text=True),
}
