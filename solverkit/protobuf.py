"""A small, bounded reader and writer of the protobuf binary wire format.

Messages are described by :class:`Message` schemas (field number, name, kind) and
decoded into plain dicts; fields the schema does not name are skipped as protobuf
requires. Repeated numeric fields decode to numpy arrays whether they were written
packed or one by one, and numeric arrays are encoded packed.

Every limit is explicit (:class:`Limits`): the size of the input, the nesting depth,
the number of elements of a repeated field. A truncated, corrupt or oversized input
raises :class:`~solverkit.errors.DataError` naming the file and the field being read,
never an unbounded allocation or a Python traceback from deep inside the decoder.

Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit (the group
wire types 3 and 4 are rejected). Negative ``int32``/``int64`` values are 10-byte
varints (two's complement); ``sint32``/``sint64`` use zigzag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

_VARINT_KINDS = {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum"}
_FIXED32_KINDS = {"float": "<f4", "fixed32": "<u4", "sfixed32": "<i4"}
_FIXED64_KINDS = {"double": "<f8", "fixed64": "<u8", "sfixed64": "<i8"}
_LENGTH_KINDS = {"string", "bytes", "message"}
KINDS = _VARINT_KINDS | set(_FIXED32_KINDS) | set(_FIXED64_KINDS) | _LENGTH_KINDS


@dataclass(frozen=True)
class Limits:
    """Hard bounds a decoder enforces; the defaults fit Caffe's biggest model-zoo files."""

    max_bytes: int = 2**31 - 1          # protobuf's own 2 GiB ceiling
    max_depth: int = 32
    max_repeated: int = 2**28           # elements of one repeated field
    max_unpacked_varints: int = 2**20   # of them one by one (each a Python int while read)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Field:
    """One field of a message: ``number``, ``name``, ``kind`` (see ``KINDS``)."""

    number: int
    name: str
    kind: str
    repeated: bool = False
    message: Message | None = None      # the sub-message schema when kind == "message"
    packed: bool = False                # how the writer encodes a repeated numeric field

    def __post_init__(self):
        assert self.kind in KINDS, self.kind
        assert (self.kind == "message") == (self.message is not None), self.name


@dataclass
class Message:
    """A message schema: its name and fields (sub-messages may be attached later)."""

    name: str
    fields: list[Field] = field(default_factory=list)

    def __post_init__(self):
        self._by_number: dict[int, Field] = {}
        self._by_name: dict[str, Field] = {}
        for f in self.fields:
            self._index(f)

    def _index(self, f: Field) -> None:
        assert f.number not in self._by_number and f.name not in self._by_name, f
        self._by_number[f.number] = f
        self._by_name[f.name] = f

    def add(self, f: Field) -> Message:
        """Append a field (lets recursive schemas refer to themselves)."""
        self.fields.append(f)
        self._index(f)
        return self

    def by_number(self, number: int) -> Field | None:
        return self._by_number.get(number)

    def by_name(self, name: str) -> Field | None:
        return self._by_name.get(name)


# ---------------------------------------------------------------- decoding

def _fail(message: str, file: str | None, where: str | None) -> DataError:
    return DataError(message, file=file, field=where)


def read_varint(buf: bytes | memoryview, pos: int, end: int, file: str | None = None,
                where: str | None = None) -> tuple[int, int]:
    """Decode one unsigned varint at ``pos``; returns ``(value, new_pos)`` (at most 10 bytes)."""
    result = 0
    shift = 0
    for i in range(10):
        if pos >= end:
            raise _fail("truncated protobuf: a varint runs past the end of its message",
                        file, where)
        byte = buf[pos]
        pos += 1
        if i == 9 and byte > 1:
            raise _fail("corrupt protobuf: a varint longer than 64 bits", file, where)
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise _fail("corrupt protobuf: a varint longer than 10 bytes", file, where)


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _varint_value(raw: int, kind: str) -> Any:
    if kind == "bool":
        return raw != 0
    if kind in ("int32", "enum"):
        return _signed(raw, 32)
    if kind == "int64":
        return _signed(raw, 64)
    if kind == "uint32":
        return raw & 0xFFFFFFFF
    if kind == "sint32":
        raw &= 0xFFFFFFFF
        return (raw >> 1) ^ -(raw & 1)
    if kind == "sint64":
        return (raw >> 1) ^ -(raw & 1)
    return raw      # uint64


def _varint_array(data: memoryview, kind: str, file, where) -> np.ndarray:
    """Decode a packed run of varints with whole-array numpy operations."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    if raw[-1] >= 0x80:
        raise _fail("truncated protobuf: a packed varint runs past the end of its field",
                    file, where)
    ends = np.flatnonzero(raw < 0x80)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise _fail("corrupt protobuf: a varint longer than 10 bytes", file, where)
    group = np.repeat(np.arange(ends.size), lengths)
    offset = np.arange(raw.size) - starts[group]
    if np.any((offset == 9) & (raw > 1)):
        raise _fail("corrupt protobuf: a varint longer than 64 bits", file, where)
    pieces = (raw & 0x7F).astype(np.uint64) << (7 * offset).astype(np.uint64)
    values = np.bitwise_or.reduceat(pieces, starts)
    if kind == "bool":
        return values != 0
    if kind in ("int32", "enum"):
        return values.astype(np.uint32).view(np.int32).astype(np.int64)
    if kind == "int64":
        return values.view(np.int64)
    if kind == "uint32":
        return (values & np.uint64(0xFFFFFFFF)).astype(np.int64)
    if kind in ("sint32", "sint64"):
        if kind == "sint32":
            values = values & np.uint64(0xFFFFFFFF)
        half = (values >> np.uint64(1)).view(np.int64)
        return half ^ -(values & np.uint64(1)).view(np.int64)
    return values       # uint64


class _Decoder:
    def __init__(self, data: bytes | bytearray | memoryview, file: str | None, limits: Limits):
        self.buf = memoryview(data).cast("B")
        self.file = file
        self.limits = limits
        if len(self.buf) > limits.max_bytes:
            raise _fail(f"protobuf input of {len(self.buf)} bytes exceeds the limit of "
                        f"{limits.max_bytes} bytes", file, None)

    def fail(self, message: str, where: str | None) -> DataError:
        return _fail(message, self.file, where)

    def message(self, schema: Message, start: int, end: int, depth: int,
                path: str) -> dict[str, Any]:
        if depth > self.limits.max_depth:
            raise self.fail(f"protobuf messages nested deeper than {self.limits.max_depth}",
                            path)
        buf = self.buf
        out: dict[str, Any] = {}
        chunks: dict[str, list] = {}          # repeated numeric fields: [count, parts...]
        pos = start
        while pos < end:
            key, pos = read_varint(buf, pos, end, self.file, path)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.fail("corrupt protobuf: field number 0", path)
            f = schema.by_number(number)
            where = f"{path}.{f.name}" if f else f"{path}.#{number}"
            if wire == VARINT:
                raw, pos = read_varint(buf, pos, end, self.file, where)
                if f is not None:
                    self._expect(f, f.kind in _VARINT_KINDS, wire, where)
                    self._store(out, chunks, f, _varint_value(raw, f.kind), where)
            elif wire in (FIXED32, FIXED64):
                size = 4 if wire == FIXED32 else 8
                if pos + size > end:
                    raise self.fail("truncated protobuf: a fixed-width value runs past the "
                                    "end of its message", where)
                if f is not None:
                    kinds = _FIXED32_KINDS if wire == FIXED32 else _FIXED64_KINDS
                    self._expect(f, f.kind in kinds, wire, where)
                    if f.repeated:
                        pos = self._fixed_run(chunks, f, key, pos, end, size, kinds[f.kind],
                                              where)
                        continue
                    value = np.frombuffer(buf[pos:pos + size], dtype=kinds[f.kind])[0]
                    self._store(out, chunks, f, value.item(), where)
                pos += size
            elif wire == LENGTH:
                length, pos = read_varint(buf, pos, end, self.file, where)
                if length > end - pos:
                    raise self.fail(f"truncated protobuf: a field of {length} bytes runs past "
                                    f"the end of its message ({end - pos} bytes left)", where)
                body = buf[pos:pos + length]
                if f is not None:
                    self._length_field(out, chunks, f, body, pos, depth, where)
                pos += length
            else:
                raise self.fail(f"corrupt protobuf: wire type {wire} (groups or garbage) "
                                f"for field {number}", where)
        if pos != end:
            raise self.fail("truncated protobuf: the last field runs past the end of its "
                            "message", path)
        for name, (_, *parts) in chunks.items():
            dtype = {"bool": bool, "uint64": np.uint64}.get(schema.by_name(name).kind,
                                                          np.int64)
            parts = [np.array(p, dtype=dtype) if isinstance(p, list) else p for p in parts]
            out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out

    def _expect(self, f: Field, ok: bool, wire: int, where: str) -> None:
        if not ok:
            raise self.fail(f"corrupt protobuf: wire type {wire} does not fit a {f.kind} "
                            "field", where)

    def _count(self, current: int, more: int, where: str) -> None:
        if current + more > self.limits.max_repeated:
            raise self.fail(f"more than {self.limits.max_repeated} elements in one repeated "
                            "field", where)

    def _append(self, chunks, f: Field, values: np.ndarray, where: str) -> None:
        entry = chunks.setdefault(f.name, [0])
        self._count(entry[0], values.size, where)
        entry[0] += values.size
        entry.append(values)

    def _store(self, out, chunks, f: Field, value, where: str) -> None:
        if not f.repeated:
            out[f.name] = value
        elif f.kind in _LENGTH_KINDS:
            items = out.setdefault(f.name, [])
            self._count(len(items), 1, where)
            items.append(value)
        else:                                   # an unpacked number: kept in a list
            entry = chunks.setdefault(f.name, [0])
            self._count(entry[0], 1, where)
            if entry[0] >= self.limits.max_unpacked_varints:
                raise self.fail(f"more than {self.limits.max_unpacked_varints} unpacked "
                                "varints in one repeated field", where)
            entry[0] += 1
            if not isinstance(entry[-1], list):
                entry.append([])
            entry[-1].append(value)

    def _fixed_run(self, chunks, f: Field, key: int, pos: int, end: int, size: int,
                   dtype: str, where: str) -> int:
        """Read unpacked repeated fixed-width values: a run of (tag, value) records at once."""
        tag = _encode_varint(key)
        stride = len(tag) + size
        first = pos - len(tag)                        # the record of the value at ``pos``
        if bytes(self.buf[first:pos]) != tag:         # a non-minimal key: read one value
            value = np.frombuffer(self.buf[pos:pos + size], dtype=dtype).copy()
            self._append(chunks, f, value, where)
            return pos + size
        rows = 1
        probe = 1024
        while True:                                   # grow the probe: linear overall
            avail = (end - first) // stride
            n = min(probe, avail)
            block = np.frombuffer(self.buf[first:first + n * stride], dtype=np.uint8)
            block = block.reshape(n, stride)[:, :len(tag)]
            same = np.all(block == np.frombuffer(tag, dtype=np.uint8), axis=1)
            stop = np.flatnonzero(~same)
            if stop.size:
                rows = int(stop[0])
                break
            rows = n
            if n == avail:
                break
            probe *= 4
        records = np.frombuffer(self.buf[first:first + rows * stride], dtype=np.uint8)
        values = records.reshape(rows, stride)[:, len(tag):].copy().view(dtype).ravel()
        self._append(chunks, f, values, where)
        return first + rows * stride

    def _length_field(self, out, chunks, f: Field, body: memoryview, pos: int, depth: int,
                      where: str) -> None:
        if f.kind == "message":
            value = self.message(f.message, pos, pos + len(body), depth + 1, where)
        elif f.kind == "bytes":
            value = bytes(body)
        elif f.kind == "string":
            try:
                value = bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("corrupt protobuf: a string field is not valid UTF-8",
                                where) from None
        elif f.repeated:                              # a packed run of numbers
            if f.kind in _VARINT_KINDS:
                values = _varint_array(body, f.kind, self.file, where)
            else:
                dtype = _FIXED32_KINDS.get(f.kind) or _FIXED64_KINDS[f.kind]
                width = np.dtype(dtype).itemsize
                if len(body) % width:
                    raise self.fail(f"corrupt protobuf: a packed {f.kind} field of "
                                    f"{len(body)} bytes is not a multiple of {width}", where)
                values = np.frombuffer(body, dtype=dtype).copy()
            self._append(chunks, f, values, where)
            return
        else:
            raise self.fail(f"corrupt protobuf: a length-delimited value for the {f.kind} "
                            "field", where)
        self._store(out, chunks, f, value, where)


def decode(data: bytes | bytearray | memoryview, schema: Message, *, file: str | None = None,
           limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode one message of type ``schema`` from ``data`` into a dict.

    Present fields only (no defaults filled in); repeated numeric fields are numpy
    arrays, repeated strings/bytes/messages are lists, sub-messages are dicts.
    """
    decoder = _Decoder(data, file, limits)
    return decoder.message(schema, 0, len(decoder.buf), 0, schema.name)


def iter_fields(data: bytes | bytearray | memoryview, *, file: str | None = None,
                limits: Limits = DEFAULT_LIMITS):
    """Yield ``(number, wire_type, value)`` for each field of a message, schema-free.

    ``value`` is an ``int`` for varints, ``bytes`` for fixed-width and length-delimited
    fields. Useful for inspecting a message one does not have a schema for.
    """
    buf = memoryview(data).cast("B")
    if len(buf) > limits.max_bytes:
        raise _fail(f"protobuf input of {len(buf)} bytes exceeds the limit of "
                    f"{limits.max_bytes} bytes", file, None)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos, end, file)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _fail("corrupt protobuf: field number 0", file, None)
        where = f"#{number}"
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end, file, where)
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
            if pos + size > end:
                raise _fail("truncated protobuf: a fixed-width value runs past the end",
                            file, where)
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == LENGTH:
            length, pos = read_varint(buf, pos, end, file, where)
            if length > end - pos:
                raise _fail("truncated protobuf: a length-delimited field runs past the end",
                            file, where)
            value, pos = bytes(buf[pos:pos + length]), pos + length
        else:
            raise _fail(f"corrupt protobuf: wire type {wire} for field {number}", file, where)
        yield number, wire, value


# ---------------------------------------------------------------- encoding

def _encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64                     # two's complement: always 10 bytes
    assert 0 <= value < (1 << 64), value
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _zigzag(value: int, bits: int) -> int:
    return ((value << 1) ^ (value >> (bits - 1))) & ((1 << bits) - 1)


def _varint_payload(value, kind: str) -> int:
    value = int(value)
    if kind == "sint32":
        return _zigzag(value, 32)
    if kind == "sint64":
        return _zigzag(value, 64)
    return value


def _encode_varint_array(values: np.ndarray, kind: str) -> bytes:
    """Packed varints of a whole array with numpy (ten 7-bit groups at most)."""
    values = np.asarray(values)
    if kind in ("sint32", "sint64"):
        bits = 32 if kind == "sint32" else 64
        signed = values.astype(np.int64)
        unsigned = ((signed << 1) ^ (signed >> (bits - 1))).view(np.uint64)
        if bits == 32:
            unsigned = unsigned & np.uint64(0xFFFFFFFF)
    elif kind == "uint64":
        unsigned = values.astype(np.uint64)
    else:
        unsigned = values.astype(np.int64).view(np.uint64)
    if unsigned.size == 0:
        return b""
    groups = np.stack([(unsigned >> np.uint64(7 * i)) & np.uint64(0x7F) for i in range(10)],
                      axis=1).astype(np.uint8)
    # number of groups: 1 + index of the highest nonzero group
    nonzero = groups != 0
    count = np.where(nonzero.any(axis=1), 10 - np.argmax(nonzero[:, ::-1], axis=1), 1)
    cols = np.arange(10)
    keep = cols[None, :] < count[:, None]
    more = cols[None, :] < (count[:, None] - 1)
    groups = groups | (more.astype(np.uint8) << 7)
    return groups[keep].tobytes()


class Writer:
    """Builds one message's bytes field by field (schema-free)."""

    def __init__(self):
        self._parts: list[bytes] = []

    def _key(self, number: int, wire: int) -> None:
        self._parts.append(_encode_varint((number << 3) | wire))

    def varint(self, number: int, value: int, kind: str = "int64") -> Writer:
        self._key(number, VARINT)
        self._parts.append(_encode_varint(_varint_payload(value, kind)))
        return self

    def fixed32(self, number: int, value, dtype: str = "<f4") -> Writer:
        self._key(number, FIXED32)
        self._parts.append(np.array(value, dtype=dtype).tobytes())
        return self

    def fixed64(self, number: int, value, dtype: str = "<f8") -> Writer:
        self._key(number, FIXED64)
        self._parts.append(np.array(value, dtype=dtype).tobytes())
        return self

    def bytes(self, number: int, value: bytes | bytearray | memoryview) -> Writer:
        self._key(number, LENGTH)
        self._parts.append(_encode_varint(len(value)))
        self._parts.append(bytes(value))
        return self

    def string(self, number: int, value: str) -> Writer:
        return self.bytes(number, value.encode("utf-8"))

    def message(self, number: int, body: bytes | Writer) -> Writer:
        return self.bytes(number, body.getvalue() if isinstance(body, Writer) else body)

    def packed(self, number: int, values, kind: str) -> Writer:
        """A packed repeated numeric field (nothing is written for an empty array)."""
        values = np.asarray(values)
        if values.size == 0:
            return self
        if kind in _FIXED32_KINDS:
            body = np.ascontiguousarray(values, dtype=_FIXED32_KINDS[kind]).tobytes()
        elif kind in _FIXED64_KINDS:
            body = np.ascontiguousarray(values, dtype=_FIXED64_KINDS[kind]).tobytes()
        else:
            body = _encode_varint_array(values.ravel(), kind)
        return self.bytes(number, body)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def encode(message: dict[str, Any], schema: Message) -> bytes:
    """Encode a dict (as :func:`decode` returns) of type ``schema``, fields in number order."""
    writer = Writer()
    for name in message:
        assert schema.by_name(name) is not None, f"{schema.name} has no field {name!r}"
    for f in sorted(schema.fields, key=lambda f: f.number):    # protobuf's own order
        if f.name not in message:
            continue
        value = message[f.name]
        values = value if f.repeated else [value]
        if f.repeated and f.kind not in _LENGTH_KINDS and f.packed:
            writer.packed(f.number, np.asarray(value).ravel(), f.kind)
            continue
        for item in values:
            if f.kind == "message":
                writer.message(f.number, encode(item, f.message))
            elif f.kind == "string":
                writer.string(f.number, item)
            elif f.kind == "bytes":
                writer.bytes(f.number, item)
            elif f.kind in _FIXED32_KINDS:
                writer.fixed32(f.number, item, _FIXED32_KINDS[f.kind])
            elif f.kind in _FIXED64_KINDS:
                writer.fixed64(f.number, item, _FIXED64_KINDS[f.kind])
            else:
                writer.varint(f.number, int(item), f.kind)
    return writer.getvalue()
