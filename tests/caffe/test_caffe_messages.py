"""Datum and BlobProto against protobuf-package classes built from caffe.proto's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from protobuf_oracle import build

from solverkit.caffe.messages import decode_blobproto, decode_datum, encode_blobproto, encode_datum
from solverkit.errors import DataError


@pytest.fixture(scope="module")
def caffe_pb():
    return build({
        "BlobShape": [(1, "dim", "int64", "repeated", True)],
        "BlobProto": [(7, "shape", "message", "optional", "BlobShape"),
                      (5, "data", "float", "repeated", True),
                      (6, "diff", "float", "repeated", True),
                      (8, "double_data", "double", "repeated", True),
                      (9, "double_diff", "double", "repeated", True),
                      (1, "num", "int32", "optional", None),
                      (2, "channels", "int32", "optional", None),
                      (3, "height", "int32", "optional", None),
                      (4, "width", "int32", "optional", None)],
        "Datum": [(1, "channels", "int32", "optional", None),
                  (2, "height", "int32", "optional", None),
                  (3, "width", "int32", "optional", None),
                  (4, "data", "bytes", "optional", None),
                  (5, "label", "int32", "optional", None),
                  (6, "float_data", "float", "repeated", False),
                  (7, "encoded", "bool", "optional", None)],
    })


def test_blobproto_both_ways(caffe_pb, rng):
    array = rng.standard_normal((3, 2, 5)).astype(np.float32)
    theirs = caffe_pb["BlobProto"].FromString(encode_blobproto(array))
    assert list(theirs.shape.dim) == [3, 2, 5]
    np.testing.assert_array_equal(np.array(theirs.data, dtype=np.float32), array.ravel())
    written = caffe_pb["BlobProto"](data=array.ravel().tolist(), diff=[1.0] * 30)
    written.shape.dim.extend([3, 2, 5])
    back = decode_blobproto(written.SerializeToString())
    assert back.dtype == np.float32 and back.shape == (3, 2, 5)
    np.testing.assert_array_equal(back, array)


def test_blobproto_legacy_and_double(caffe_pb, rng):
    values = rng.standard_normal(12)
    legacy = caffe_pb["BlobProto"](num=1, channels=3, height=2, width=2,
                                   double_data=values.tolist())
    back = decode_blobproto(legacy.SerializeToString())
    assert back.shape == (1, 3, 2, 2) and back.dtype == np.float64
    np.testing.assert_array_equal(back.ravel(), values)
    mine = caffe_pb["BlobProto"].FromString(encode_blobproto(values.reshape(3, 4), legacy=True,
                                                             double=True))
    assert (mine.num, mine.channels, mine.height, mine.width) == (1, 1, 3, 4)
    np.testing.assert_array_equal(np.array(mine.double_data), values)


def test_blobproto_count_mismatch_names_file():
    broken = encode_blobproto(np.zeros((2, 3), np.float32))[:-4]
    with pytest.raises(DataError, match="mean.binaryproto"):
        decode_blobproto(broken, file="mean.binaryproto")
    wrong = encode_blobproto(np.zeros(5, np.float32), legacy=True).replace(b"\x20\x05", b"\x20\x06")
    with pytest.raises(DataError, match=r"shape \[1, 1, 1, 6\] \(6 values\) holds 5"):
        decode_blobproto(wrong, file="mean.binaryproto")


def test_datum_pixels_floats_and_encoded(caffe_pb, rng):
    pixels = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    theirs = caffe_pb["Datum"].FromString(encode_datum(pixels, 7))
    assert (theirs.channels, theirs.height, theirs.width, theirs.label) == (3, 4, 5, 7)
    assert theirs.data == pixels.tobytes()
    datum = decode_datum(caffe_pb["Datum"](channels=3, height=4, width=5, label=-2,
                                           data=pixels.tobytes()).SerializeToString())
    assert datum.label == -2 and not datum.encoded
    np.testing.assert_array_equal(datum.array(), pixels)

    floats = rng.standard_normal((1, 2, 3)).astype(np.float32)
    theirs = caffe_pb["Datum"].FromString(encode_datum(floats, 1))
    np.testing.assert_array_equal(np.array(theirs.float_data, np.float32), floats.ravel())
    back = decode_datum(theirs.SerializeToString())
    np.testing.assert_array_equal(back.array(), floats)

    jpeg = b"\xff\xd8\xff fake image bytes"
    theirs = caffe_pb["Datum"].FromString(encode_datum(jpeg, 3, encoded=True))
    assert theirs.encoded and theirs.data == jpeg
    back = decode_datum(theirs.SerializeToString())
    assert back.encoded and back.data == jpeg and back.label == 3
    with pytest.raises(DataError, match="encoded image"):
        back.array()


def test_datum_wrong_size_is_a_data_error(caffe_pb):
    short = caffe_pb["Datum"](channels=3, height=4, width=5, data=b"\x00" * 10)
    with pytest.raises(DataError, match=r"train_lmdb.*60 values\) holds 10"):
        decode_datum(short.SerializeToString(), file="train_lmdb").array(file="train_lmdb")
