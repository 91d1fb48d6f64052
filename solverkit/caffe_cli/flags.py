"""Command lines in gflags' syntax, as Caffe's tools read them.

``--name=value``, ``--name value``, ``-name value`` and ``-name=value`` all set a flag;
a bool flag is set by ``--name`` alone, ``--noname`` clears it, and ``--name=false`` (or
``0``, ``no``) says it explicitly. Flags and positional arguments may come in any order;
everything after ``--`` is positional. ``--help`` prints the usage, ``--version`` the
version. A mistake (an unknown flag, a missing or malformed value) is a ``FlagError``
with gflags' wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


class FlagError(Exception):
    """A command-line mistake: its message, then the tool exits 1 (as gflags does)."""


class HelpRequested(Exception):
    """``--help`` or ``--version``: print ``text`` and exit with ``status``."""

    def __init__(self, text: str, status: int):
        super().__init__(text)
        self.text, self.status = text, status


@dataclass(frozen=True)
class Flag:
    """One flag: name, kind (``string``, ``int32``, ``double`` or ``bool``), default, help."""

    name: str
    kind: str
    default: Any
    help: str

    def parse(self, text: str) -> Any:
        if self.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
        elif self.kind == "int32":
            try:
                value = int(text, 10)
                if -2**31 <= value < 2**31:
                    return value
            except ValueError:
                pass
        elif self.kind == "double":
            try:
                return float(text)
            except ValueError:
                pass
        else:
            return text
        raise FlagError(f"ERROR: illegal value '{text}' specified for {self.kind} flag "
                        f"'{self.name}'")

    def usage(self) -> str:
        default = f'"{self.default}"' if self.kind == "string" else (
            str(self.default).lower() if self.kind == "bool" else str(self.default))
        return f"    -{self.name} ({self.help}) type: {self.kind} default: {default}"


class Flags:
    """The parsed values, as attributes (``flags.solver``)."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__.update(values)
        self.given: set[str] = set()


def usage_text(program: str, message: str, flags: list[Flag], source: str) -> str:
    """gflags' ``ShowUsageWithFlagsRestrict``: the usage message, then the flags."""
    lines = [f"{program}: {message}", "", f"  Flags from {source}:"]
    lines += [flag.usage() for flag in sorted(flags, key=lambda f: f.name)]
    return "\n".join(lines)


def parse_flags(argv: list[str], flags: list[Flag], *, usage: str,
                version: str) -> tuple[Flags, list[str]]:
    """``(flags, positional arguments)`` of ``argv`` (without the program name)."""
    by_name = {flag.name: flag for flag in flags}
    values = Flags({flag.name: flag.default for flag in flags})
    positional: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            positional += args
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, text = arg.lstrip("-").partition("=")
        if name in ("help", "helpshort", "helpfull"):
            raise HelpRequested(usage, 1)
        if name == "version":
            raise HelpRequested(version, 0)
        flag = by_name.get(name)
        if flag is None and name.startswith("no") and not has_value:
            negated = by_name.get(name[2:])
            if negated is not None and negated.kind == "bool":
                values.__dict__[negated.name] = False
                values.given.add(negated.name)
                continue
        if flag is None:
            raise FlagError(f"ERROR: unknown command line flag '{name}'")
        if not has_value:
            if flag.kind == "bool":
                text = "true"
            elif not args:
                raise FlagError(f"ERROR: flag '{arg}' is missing its argument; flag "
                                f"description: {flag.help}")
            else:
                text = args.pop(0)
        values.__dict__[flag.name] = flag.parse(text)
        values.given.add(flag.name)
    return values, positional
