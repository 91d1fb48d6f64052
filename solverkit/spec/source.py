"""Reading YAML from a path, text or dict, and turning validation failures into clear errors.

Both specs (net and solver) come through here, so every message has the same shape:
``file:line: layer 'conv1' (#3): field 'kernal_size': unknown field (did you mean 'kernel_size'?)``.

A spec file is untrusted input, so reading it is bounded: only a regular file of at most
``MAX_SPEC_BYTES`` is read (a FIFO or a device is refused before it is opened for
reading), nesting deeper than ``MAX_DEPTH`` levels is an error, and so are aliases whose
expansion (what a reader of the loaded mapping walks) exceeds ``MAX_EXPANDED_NODES``
values. A key given twice in one mapping is an error naming both lines.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, did_you_mean
from ..files import LIMITS, read_text
from .models import SourcedSpec, SpecSource  # noqa: F401  (named here by loaders)

MAX_SPEC_BYTES = LIMITS["spec"]   # a spec is text a person writes: 16 MiB is far beyond any
MAX_DEPTH = 64                    # nesting levels of mappings and lists
MAX_EXPANDED_NODES = 1_000_000    # values after expanding every alias


# YAML 1.2 floats: PyYAML (YAML 1.1) reads 1e-3 (no dot) as the string '1e-3'
_FLOAT_1_2 = re.compile(r"""^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$""")


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting deeper than ``MAX_DEPTH`` while composing
    (the composer recurses once per level, so a 100,000-deep list would exhaust the stack)
    and reads ``1e-3`` as a number, as YAML 1.2 does."""

    def __init__(self, stream, file: str | None = None):
        super().__init__(stream)
        self._file = file
        self._depth = 0

    def fetch_flow_collection_start(self, TokenClass):
        # '[' or '{': refused as soon as it is too deep, before the scanner looks further
        # ahead (it would otherwise scan every level of a 100,000-deep '[[[...' first)
        if self.flow_level >= MAX_DEPTH:
            raise ConfigError(f"the YAML nests deeper than {MAX_DEPTH} levels; a spec "
                              f"never needs that many", file=self._file,
                              line=self.get_mark().line + 1)
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):       # an alias adds no level of its own
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"the YAML nests deeper than {MAX_DEPTH} levels; a spec "
                                  f"never needs that many", file=self._file, line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2,
                                     list("-+0123456789."))


def load_yaml_value(text: str):
    """One YAML value (a ``--set`` value) read as spec files are read (``1e-3`` a number)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check_node_tree(root, file: str | None) -> dict[tuple, int]:
    """Walk a composed node tree once per node: refuse duplicate keys and alias expansions
    beyond ``MAX_EXPANDED_NODES``; return every key path's line (a node reached again
    through an alias is not walked again: paths through it take the alias's line)."""
    # the expanded size and depth of every node, children before parents (iteratively: an
    # alias chain may be deeper than the stack allows)
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack = [(root, iter(_children(root)))]
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            parts = _children(node)
            size[id(node)] = 1 + sum(size[id(c)] for c in parts)
            depth[id(node)] = 1 + max((depth[id(c)] for c in parts), default=0)
            if size[id(node)] > MAX_EXPANDED_NODES:
                raise ConfigError(f"the YAML's aliases (*name) expand to more than "
                                  f"{MAX_EXPANDED_NODES:,} values, far more than a spec holds "
                                  f"(an alias bomb?)", file=file,
                                  line=node.start_mark.line + 1)
            if depth[id(node)] > MAX_DEPTH:
                raise ConfigError(f"the YAML's aliases (*name) nest deeper than {MAX_DEPTH} "
                                  f"levels; a spec never needs that many", file=file,
                                  line=node.start_mark.line + 1)
        elif id(child) not in size:
            if any(child is open_node for open_node, _ in stack):
                raise ConfigError("a YAML alias (*name) refers to a mapping or list that "
                                  "contains it (a loop)", file=file,
                                  line=child.start_mark.line + 1)
            stack.append((child, iter(_children(child))))
    lines: dict[tuple, int] = {}
    walked: set[int] = set()
    stack = [((), root)]
    while stack:
        prefix, node = stack.pop()
        if id(node) in walked:
            continue
        walked.add(id(node))
        later = []
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key != "<<" and isinstance(key_node, yaml.ScalarNode):
                    if key in first:
                        where = ".".join(str(p) for p in prefix)
                        if prefix[:1] == ("layers",) and len(prefix) > 1:     # a layer's entry
                            where = ".".join([f"layer #{prefix[1]}", *map(str, prefix[2:])])
                        raise ConfigError(
                            f"key '{key}' is given twice{f' in {where}' if where else ''} "
                            f"(lines {first[key]} and {line}); the second would silently "
                            f"replace the first", file=file, line=line, field=str(key))
                    first[key] = line
                path = (*prefix, key)
                lines.setdefault(path, line)
                later.append((path, value_node))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*prefix, i), item.start_mark.line + 1)
                later.append(((*prefix, i), item))
        stack.extend(reversed(later))       # in file order: the first path to a node wins
    return lines


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def looks_like_yaml_text(text: str) -> bool:
    return "\n" in text or (":" in text and not os.path.exists(text) and not text.endswith(
        (".yaml", ".yml", ".json")))


def read_text_file(path: str | os.PathLike, what: str, limit: int = MAX_SPEC_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (``files.read_text``); a
    ConfigError naming the file otherwise (missing, a symlink loop, a folder, a FIFO or
    device, too large, unreadable, not UTF-8)."""
    return read_text(path, what=what, limit=limit, error=ConfigError)


def read_spec_source(source, what: str) -> SpecSource:
    """Read ``source`` — a path, YAML text, or a dict — into a ``SpecSource``.

    ``what`` ("net spec", "solver spec") is used in messages.
    """
    if isinstance(source, dict):
        return SpecSource(raw=source)
    if isinstance(source, Path) or (isinstance(source, str) and not looks_like_yaml_text(source)):
        if str(source) == "":
            raise ConfigError(f"the {what} path is empty")
        text = read_text_file(source, what)
        return parse_yaml_text(text, what, file=str(source),
                               base_dir=Path(source).resolve().parent)
    if isinstance(source, str):
        return parse_yaml_text(source, what)
    raise TypeError(f"a {what} must be a path, YAML text or a dict, not {type(source).__name__}")


def parse_yaml_text(text: str, what: str, file: str | None = None,
                    base_dir: Path | None = None) -> SpecSource:
    loader = None
    try:
        loader = _BoundedLoader(text, file)     # its reader refuses control characters
        node = loader.get_single_node()
        lines = _check_node_tree(node, file) if node is not None else {}
        raw = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, max(err.position, 0)) + 1
        raise ConfigError(f"YAML syntax error: character {err.character!r} is not allowed in "
                          f"YAML text", file=file, line=line) from None
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
    finally:
        if loader is not None:
            loader.dispose()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a {what} must be a YAML mapping (key: value lines), "
                          f"not {type(raw).__name__}", file=file, line=1)
    return SpecSource(raw=raw, file=file, base_dir=base_dir or Path.cwd(), lines=lines)


def _nested_model(model: type[BaseModel] | None, loc) -> type[BaseModel] | None:
    """The model that holds the last name of ``loc``, following nested fields and lists."""
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = model_in(field.annotation) if field is not None else None
    return model


def model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (``X``, ``X | None``, ``list[X]``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
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
