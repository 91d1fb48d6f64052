"""Sizes a file declares are checked, in Python integers, against the bytes it holds before
anything is allocated: a shape whose product wraps around in 64 bits (2**32 * 2**32 = 0)
must not pass as an empty blob or array."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from solverkit.caffe.messages import decode_blobproto
from solverkit.caffe.weights import read_caffemodel
from solverkit.errors import DataError, SnapshotError
from solverkit.files import load_npy, load_npz
from solverkit.protobuf import Writer

BROKEN = Path(__file__).parent / "broken"
WRAPPING = [2**32, 2**32]           # int64 product: 0


def _blob(dims, values=()) -> bytes:
    shape = Writer().packed(1, np.asarray(dims, dtype=np.int64), "int64")
    blob = Writer().message(7, shape)
    if len(values):
        blob.packed(5, np.asarray(values, dtype=np.float32), "float")
    return blob.getvalue()


def _caffemodel(blob: bytes) -> bytes:
    layer = Writer().string(1, "ip1").string(2, "InnerProduct").message(7, blob)
    return Writer().string(1, "net").message(100, layer).getvalue()


def test_a_wrapping_blob_shape_is_a_clean_error(tmp_path):
    assert int(np.prod(WRAPPING, dtype=np.int64)) == 0      # what a 64-bit product says
    with pytest.raises(DataError, match=r"shape \[4294967296, 4294967296\] "
                                        r"\(18446744073709551616 values\) holds 0"):
        decode_blobproto(_blob(WRAPPING), file="mean.binaryproto")
    path = tmp_path / "wrap.caffemodel"
    path.write_bytes(_caffemodel(_blob(WRAPPING)))
    with pytest.raises(DataError, match="18446744073709551616 values") as info:
        read_caffemodel(path)
    assert info.value.file == str(path) and "ip1" in str(info.value)


def test_a_wrapping_caffemodel_from_the_command_line(tmp_path):
    (tmp_path / "w.caffemodel").write_bytes(_caffemodel(_blob([2**32, 2**32, 1, 1])))
    done = subprocess.run(
        [sys.executable, "-m", "solverkit", "test", "--net",
         str(BROKEN / "caffe_good_net.prototxt"), "--weights", "w.caffemodel",
         "--iterations", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "w.caffemodel" in done.stderr and "values) holds 0" in done.stderr


def _npy(shape, data: bytes = b"", dtype="<f4") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return header.getvalue() + data


@pytest.mark.parametrize("shape", [WRAPPING, [10**12], [3, 4]])
def test_an_npy_declaring_more_than_it_holds(tmp_path, shape):
    path = tmp_path / "mean.npy"
    path.write_bytes(_npy(shape, b"\0" * 8))
    with pytest.raises(DataError, match=r"declares shape .* bytes\) but holds 8 bytes"):
        load_npy(path, what="mean file", limit=1 << 30, error=DataError)


def test_an_npz_entry_declaring_more_than_it_holds(tmp_path):
    path = tmp_path / "w.model.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ip1/0.npy", _npy(WRAPPING))
    with pytest.raises(SnapshotError, match="entry 'ip1/0' declares shape") as info:
        load_npz(path, what="model file", limit=1 << 30, error=SnapshotError)
    assert info.value.file == str(path)


def test_an_npz_that_unpacks_beyond_its_cap(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.npy", _npy([1 << 20], b"\0" * (4 << 20)))
    assert path.stat().st_size < 64 << 10
    with pytest.raises(DataError, match="unpack to 4,194,.* bytes, more than the 1,048,576"):
        load_npz(path, what="mean file", limit=1 << 20, error=DataError)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects"):
        load_npy(path, what="mean file", limit=1 << 20, error=DataError)


def test_good_arrays_still_load(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4),
              "b": np.asfortranarray(np.eye(3)), "c": np.zeros((0, 5))}
    np.savez(tmp_path / "x.npz", **arrays)
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    np.save(tmp_path / "x.npy", arrays["a"])
    for name in ("x.npz", "z.npz"):
        back = load_npz(tmp_path / name, what="file", limit=1 << 20)
        for key, value in arrays.items():
            np.testing.assert_array_equal(back[key], value)
    np.testing.assert_array_equal(load_npy(tmp_path / "x.npy", what="f", limit=1 << 20),
                                  arrays["a"])
