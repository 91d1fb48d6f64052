"""Message classes of Caffe's ``caffe.proto`` (``NetParameter``, ``LayerParameter``,
``SolverParameter``, ``BlobProto``, ``Datum``, ``SolverState``, ...), built when this module
is imported from the schema in :mod:`caffe.proto.schema` with the ``protobuf`` package.

They behave as the classes ``protoc`` generates: ``google.protobuf.text_format`` prints and
parses them, ``SerializeToString``/``ParseFromString`` read and write Caffe's binary files,
and the top-level enum values are module constants (``caffe_pb2.TRAIN``, ``caffe_pb2.TEST``).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from .schema import SCHEMA

_FieldType = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _FieldType.TYPE_DOUBLE, "float": _FieldType.TYPE_FLOAT,
    "int64": _FieldType.TYPE_INT64, "uint64": _FieldType.TYPE_UINT64,
    "int32": _FieldType.TYPE_INT32, "uint32": _FieldType.TYPE_UINT32,
    "bool": _FieldType.TYPE_BOOL, "string": _FieldType.TYPE_STRING,
    "bytes": _FieldType.TYPE_BYTES,
}
_LABELS = {"optional": _FieldType.LABEL_OPTIONAL, "repeated": _FieldType.LABEL_REPEATED,
           "required": _FieldType.LABEL_REQUIRED}
PACKAGE = "caffe"


def _parse(schema: str):
    """``[(indent, words)]`` of the schema's lines."""
    items = []
    for line in schema.splitlines():
        if line.strip():
            items.append(((len(line) - len(line.lstrip())) // 2, line.split()))
    return items


def _declared_names(items) -> tuple[set[str], set[str]]:
    """Full names (``.caffe.X.Y``) of every message and enum."""
    messages, enums, path = set(), set(), []
    for depth, words in items:
        del path[depth:]
        if words[0] == "message":
            path.append(words[1])
            messages.add("." + ".".join([PACKAGE, *path]))
        elif words[0] == "enum":
            enums.add("." + ".".join([PACKAGE, *path, words[1]]))
    return messages, enums


def _resolve(name: str, scope: list[str], messages: set[str], enums: set[str]) -> str:
    """A type name as protobuf resolves it: the innermost enclosing scope first."""
    for k in range(len(scope), -1, -1):
        candidate = "." + ".".join([PACKAGE, *scope[:k], name])
        if candidate in messages or candidate in enums:
            return candidate
    raise KeyError(f"caffe.proto schema: unknown type {name}")


def build_file() -> descriptor_pb2.FileDescriptorProto:
    items = _parse(SCHEMA)
    messages, enums = _declared_names(items)
    file = descriptor_pb2.FileDescriptorProto(name="caffe.proto", package=PACKAGE,
                                              syntax="proto2")
    stack: list[descriptor_pb2.DescriptorProto] = []
    path: list[str] = []
    for depth, words in items:
        del stack[depth:]
        del path[depth:]
        container = stack[-1] if stack else file
        if words[0] == "message":
            message = (container.nested_type if stack else file.message_type).add()
            message.name = words[1]
            stack.append(message)
            path.append(words[1])
        elif words[0] == "enum":
            enum = container.enum_type.add()
            enum.name = words[1]
            for pair in words[2:]:
                name, number = pair.split("=")
                enum.value.add(name=name, number=int(number))
        else:
            number, label, type_name, name, *options = words
            field = stack[-1].field.add(name=name, number=int(number), label=_LABELS[label])
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:
                full = _resolve(type_name, path, messages, enums)
                field.type = _FieldType.TYPE_ENUM if full in enums else _FieldType.TYPE_MESSAGE
                field.type_name = full
            for option in options:
                key, _, value = option.partition("=")
                if key == "packed":
                    field.options.packed = value == "true"
                elif key == "default":
                    field.default_value = value[1:-1] if value.startswith('"') else value
    return file


_pool = descriptor_pool.DescriptorPool()
DESCRIPTOR = _pool.Add(build_file())


def _export() -> list[str]:
    names = []
    for name, descriptor in DESCRIPTOR.message_types_by_name.items():
        globals()[name] = message_factory.GetMessageClass(descriptor)
        names.append(name)
    for enum in DESCRIPTOR.enum_types_by_name.values():
        globals()[enum.name] = EnumTypeWrapper(enum)
        names.append(enum.name)
        for value in enum.values:
            globals()[value.name] = value.number
            names.append(value.name)
    return names


__all__ = _export()
