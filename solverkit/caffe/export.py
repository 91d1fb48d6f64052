"""Our net specs as Caffe text (layer settings nested back into ``*_param``), and
``export_caffe``: a ``.caffemodel`` with the trained blobs plus its deploy ``.prototxt``.
"""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..files import write_atomic
from ..spec.source import model_in
from .names import block_of_field
from .weights import encode_caffemodel

_SHAPE_FIELDS = {"Input": "input_param", "DummyData": "dummy_data_param"}


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)    # a C-style escaped, double-quoted string


def _is_enum(model, name: str) -> bool:
    field = model.model_fields.get(name) if model is not None else None
    if field is None:
        return False

    def literal(annotation) -> bool:
        if typing.get_origin(annotation) is typing.Literal:
            return True
        return any(literal(a) for a in typing.get_args(annotation))
    return literal(field.annotation)


def _value(value, enum: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return value if enum else _quote(value)
    raise TypeError(type(value))


class _Text:
    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def open(self, key: str) -> None:
        self.lines.append(f"{'  ' * self.depth}{key} {{")
        self.depth += 1

    def close(self) -> None:
        self.depth -= 1
        self.lines.append(f"{'  ' * self.depth}}}")

    def field(self, key: str, value, enum: bool = False) -> None:
        self.lines.append(f"{'  ' * self.depth}{key}: {_value(value, enum)}")

    def shape(self, key: str, dims) -> None:
        self.open(key)
        for d in dims:
            self.field("dim", int(d))
        self.close()

    def any(self, key: str, value, model=None) -> None:
        """A field of any value: lists repeat the key, dicts become messages."""
        if isinstance(value, (list, tuple)):
            for item in value:
                self.any(key, item, model)
        elif isinstance(value, dict):
            self.open(key)
            sub_model = _sub_model(model, key)
            for k, v in value.items():
                self.any(k, v, sub_model)
            self.close()
        else:          # a filler's ``type`` is a string field in Caffe, not an enum
            self.field(key, value, key != "type" and _is_enum(model, key))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _sub_model(model, name: str):
    field = model.model_fields.get(name) if model is not None else None
    if field is None:
        return None
    return model_in(field.annotation)


def _written_fields(params) -> dict:
    """The fields of a layer's params to write: those not at their default, those the
    spec gave explicitly, and those its type lists in ``caffe_written`` (fields that other
    Caffe readers require or whose default differs between Caffe's forks)."""
    changed = params.model_dump(exclude_defaults=True)
    given = params.model_dump(exclude_unset=True)
    always = getattr(type(params), "caffe_written", ())
    every = params.model_dump()
    return {key: changed.get(key, given.get(key, every[key])) for key in every
            if key in changed or key in given or (key in always and every[key] is not None)}


def net_to_prototxt(spec) -> str:
    """Caffe text for a ``NetSpec``: one ``layer { }`` per layer, settings in ``*_param``."""
    from ..spec.net import LayerSpec
    text = _Text()
    text.field("name", spec.name)
    if spec.force_backward:
        text.field("force_backward", True)
    for layer in spec.layers:
        text.open("layer")
        text.field("name", layer.name)
        text.field("type", layer.type)
        for key in ("bottom", "top"):
            for blob in getattr(layer, key):
                text.field(key, blob)
        common = layer.model_dump(exclude_defaults=True,
                                  exclude={"params", "name", "type", "bottom", "top"})
        for key, value in common.items():
            text.any(key, value, LayerSpec)
        model = type(layer.params)
        own = _written_fields(layer.params)
        blocks: dict[str, dict] = {}
        for key, value in own.items():
            blocks.setdefault(block_of_field(layer.type, key), {})[key] = value
        for block, values in blocks.items():
            text.open(block)
            for key, value in values.items():
                if key == "transform":
                    for k, v in value.items():
                        text.any(k, v, _sub_model(model, "transform"))
                elif key == "shape" and layer.type in _SHAPE_FIELDS:
                    for dims in value:
                        text.shape("shape", dims)
                elif key == "shape" and layer.type == "Reshape":
                    text.shape("shape", value)
                else:
                    text.any(key, value, model)
            text.close()
        text.close()
    return text.text()


def export_caffe(deploy_spec, net, path) -> tuple[Path, Path]:
    """Write ``net``'s blobs as ``path`` (a ``.caffemodel``) and ``deploy_spec`` beside it.

    ``deploy_spec`` is the deploy form of the net (an ``Input`` layer instead of data
    layers, no losses); each of its layers with parameters takes the blobs of the layer of
    the same name in ``net``. Returns ``(caffemodel_path, prototxt_path)``; both files are
    written atomically.
    """
    from ..spec.net import load_net_spec
    spec = load_net_spec(deploy_spec)
    path = Path(path)
    if path.suffix.lower() != ".caffemodel":
        raise ConfigError("the Caffe weights file must end in .caffemodel", file=str(path))
    prototxt = path.with_suffix(".prototxt")
    by_name = {layer.name: layer for layer in net.layers}
    layers = []
    for lspec in spec.layers:
        layer = by_name.get(lspec.name)
        blobs = [np.asarray(b.data, dtype=np.float32) for b in layer.blobs] if layer else []
        if layer is None and _has_params(lspec):
            raise ConfigError("the deploy net has this layer but the trained net does not",
                              layer=lspec.name, file=str(path))
        layers.append((lspec.name, lspec.type, lspec.bottom, lspec.top, blobs))
    write_atomic(path, encode_caffemodel(spec.name, layers),
                 operation="write the Caffe weights")
    write_atomic(prototxt, net_to_prototxt(spec), operation="write the Caffe net")
    return path, prototxt


def _has_params(lspec) -> bool:
    return lspec.type in ("Convolution", "Deconvolution", "InnerProduct", "BatchNorm",
                          "Scale", "Bias", "PReLU", "Embed", "Normalize",
                          "DepthwiseConvolution", "RNN", "LSTM")
