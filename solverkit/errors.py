"""The one family of errors a user can cause.

Every mistake in a config, a data file or on the command line is raised as a
``SolverkitError`` whose message names the file, the layer and the field (as far
as they are known) and, where a valid name is close, suggests it. The CLI prints
the message and exits with status 2; anything else is a bug and may crash loudly.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'kernel_size'?)`` when a choice is close to ``word``, else ``""``."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    if str(word).lower() in lowered:        # a wrong case only: 'Adamw' -> 'AdamW'
        close = [lowered[str(word).lower()]]
    else:
        close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# numpy's words when it refuses a size before trying to allocate it
_SIZE_REFUSALS = ("array is too big", "maximum allowed dimension exceeded",
                  "maximum supported dimension", "too large to convert to c")


def size_refusal(err: BaseException) -> str | None:
    """A short reason when ``err`` is numpy (or the allocator) refusing an array size —
    a ``MemoryError``, or the ``ValueError``/``OverflowError`` numpy raises for sizes it
    cannot even attempt (``array is too big``) — else ``None``."""
    if isinstance(err, MemoryError):
        return str(err).splitlines()[0] if str(err) else "out of memory"
    if isinstance(err, (ValueError, OverflowError)):
        text = str(err)
        if any(words in text.lower() for words in _SIZE_REFUSALS):
            return text.split(";")[0].strip()
    return None


class SolverkitError(Exception):
    """A mistake the user can fix: the message says where and what.

    ``file``, ``line``, ``layer`` and ``field`` locate the mistake; ``str(err)``
    renders ``file:line: layer 'conv1' (#3): field 'kernel_size': message``.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 layer: str | None = None, layer_index: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.layer = layer
        self.layer_index = layer_index
        self.field = field

    def located(self, *, file: str | None = None, line: int | None = None,
                layer: str | None = None, layer_index: int | None = None,
                field: str | None = None) -> SolverkitError:
        """Fill in whatever part of the location is still unknown; returns self."""
        self.file = self.file or file
        self.line = self.line or line
        self.layer = self.layer or layer
        self.layer_index = self.layer_index if self.layer_index is not None else layer_index
        self.field = self.field or field
        return self

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.layer is not None or self.layer_index is not None:
            index = f" (#{self.layer_index})" if self.layer_index is not None else ""
            where.append(f"layer '{self.layer}'{index}" if self.layer else f"layer{index}")
        if self.field:
            where.append(f"field '{self.field}'")
        return ": ".join([*where, self.message])


class ConfigError(SolverkitError):
    """A net or solver spec that is malformed or inconsistent."""


class ShapeError(ConfigError):
    """Blob shapes that do not fit a layer; found when the net is built."""


class DataError(SolverkitError):
    """A data source that is missing, unreadable or inconsistent."""


class SnapshotError(SolverkitError):
    """A snapshot that is missing, corrupt, or does not match the net or solver."""


class NonFiniteError(Exception):
    """Training produced NaN or infinity: a real failure (exit 1), not a config mistake."""
