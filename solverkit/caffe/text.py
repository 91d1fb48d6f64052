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

import re
from dataclasses import dataclass, field

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


@dataclass
class TextMessage:
    """The fields of one message in file order (a key may repeat)."""

    entries: list[Entry] = field(default_factory=list)
    line: int = 1
    col: int = 1

    def keys(self) -> list[str]:
        return list(dict.fromkeys(e.key for e in self.entries))

    def all(self, key: str) -> list[Entry]:
        return [e for e in self.entries if e.key == key]

    def first(self, key: str) -> Entry | None:
        return next((e for e in self.entries if e.key == key), None)


@dataclass
class _Token:
    kind: str
    text: str
    line: int
    col: int


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
    def __init__(self, text: str, file: str | None, max_depth: int):
        self.file = file
        self.max_depth = max_depth
        self.tokens = self._tokenize(text)
        self.pos = 0

    def error(self, message: str, line: int, col: int) -> ConfigError:
        return ConfigError(f"prototxt syntax error at column {col}: {message}", file=self.file,
                           line=line)

    def _tokenize(self, text: str) -> list[_Token]:
        tokens = []
        line, line_start, pos = 1, 0, 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            col = pos - line_start + 1
            if match is None:
                snippet = text[pos:pos + 10].split("\n")[0]
                if text[pos] in "\"'":
                    raise self.error(f"string not closed on its line: {snippet!r}", line, col)
                raise self.error(f"unexpected character {text[pos]!r}", line, col)
            kind = match.lastgroup
            if kind == "newline":
                line += 1
                line_start = match.end()
            elif kind not in ("space", "comment"):
                tokens.append(_Token(kind, match.group(), line, col))
            pos = match.end()
        tokens.append(_Token("end", "", line, pos - line_start + 1))
        return tokens

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def describe(self, token: _Token) -> str:
        return "the end of the file" if token.kind == "end" else repr(token.text)

    def message(self, closing: str | None, depth: int, line: int, col: int) -> TextMessage:
        if depth > self.max_depth:
            raise self.error(f"messages nested deeper than {self.max_depth}", line, col)
        out = TextMessage(line=line, col=col)
        while True:
            token = self.peek()
            if token.kind == "end":
                if closing is not None:
                    raise self.error(f"'{closing}' missing: the message opened at line {line} "
                                     f"is not closed", token.line, token.col)
                return out
            if token.kind == "punct" and token.text == closing:
                self.take()
                return out
            if token.kind != "ident":
                raise self.error(f"expected a field name, found {self.describe(token)}",
                                 token.line, token.col)
            self.take()
            out.entries.extend(self.field(token, depth))
            sep = self.peek()
            if sep.kind == "punct" and sep.text in ",;":
                self.take()

    def field(self, name: _Token, depth: int) -> list[Entry]:
        token = self.peek()
        colon = token.kind == "punct" and token.text == ":"
        if colon:
            self.take()
            token = self.peek()
        if token.kind == "punct" and token.text in "{<":
            self.take()
            closing = "}" if token.text == "{" else ">"
            body = self.message(closing, depth + 1, token.line, token.col)
            return [Entry(name.text, body, name.line, name.col)]
        if not colon:
            raise self.error(f"expected ':' or '{{' after '{name.text}', found "
                             f"{self.describe(token)}", token.line, token.col)
        if token.kind == "punct" and token.text == "[":
            self.take()
            entries = []
            while True:
                token = self.peek()
                if token.kind == "punct" and token.text == "]":
                    self.take()
                    return entries
                if token.kind == "punct" and token.text in "{<":
                    self.take()
                    closing = "}" if token.text == "{" else ">"
                    value = self.message(closing, depth + 1, token.line, token.col)
                else:
                    value = self.scalar(name)
                entries.append(Entry(name.text, value, name.line, name.col))
                token = self.peek()
                if token.kind == "punct" and token.text == ",":
                    self.take()
                elif not (token.kind == "punct" and token.text == "]"):
                    raise self.error(f"expected ',' or ']' in the list of '{name.text}', found "
                                     f"{self.describe(token)}", token.line, token.col)
        return [Entry(name.text, self.scalar(name), name.line, name.col)]

    def scalar(self, name: _Token) -> Scalar:
        token = self.take()
        if token.kind == "number":
            return Scalar("number", _number(token.text), token.text, token.line, token.col)
        if token.kind == "signed_ident":
            word = token.text.lstrip("-").strip().lower()
            return Scalar("number", float("-nan" if word == "nan" else "-inf"), token.text,
                          token.line, token.col)
        if token.kind == "ident":
            value = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}.get(
                token.text.lower(), token.text)
            kind = "number" if isinstance(value, float) else "ident"
            return Scalar(kind, value, token.text, token.line, token.col)
        if token.kind == "string":
            parts = [token]
            while self.peek().kind == "string":        # "a" "b" is "ab"
                parts.append(self.take())
            try:
                value = "".join(_unescape(p.text[1:-1]) for p in parts)
            except ValueError as err:
                raise self.error(f"bad string: {err}", token.line, token.col) from None
            return Scalar("string", value, token.text, token.line, token.col)
        raise self.error(f"expected a value for '{name.text}', found {self.describe(token)}",
                         token.line, token.col)


def parse_text(text: str, file: str | None = None, *, max_bytes: int = MAX_TEXT_BYTES,
               max_depth: int = MAX_DEPTH) -> TextMessage:
    """Parse protobuf text into a :class:`TextMessage` (the top-level message)."""
    if len(text) > max_bytes:
        raise ConfigError(f"prototxt of {len(text)} characters exceeds the limit of "
                          f"{max_bytes}", file=file)
    parser = _Parser(text, file, max_depth)
    return parser.message(None, 0, 1, 1)
