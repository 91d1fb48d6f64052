"""Caffe's small binary messages: ``Datum``, ``BlobShape``, ``BlobProto``.

Field numbers and types are those of Caffe's ``caffe.proto``:

- ``BlobShape``: ``dim`` = 1 (repeated int64, packed).
- ``BlobProto``: ``num`` 1, ``channels`` 2, ``height`` 3, ``width`` 4 (int32, the legacy
  4-D shape), ``data`` 5 and ``diff`` 6 (repeated float, packed), ``shape`` 7
  (BlobShape), ``double_data`` 8 and ``double_diff`` 9 (repeated double, packed);
  NVIDIA's Caffe and OpenCV's ``caffe.proto`` add ``raw_data_type`` 10 (enum Type:
  DOUBLE 0, FLOAT 1, FLOAT16 2, INT 3, UINT 4) and ``raw_data`` 12 (bytes, little-endian
  values of that type; ``cv2.dnn.shrinkCaffeModel`` writes FLOAT16 there).
- ``Datum``: ``channels`` 1, ``height`` 2, ``width`` 3 (int32), ``data`` 4 (bytes),
  ``label`` 5 (int32), ``float_data`` 6 (repeated float, not packed), ``encoded`` 7 (bool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..protobuf import DEFAULT_LIMITS, Field, Limits, Message, decode, encode

BLOB_SHAPE = Message("BlobShape", [Field(1, "dim", "int64", repeated=True, packed=True)])

BLOB_PROTO = Message("BlobProto", [
    Field(1, "num", "int32"),
    Field(2, "channels", "int32"),
    Field(3, "height", "int32"),
    Field(4, "width", "int32"),
    Field(5, "data", "float", repeated=True, packed=True),
    Field(6, "diff", "float", repeated=True, packed=True),
    Field(7, "shape", "message", message=BLOB_SHAPE),
    Field(8, "double_data", "double", repeated=True, packed=True),
    Field(9, "double_diff", "double", repeated=True, packed=True),
    Field(10, "raw_data_type", "enum"),
    Field(12, "raw_data", "bytes"),
])
# BlobProto.raw_data_type -> the values' little-endian dtype (INT and UINT hold no weights)
RAW_DATA_TYPES = {0: ("DOUBLE", "<f8"), 1: ("FLOAT", "<f4"), 2: ("FLOAT16", "<f2"),
                  3: ("INT", None), 4: ("UINT", None)}

DATUM = Message("Datum", [
    Field(1, "channels", "int32"),
    Field(2, "height", "int32"),
    Field(3, "width", "int32"),
    Field(4, "data", "bytes"),
    Field(5, "label", "int32"),
    Field(6, "float_data", "float", repeated=True),
    Field(7, "encoded", "bool"),
])

LEGACY_AXES = ("num", "channels", "height", "width")


# ---------------------------------------------------------------- BlobProto

@dataclass
class DecodedBlob:
    """A decoded ``BlobProto``: the values, their shape, and whether the shape was legacy 4-D."""

    array: np.ndarray
    legacy: bool = False


def blob_from_fields(fields: dict, *, file: str | None = None,
                     where: str = "BlobProto") -> DecodedBlob:
    """Turn a decoded ``BlobProto`` dict into a :class:`DecodedBlob` (the shape checked).

    ``double_data`` wins over ``data`` when present (kept float64), and ``raw_data`` over
    both (FLOAT16 and FLOAT read as float32, DOUBLE kept float64). A blob with
    ``shape`` uses it; otherwise the legacy ``num/channels/height/width`` (each
    defaulting to 0 as in Caffe) make a 4-D shape.
    """
    if "shape" in fields:
        dims = fields["shape"].get("dim", np.zeros(0, dtype=np.int64))
        shape = tuple(int(d) for d in dims)
        legacy = False
    elif any(axis in fields for axis in LEGACY_AXES):
        shape = tuple(int(fields.get(axis, 0)) for axis in LEGACY_AXES)
        legacy = True
    else:
        shape = None
        legacy = False
    if shape is not None and any(d < 0 for d in shape):
        raise DataError(f"a blob has a negative dimension in its shape {list(shape)}",
                        file=file, field=where)
    if fields.get("raw_data"):
        values = _raw_values(fields, shape, file=file, where=where)
    elif "double_data" in fields and len(fields["double_data"]):
        values = np.asarray(fields["double_data"], dtype=np.float64)
    else:
        values = np.asarray(fields.get("data", np.zeros(0, dtype=np.float32)),
                            dtype=np.float32)
    if shape is None:
        shape = (values.size,)
    count = math.prod(shape)        # Python ints: a declared [2**32, 2**32] must not wrap to 0
    if count != values.size:
        raise DataError(f"a blob of shape {list(shape)} ({count} values) holds "
                        f"{values.size} values", file=file, field=where)
    return DecodedBlob(values.reshape(shape), legacy)


def _raw_values(fields: dict, shape, *, file, where) -> np.ndarray:
    """The values of ``raw_data``, their count checked against the shape before any copy."""
    code = int(fields.get("raw_data_type", 0))
    name, dtype = RAW_DATA_TYPES.get(code, (str(code), None))
    if dtype is None:
        raise DataError(f"raw_data of type {name} holds no weights solverkit reads (FLOAT16, "
                        f"FLOAT or DOUBLE)", file=file, field=f"{where}.raw_data_type")
    raw = fields["raw_data"]
    itemsize = np.dtype(dtype).itemsize
    if len(raw) % itemsize:
        raise DataError(f"raw_data of {len(raw)} bytes is not a whole number of {name} "
                        f"values", file=file, field=f"{where}.raw_data")
    if shape is not None:
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * itemsize != len(raw):
            raise DataError(f"a blob of shape {list(shape)} ({count} values) holds "
                            f"{len(raw) // itemsize} {name} values in raw_data", file=file,
                            field=where)
    values = np.frombuffer(raw, dtype=dtype)
    return values.astype(np.float64 if name == "DOUBLE" else np.float32)


def blob_fields(array: np.ndarray, *, double: bool = False, legacy: bool = False) -> dict:
    """A ``BlobProto`` dict for ``array`` (``legacy``: num/channels/height/width, ≤ 4-D)."""
    array = np.asarray(array)
    out: dict = {}
    if legacy:
        assert array.ndim <= 4, array.shape
        padded = (1,) * (4 - array.ndim) + array.shape
        out.update(zip(LEGACY_AXES, padded))
    else:
        out["shape"] = {"dim": np.asarray(array.shape, dtype=np.int64)}
    if double:
        out["double_data"] = np.ascontiguousarray(array, dtype=np.float64).ravel()
    else:
        out["data"] = np.ascontiguousarray(array, dtype=np.float32).ravel()
    return out


def encode_blobproto(array: np.ndarray, *, double: bool = False, legacy: bool = False) -> bytes:
    """Serialise ``array`` as a ``BlobProto`` (float32 ``data`` or float64 ``double_data``)."""
    return encode(blob_fields(array, double=double, legacy=legacy), BLOB_PROTO)


def decode_blobproto(data: bytes, *, file: str | None = None,
                     limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Parse a ``BlobProto`` (e.g. Caffe's ``mean.binaryproto``) into an array of its shape."""
    return blob_from_fields(decode(data, BLOB_PROTO, file=file, limits=limits),
                            file=file).array


# ---------------------------------------------------------------- Datum

@dataclass
class Datum:
    """One decoded Caffe ``Datum`` record.

    ``data`` holds raw uint8 CHW pixels, or the bytes of an image file when
    ``encoded``; ``float_data`` holds float values instead of ``data``.
    """

    channels: int = 0
    height: int = 0
    width: int = 0
    data: bytes = b""
    label: int = 0
    float_data: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    encoded: bool = False

    def array(self, *, file: str | None = None) -> np.ndarray:
        """The record's values as a CHW array: uint8 from ``data``, else float32.

        An encoded record has no array here (decode the image bytes instead).
        """
        if self.encoded:
            raise DataError("this Datum holds an encoded image; decode its bytes as an "
                            "image", file=file, field="Datum.data")
        shape = (self.channels, self.height, self.width)
        count = self.channels * self.height * self.width
        if self.data:
            values = np.frombuffer(self.data, dtype=np.uint8)
        else:
            values = self.float_data.astype(np.float32, copy=False)
        if values.size != count:
            raise DataError(f"a Datum of shape {list(shape)} ({count} values) holds "
                            f"{values.size} values", file=file, field="Datum.data")
        return values.reshape(shape)


def encode_datum(data: np.ndarray | bytes, label: int = 0, *, encoded: bool = False,
                 channels: int | None = None, height: int | None = None,
                 width: int | None = None) -> bytes:
    """Serialise one record as a Caffe ``Datum``.

    ``data`` is a CHW (or HW) array — uint8 goes to ``data`` as bytes, any other
    dtype to ``float_data`` — or, with ``encoded=True``, the bytes of an image file
    (give ``channels/height/width`` if known; Caffe leaves them 0).
    """
    message: dict = {}
    if encoded:
        message.update(channels=channels or 0, height=height or 0, width=width or 0)
        message["data"] = bytes(data)
        message["encoded"] = True
    else:
        array = np.asarray(data)
        if array.ndim == 2:
            array = array[None]
        assert array.ndim == 3, f"a Datum holds CHW arrays, got shape {array.shape}"
        message.update(channels=array.shape[0], height=array.shape[1], width=array.shape[2])
        if array.dtype == np.uint8:
            message["data"] = np.ascontiguousarray(array).tobytes()
        else:
            message["float_data"] = np.ascontiguousarray(array, dtype=np.float32).ravel()
    message["label"] = int(label)
    return encode(message, DATUM)


def decode_datum(data: bytes, *, file: str | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> Datum:
    """Parse one Caffe ``Datum`` record."""
    fields = decode(data, DATUM, file=file, limits=limits)
    datum = Datum(**{k: v for k, v in fields.items() if k != "float_data"})
    if "float_data" in fields:
        datum.float_data = np.asarray(fields["float_data"], dtype=np.float32)
    for name in ("channels", "height", "width"):
        if getattr(datum, name) < 0:
            raise DataError(f"a Datum with negative {name} {getattr(datum, name)}",
                            file=file, field=f"Datum.{name}")
    return datum
