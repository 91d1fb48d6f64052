"""Every source format read from a small file the test writes byte for byte, and bad data
reported as a DataError that names the file, the layer and the field."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml

import solverkit as sk


# ----------------------------------------------------------------- files in each format
def idx_bytes(array: np.ndarray, type_code=0x08) -> bytes:
    """An IDX file: 0x00 0x00, type, ndim; the sizes as big-endian uint32; the values."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_code == 0x08 else ">f4").tobytes()


def cifar_bytes(images: np.ndarray, labels) -> bytes:
    """CIFAR-10 binary: per image one label byte, then 1024 red, 1024 green, 1024 blue bytes."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.append(int(label))
        for channel in image:                      # (32, 32) planes, row-major
            out += channel.astype(np.uint8).tobytes()
    return bytes(out)


def images(n, c, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, data_net, take, gz):
    x, y = images(6, 1, 28, 28)[:, 0], np.array([3, 1, 4, 1, 5, 9])
    suffix = ".gz" if gz else ""
    write = gzip.compress if gz else bytes
    (tmp_path / f"t10k-images-idx3-ubyte{suffix}").write_bytes(write(idx_bytes(x)))
    (tmp_path / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(write(idx_bytes(y)))
    net = data_net(source=str(tmp_path / f"t10k-images-idx3-ubyte{suffix}"), batch_size=6)
    (data,), (labels,) = take(net, 1)
    assert data.shape == (6, 1, 28, 28) and data.dtype == np.float32
    np.testing.assert_array_equal(data[:, 0], x)
    np.testing.assert_array_equal(labels, y)


def test_cifar10_batches_by_glob(tmp_path, data_net, take):
    x = images(5, 3, 32, 32, seed=1)
    y = np.array([0, 9, 2, 7, 5])
    (tmp_path / "data_batch_1.bin").write_bytes(cifar_bytes(x[:3], y[:3]))
    (tmp_path / "data_batch_2.bin").write_bytes(cifar_bytes(x[3:], y[3:]))
    net = data_net(source=str(tmp_path / "data_batch_*.bin"), batch_size=5)
    (data,), (labels,) = take(net, 1)
    assert data.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(data, x)          # channel 0 is the red plane
    np.testing.assert_array_equal(labels, y)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_csv_is_one_error_and_no_numpy_warning(tmp_path, data_net, text):
    (tmp_path / "empty.csv").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(sk.DataError, match="empty.csv' has no rows"):
            data_net(source=str(tmp_path / "empty.csv"), batch_size=1)


def test_a_csv_value_beyond_float32_names_its_cell(tmp_path, data_net):
    (tmp_path / "big.csv").write_text("1,2,0\n3,1e300,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(sk.DataError, match="row 2, column 2: 1e\\+300 is beyond float32"):
            data_net(source=str(tmp_path / "big.csv"), batch_size=1)


def test_csv_label_column(tmp_path, data_net, take):
    rows = np.array([[1.5, -2.0, 1], [0.25, 3.0, 0], [4.0, 5.5, 2]])
    (tmp_path / "points.csv").write_text("\n".join(",".join(f"{v:g}" for v in r) for r in rows))
    net = data_net(source=str(tmp_path / "points.csv"), batch_size=3)
    (data,), (labels,) = take(net, 1)
    assert data.shape == (3, 2)
    np.testing.assert_array_equal(data, rows[:, :2])
    np.testing.assert_array_equal(labels, rows[:, 2])
    first = data_net(source=str(tmp_path / "points.csv"), batch_size=3, label_column=0,
                     label_type="value")
    (data,), (labels,) = take(first, 1)
    np.testing.assert_array_equal(data, rows[:, 1:])
    np.testing.assert_array_equal(labels, rows[:, 0])
    none = data_net(source=str(tmp_path / "points.csv"), batch_size=3, label_column=None,
                    top=["data"])
    (data,), _ = take(none, 1)
    np.testing.assert_array_equal(data, rows)


def test_npy_pair(tmp_path, data_net, take):
    x = images(4, 2, 3, 3).astype(np.float32) / 7
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([[1], [0], [1], [1]]))
    net = data_net(source=str(tmp_path / "x.npy"), label_source=str(tmp_path / "y.npy"),
                   batch_size=4)
    (data,), (labels,) = take(net, 1)
    np.testing.assert_array_equal(data, x)
    np.testing.assert_array_equal(labels, [1, 0, 1, 1])


def test_hdf5(tmp_path, data_net, take):
    h5py = pytest.importorskip("h5py")
    x = images(3, 1, 4, 4).astype(np.float32)
    with h5py.File(tmp_path / "train.h5", "w") as f:
        f["data"] = x
        f["label"] = np.array([2.0, 0.0, 1.0])
    net = data_net(source=str(tmp_path / "train.h5"), batch_size=3)
    (data,), (labels,) = take(net, 1)
    np.testing.assert_array_equal(data, x)
    np.testing.assert_array_equal(labels, [2, 0, 1])


def test_caffe_binaryproto_mean(tmp_path, data_net, take):
    """A BlobProto as Caffe's compute_image_mean writes it: num, channels, height, width
    (varints), then data as packed floats."""
    mean = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)

    def varint_field(number, value):
        return bytes([number << 3, value])

    payload = mean.astype("<f4").tobytes()
    proto = (varint_field(1, 1) + varint_field(2, 2) + varint_field(3, 3) + varint_field(4, 3)
             + bytes([5 << 3 | 2, len(payload)]) + payload)
    (tmp_path / "mean.binaryproto").write_bytes(proto)
    x = images(2, 2, 3, 3)
    net = data_net(source=(x, np.zeros(2)), batch_size=2,
                   transform={"mean_file": str(tmp_path / "mean.binaryproto")})
    (data,), _ = take(net, 1)
    np.testing.assert_array_equal(data, x.astype(np.float32) - mean)


# ----------------------------------------------------------------- bad data
def _bad(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def _npz(tmp_path, name, **arrays):
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


BAD_SOURCES = {
    "missing file": (lambda t: t / "nowhere.npz", {}, "does not exist"),
    "unknown format": (lambda t: _bad(t, "points.dat", "1,2"), {}, "cannot tell the format"),
    "truncated idx": (lambda t: _bad(t, "a-images-idx3-ubyte", idx_bytes(images(3, 1, 4, 4)[:, 0])
                                     [:-5]), {}, "is truncated"),
    "wrong magic": (lambda t: _bad(t, "b-images-idx3-ubyte", b"\x00\x00\x07\x03" + bytes(12)),
                    {}, "wrong magic number 0x00000703"),
    "truncated gzip": (lambda t: _bad(t, "c-images-idx3-ubyte.gz", gzip.compress(
        idx_bytes(images(3, 1, 4, 4)[:, 0]))[:-9]), {}, "gzip"),
    "idx label out of range": (
        lambda t: (_bad(t, "d-labels-idx1-ubyte", idx_bytes(np.array([1, 10, 2]))),
                   _bad(t, "d-images-idx3-ubyte", idx_bytes(images(3, 1, 4, 4)[:, 0])))[1],
        {}, "label 10 of sample 1 is out of range for 10 classes"),
    "cifar label out of range": (
        lambda t: _bad(t, "data_batch_9.bin", cifar_bytes(images(2, 3, 32, 32), [3, 12])),
        {}, "label 12 of sample 1 is out of range"),
    "cifar truncated": (
        lambda t: _bad(t, "data_batch_8.bin", cifar_bytes(images(2, 3, 32, 32), [3, 1])[:-1]),
        {}, "not a whole number of 3073-byte records"),
    "negative label": (lambda t: _npz(t, "neg.npz", x=np.zeros((3, 2)), y=np.array([0, -1, 1])),
                       {}, "label -1 of sample 1 is negative"),
    "fractional label": (lambda t: _npz(t, "frac.npz", x=np.zeros((3, 2)), y=np.array([0, .5, 1])),
                         {}, "label 0.5 of sample 1 is not a class number"),
    "length mismatch": (lambda t: _npz(t, "len.npz", x=np.zeros((5, 2)), y=np.zeros(4)),
                        {}, "the data has 5 samples but there are 4 labels"),
    "missing key": (lambda t: _npz(t, "keys.npz", images=np.zeros((5, 2))), {"x_key": "image"},
                    "did you mean 'images'"),
    "csv cell": (lambda t: _bad(t, "cells.csv", "1,2,0\n3,four,1\n"), {},
                 "row 2, column 2: 'four' is not a number"),
    "csv header": (lambda t: _bad(t, "head.csv", "a,b,label\n1,2,0\n"), {},
                   "row 1, column 1: 'a' is not a number (the file must have no header line)"),
    "csv ragged": (lambda t: _bad(t, "ragged.csv", "1,2,0\n3,1\n"), {},
                   "row 2 has 2 columns but the rows before it have 3"),
    "batch too large": (lambda t: _npz(t, "small.npz", x=np.zeros((5, 2)), y=np.zeros(5)),
                        {"batch_size": 6}, "batch_size 6 is larger than the data set"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_data_names_the_file_layer_and_field(tmp_path, data_net, case):
    make, fields, message = BAD_SOURCES[case]
    path = make(tmp_path)
    fields = {"batch_size": 2, **fields}
    with pytest.raises(sk.DataError) as caught:
        data_net(source=str(path), **fields)
    text = str(caught.value)
    assert message in text
    assert path.name in text and "layer 'data'" in text and "field '" in text


def test_builtin_name_and_missing_labels(data_net):
    with pytest.raises(sk.DataError, match="did you mean 'digits/test'"):
        data_net(source="builtin:digits/tset", batch_size=2)
    with pytest.raises(sk.DataError, match="has no labels for top 'label'"):
        data_net(source=(np.zeros((4, 2)),), batch_size=2)


def test_missing_h5py_says_which_extra(tmp_path, data_net, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)          # import h5py now fails
    path = _bad(tmp_path, "train.h5", b"")
    with pytest.raises(sk.DataError, match=r"needs h5py: pip install 'solverkit\[hdf5\]'"):
        data_net(source=str(path), batch_size=2)


def test_cli_bad_data_exits_2_without_traceback(tmp_path):
    (tmp_path / "cells.csv").write_text("1,2,0\n3,x,1\n")
    net = {"name": "bad", "layers": [
        {"name": "points", "type": "Data", "top": ["data", "label"], "source": "cells.csv",
         "batch_size": 1},
        {"name": "score", "type": "InnerProduct", "bottom": "data", "top": "score",
         "num_output": 2},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["score", "label"], "top": "loss"}]}
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(net, sort_keys=False))
    (tmp_path / "solver.yaml").write_text("net: net.yaml\nbase_lr: 0.1\nmax_iter: 1\n")
    run = subprocess.run([sys.executable, "-m", "solverkit", "train", "--solver", "solver.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "net.yaml" in run.stderr and "layer 'points'" in run.stderr
    assert "cells.csv" in run.stderr and "row 2, column 2: 'x' is not a number" in run.stderr


def test_transform_mistakes_name_the_field(tmp_path):
    np.save(tmp_path / "x.npy", images(3, 2, 4, 4))
    np.save(tmp_path / "mean.npy", np.zeros((3, 4, 4)))     # relative to the net file
    cases = [
        ({"mean_file": "mean.npy"}, "transform.mean_file", "shape (3, 4, 4) but samples"),
        ({"mean_file": "mean.npy", "mean_value": 1}, "transform.mean_value", "not both"),
        ({"mean_value": [1, 2, 3]}, "transform.mean_value", "one per channel (2)"),
        ({"crop_size": 5}, "transform.crop_size", "larger than the images (4x4)"),
    ]
    for transform, field, message in cases:
        spec = {"name": "t", "layers": [{"name": "data", "type": "Data", "top": ["data"],
                                         "source": "x.npy", "batch_size": 3,
                                         "transform": transform}]}
        (tmp_path / "net.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(sk.DataError) as caught:
            sk.Net(str(tmp_path / "net.yaml"))
        assert caught.value.field == field and message in str(caught.value)
        assert "net.yaml" in str(caught.value) and "layer 'data'" in str(caught.value)
