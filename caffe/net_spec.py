"""Nets written as Python expressions (pycaffe's ``net_spec``), producing ``NetParameter``s.

``L.Convolution(bottom, kernel_size=3, num_output=8)`` is a :class:`Top`, the output of a
layer; keywords go into the layer's own ``*_param`` message (``convolution_param``) unless
they name a field of ``LayerParameter`` itself (``param``, ``include``, ``loss_weight``) or
end in ``param``. ``ntop=k`` gives a layer k tops (0: none), ``in_place=True`` writes its
top over its bottom. Assigning Tops to a :class:`NetSpec`'s attributes names them;
``to_proto()`` names the rest by type and count (``Convolution1``, ``ReLU2``) and returns
the net with every layer the named Tops need, in the order they are needed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from .proto import caffe_pb2


def param_name_dict() -> dict[str, str]:
    """Layer type -> the prefix of its params field (``Convolution`` -> ``convolution``),
    from the message type of every ``*_param`` field of ``LayerParameter``."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return names


def assign_proto(proto, name, value) -> None:
    """Set field ``name`` of ``proto`` from a Python value: a dict fills a message, a list
    fills a repeated field (a list of dicts, repeated messages), a single value given to
    a repeated field becomes a one-element list."""
    field = getattr(proto, name)
    if hasattr(field, "extend") and not isinstance(value, list):
        value = [value]
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            for item in value:
                message = field.add()
                for key, sub in item.items():
                    assign_proto(message, key, sub)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            assign_proto(field, key, sub)
    else:
        setattr(proto, name, value)


def to_proto(*tops):
    """A ``NetParameter`` with every layer the given Tops need (names made up)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top:
    """Output ``n`` of the layer ``fn``."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its bottoms (Tops) and its keyword fields."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is "
                                f"{type(bottom)})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _autoname(self, autonames) -> str:
        autonames[self.type_name] += 1
        return f"{self.type_name}{autonames[self.type_name]}"

    def _top_name(self, top, names, autonames) -> str:
        if top not in names:
            names[top] = top.fn._autoname(autonames)
        return names[top]

    def _layer_name(self, names, autonames) -> str:
        """A layer is named after its first top; a layer without tops by type and count."""
        if self not in names:
            names[self] = (self._top_name(self.tops[0], names, autonames) if self.ntop > 0
                           else self._autoname(autonames))
        return names[self]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottoms.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._layer_name(names, autonames)
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value)
                continue
            try:
                assign_proto(getattr(layer, _PARAM_NAMES[self.type_name] + "_param"), key,
                             value)
            except (AttributeError, KeyError):
                assign_proto(layer, key, value)
        layers[self] = layer


class NetSpec:
    """Named Tops (``n.conv1 = L.Convolution(n.data, ...)``); ``to_proto()`` makes the net."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.tops[item]

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``layers.Type(*bottoms, **fields)``: one Top, a tuple of Tops (``ntop`` > 1), or
    the layer itself (``ntop=0``)."""

    def __getattr__(self, type_name):
        def layer(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer


class Parameters:
    """``params.Pooling.MAX``: the enum values of ``PoolingParameter`` (and the like)."""

    def __getattr__(self, name):
        message = getattr(caffe_pb2, name + "Parameter")

        class Values:
            def __getattr__(self, value_name):
                return getattr(message, value_name)
        return Values()


_PARAM_NAMES = param_name_dict()
layers = Layers()
params = Parameters()
