"""Loading a net spec from a path, YAML or Caffe prototxt text, or a dict.

The models are in ``spec.models`` (re-exported here); this module reads the text, imports
the spec's plugins, and validates each layer's own fields with the ``Params`` model of
its registered type.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..caffe.prototxt import is_prototxt, net_text_source
from ..errors import ConfigError, SolverkitError, did_you_mean
from ..registry import import_plugins, layer_class
from .models import (  # noqa: F401  (the models, re-exported for `from spec.net import`)
    COMMON_FIELDS,
    FillerSpec,
    LayerParams,
    LayerSpec,
    NetSpec,
    NetStateRule,
    ParamSpec,
    StrictModel,
    as_list,
)
from .source import SpecSource, read_spec_source, validation_error

def _layer_spec(raw: Any, index: int, source: SpecSource) -> LayerSpec:
    where = {"layer_index": index, "file": source.file, "line": source.line("layers", index)}
    if not isinstance(raw, dict):
        raise ConfigError(f"a layer must be a mapping of fields, not {type(raw).__name__}", **where)
    name = raw.get("name")
    where["layer"] = str(name) if name is not None else None
    for required in ("name", "type"):
        if required not in raw:
            raise ConfigError("required field is missing", field=required, **where)
    type_name = raw["type"]
    try:
        cls = layer_class(str(type_name))
    except SolverkitError as err:
        where["line"] = source.line("layers", index, "type")
        raise err.located(**where) from None
    common = {k: v for k, v in raw.items() if k in COMMON_FIELDS}
    own = {k: v for k, v in raw.items() if k not in COMMON_FIELDS}
    params_model = cls.Params
    try:
        params = params_model.model_validate(own)
    except ValidationError as err:
        error = validation_error(err, params_model, source, ("layers", index), where["layer"],
                                 index)
        if error.message.startswith("unknown field"):
            common_hint = did_you_mean(error.field, COMMON_FIELDS)
            if common_hint and not did_you_mean(error.field, params_model.model_fields):
                error.message = f"unknown field '{error.field}'{common_hint}"
        raise error from None
    try:
        spec = LayerSpec.model_validate({**common, "params": params})
    except ValidationError as err:
        raise validation_error(err, LayerSpec, source, ("layers", index), where["layer"],
                               index) from None
    if spec.include and spec.exclude:
        raise ConfigError("give include rules or exclude rules, not both", field="include",
                          **{**where, "line": source.line("layers", index, "exclude")})
    return spec


def load_net_spec(source) -> NetSpec:
    """A ``NetSpec`` from a path, YAML or Caffe prototxt text, a dict, or a NetSpec (as is)."""
    if isinstance(source, NetSpec):
        return source
    if isinstance(source, SpecSource):
        src = source
    else:
        src = net_text_source(source) if is_prototxt(source) else read_spec_source(source,
                                                                                   "net spec")
    raw = dict(src.raw)
    layers_raw = raw.pop("layers", None)
    if layers_raw is None:
        raise ConfigError("a net spec needs a 'layers:' list", file=src.file, field="layers")
    if not isinstance(layers_raw, list):
        raise ConfigError("'layers' must be a list of layer entries", file=src.file,
                          line=src.line("layers"), field="layers")
    try:
        head = NetSpec.model_validate(raw)
    except ValidationError as err:
        raise validation_error(err, NetSpec, src) from None
    try:
        import_plugins(head.plugins)
    except SolverkitError as err:
        raise err.located(file=src.file, line=src.line("plugins")) from None
    layers = [_layer_spec(layer, i, src) for i, layer in enumerate(layers_raw)]
    spec = NetSpec.model_construct(**{**head.__dict__, "layers": layers})
    spec._source = src
    return spec
