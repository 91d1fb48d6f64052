"""``.caffemodel`` files: Caffe's binary NetParameter with each layer's blobs.

Read: the current ``layer`` field (100), the V1 ``layers`` field (2) and the V0 layer
inside a V1 entry; blobs with ``shape`` or the legacy num/channels/height/width,
``data`` or ``double_data``, packed or not. Written: one ``layer`` per layer with its
name, type, bottoms, tops and blobs (float32, ``shape``), which is what Caffe's
``CopyTrainedLayersFrom`` and other readers use; the layer settings travel in the
deploy prototxt beside it.

Field numbers are those of Caffe's ``caffe.proto``: NetParameter ``name`` 1,
``layers`` 2, ``layer`` 100; LayerParameter ``name`` 1, ``type`` 2, ``bottom`` 3,
``top`` 4, ``blobs`` 7; V1LayerParameter ``bottom`` 2, ``top`` 3, ``name`` 4, ``type``
5 (enum), ``blobs`` 6, ``layer`` 1 (V0: ``name`` 1, ``type`` 2, ``blobs`` 50).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import LIMITS, read_bytes
from ..protobuf import DEFAULT_LIMITS, Field, Message, Writer, decode
from .messages import BLOB_PROTO, blob_fields, blob_from_fields
from .names import V1_TYPE_NUMBERS, V1_TYPES

V0_LAYER = Message("V0LayerParameter", [
    Field(1, "name", "string"), Field(2, "type", "string"),
    Field(50, "blobs", "message", repeated=True, message=BLOB_PROTO)])
V1_LAYER = Message("V1LayerParameter", [
    Field(2, "bottom", "string", repeated=True), Field(3, "top", "string", repeated=True),
    Field(4, "name", "string"), Field(5, "type", "enum"),
    Field(6, "blobs", "message", repeated=True, message=BLOB_PROTO),
    Field(1, "layer", "message", message=V0_LAYER)])
LAYER = Message("LayerParameter", [
    Field(1, "name", "string"), Field(2, "type", "string"),
    Field(3, "bottom", "string", repeated=True), Field(4, "top", "string", repeated=True),
    Field(7, "blobs", "message", repeated=True, message=BLOB_PROTO)])
NET = Message("NetParameter", [
    Field(1, "name", "string"),
    Field(2, "layers", "message", repeated=True, message=V1_LAYER),
    Field(100, "layer", "message", repeated=True, message=LAYER)])

SUFFIX = ".caffemodel"


@dataclass
class StoredLayer:
    """One layer of a caffemodel: its type (as today's type string) and blobs."""

    name: str
    type: str
    blobs: list[np.ndarray]
    legacy: list[bool]


def is_caffemodel(path) -> bool:
    """A ``.caffemodel`` by suffix, else by its first bytes (protobuf, not an npz zip)."""
    path = Path(path)
    if path.suffix.lower() == SUFFIX:
        return True
    if path.name.endswith(".npz") or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError:
        return False
    return head[:1] in (b"\x0a", b"\x12") or head == b"\xa2\x06"


def read_caffemodel(path) -> list[StoredLayer]:
    """Every layer of a caffemodel with blobs, in file order."""
    shown = str(path)
    data = read_bytes(path, what="caffemodel", limit=min(LIMITS["caffemodel"],
                                                          DEFAULT_LIMITS.max_bytes),
                      error=DataError)
    message = decode(data, NET, file=shown)
    layers: list[StoredLayer] = []
    if not message.get("layer") and not message.get("layers"):
        raise DataError("not a caffemodel: no layers in this NetParameter (truncated, or "
                        "another kind of file?)", file=shown)
    for entry in message.get("layer", []):
        layers.append(_stored(entry.get("name", ""), entry.get("type", ""), entry, shown))
    for entry in message.get("layers", []):
        old = entry.get("layer")
        if old is not None and not entry.get("blobs"):
            layers.append(_stored(old.get("name", ""), old.get("type", ""), old, shown))
            continue
        enum = V1_TYPE_NUMBERS.get(entry.get("type", 0))
        layers.append(_stored(entry.get("name", ""), V1_TYPES.get(enum, str(enum)), entry,
                              shown))
    return [layer for layer in layers if layer.blobs]


def _stored(name: str, type_name: str, entry: dict, file: str) -> StoredLayer:
    blobs, legacy = [], []
    for j, fields in enumerate(entry.get("blobs", [])):
        blob = blob_from_fields(fields, file=file, where=f"layer '{name}' blob {j}")
        blobs.append(blob.array)
        legacy.append(blob.legacy)
    return StoredLayer(name, type_name, blobs, legacy)


def legacy_fits(stored: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Caffe's rule for a legacy 4-D blob: the target shape padded with leading 1s equals it."""
    return len(target) <= 4 and (1,) * (4 - len(target)) + tuple(target) == tuple(stored)


def natural_shape(layer: StoredLayer, j: int) -> tuple[int, ...]:
    """A legacy 4-D blob's shape as today's layers have it (no net to compare with).

    Biases and per-channel blobs are 1-D, InnerProduct weights 2-D; convolution
    kernels keep their four axes.
    """
    shape = layer.blobs[j].shape
    if not layer.legacy[j]:
        return shape
    if layer.type in ("Convolution", "Deconvolution") and j == 0:
        return shape
    keep = 2 if layer.type in ("InnerProduct", "Embed") and j == 0 else 1
    return shape[-keep:]


def stored_parameters(path) -> tuple[dict[str, dict[int, np.ndarray]], set[tuple[str, int]]]:
    """``{layer: {index: array}}`` and the (layer, index) pairs with a legacy 4-D shape."""
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    legacy: set[tuple[str, int]] = set()
    for layer in read_caffemodel(path):
        by_layer[layer.name] = dict(enumerate(layer.blobs))       # a later layer wins, as in Caffe
        for j, is_legacy in enumerate(layer.legacy):
            if is_legacy:
                legacy.add((layer.name, j))
    return by_layer, legacy


def encode_caffemodel(name: str, layers: list[tuple[str, str, list[str], list[str],
                                                    list[np.ndarray]]]) -> bytes:
    """A NetParameter with ``(name, type, bottoms, tops, blobs)`` per layer."""
    from ..protobuf import encode
    writer = Writer().string(1, name)
    for layer_name, type_name, bottoms, tops, blobs in layers:
        body = encode({"name": layer_name, "type": type_name, "bottom": list(bottoms),
                       "top": list(tops), "blobs": [blob_fields(b) for b in blobs]}, LAYER)
        writer.message(100, body)
    return writer.getvalue()
