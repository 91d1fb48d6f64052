"""Seeded mutations of valid files: what a damaged disk, a careless script or a hostile
sender makes of them.

``Mutator(seed).mutate(data, corpus)`` returns new bytes and a short description; the
same seed and inputs give the same result, so a failing case is reproduced from its
target name, seed and index alone. Byte mutations: bit flips, byte overwrites with edge
values, truncation, extension, deletion and duplication of a span, a splice of another
file of the corpus, a varint replaced by a huge one, a length or size field set to a huge
value, a 32-bit integer in a header set to an edge value. Text mutations (for text
formats): a line dropped, doubled or swapped, a number replaced by an edge number, a
character inserted, braces and brackets nested thousands deep.
"""

from __future__ import annotations

import random
import re

HUGE_VARINTS = (
    b"\xff\xff\xff\xff\x0f",                                  # 2^32 - 1
    b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f",                  # 2^63 - 1
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",              # 2^64 - 1
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",      # a varint too long
    b"\x80\x80\x80\x80\x10",                                  # 2^32
)
EDGE_INT32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0x7FFF)
EDGE_NUMBERS = ("0", "-1", "1e308", "-1e308", "1e-320", "nan", "inf", "-inf",
                "99999999999999999999999", "4294967296", "-2147483649", "0x7fffffff", "1.5")
NEST = ("{", "[", "layer {", "a: [", "- ")


class Mutator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def mutate(self, data: bytes, corpus: list[bytes], *, text: bool = False,
                rounds: int | None = None) -> tuple[bytes, str]:
        """``data`` changed by 1–3 mutations (text ones too when ``text``)."""
        rng = self.rng
        steps = []
        choices = self.BYTE + (self.TEXT if text else ())
        for _ in range(rounds or rng.choice((1, 1, 1, 2, 3))):
            operation = rng.choice(choices)
            data, what = operation(self, bytearray(data), corpus)
            data = bytes(data)
            steps.append(what)
        return data, "; ".join(steps)

    # -- bytes ---------------------------------------------------------------------
    def _span(self, n: int) -> tuple[int, int]:
        if n == 0:
            return 0, 0
        start = self.rng.randrange(n)
        return start, min(n, start + self.rng.choice((1, 2, 4, 8, 64, 1024)))

    def bit_flip(self, data, corpus):
        if not data:
            return data, "bit flip (empty)"
        i = self.rng.randrange(len(data))
        data[i] ^= 1 << self.rng.randrange(8)
        return data, f"bit flip at {i}"

    def byte_set(self, data, corpus):
        if not data:
            return data, "byte set (empty)"
        i = self.rng.randrange(len(data))
        data[i] = self.rng.choice((0, 0xFF, 0x7F, 0x80, self.rng.randrange(256)))
        return data, f"byte set at {i}"

    def truncate(self, data, corpus):
        n = self.rng.randrange(len(data) + 1)
        return data[:n], f"truncated to {n}"

    def extend(self, data, corpus):
        tail = bytes(self.rng.randrange(256) for _ in range(self.rng.choice((1, 7, 100))))
        return data + tail, f"extended by {len(tail)}"

    def delete(self, data, corpus):
        a, b = self._span(len(data))
        return data[:a] + data[b:], f"deleted {a}:{b}"

    def duplicate(self, data, corpus):
        a, b = self._span(len(data))
        return data[:b] + data[a:b] * self.rng.choice((1, 2, 50)) + data[b:], f"doubled {a}:{b}"

    def splice(self, data, corpus):
        other = self.rng.choice(corpus)
        a, b = self._span(len(other))
        at = self.rng.randrange(len(data) + 1)
        return data[:at] + other[a:b] + data[at:], f"spliced {b - a} bytes at {at}"

    def huge_varint(self, data, corpus):
        """A varint (a run of bytes with the top bit set and its last byte) replaced."""
        if not data:
            return data, "varint (empty)"
        i = self.rng.randrange(len(data))
        j = i
        while j < len(data) and data[j] & 0x80 and j - i < 10:
            j += 1
        return data[:i] + self.rng.choice(HUGE_VARINTS) + data[j + 1:], f"huge varint at {i}"

    def huge_length(self, data, corpus):
        """A protobuf length-delimited key (wire type 2) followed by a huge length."""
        keys = [i for i, byte in enumerate(data[:-1]) if byte & 0x07 == 2 and byte < 0x80]
        if not keys:
            return self.huge_varint(data, corpus)
        i = self.rng.choice(keys)
        j = i + 1
        while j < len(data) and data[j] & 0x80:
            j += 1
        return (data[:i + 1] + self.rng.choice(HUGE_VARINTS) + data[j + 1:],
                f"huge length after key at {i}")

    def edge_int32(self, data, corpus):
        """A 4-byte integer within the first 64 bytes (headers) set to an edge value."""
        if len(data) < 4:
            return data, "int32 (short)"
        i = self.rng.randrange(0, min(len(data) - 3, 64))
        value = self.rng.choice(EDGE_INT32)
        order = self.rng.choice(("big", "little"))
        data[i:i + 4] = value.to_bytes(4, order)
        return data, f"int32 {value:#x} ({order}) at {i}"

    BYTE = (bit_flip, byte_set, truncate, extend, delete, duplicate, splice, huge_varint,
            huge_length, edge_int32)

    # -- text ----------------------------------------------------------------------
    def _lines(self, data):
        return bytes(data).decode("utf-8", "replace").split("\n")

    def line_edit(self, data, corpus):
        lines = self._lines(data)
        i = self.rng.randrange(len(lines))
        kind = self.rng.choice(("drop", "double", "swap"))
        if kind == "drop":
            del lines[i]
        elif kind == "double":
            lines.insert(i, lines[i])
        else:
            j = self.rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines).encode(), f"line {i} {kind}"

    def edge_number(self, data, corpus):
        text = bytes(data).decode("utf-8", "replace")
        numbers = list(re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", text))
        if not numbers:
            return data, "number (none)"
        m = self.rng.choice(numbers)
        value = self.rng.choice(EDGE_NUMBERS)
        return (text[:m.start()] + value + text[m.end():]).encode(), f"number -> {value}"

    def insert_char(self, data, corpus):
        at = self.rng.randrange(len(data) + 1)
        char = self.rng.choice(("{", "}", "[", "]", ":", "\"", "'", "\\", "#", "\t", "&a",
                                "*a", "!!python/object:os.system", "\x00", "é", "\ufeff"))
        return data[:at] + char.encode() + data[at:], f"inserted {char!r} at {at}"

    def deep_nesting(self, data, corpus):
        opener = self.rng.choice(NEST)
        depth = self.rng.choice((100, 1000, 20000))
        at = self.rng.randrange(len(data) + 1)
        return data[:at] + (opener * depth).encode() + data[at:], f"{opener!r} x {depth}"

    TEXT = (line_edit, edge_number, insert_char, deep_nesting, line_edit, edge_number)
