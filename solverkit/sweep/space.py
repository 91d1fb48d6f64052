"""What a sweep tries: the grid, random draws from ranges, the seeds, and each trial's name.

A *setting* is a dict of solver fields (``{"type": "Adam", "base_lr": 0.01}``); a *trial* is
a setting run with one seed index ``r``. The settings are the product of the grid's values
(in the order given) times ``K`` random draws, each draw taking every ranged field once:

- ``FIELD=log(a,b)``: ``exp(uniform(ln a, ln b))`` (``0 < a <= b``);
- ``FIELD=uniform(a,b)``: ``uniform(a, b)`` (``a <= b``);
- ``FIELD=choice(A,B,...)``: one of the values, each equally likely.

Drawn numbers are rounded to 4 significant digits (so a setting reads and names exactly)
and come from ``numpy.random.default_rng(draw_seed)``: the same seed draws the same settings.

Trial ``r`` runs with ``random_seed = S + r``, where ``S`` is the solver spec's
``random_seed`` (0 when it is ``-1``): seed index 0 is the run the solver file describes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..spec.solver import SolverSpec, known_fields, parse_overrides, rule_and_policy_fields

# fields a sweep sets itself, never swept
RESERVED = {"random_seed": "the seed comes from --seeds (random_seed = the file's + seed index)",
            "snapshot_prefix": "each trial's files live under the sweep's --prefix folder",
            "net": "give the net with --net"}
RANGE = re.compile(r"^\s*(log|uniform|choice)\s*\((.*)\)\s*$", re.DOTALL)
NAME_LIMIT = 100


def split_values(text: str) -> list[str]:
    """``"0.1,[100, 200],Adam"`` -> ``["0.1", "[100, 200]", "Adam"]`` (commas inside
    brackets belong to the value)."""
    values, depth, current = [], 0, []
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    values.append("".join(current).strip())
    return values


def _field_of(text: str, option: str) -> tuple[str, str]:
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{option} takes FIELD=VALUES, got '{text}'", field=option)
    if key in RESERVED:
        raise ConfigError(f"{option} {key}: cannot be swept ({RESERVED[key]})", field=key)
    known = known_fields()
    if key not in known:
        raise ConfigError(f"{option}: unknown solver field '{key}'{did_you_mean(key, known)}",
                          field=key)
    return key, value


def _typed(key: str, value: str, option: str):
    """One value as the solver spec reads it (YAML-typed for numeric and list fields)."""
    if value == "":
        raise ConfigError(f"{option} {key}: an empty value", field=key)
    return parse_overrides([f"{key}={value}"])[key]


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["type=SGD,Adam", "base_lr=0.1,0.01"]`` -> ``{"type": ["SGD", "Adam"], ...}``."""
    grid: dict[str, list] = {}
    for text in items:
        key, values = _field_of(text, "--grid")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice", field=key)
        parts = split_values(values)
        if not any(parts):
            raise ConfigError(f"--grid {key}= has no values (give {key}=V1,V2,...)", field=key)
        typed = [_typed(key, part, "--grid") for part in parts]
        if len({json.dumps(v, sort_keys=True) for v in typed}) != len(typed):
            raise ConfigError(f"--grid {key} repeats a value", field=key)
        grid[key] = typed
    return grid


def parse_fixed(items: list[str]) -> dict:
    """``--set`` for every trial: ``["max_iter=100"]`` -> ``{"max_iter": 100}``."""
    fixed = {}
    for text in items:
        key, value = _field_of(text, "--set")
        fixed[key] = _typed(key, value, "--set")
    return fixed


@dataclass
class Range:
    """One ranged field of a random search: ``kind`` log, uniform or choice."""

    field: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: list = field(default_factory=list)
    integer: bool = False       # an int field: draws are rounded to whole numbers

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.field}=choice({','.join(str(c) for c in self.choices)})"
        return f"{self.field}={self.kind}({self.low:g},{self.high:g})"

    def draw(self, rng: np.random.Generator):
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "log":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return self.rounded(value)

    def rounded(self, value: float):
        """A drawn number as the setting keeps it: 4 significant digits, whole for an int."""
        return int(round(value)) if self.integer else float(f"{value:.4g}")


def parse_range(text: str) -> Range:
    key, body = _field_of(text, "--random")
    match = RANGE.match(body)
    if not match:
        raise ConfigError(f"--random {key}={body}: give log(a,b), uniform(a,b) or "
                          f"choice(A,B,...)", field=key)
    kind, inner = match.group(1), match.group(2)
    parts = split_values(inner)
    if kind == "choice":
        if not any(parts):
            raise ConfigError(f"--random {key}=choice() has no values", field=key)
        return Range(key, kind, choices=[_typed(key, part, "--random") for part in parts])
    if len(parts) != 2:
        raise ConfigError(f"--random {key}={kind}(...) takes two numbers, low and high",
                          field=key)
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"--random {key}={kind}({inner}): low and high must be numbers",
                          field=key) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"--random {key}: low and high must be finite", field=key)
    if low > high:
        raise ConfigError(f"--random {key}={kind}({inner}): low {low:g} > high {high:g}",
                          field=key)
    if kind == "log" and low <= 0:
        raise ConfigError(f"--random {key}=log({inner}): a log range needs 0 < low",
                          field=key)
    infos = {**rule_and_policy_fields(), **SolverSpec.model_fields}
    integer = infos[key].annotation is int
    _typed(key, str(int(low)) if integer else repr(low), "--random")   # takes numbers at all
    return Range(key, kind, low, high, integer=integer)


def draw_settings(ranges: list[Range], count: int, draw_seed: int) -> list[dict]:
    """``count`` random settings over ``ranges`` (the same for the same ``draw_seed``)."""
    rng = np.random.default_rng(draw_seed)
    return [{r.field: r.draw(rng) for r in ranges} for _ in range(count)]


def settings(grid: dict[str, list], draws: list[dict]) -> list[dict]:
    """The grid's product (first field slowest), each combined with every draw."""
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if not draws:
        return combos
    return [{**combo, **draw} for combo in combos for draw in draws]


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def setting_label(setting: dict) -> str:
    """``type=Adam,base_lr=0.01`` (``(solver file)`` for the empty setting)."""
    return ",".join(f"{k}={format_value(v)}" for k, v in setting.items()) or "(solver file)"


def trial_name(setting: dict, seed_index: int) -> str:
    """A folder name: the setting's label with unsafe characters replaced, and the seed
    index; a label too long for a name is cut and ends with a hash of the whole."""
    label = re.sub(r"[^A-Za-z0-9._=,+-]", "_", setting_label(setting)) if setting else "base"
    if len(label) > NAME_LIMIT:
        digest = hashlib.sha1(setting_label(setting).encode()).hexdigest()[:8]
        label = f"{label[:NAME_LIMIT]}~{digest}"
    return f"{label}@seed{seed_index}"


def overrides(setting: dict) -> list[str]:
    """The ``--set`` arguments for a setting."""
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
            for k, v in setting.items()]
