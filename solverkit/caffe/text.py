"""A parser of the protobuf text format (Caffe's ``.prototxt``), schema-free and bounded.

The result is a tree of :class:`TextMessage` objects: an ordered list of
:class:`Entry` (``key``, ``value``, ``line``, ``col``) whose value is a
:class:`Scalar` or a nested :class:`TextMessage`. What a field means is decided by
the caller (:mod:`solverkit.caffe.prototxt`), which knows Caffe's messages.

Accepted: ``#`` comments; ``key: value``; ``key { ... }``, ``key: { ... }`` and
``key < ... >``; lists ``key: [a, b]``; optional ``,`` or ``;`` after a field;
strings in single or double quotes with C escapes (adjacent strings join);
integers (decimal, hex, octal), floats with exponents and an ``f`` suffix,
``inf``/``nan``; identifiers (enums, ``true``/``false``). A syntax error is a
:class:`~solverkit.errors.ConfigError` naming the file, the line and the column.
"""

from __future__ import annotations

import bisect
import re
from array import array
from dataclasses import dataclass

from ..errors import ConfigError

MAX_TEXT_BYTES = 64 * 2**20
MAX_DEPTH = 64

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)[fF]?
                (?![A-Za-z0-9_]))
  | (?P<signed_ident>-\s*(?:inf|infinity|nan)\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[:{}\[\]<>,;])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "?": "?"}


@dataclass
class Scalar:
    """One value: ``kind`` is "string", "number" or "ident"; ``value`` its Python form."""

    kind: str
    value: object
    text: str
    line: int
    col: int


@dataclass
class Entry:
    key: str
    value: Scalar | TextMessage
    line: int
    col: int


# What the parse keeps per field: five numbers in flat arrays over the whole file, in file
# order (a message's fields follow it), so the memory is a small multiple of the text
# (about 17 bytes a field) whatever the file holds. Entries, scalars and their values are
# made from the text when they are asked for.
_MESSAGE, _NUMBER, _SIGNED, _IDENT, _STRING = range(5)
_KINDS = {"number": _NUMBER, "signed_ident": _SIGNED, "ident": _IDENT, "string": _STRING}
_SKIP = re.compile(r"(?:[ \t\r\f\v\n]+|\#[^\n]*)*")


class _Document:
    """The parsed file: its text, where its lines start, and one row per field."""

    def __init__(self, text: str):
        self.text = text
        self.line_starts = array("I", [0])
        self.line_starts.extend(match.end() for match in re.finditer("\n", text))
        self.names: list[str] = []
        self.name_ids: dict[str, int] = {}
        self.keys = array("I")          # name id of the field
        self.key_at = array("I")        # offset of its name
        self.value_at = array("I")      # offset of its value's first token (a message: '{')
        self.kinds = array("B")         # _MESSAGE ... _STRING
        self.ends = array("I")          # a message: the row after its last field

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column), both from 1, of a character offset."""
        index = bisect.bisect_right(self.line_starts, offset) - 1
        return index + 1, offset - self.line_starts[index] + 1

    def add(self, name: str, key_at: int, value_at: int, kind: int) -> int:
        name_id = self.name_ids.get(name)
        if name_id is None:
            name_id = self.name_ids[name] = len(self.names)
            self.names.append(name)
        self.keys.append(name_id)
        self.key_at.append(key_at)
        self.value_at.append(value_at)
        self.kinds.append(kind)
        self.ends.append(0)
        return len(self.keys) - 1

    def children(self, first: int, end: int):
        row = first
        while row < end:
            yield row
            row = self.ends[row] if self.kinds[row] == _MESSAGE else row + 1

    def entry(self, row: int) -> Entry:
        line, col = self.position(self.key_at[row])
        return Entry(self.names[self.keys[row]], self.value(row), line, col)

    def value(self, row: int) -> Scalar | TextMessage:
        kind, offset = self.kinds[row], self.value_at[row]
        line, col = self.position(offset)
        if kind == _MESSAGE:
            return TextMessage(line=line, col=col, _document=self, _rows=(row + 1, self.ends[row]))
        parts = _strings(self.text, offset) if kind == _STRING else \
            [_TOKEN.match(self.text, offset).group()]
        text = parts[0]
        if kind == _NUMBER:
            return Scalar("number", _number(text), text, line, col)
        if kind == _SIGNED:
            word = text.lstrip("-").strip().lower()
            return Scalar("number", float("-nan" if word == "nan" else "-inf"), text, line, col)
        if kind == _IDENT:
            value = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}.get(
                text.lower(), text)
            return Scalar("number" if isinstance(value, float) else "ident", value, text,
                          line, col)
        return Scalar("string", "".join(_unescape(p[1:-1]) for p in parts), text, line, col)


def _strings(text: str, offset: int) -> list[str]:
    """The adjacent string tokens from ``offset`` on ("a" "b" is one value, "ab")."""
    parts = []
    while True:
        match = _TOKEN.match(text, offset)
        if match is None or match.lastgroup != "string":
            return parts
        parts.append(match.group())
        offset = _SKIP.match(text, match.end()).end()


class TextMessage:
    """The fields of one message in file order (a key may repeat)."""

    def __init__(self, entries: list[Entry] | None = None, line: int = 1, col: int = 1, *,
                 _document: _Document | None = None, _rows: tuple[int, int] = (0, 0)):
        self._own = list(entries or [])
        self._document = _document
        self._rows = _rows
        self.line = line
        self.col = col

    def _matching(self, key: str | None):
        if self._document is None:
            yield from (e for e in self._own if key is None or e.key == key)
            return
        document = self._document
        wanted = None if key is None else document.name_ids.get(key, -1)
        for row in document.children(*self._rows):
            if wanted is None or document.keys[row] == wanted:
                yield document.entry(row)

    @property
    def entries(self) -> list[Entry]:
        return list(self._matching(None))

    def keys(self) -> list[str]:
        if self._document is None:
            return list(dict.fromkeys(e.key for e in self._own))
        document = self._document
        return list(dict.fromkeys(document.names[document.keys[row]]
                                  for row in document.children(*self._rows)))

    def all(self, key: str) -> list[Entry]:
        return list(self._matching(key))

    def first(self, key: str) -> Entry | None:
        return next(self._matching(key), None)

    def __repr__(self) -> str:
        return f"TextMessage(line={self.line}, col={self.col}, keys={self.keys()})"


def _unescape(body: str) -> str:
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not digits:
                raise ValueError("\\x needs hex digits")
            out.append(chr(int(digits.group(), 16)))
            i += 2 + len(digits.group())
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
            out.append(chr(int(digits, 8)))
            i += 1 + len(digits)
        else:
            raise ValueError(f"unknown escape \\{nxt}")
    return "".join(out)


def _number(text: str):
    body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
        return int(body, 16)
    if re.fullmatch(r"[-+]?0[0-7]+", body):
        return int(body, 8)
    if re.fullmatch(r"[-+]?\d+", body) and not text.endswith(("f", "F")):
        return int(body)
    return float(body)


class _Parser:
    """A recursive descent over a stream of tokens ``(kind, start, end)``; one token of
    lookahead is all that is held besides the document being filled."""

    def __init__(self, text: str, file: str | None, max_depth: int):
        self.file = file
        self.max_depth = max_depth
        self.text = text
        self.document = _Document(text)
        self.pos = 0
        self.ahead = self._next()

    def error(self, message: str, offset: int) -> ConfigError:
        line, col = self.document.position(offset)
        return ConfigError(f"prototxt syntax error at column {col}: {message}", file=self.file,
                           line=line)

    def _next(self) -> tuple[str, int, int]:
        text = self.text
        pos = _SKIP.match(text, self.pos).end()
        if pos >= len(text):
            self.pos = pos
            return ("end", pos, pos)
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup in ("space", "newline", "comment"):
            snippet = text[pos:pos + 10].split("\n")[0]
            if text[pos] in "\"'":
                raise self.error(f"string not closed on its line: {snippet!r}", pos)
            raise self.error(f"unexpected character {text[pos]!r}", pos)
        self.pos = match.end()
        return (match.lastgroup, pos, match.end())

    def peek(self) -> tuple[str, int, int]:
        return self.ahead

    def take(self) -> tuple[str, int, int]:
        token = self.ahead
        self.ahead = self._next()
        return token

    def is_punct(self, token, chars: str) -> bool:
        return token[0] == "punct" and self.text[token[1]] in chars

    def describe(self, token) -> str:
        return "the end of the file" if token[0] == "end" else \
            repr(self.text[token[1]:token[2]])

    def message(self, closing: str | None, depth: int, opened_at: int) -> None:
        if depth > self.max_depth:
            raise self.error(f"messages nested deeper than {self.max_depth}", opened_at)
        while True:
            token = self.peek()
            if token[0] == "end":
                if closing is not None:
                    line, _ = self.document.position(opened_at)
                    raise self.error(f"'{closing}' missing: the message opened at line {line} "
                                     f"is not closed", token[1])
                return
            if closing is not None and self.is_punct(token, closing):
                self.take()
                return
            if token[0] != "ident":
                raise self.error(f"expected a field name, found {self.describe(token)}",
                                 token[1])
            self.take()
            self.field(token, depth)
            if self.is_punct(self.peek(), ",;"):
                self.take()

    def _submessage(self, name: str, key_at: int, brace, depth: int) -> None:
        row = self.document.add(name, key_at, brace[1], _MESSAGE)
        closing = "}" if self.text[brace[1]] == "{" else ">"
        self.message(closing, depth + 1, brace[1])
        self.document.ends[row] = len(self.document.keys)

    def field(self, name_token, depth: int) -> None:
        name = self.text[name_token[1]:name_token[2]]
        key_at = name_token[1]
        token = self.peek()
        colon = self.is_punct(token, ":")
        if colon:
            self.take()
            token = self.peek()
        if self.is_punct(token, "{<"):
            self._submessage(name, key_at, self.take(), depth)
            return
        if not colon:
            raise self.error(f"expected ':' or '{{' after '{name}', found "
                             f"{self.describe(token)}", token[1])
        if self.is_punct(token, "["):
            self.take()
            while True:
                token = self.peek()
                if self.is_punct(token, "]"):
                    self.take()
                    return
                if self.is_punct(token, "{<"):
                    self._submessage(name, key_at, self.take(), depth)
                else:
                    self.scalar(name, key_at)
                token = self.peek()
                if self.is_punct(token, ","):
                    self.take()
                elif not self.is_punct(token, "]"):
                    raise self.error(f"expected ',' or ']' in the list of '{name}', found "
                                     f"{self.describe(token)}", token[1])
        self.scalar(name, key_at)

    def scalar(self, name: str, key_at: int) -> None:
        token = self.take()
        kind = _KINDS.get(token[0])
        if kind is None:
            raise self.error(f"expected a value for '{name}', found {self.describe(token)}",
                             token[1])
        if kind == _STRING:
            part = token
            while True:                             # "a" "b" is "ab": checked here, joined
                try:                                # when the value is asked for
                    _unescape(self.text[part[1] + 1:part[2] - 1])
                except ValueError as err:
                    raise self.error(f"bad string: {err}", token[1]) from None
                if self.peek()[0] != "string":
                    break
                part = self.take()
        self.document.add(name, key_at, token[1], kind)


def parse_text(text: str, file: str | None = None, *, max_bytes: int = MAX_TEXT_BYTES,
               max_depth: int = MAX_DEPTH) -> TextMessage:
    """Parse protobuf text into a :class:`TextMessage` (the top-level message)."""
    if len(text) > max_bytes:
        raise ConfigError(f"prototxt of {len(text)} characters exceeds the limit of "
                          f"{max_bytes}", file=file)
    parser = _Parser(text, file, max_depth)
    parser.message(None, 0, 0)
    document = parser.document
    return TextMessage(line=1, col=1, _document=document, _rows=(0, len(document.keys)))
