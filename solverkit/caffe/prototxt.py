"""Caffe's text nets and solvers (``.prototxt``) as solverkit specs, with Caffe's semantics.

:func:`net_text_source` and :func:`solver_text_source` turn a file (or text) into the same
``SpecSource`` a YAML file gives — the raw mapping in our flat form plus the line of
every field — so the usual validation reports ``file:line: layer 'conv1' (#3): field
...`` against the prototxt itself. What Caffe's ``upgrade_net_proto_text`` and
``upgrade_solver_proto_text`` do is done here too:

- V1 nets (``layers { type: CONVOLUTION }``, ``blobs_lr``, ``weight_decay``, ``param``
  names) become today's layers; ``data_param``'s old ``scale/mean_file/crop_size/mirror``
  move to ``transform``;
- net-level ``input``/``input_shape``/``input_dim`` become one ``Input`` layer;
- ``solver_type: NESTEROV`` becomes ``type: Nesterov``.

Fields that only pick Caffe's device or engine are accepted and ignored (one note in the
log per file); every other field solverkit does not have is an error naming it.
"""

from __future__ import annotations

import logging
import os
import re
import typing
from pathlib import Path

from ..errors import ConfigError, SolverkitError, did_you_mean
from ..registry import layer_class
from ..spec.models import SpecSource
from ..spec.solver_fields import SolverSpec, policy_fields
from ..files import LIMITS, read_text
from .names import (
    DATA_TRANSFORM_FIELDS,
    ENUM_NUMBERS,
    LOSS_FIELDS,
    ENUM_NUMBERS_BY_BLOCK,
    SOLVER_TYPE_NUMBERS,
    SOLVER_TYPES,
    V1_TYPE_NUMBERS,
    V1_TYPES,
    blocks_of,
)
from .text import Entry, Scalar, TextMessage, parse_text

logger = logging.getLogger("solverkit")

SUFFIXES = (".prototxt", ".pbtxt")
IGNORED_NET_FIELDS = ("debug_info",)
# fields that only tune how Caffe computes a layer: accepted, noted, no effect
IGNORED_LAYER_FIELDS = ("engine", "force_nd_im2col")
IGNORED_SOLVER_FIELDS = ("solver_mode", "device_id", "layer_wise_reduce", "debug_info")
SOLVER_SAME = ("base_lr", "lr_policy", "gamma", "power", "momentum", "momentum2", "delta",
               "rms_decay", "weight_decay", "regularization_type", "stepsize", "max_iter",
               "display", "average_loss", "iter_size", "clip_gradients", "snapshot",
               "snapshot_prefix", "snapshot_after_train", "random_seed", "test_interval",
               "test_initialization", "type")
SOLVER_LISTS = ("stepvalue",)
SOLVER_NETS = ("net", "train_net", "test_net", "net_param", "train_net_param",
               "test_net_param")
# fields a solver file has and a net file has not: how a text is recognised as a solver
_SOLVER_MARKS = set(SOLVER_SAME) | set(SOLVER_NETS) | {"solver_type", "test_iter",
                                                       "solver_mode", "lr_policy"}
_NET_MARKS = {"layer", "layers", "input", "input_shape", "input_dim"}
NET_STATE_FIELDS = ("phase", "level", "stage")
RULE_FIELDS = ("phase", "min_level", "max_level", "stage", "not_stage")
# Caffe types that are another of ours (none today; a mapping keeps the hook)
CAFFE_ONLY_TYPES: dict[str, str] = {}
_BLOCK_LINE = re.compile(r"^\s*[A-Za-z_]\w*\s*\{", re.MULTILINE)


# ---------------------------------------------------------------- detection

def _read(path: Path, what: str, shown: str) -> str:
    try:        # a BOM is not a field
        return read_text(path, what=what, limit=LIMITS["spec"], encoding="utf-8-sig",
                         error=ConfigError)
    except ConfigError as err:
        err.file = shown
        raise


def looks_like_prototxt(text: str) -> bool:
    """Protobuf text rather than YAML: a ``key {`` block, or a top-level key given twice."""
    body = re.sub(r"#[^\n]*", "", text)
    if _BLOCK_LINE.search(body):
        return True
    keys = re.findall(r"^([A-Za-z_]\w*)\s*:", body, re.MULTILINE)
    if len(keys) != len(set(keys)):
        return True
    return bool(set(keys) & {"solver_mode", "solver_type", "input_dim"}) or \
        bool(re.search(r"^\s*(net|train_net|test_net)\s*:\s*\S*\.prototxt", body, re.MULTILINE))


def is_prototxt(source) -> bool:
    """Whether ``source`` (a path, or text) is a Caffe text file: by suffix, else by content."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and ("{" not in source or os.path.exists(source))):
        path = Path(source)
        if path.suffix.lower() in SUFFIXES:
            return True
        if path.suffix.lower() in (".yaml", ".yml", ".json") or not path.is_file():
            return False
        try:
            with open(path, "rb") as handle:
                head = handle.read(1 << 16)
            return looks_like_prototxt(head.decode("utf-8", errors="replace"))
        except OSError:
            return False
    return isinstance(source, str) and looks_like_prototxt(source)


def _names_a_file(source) -> bool:
    return isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source
        and (os.path.exists(source) or Path(source).suffix.lower() in SUFFIXES))


def _load(source, what: str) -> tuple[TextMessage, str | None, Path]:
    if _names_a_file(source):
        path = Path(source)
        text = _read(path, what, str(source))
        return parse_text(text, str(source)), str(source), path.resolve().parent
    return parse_text(source), None, Path.cwd()


# ---------------------------------------------------------------- values

_NOTED: set[tuple] = set()


class _Context:
    """One file's conversion: where it is, the lines of what it produced, the notes."""

    def __init__(self, file: str | None, base_dir: Path, absolute: bool = False):
        self.file = file
        self.base_dir = base_dir
        self.absolute = absolute          # paths found made absolute (a net inside a solver)
        self.lines: dict[tuple, int] = {}
        self.ignored: list[str] = []
        self.nets: list[SpecSource] = []    # nets inside a solver, for the loader to check

    def error(self, message: str, entry: Entry | TextMessage | Scalar | None = None,
              layer: str | None = None, index: int | None = None,
              field: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.file, line=getattr(entry, "line", None),
                           layer=layer, layer_index=index, field=field)

    def ignore(self, name: str) -> None:
        if name not in self.ignored:
            self.ignored.append(name)

    def note(self) -> None:
        key = (self.file, tuple(self.ignored))
        if self.ignored and key not in _NOTED:    # once per file, not per phase built
            _NOTED.add(key)
            where = f" in {self.file}" if self.file else ""
            logger.info("Caffe fields that choose a device, engine, implementation or file "
                        "format, or that the layer does not read, are ignored"
                        "%s: %s", where, ", ".join(self.ignored))

    def path(self, value: str) -> str:
        """A relative path as Caffe files give them: the file's folder first, then the cwd."""
        if not isinstance(value, str) or value.startswith("builtin:") or os.path.isabs(value):
            return value
        if (self.base_dir / value).exists():
            return str((self.base_dir / value).resolve()) if self.absolute else value
        return str(Path(value).resolve()) if Path(value).exists() else value


def _scalar(entry: Entry, ctx: _Context, block: str | None = None, **where):
    value = entry.value
    if isinstance(value, TextMessage):
        raise ctx.error(f"'{entry.key}' takes a value, not a message", entry, field=entry.key,
                        **where)
    if value.kind == "ident":
        if value.value in ("true", "True", "t"):
            return True
        if value.value in ("false", "False", "f"):
            return False
        return value.value
    if value.kind == "number" and isinstance(value.value, int):
        numbers = ENUM_NUMBERS_BY_BLOCK.get((block, entry.key)) or ENUM_NUMBERS.get(entry.key)
        if numbers is not None:
            if value.value not in numbers:
                raise ctx.error(f"{value.value} is not a value of '{entry.key}' (one of "
                                f"{', '.join(numbers.values())})", entry, field=entry.key,
                                **where)
            return numbers[value.value]
    return value.value


def _message(entry: Entry, ctx: _Context, **where) -> TextMessage:
    if not isinstance(entry.value, TextMessage):
        raise ctx.error(f"'{entry.key}' takes a message {{ ... }}, not a value", entry,
                        field=entry.key, **where)
    return entry.value


def _generic(msg: TextMessage, ctx: _Context, allowed: typing.Iterable[str] | None = None,
             lists: typing.Iterable[str] = (), prefix: str = "", **where) -> dict:
    """A message as a dict: repeated keys and ``lists`` become lists, sub-messages dicts."""
    allowed = list(allowed) if allowed is not None else None
    out: dict = {}
    for entry in msg.entries:
        name = f"{prefix}{entry.key}"
        if allowed is not None and entry.key not in allowed:
            raise ctx.error(f"'{entry.key}' is not supported here (solverkit takes "
                            f"{', '.join(allowed)}){did_you_mean(entry.key, allowed)}", entry,
                            field=name, **where)
        if isinstance(entry.value, TextMessage):
            value = _generic(entry.value, ctx, prefix=f"{name}.", **where)
        else:
            value = _scalar(entry, ctx, **where)
        if entry.key in out:
            if not isinstance(out[entry.key], list) or entry.key not in lists:
                out[entry.key] = [out[entry.key]]
            out[entry.key].append(value)
        else:
            out[entry.key] = [value] if entry.key in lists else value
    for key in lists:
        if key in out and not isinstance(out[key], list):
            out[key] = [out[key]]
    return out


def _dims(msg: TextMessage, ctx: _Context, **where) -> list[int]:
    """A BlobShape message's ``dim`` values."""
    dims = []
    for entry in msg.entries:
        if entry.key != "dim":
            raise ctx.error(f"a shape has only 'dim' fields, not '{entry.key}'", entry,
                            field=entry.key, **where)
        value = _scalar(entry, ctx, **where)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ctx.error(f"dim must be an integer, got {value!r}", entry, field="dim", **where)
        dims.append(value)
    return dims


def _wants_list(model, name: str) -> bool:
    field = model.model_fields.get(name)
    if field is None:
        return False
    annotation = field.annotation
    if typing.get_origin(annotation) is list:
        return True
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return bool(args) and all(typing.get_origin(a) is list for a in args)


def _is_bool(model, name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and field.annotation in (bool, bool | None)


# ---------------------------------------------------------------- layers

def _layer_type(msg: TextMessage, v1: bool, ctx: _Context, index: int, name: str | None):
    entry = msg.first("type")
    if entry is None:
        raise ctx.error("required field is missing", msg, layer=name, index=index, field="type")
    value = entry.value
    if isinstance(value, TextMessage):
        raise ctx.error("'type' takes a value", entry, layer=name, index=index, field="type")
    if v1:
        if value.kind == "number" and value.value in V1_TYPE_NUMBERS:
            enum = V1_TYPE_NUMBERS[value.value]
        else:
            enum = str(value.value)
        if enum not in V1_TYPES:
            raise ctx.error(f"'{value.text}' is not a V1 layer type{did_you_mean(enum, V1_TYPES)}",
                            entry, layer=name, index=index, field="type")
        type_name = V1_TYPES[enum]
    else:
        if value.kind != "string" and value.kind != "ident":
            raise ctx.error(f"'type' is a string, got {value.text}", entry, layer=name,
                            index=index, field="type")
        type_name = str(value.value)
    try:
        cls = layer_class(CAFFE_ONLY_TYPES.get(type_name, type_name))
    except SolverkitError as err:
        raise err.located(file=ctx.file, line=entry.line, layer=name, layer_index=index) from None
    return type_name, cls, entry


def _layer(msg: TextMessage, index: int, v1: bool, ctx: _Context, key_path: tuple) -> dict:
    if msg.first("layer") is not None and v1:
        raise ctx.error("a V0 layer (layers { layer { ... } }): upgrade the file with Caffe's "
                        "upgrade_net_proto_text first", msg, index=index, field="layer")
    name_entry = msg.first("name")
    name = str(_scalar(name_entry, ctx)) if name_entry is not None else None
    where = {"layer": name, "index": index}
    type_name, cls, _ = _layer_type(msg, v1, ctx, index, name)
    model = cls.Params
    fields = model.model_fields
    raw: dict = {}
    lines = ctx.lines
    lines[key_path] = msg.line

    def put(key: str, value, entry: Entry, append: bool = False, sub: str | None = None):
        lines.setdefault((*key_path, key), entry.line)
        if sub is not None:                     # a field of a nested mapping (transform)
            lines.setdefault((*key_path, key, sub), entry.line)
        if append:
            raw.setdefault(key, []).append(value)
        else:
            raw[key] = value

    v1_rates: dict[str, list[float]] = {"blobs_lr": [], "weight_decay": []}
    v1_names: list[str] = []
    blocks = blocks_of(type_name)
    for entry in msg.entries:
        key = entry.key
        if key in ("name", "type"):
            put(key, CAFFE_ONLY_TYPES.get(type_name, type_name) if key == "type" else name,
                entry)
        elif key in ("bottom", "top"):
            put(key, str(_scalar(entry, ctx, **where)), entry, append=True)
        elif key == "phase":
            put(key, _scalar(entry, ctx, **where), entry)
        elif key in ("loss_weight", "propagate_down"):
            put(key, _scalar(entry, ctx, **where), entry, append=True)
        elif key in ("include", "exclude"):
            rule = _generic(_message(entry, ctx, **where), ctx, RULE_FIELDS,
                            lists=("stage", "not_stage"), prefix=f"{key}.", **where)
            put(key, rule, entry, append=True)
        elif key == "param" and v1:
            v1_names.append(str(_scalar(entry, ctx, **where)))
            lines.setdefault((*key_path, "param"), entry.line)
        elif key == "param":
            spec = _generic(_message(entry, ctx, **where), ctx,
                            ("name", "lr_mult", "decay_mult", "share_mode"), prefix="param.",
                            **where)
            if spec.pop("share_mode", "STRICT") != "STRICT":
                raise ctx.error("share_mode PERMISSIVE is not supported (shared parameters "
                                "must have the same shape)", entry, field="param.share_mode",
                                **where)
            put(key, spec, entry, append=True)
        elif key in v1_rates and v1:
            v1_rates[key].append(_scalar(entry, ctx, **where))
            lines.setdefault((*key_path, "param"), entry.line)
        elif key in IGNORED_LAYER_FIELDS:
            ctx.ignore(key)
        elif key == "transform_param" and key not in blocks:
            ctx.ignore(key)     # Caffe reads it only in its data layers; elsewhere unused
        elif key.endswith("_param"):
            if key not in blocks:
                raise ctx.error(f"'{key}' does not apply to a {type_name} layer (it takes "
                                f"{' or '.join(blocks)})", entry, field=key, **where)
            _block(key, _message(entry, ctx, **where), type_name, model, raw, put, ctx, where)
        elif key in v1_rates:
            raise ctx.error(f"'{key}' belongs to V1 'layers' entries; in a 'layer' entry give "
                            f"param {{ lr_mult: ... decay_mult: ... }} per parameter", entry,
                            field=key, **where)
        else:
            common = ("name", "type", "bottom", "top", "include", "exclude", "loss_weight",
                      "param", "propagate_down", "phase", *blocks)
            raise ctx.error(f"'{key}' is not supported by solverkit{did_you_mean(key, common)}",
                            entry, field=key, **where)
    if v1_names or v1_rates["blobs_lr"] or v1_rates["weight_decay"]:
        count = max(len(v1_names), len(v1_rates["blobs_lr"]), len(v1_rates["weight_decay"]))
        params = []
        for j in range(count):
            spec = {}
            if j < len(v1_names) and v1_names[j]:
                spec["name"] = v1_names[j]
            if j < len(v1_rates["blobs_lr"]):
                spec["lr_mult"] = v1_rates["blobs_lr"][j]
            if j < len(v1_rates["weight_decay"]):
                spec["decay_mult"] = v1_rates["weight_decay"][j]
            params.append(spec)
        raw["param"] = params
    if type_name == "Data" and "backend" in raw:
        _backend(raw, ctx)
    for key, value in list(raw.items()):
        if key in fields and isinstance(value, list) and len(value) == 1 \
                and not _wants_list(model, key) and key not in ("bottom", "top"):
            raw[key] = value[0]
    return raw


def _backend(raw: dict, ctx: _Context) -> None:
    """``backend`` names a database; a source that is none (builtin, a file) goes by itself.

    Caffe's files say ``backend: LMDB`` for their databases; pointed at one of our sources
    instead (``builtin:digits/train``, an .npz), the source's own format is read.
    """
    source = raw.get("source")
    source = source[0] if isinstance(source, list) and len(source) == 1 else source
    if not isinstance(source, str):
        return
    path = Path(source) if os.path.isabs(source) else ctx.base_dir / source
    if source.startswith("builtin:") or path.is_file():
        raw.pop("backend")
        ctx.ignore("backend (the source is not a database)")


def _block(block: str, msg: TextMessage, type_name: str, model, raw: dict, put,
           ctx: _Context, where: dict) -> None:
    """Spread one ``*_param`` message over the layer's flat fields."""
    fields = model.model_fields
    legacy_shape: dict[str, list[int]] = {}
    for entry in msg.entries:
        key = entry.key
        name = f"{block}.{key}"
        if key in IGNORED_LAYER_FIELDS:
            ctx.ignore(key)
            continue
        if block == "transform_param":
            if "transform" not in fields:
                raise ctx.error(f"a {type_name} layer takes no transform", entry, field=block,
                                **where)
            transform = raw.setdefault("transform", {})
            value = _scalar(entry, ctx, block, **where)
            if key == "mean_file":
                value = ctx.path(value)
            if key == "mean_value":
                transform.setdefault(key, []).append(value)
            else:
                transform[key] = value
            put("transform", transform, entry, sub=key)
            continue
        if block in ("data_param", "image_data_param", "window_data_param") \
                and key in DATA_TRANSFORM_FIELDS:
            transform = raw.setdefault("transform", {})
            value = _scalar(entry, ctx, block, **where)
            transform[key] = ctx.path(value) if key == "mean_file" else value
            put("transform", transform, entry, sub=key)
            continue
        if block == "data_param" and key == "backend" and "backend" not in fields:
            _scalar(entry, ctx, block, **where)  # checked; our Data reads what source is
            continue
        if key == "shape" and block in ("input_param", "dummy_data_param"):
            put("shape", _dims(_message(entry, ctx, **where), ctx, **where), entry, append=True)
            continue
        if key == "shape" and block in ("reshape_param", "parameter_param"):
            put("shape", _dims(_message(entry, ctx, **where), ctx, **where), entry)
            continue
        if block == "dummy_data_param" and key in ("num", "channels", "height", "width"):
            legacy_shape.setdefault(key, []).append(_scalar(entry, ctx, block, **where))
            ctx.lines.setdefault(("legacy_shape",), entry.line)
            continue
        if block == "loss_param" and key in LOSS_FIELDS and key not in fields:
            _scalar(entry, ctx, block, **where)
            ctx.ignore(f"loss_param.{key} (unused by {type_name}, as in Caffe)")
            continue
        if key not in fields:
            raise ctx.error(f"'{key}' is not supported by solverkit's {type_name} layer"
                            f"{did_you_mean(key, fields)}", entry, field=name, **where)
        if isinstance(entry.value, TextMessage):
            value = _generic(entry.value, ctx, prefix=f"{name}.", **where)
        else:
            value = _scalar(entry, ctx, block, **where)
            if key in ("source", "root_folder") and isinstance(value, str):
                value = ctx.path(value)
            if value in (0, 1) and type(value) is int and _is_bool(model, key):
                value = bool(value)             # protobuf's text format: a bool may be 0 or 1
        put(key, value, entry, append=True)     # one value: made a scalar by the caller
    if legacy_shape:
        counts = {len(v) for v in legacy_shape.values()}
        axes = ("num", "channels", "height", "width")
        if len(counts) != 1 or set(legacy_shape) != set(axes):
            raise ctx.error("num, channels, height and width must be given together, once "
                            "per top", msg, field=f"{block}.num", **where)
        raw.setdefault("shape", []).extend(
            [list(dims) for dims in zip(*(legacy_shape[a] for a in axes))])


# ---------------------------------------------------------------- nets

def convert_net(msg: TextMessage, ctx: _Context, prefix: tuple = ()) -> dict:
    """A NetParameter message -> our net mapping (lines recorded under ``prefix``)."""
    raw: dict = {}
    layers: list[dict] = []
    inputs: list[tuple[str, Entry]] = []
    shapes: list[list[int]] = []
    dims: list[int] = []
    has_layer = msg.first("layer") is not None
    has_layers = msg.first("layers") is not None
    if has_layer and has_layers:
        raise ctx.error("give 'layer' (current) or 'layers' (V1) entries, not both",
                        msg.first("layers"), field="layers")
    for entry in msg.entries:
        key = entry.key
        if key == "name":
            raw["name"] = str(_scalar(entry, ctx))
            ctx.lines[(*prefix, "name")] = entry.line
        elif key == "force_backward":
            raw["force_backward"] = _scalar(entry, ctx)
            ctx.lines[(*prefix, "force_backward")] = entry.line
        elif key == "input":
            inputs.append((str(_scalar(entry, ctx)), entry))
        elif key == "input_shape":
            shapes.append(_dims(_message(entry, ctx), ctx))
        elif key == "input_dim":
            dims.append(_scalar(entry, ctx))
        elif key in ("layer", "layers"):
            layers.append(entry)
        elif key in IGNORED_NET_FIELDS:
            ctx.ignore(key)
        elif key == "state":
            raise ctx.error("a net-level 'state' is not supported: choose the phase, level and "
                            "stages where the net is used (a solver's train_state/test_state, "
                            "or the command line)", entry, field="state")
        else:
            known = ("name", "input", "input_shape", "input_dim", "force_backward", "layer",
                     "layers")
            raise ctx.error(f"'{key}' is not supported by solverkit{did_you_mean(key, known)}",
                            entry, field=key)
    converted = []
    if inputs:
        converted.append(_input_layer(inputs, shapes, dims, ctx, (*prefix, "layers", 0)))
    for index, entry in enumerate(layers, start=len(converted)):
        converted.append(_layer(_message(entry, ctx, index=index), index, entry.key == "layers",
                                ctx, (*prefix, "layers", index)))
    raw["layers"] = converted
    ctx.lines.setdefault((*prefix, "layers"), msg.line)
    return raw


def _input_layer(inputs, shapes, dims, ctx: _Context, key_path: tuple) -> dict:
    """Caffe's net-level inputs as the one ``Input`` layer Caffe's upgrade makes."""
    first = inputs[0][1]
    if dims:
        if len(dims) != 4 * len(inputs):
            raise ctx.error(f"input_dim needs 4 values per input: {len(inputs)} inputs, "
                            f"{len(dims)} values", first, field="input_dim")
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(inputs))]
    if len(shapes) != len(inputs):
        raise ctx.error(f"{len(inputs)} inputs but {len(shapes)} input shapes (give one "
                        "input_shape, or four input_dim, per input)", first, field="input_shape")
    ctx.lines[key_path] = first.line
    for key in ("name", "type", "top", "shape"):
        ctx.lines[(*key_path, key)] = first.line
    return {"name": "input", "type": "Input", "top": [name for name, _ in inputs],
            "shape": shapes}


def net_text_source(source):
    """A ``SpecSource`` for a prototxt net (path or text), lines pointing into it."""
    msg, file, base_dir = _load(source, "net spec")
    ctx = _Context(file, base_dir)
    if _is_solver(msg):
        raise ctx.error("this is a Caffe solver file (it has solver fields such as "
                        f"{', '.join(sorted(set(msg.keys()) & _SOLVER_MARKS)[:3])}), not a net; "
                        "give it to --solver", msg)
    raw = _located(lambda: convert_net(msg, ctx), ctx)
    ctx.note()
    return SpecSource(raw=raw, file=file, base_dir=base_dir, lines=ctx.lines)


def _located(build, ctx: _Context):
    try:
        return build()
    except SolverkitError as err:
        raise err.located(file=ctx.file) from None


def _is_solver(msg: TextMessage) -> bool:
    keys = set(msg.keys())
    return bool(keys & _SOLVER_MARKS) and not (keys & _NET_MARKS)


# ---------------------------------------------------------------- solvers

def convert_solver(msg: TextMessage, ctx: _Context) -> dict:
    """A SolverParameter message -> our solver mapping (Caffe's names for several nets)."""
    raw: dict = {}
    test_iter: list[int] = []
    lines = ctx.lines
    for entry in msg.entries:
        key = entry.key
        lines.setdefault((key,), entry.line)
        if key in SOLVER_SAME:
            raw[key] = _scalar(entry, ctx)
        elif key in SOLVER_LISTS:
            raw.setdefault(key, []).append(_scalar(entry, ctx))
        elif key == "test_iter":
            test_iter.append(_scalar(entry, ctx))
        elif key == "solver_type":
            value = _scalar(entry, ctx)
            value = SOLVER_TYPE_NUMBERS.get(value, value) if isinstance(value, int) else value
            if value not in SOLVER_TYPES:
                raise ctx.error(f"'{value}' is not a solver_type (one of "
                                f"{', '.join(SOLVER_TYPES)}){did_you_mean(value, SOLVER_TYPES)}",
                                entry, field=key)
            if "type" in raw and raw["type"] != SOLVER_TYPES[value]:
                raise ctx.error(f"solver_type {value} contradicts type {raw['type']}", entry,
                                field=key)
            raw["type"] = SOLVER_TYPES[value]
            lines[("type",)] = entry.line
        elif key in ("net", "train_net"):
            raw[key] = _net_path(str(_scalar(entry, ctx)), ctx)
        elif key == "test_net":
            raw.setdefault(key, []).append(_net_path(str(_scalar(entry, ctx)), ctx))
        elif key in ("net_param", "train_net_param", "test_net_param"):
            net = _embedded_net(_message(entry, ctx), ctx, key, entry)
            if key == "test_net_param":
                raw.setdefault(key, []).append(net)
            else:
                raw[key] = net
        elif key == "train_state":
            raw[key] = _net_state(_message(entry, ctx), ctx, key)
        elif key == "test_state":
            raw.setdefault(key, []).append(_net_state(_message(entry, ctx), ctx, key))
        elif key == "snapshot_format":
            value = _scalar(entry, ctx)
            if value not in ("BINARYPROTO", "HDF5"):
                raise ctx.error(f"'{value}' is not a snapshot_format (BINARYPROTO or HDF5)",
                                entry, field=key)
            raw[key] = value
        elif key == "test_compute_loss":
            _scalar(entry, ctx)
            ctx.ignore(f"{key} (test outputs always include the losses)")
        elif key == "snapshot_diff":
            if _scalar(entry, ctx):
                raise ctx.error("snapshot_diff is not supported (snapshots hold parameters "
                                "and solver state, not gradients)", entry, field=key)
        elif key in IGNORED_SOLVER_FIELDS and key in _solver_fields():
            raw[key] = _scalar(entry, ctx)          # the solver has a field of that name
        elif key in IGNORED_SOLVER_FIELDS:
            _scalar(entry, ctx)
            ctx.ignore(key)
        else:
            known = (*SOLVER_SAME, *SOLVER_LISTS, *SOLVER_NETS, "test_iter", "train_state",
                     "test_state", "solver_type", "snapshot_format", "test_compute_loss")
            raise ctx.error(f"'{key}' is not supported by solverkit{did_you_mean(key, known)}",
                            entry, field=key)
    if test_iter:
        raw["test_iter"] = test_iter[0] if len(test_iter) == 1 else test_iter
    _drop_unused_policy_fields(raw, ctx)
    return raw


def _solver_fields() -> dict:
    return SolverSpec.model_fields


def _drop_unused_policy_fields(raw: dict, ctx: _Context) -> None:
    """Caffe ignores ``gamma``/``power``/``stepsize``/``stepvalue`` its lr_policy does not use."""
    policy = raw.get("lr_policy", "fixed")
    own = policy_fields().get(policy)
    if own is None:
        return                           # an unknown policy: the spec's check reports it
    for name in ("gamma", "power", "stepsize", "stepvalue"):
        if name in raw and name not in own:
            raw.pop(name)
            ctx.ignore(f"{name} (unused by lr_policy {policy})")


def _net_path(value: str, ctx: _Context) -> str:
    """Caffe gives net paths from its root: the solver's folder first, then the cwd."""
    if os.path.isabs(value):
        return value
    for base in (ctx.base_dir, Path.cwd()):
        try:
            if (base / value).exists():
                return str((base / value).resolve())
        except OSError:         # a name too long for the file system: not there
            continue
    return str(ctx.base_dir / value)


def _embedded_net(msg: TextMessage, ctx: _Context, key: str, entry: Entry) -> dict:
    """An inline NetParameter; its source (with its lines) goes into ``ctx.nets``, so that
    the solver's loader validates it at once and its mistakes name their lines."""
    inner = _Context(ctx.file, ctx.base_dir, absolute=True)
    raw = convert_net(msg, inner)
    ctx.ignored.extend(n for n in inner.ignored if n not in ctx.ignored)
    ctx.nets.append(SpecSource(raw=raw, file=ctx.file, base_dir=ctx.base_dir,
                               lines=inner.lines))
    return raw


def _net_state(msg: TextMessage, ctx: _Context, key: str) -> dict:
    """A NetState; its phase can only be the net's role (TRAIN to train, TEST to test)."""
    state = _generic(msg, ctx, NET_STATE_FIELDS, lists=("stage",), prefix=f"{key}.")
    role = "TRAIN" if key == "train_state" else "TEST"
    phase = state.pop("phase", role)
    if phase != role:
        raise ctx.error(f"a {key} with phase {phase} is not supported: the training net runs "
                        "in TRAIN, test nets in TEST", msg.first("phase"), field=f"{key}.phase")
    return state


def solver_text_source(source):
    """A ``SpecSource`` for a prototxt solver (path or text); ``nets`` holds the sources of
    the nets written inside it (``net_param``...), which the loader validates."""
    msg, file, base_dir = _load(source, "solver spec")
    ctx = _Context(file, base_dir)
    if not _is_solver(msg):
        raise ctx.error("this is a Caffe net file (it has layers or inputs), not a solver; "
                        "give it to --net", msg)
    raw = _located(lambda: convert_solver(msg, ctx), ctx)
    ctx.note()
    return SpecSource(raw=raw, file=file, base_dir=base_dir, lines=ctx.lines, nets=ctx.nets)


def prototxt_kind(source) -> str:
    """``"net"`` or ``"solver"``: what a Caffe text file holds."""
    msg, _, _ = _load(source, "prototxt")
    return "solver" if _is_solver(msg) else "net"
