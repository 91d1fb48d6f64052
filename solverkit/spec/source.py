"""Reading YAML from a path, text or dict, and turning validation failures into clear errors.

Both specs (net and solver) come through here, so every message has the same shape:
``file:line: layer 'conv1' (#3): field 'kernal_size': unknown field (did you mean 'kernel_size'?)``.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, did_you_mean


@dataclass
class SpecSource:
    """The raw mapping of a spec file plus where it came from (for messages and relative paths)."""

    raw: dict
    file: str | None = None          # the path as the user gave it, for messages
    base_dir: Path = field(default_factory=Path.cwd)   # relative paths in the spec start here
    lines: dict[tuple, int] = field(default_factory=dict)   # key path -> 1-based line

    def line(self, *path) -> int | None:
        """The line of the deepest known prefix of ``path`` (e.g. ``("layers", 3, "pad")``)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _line_map(node, prefix=(), out=None) -> dict[tuple, int]:
    """Map every key path of a composed YAML node tree to the line it starts on."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            out[path] = key_node.start_mark.line + 1
            _line_map(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*prefix, i)] = item.start_mark.line + 1
            _line_map(item, (*prefix, i), out)
    return out


def looks_like_yaml_text(text: str) -> bool:
    return "\n" in text or (":" in text and not os.path.exists(text) and not text.endswith(
        (".yaml", ".yml", ".json")))


def read_spec_source(source, what: str) -> SpecSource:
    """Read ``source`` — a path, YAML text, or a dict — into a ``SpecSource``.

    ``what`` ("net spec", "solver spec") is used in messages.
    """
    if isinstance(source, dict):
        return SpecSource(raw=source)
    if isinstance(source, Path) or (isinstance(source, str) and not looks_like_yaml_text(source)):
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"{what} file not found", file=str(source))
        if path.is_dir():
            raise ConfigError(f"{what} path is a folder, not a file", file=str(source))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read {what}: {err}", file=str(source)) from None
        return parse_yaml_text(text, what, file=str(source), base_dir=path.resolve().parent)
    if isinstance(source, str):
        return parse_yaml_text(source, what)
    raise TypeError(f"a {what} must be a path, YAML text or a dict, not {type(source).__name__}")


def parse_yaml_text(text: str, what: str, file: str | None = None,
                    base_dir: Path | None = None) -> SpecSource:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        context = getattr(err, "context", None)
        context_mark = getattr(err, "context_mark", None)
        if context and context_mark is not None and mark is not None \
                and context_mark.line != mark.line:
            context = f"{context} started at line {context_mark.line + 1}"
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"YAML syntax error: {detail}", file=file,
                          line=mark.line + 1 if mark else None) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a {what} must be a YAML mapping (key: value lines), "
                          f"not {type(raw).__name__}", file=file, line=1)
    return SpecSource(raw=raw, file=file, base_dir=base_dir or Path.cwd(),
                      lines=_line_map(node) if node is not None else {})


def _nested_model(model: type[BaseModel] | None, loc) -> type[BaseModel] | None:
    """The model that holds the last name of ``loc``, following nested fields and lists."""
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(error: dict, model: type[BaseModel] | None) -> tuple[str, str | None]:
    """One pydantic error entry -> (message, field name)."""
    loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
    name = loc[0] if loc else None
    path = ".".join(loc) if loc else None     # nested fields: "include.phase", "param.lr_mult"
    kind = error["type"]
    if kind == "extra_forbidden":
        # the suggestion comes from the model that owns the name (a filler, a rule, a param)
        owner = _nested_model(model, error["loc"])
        valid = list(owner.model_fields) if owner is not None else []
        return f"unknown field '{loc[-1]}'{did_you_mean(loc[-1], valid)}", path
    if kind == "missing":
        return "required field is missing", name
    if kind in ("literal_error", "enum"):
        expected = error.get("ctx", {}).get("expected", "")
        given = error.get("input")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",")]
        return (f"'{given}' is not one of {expected}{did_you_mean(given, choices)}", path)
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    given = error.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(given, (dict, list)):
        message = f"{message} (got {given!r})"
    return message, ".".join(loc) if loc else None


def validation_error(err: ValidationError, model: type[BaseModel], source: SpecSource,
                     path: tuple = (), layer: str | None = None,
                     layer_index: int | None = None) -> ConfigError:
    """The first problem of a pydantic ``ValidationError`` as one located ConfigError."""
    errors = err.errors()
    # an unknown field usually explains a "missing" one (a typo): report it first
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    message, name = _describe(first, model)
    key_path = (*path, *[p for p in first["loc"]])
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(message, file=source.file, line=source.line(*key_path),
                       layer=layer, layer_index=layer_index, field=name)


class SourcedSpec:
    """Mixin for a spec model that remembers its ``SpecSource`` in ``_source``."""

    @property
    def file(self) -> str | None:
        """The file the spec was read from, as the user named it (None for a dict or text)."""
        return self._source.file if self._source else None

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths inside the spec are relative to."""
        return self._source.base_dir if self._source else Path.cwd()
