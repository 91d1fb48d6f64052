"""Message classes of the ``protobuf`` package built at run time: an independent codec.

``build({"Name": [(number, name, type, label, packed_or_message), ...]})`` returns a
dict of message classes; ``type`` is a protobuf type name ("int32", "float", ...,
"message"), ``label`` "optional" or "repeated".
"""

from __future__ import annotations

import itertools

import pytest

descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
descriptor_pool = pytest.importorskip("google.protobuf.descriptor_pool")
message_factory = pytest.importorskip("google.protobuf.message_factory")

_TYPES = {
    "double": 1, "float": 2, "int64": 3, "uint64": 4, "int32": 5, "fixed64": 6,
    "fixed32": 7, "bool": 8, "string": 9, "message": 11, "bytes": 12, "uint32": 13,
    "sfixed32": 15, "sfixed64": 16, "sint32": 17, "sint64": 18,
}
_LABELS = {"optional": 1, "repeated": 3}
_counter = itertools.count()


def build(messages: dict[str, list[tuple]], package: str = "oracle") -> dict[str, type]:
    package = f"{package}{next(_counter)}"
    proto = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package,
                                               syntax="proto2")
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for number, field_name, kind, label, extra in fields:
            f = message.field.add(name=field_name, number=number, type=_TYPES[kind],
                                  label=_LABELS[label])
            if kind == "message":
                f.type_name = f".{package}.{extra}"
            elif extra:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in messages}
