"""A built deploy Net as an ONNX model (the ``onnx`` extra), written with onnx's helper API.

Each layer type maps to ONNX operators by a converter registered with
``@register_onnx("Type")`` (a plugin layer can register its own). A converter gets the
graph being built, the layer (its params and weights) and the ONNX names and built
shapes of its bottoms and tops. Names: graph inputs and outputs carry the blobs' names;
a blob written again in place gets a new ONNX name per write (``blob@layer``) and its
last version the blob's own name (an Input blob rewritten in place keeps its name for the
input, so that output is named ``blob@layer``). The batch dimension of every input is symbolic.

Semantics are Caffe's, as solverkit's layers compute them; where ONNX's operator differs
the converter spells the difference out (Pooling's ceil rounding and AVE divisor,
ArgMax's ties, LRN within channels, Scale's axis, Reshape's axis/num_axes).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..errors import ConfigError, SolverkitError
from ..registry import _register
from ..version import __version__
from .formats import Exporter, register_exporter

# Opset 17 and IR version 8 (the pair onnx 1.12 introduced): every onnxruntime since 1.12
# loads them, so the 'onnx' extra's onnxruntime>=1.16 does with room to spare, and opset 17
# has every operator form used here (Softmax over one axis and Split sizes as an input
# since 13, Shape's start since 15; reductions still take their axes as attributes).
OPSET = 17
IR_VERSION = 8

_CONVERTERS: dict[str, Callable] = {}


def onnx_modules():
    """(onnx, onnx.helper, onnx.numpy_helper), or a ConfigError naming the extra."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ConfigError("exporting to ONNX needs the 'onnx' extra: "
                          "pip install 'solverkit[onnx]'") from None
    return onnx, helper, numpy_helper


def register_onnx(type_name: str):
    """Decorator: ``@register_onnx("MyLayer")`` on ``fn(graph, layer_info)`` that adds nodes
    for layers of type ``MyLayer`` (a type that has one already is an error naming both)."""
    def decorate(fn):
        _register(_CONVERTERS, "ONNX converter of layer type", type_name, fn)
        return fn
    return decorate


def onnx_layer_types() -> list[str]:
    """The layer types that have an ONNX mapping."""
    return sorted(_CONVERTERS)


def onnx_converters() -> dict[str, Callable]:
    """Every layer type's ONNX converter, by type name (sorted)."""
    return dict(sorted(_CONVERTERS.items()))


class LayerInfo:
    """What a converter sees of one layer: ``layer`` (params, weights), ONNX names and
    built shapes of ``bottoms``/``tops``."""

    def __init__(self, layer, bottoms, tops, bottom_shapes, top_shapes):
        self.layer = layer
        self.params = layer.params
        self.name = layer.name
        self.bottoms = bottoms
        self.tops = tops
        self.bottom_shapes = bottom_shapes
        self.top_shapes = top_shapes

    def weight(self, j: int) -> np.ndarray:
        return np.asarray(self.layer.blobs[j].data, dtype=np.float32)


class Graph:
    """Nodes and initializers under construction, with unique names."""

    def __init__(self, helper, numpy_helper):
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes = []
        self.initializers = []
        self.names: set[str] = set()

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.names:
            k += 1
            name = f"{hint}_{k}"
        self.names.add(name)
        return name

    def const(self, value, hint: str, dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype),
                                                              name))
        return name

    def ints(self, values, hint: str) -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def node(self, op: str, inputs, outputs=None, hint: str = "", **attrs):
        """Add ``op``; ``outputs`` None makes one fresh output. Returns the output name(s)."""
        single = outputs is None or isinstance(outputs, str)
        if outputs is None:
            outputs = [self.fresh(f"{hint or op}:out")]
        elif isinstance(outputs, str):
            outputs = [outputs]
        self.nodes.append(self.helper.make_node(op, list(inputs), list(outputs),
                                                name=self.fresh(hint or op), **attrs))
        return outputs[0] if single else outputs


def to_onnx(net, producer: str = "solverkit"):
    """The ONNX ModelProto of the deploy ``net`` (its current weights), checked by onnx."""
    onnx, helper, numpy_helper = onnx_modules()
    graph = Graph(helper, numpy_helper)
    # ONNX is single-assignment: the last write of each blob carries the blob's name
    last_writer: dict[str, int] = {}
    for position, tops in enumerate(net.tops):
        for blob in tops:
            last_writer[blob.name] = position
    current: dict[str, str] = {}
    inputs, batch_names = [], {}
    graph.names.update(blob.name for tops in net.tops for blob in tops)
    for position, layer in enumerate(net.layers):
        lspec = net.layer_specs[position]
        if layer.type == "Input":
            for blob in net.tops[position]:
                dim = "N" if len(net.input_blobs) == 1 else f"N_{blob.name}"
                batch_names[blob.name] = (blob.shape[0] if blob.shape else None, dim)
                inputs.append(helper.make_tensor_value_info(
                    blob.name, onnx.TensorProto.FLOAT, [dim, *blob.shape[1:]]))
                current[blob.name] = blob.name
            continue
        converter = _CONVERTERS.get(layer.type)
        if converter is None:
            raise ConfigError(f"layer type {layer.type} has no ONNX mapping; types that "
                              f"have one: {', '.join(onnx_layer_types())}",
                              file=net.spec.file, layer=layer.name, field="type")
        bottoms = [current[name] for name in lspec.bottom]
        tops = []
        for blob in net.tops[position]:
            if last_writer[blob.name] == position and blob.name not in net.input_blobs:
                tops.append(blob.name)
            else:
                tops.append(graph.fresh(f"{blob.name}@{layer.name}"))
        info = LayerInfo(layer, bottoms, tops, [b.shape for b in net.bottoms[position]],
                         [t.shape for t in net.tops[position]])
        try:
            converter(graph, info)
        except SolverkitError as err:
            raise err.located(file=net.spec.file, layer=layer.name) from None
        for blob, name in zip(net.tops[position], tops):
            current[blob.name] = name
    outputs = []
    for name in net.outputs:
        shape = list(net.blobs[name].shape)
        for batch, dim in batch_names.values():
            if shape and shape[0] == batch:
                shape[0] = dim
                break
        # an Input blob rewritten in place keeps its name for the input; the output is
        # its last version, 'blob@layer'
        outputs.append(helper.make_tensor_value_info(current[name], onnx.TensorProto.FLOAT,
                                                     shape))
    model_graph = helper.make_graph(graph.nodes, net.name or "net", inputs, outputs,
                                    initializer=graph.initializers)
    model = helper.make_model(model_graph, producer_name=producer,
                              producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


@register_exporter("onnx", suffixes=[".onnx"])
class OnnxExporter(Exporter):
    """An ONNX model (``to_onnx``) of the deploy net."""

    def check_available(self) -> None:
        onnx_modules()

    def export(self, net, path: Path) -> None:
        Path(path).write_bytes(to_onnx(net).SerializeToString())


# ------------------------------------------------------------------------------ converters
def _unsupported(info: LayerInfo, what: str, field: str):
    return ConfigError(f"{what} has no ONNX mapping", layer=info.name, field=field)


@register_onnx("Convolution")
def _convolution(g: Graph, info: LayerInfo):
    layer = info.layer
    inputs = [info.bottoms[0], g.const(info.weight(0), f"{info.name}.weight")]
    if info.params.bias_term:
        inputs.append(g.const(info.weight(1), f"{info.name}.bias"))
    g.node("Conv", inputs, info.tops[0], hint=info.name, kernel_shape=list(layer.kernel),
           strides=list(layer.stride), pads=[*layer.pad, *layer.pad],
           dilations=list(layer.dilation), group=info.params.group)


@register_onnx("Deconvolution")
def _deconvolution(g: Graph, info: LayerInfo):
    layer = info.layer
    # Caffe's weight layout (C_in, num_output/group, kh, kw) is ConvTranspose's
    inputs = [info.bottoms[0], g.const(info.weight(0), f"{info.name}.weight")]
    if info.params.bias_term:
        inputs.append(g.const(info.weight(1), f"{info.name}.bias"))
    g.node("ConvTranspose", inputs, info.tops[0], hint=info.name,
           kernel_shape=list(layer.kernel), strides=list(layer.stride),
           pads=[*layer.pad, *layer.pad], dilations=list(layer.dilation),
           group=info.params.group)


@register_onnx("InnerProduct")
def _inner_product(g: Graph, info: LayerInfo):
    p = info.params
    shape = info.bottom_shapes[0]
    axis = p.axis % max(len(shape), 1)
    flat = g.node("Flatten", [info.bottoms[0]], hint=f"{info.name}.flatten", axis=axis)
    inputs = [flat, g.const(info.weight(0), f"{info.name}.weight")]
    if p.bias_term:
        inputs.append(g.const(info.weight(1), f"{info.name}.bias"))
    out_shape = info.top_shapes[0]
    if len(out_shape) == 2 and axis == 1:
        g.node("Gemm", inputs, info.tops[0], hint=info.name, transB=0 if p.transpose else 1)
        return
    product = g.node("Gemm", inputs, hint=info.name, transB=0 if p.transpose else 1)
    target = [-1, *out_shape[1:]] if axis >= 1 else list(out_shape)
    g.node("Reshape", [product, g.ints(target, f"{info.name}.shape")], info.tops[0],
           hint=f"{info.name}.reshape")


@register_onnx("Pooling")
def _pooling(g: Graph, info: LayerInfo):
    """Caffe's output size (ceil, and no window starting in the trailing padding) comes from
    the built layer; the end padding is chosen so that floor rounding gives exactly that
    size, and a Slice drops windows ONNX would add beyond it. AVE divides each window's sum
    by Caffe's pool size (clipped to the padded image, not to the image), as a constant map."""
    layer, p = info.layer, info.params
    if len(info.tops) > 1:
        raise _unsupported(info, "Pooling's second top (the argmax mask)", "top")
    x = info.bottoms[0]
    if p.global_pooling:
        g.node("GlobalMaxPool" if p.pool == "MAX" else "GlobalAveragePool", [x],
               info.tops[0], hint=info.name)
        return
    (_, _, height, width), (_, _, out_h, out_w) = info.bottom_shapes[0], info.top_shapes[0]
    kernel, stride, pad = layer.kernel, layer.stride, layer.pad
    end_pad, onnx_out = [], []
    for size, k, s, pb, out in zip((height, width), kernel, stride, pad, (out_h, out_w)):
        pe = max(0, (out - 1) * s + k - size - pb)
        end_pad.append(pe)
        onnx_out.append((size + pb + pe - k) // s + 1)
    sliced = onnx_out != [out_h, out_w]
    target = g.fresh(f"{info.tops[0]}:pooled") if sliced else info.tops[0]
    if p.pool == "MAX":
        if all(pe < k for pe, k in zip(end_pad, kernel)):
            g.node("MaxPool", [x], target, hint=info.name, kernel_shape=list(kernel),
                   strides=list(stride), pads=[*pad, *end_pad])
        else:
            # onnxruntime wants pads below the kernel: pad by hand, with Caffe's value for
            # a window that holds no pixel (-FLT_MAX; never above a pixel)
            padded = g.node("Pad", [x, g.ints([0, 0, *pad, 0, 0, *end_pad],
                                              f"{info.name}.pads"),
                                    g.const(np.finfo(np.float32).min, f"{info.name}.fill")],
                            hint=f"{info.name}.pad")
            g.node("MaxPool", [padded], target, hint=info.name, kernel_shape=list(kernel),
                   strides=list(stride))
    else:
        source = x
        if any(pad) or any(end_pad):
            source = g.node("Pad", [x, g.ints([0, 0, *pad, 0, 0, *end_pad],
                                              f"{info.name}.pads")],
                            hint=f"{info.name}.pad")
        mean = g.node("AveragePool", [source], hint=info.name, kernel_shape=list(kernel),
                      strides=list(stride))
        if sliced:
            mean = g.node("Slice", [mean, g.ints([0, 0], f"{info.name}.starts"),
                                    g.ints([out_h, out_w], f"{info.name}.ends"),
                                    g.ints([2, 3], f"{info.name}.axes")],
                          hint=f"{info.name}.slice")
            sliced = False
        start_h = np.arange(out_h) * stride[0] - pad[0]
        start_w = np.arange(out_w) * stride[1] - pad[1]
        size_h = np.minimum(start_h + kernel[0], height + pad[0]) - start_h
        size_w = np.minimum(start_w + kernel[1], width + pad[1]) - start_w
        pool_size = np.outer(size_h, size_w).astype(np.float64)
        # a window wholly beyond the image (kernel < stride) averages to 0, as in Caffe
        factor = np.where(pool_size > 0, kernel[0] * kernel[1] / np.maximum(pool_size, 1), 0)
        if np.all(factor == 1):
            g.node("Identity", [mean], target)
        elif np.all(factor == factor.flat[0]):
            g.node("Mul", [mean, g.const(factor.flat[0], f"{info.name}.divisor")], target)
        else:
            g.node("Mul", [mean, g.const(factor.reshape(1, 1, out_h, out_w),
                                         f"{info.name}.divisor")], target)
    if sliced:
        g.node("Slice", [target, g.ints([0, 0], f"{info.name}.starts"),
                         g.ints([out_h, out_w], f"{info.name}.ends"),
                         g.ints([2, 3], f"{info.name}.axes")], info.tops[0],
               hint=f"{info.name}.slice")


def _elementwise(op: str, **attrs):
    def convert(g: Graph, info: LayerInfo):
        g.node(op, [info.bottoms[0]], info.tops[0], hint=info.name, **attrs)
    return convert


register_onnx("Sigmoid")(_elementwise("Sigmoid"))
register_onnx("TanH")(_elementwise("Tanh"))
register_onnx("AbsVal")(_elementwise("Abs"))
register_onnx("BNLL")(_elementwise("Softplus"))
register_onnx("Dropout")(_elementwise("Identity"))


@register_onnx("ReLU")
def _relu(g: Graph, info: LayerInfo):
    slope = info.params.negative_slope
    if slope == 0:
        g.node("Relu", [info.bottoms[0]], info.tops[0], hint=info.name)
    else:
        g.node("LeakyRelu", [info.bottoms[0]], info.tops[0], hint=info.name, alpha=slope)


@register_onnx("ELU")
def _elu(g: Graph, info: LayerInfo):
    g.node("Elu", [info.bottoms[0]], info.tops[0], hint=info.name, alpha=info.params.alpha)


@register_onnx("PReLU")
def _prelu(g: Graph, info: LayerInfo):
    ndim = len(info.bottom_shapes[0])
    slope = info.weight(0)
    # one slope per channel (axis 1), broadcast over the axes after it
    slope = slope.reshape(-1, *[1] * (ndim - 2)) if slope.size > 1 else slope.reshape(1)
    g.node("PRelu", [info.bottoms[0], g.const(slope, f"{info.name}.slope")], info.tops[0],
           hint=info.name)


def _affine(g: Graph, info: LayerInfo, x: str, scale: float, shift: float) -> str:
    if scale != 1:
        x = g.node("Mul", [x, g.const(scale, f"{info.name}.scale")], hint=f"{info.name}.scale")
    if shift != 0:
        x = g.node("Add", [x, g.const(shift, f"{info.name}.shift")], hint=f"{info.name}.shift")
    return x


@register_onnx("Power")
def _power(g: Graph, info: LayerInfo):
    p = info.params
    base = _affine(g, info, info.bottoms[0], p.scale, p.shift)
    if p.power == 1:
        g.node("Identity", [base], info.tops[0])
    else:
        g.node("Pow", [base, g.const(p.power, f"{info.name}.power")], info.tops[0],
               hint=info.name)


@register_onnx("Exp")
def _exp(g: Graph, info: LayerInfo):
    layer = info.layer          # y = outer · exp(inner · x)
    inner = _affine(g, info, info.bottoms[0], layer.inner_scale, 0.0)
    if layer.outer_scale == 1:
        g.node("Exp", [inner], info.tops[0], hint=info.name)
    else:
        e = g.node("Exp", [inner], hint=info.name)
        g.node("Mul", [e, g.const(layer.outer_scale, f"{info.name}.outer")], info.tops[0])


@register_onnx("Log")
def _log(g: Graph, info: LayerInfo):
    p = info.params
    argument = _affine(g, info, info.bottoms[0], p.scale, p.shift)
    if info.layer.log_base == 1:
        g.node("Log", [argument], info.tops[0], hint=info.name)
    else:
        natural = g.node("Log", [argument], hint=info.name)
        g.node("Div", [natural, g.const(info.layer.log_base, f"{info.name}.log_base")],
               info.tops[0])


@register_onnx("Clip")
def _clip(g: Graph, info: LayerInfo):
    p = info.params
    g.node("Clip", [info.bottoms[0], g.const(p.min, f"{info.name}.min"),
                    g.const(p.max, f"{info.name}.max")], info.tops[0], hint=info.name)


@register_onnx("Swish")
def _swish(g: Graph, info: LayerInfo):
    x = info.bottoms[0]
    gate = g.node("Sigmoid", [_affine(g, info, x, info.params.beta, 0.0)],
                  hint=f"{info.name}.gate")
    g.node("Mul", [x, gate], info.tops[0], hint=info.name)


@register_onnx("Softmax")
def _softmax(g: Graph, info: LayerInfo):
    g.node("Softmax", [info.bottoms[0]], info.tops[0], hint=info.name, axis=info.layer.axis)


@register_onnx("LRN")
def _lrn(g: Graph, info: LayerInfo):
    p, x = info.params, info.bottoms[0]
    if p.norm_region == "ACROSS_CHANNELS":
        g.node("LRN", [x], info.tops[0], hint=info.name, size=p.local_size, alpha=p.alpha,
               beta=p.beta, bias=p.k)
        return
    # WITHIN_CHANNEL: s = 1 + α · mean of x² over the n×n window (zero padded), y = x · s^−β
    n, half = p.local_size, (p.local_size - 1) // 2
    square = g.node("Mul", [x, x], hint=f"{info.name}.square")
    mean = g.node("AveragePool", [square], hint=f"{info.name}.window", kernel_shape=[n, n],
                  pads=[half] * 4, count_include_pad=1)
    scale = _affine(g, info, mean, p.alpha, 1.0)
    power = g.node("Pow", [scale, g.const(-p.beta, f"{info.name}.beta")],
                   hint=f"{info.name}.power")
    g.node("Mul", [x, power], info.tops[0], hint=info.name)


@register_onnx("BatchNorm")
def _batch_norm(g: Graph, info: LayerInfo):
    layer = info.layer
    if not layer.use_global_stats:
        raise _unsupported(info, "BatchNorm with batch statistics in the TEST phase "
                           "(use_global_stats: false)", "use_global_stats")
    stored = float(layer.blobs[2].data[0])
    factor = 0.0 if stored == 0 else 1.0 / stored
    mean, variance = info.weight(0) * factor, info.weight(1) * factor
    channels = mean.shape[0]
    g.node("BatchNormalization",
           [info.bottoms[0], g.const(np.ones(channels), f"{info.name}.gamma"),
            g.const(np.zeros(channels), f"{info.name}.beta"),
            g.const(mean, f"{info.name}.mean"), g.const(variance, f"{info.name}.variance")],
           info.tops[0], hint=info.name, epsilon=info.params.eps)


def _broadcast_operand(g: Graph, info: LayerInfo, value, hint: str) -> str:
    """A Scale/Bias operand of shape x.shape[axis:axis+k] reshaped to broadcast over x."""
    shape = info.bottom_shapes[0]
    operand = tuple(info.layer._operand_shape_from_params(shape)) \
        if len(info.bottoms) == 1 else tuple(info.bottom_shapes[1])
    axis = 0 if len(operand) == 0 else info.params.axis % len(shape)
    trailing = len(shape) - axis - len(operand)
    if isinstance(value, np.ndarray):
        return g.const(value.reshape(*operand, *[1] * trailing), hint)
    if trailing == 0:
        return value
    return g.node("Reshape", [value, g.ints([0] * len(operand) + [1] * trailing,
                                            f"{hint}.shape")], hint=f"{hint}.reshape")


@register_onnx("Scale")
def _scale(g: Graph, info: LayerInfo):
    layer = info.layer
    two_bottoms = len(info.bottoms) > 1
    factor = info.bottoms[1] if two_bottoms else info.weight(0)
    factor = _broadcast_operand(g, info, factor, f"{info.name}.scale")
    if layer.bias_index is None:
        g.node("Mul", [info.bottoms[0], factor], info.tops[0], hint=info.name)
        return
    product = g.node("Mul", [info.bottoms[0], factor], hint=info.name)
    bias = _broadcast_operand(g, info, info.weight(layer.bias_index), f"{info.name}.bias")
    g.node("Add", [product, bias], info.tops[0], hint=f"{info.name}.bias")


@register_onnx("Bias")
def _bias(g: Graph, info: LayerInfo):
    value = info.bottoms[1] if len(info.bottoms) > 1 else info.weight(0)
    g.node("Add", [info.bottoms[0], _broadcast_operand(g, info, value, f"{info.name}.bias")],
           info.tops[0], hint=info.name)


@register_onnx("MVN")
def _mvn(g: Graph, info: LayerInfo):
    p, x = info.params, info.bottoms[0]
    ndim = len(info.bottom_shapes[0])
    axes = list(range(1 if p.across_channels else 2, ndim))
    if not axes:                # one value per group: x − mean(x) is 0
        g.node("Sub", [x, x], info.tops[0], hint=info.name)
        return
    mean = g.node("ReduceMean", [x], hint=f"{info.name}.mean", axes=axes, keepdims=1)
    if not p.normalize_variance:
        g.node("Sub", [x, mean], info.tops[0], hint=info.name)
        return
    centred = g.node("Sub", [x, mean], hint=f"{info.name}.centre")
    square = g.node("Mul", [centred, centred], hint=f"{info.name}.square")
    variance = g.node("ReduceMean", [square], hint=f"{info.name}.variance", axes=axes,
                      keepdims=1)
    std = g.node("Sqrt", [variance], hint=f"{info.name}.std")
    denominator = g.node("Add", [std, g.const(p.eps, f"{info.name}.eps")],
                         hint=f"{info.name}.eps")
    g.node("Div", [centred, denominator], info.tops[0], hint=info.name)


@register_onnx("Concat")
def _concat(g: Graph, info: LayerInfo):
    g.node("Concat", info.bottoms, info.tops[0], hint=info.name, axis=info.layer.axis)


@register_onnx("Slice")
def _slice(g: Graph, info: LayerInfo):
    bounds = info.layer.bounds
    sizes = [int(b - a) for a, b in pairwise(bounds)]
    g.node("Split", [info.bottoms[0], g.ints(sizes, f"{info.name}.sizes")], info.tops,
           hint=info.name, axis=info.layer.axis)


@register_onnx("Split")
def _split(g: Graph, info: LayerInfo):
    for top in info.tops:
        g.node("Identity", [info.bottoms[0]], top, hint=info.name)


@register_onnx("Eltwise")
def _eltwise(g: Graph, info: LayerInfo):
    op, xs = info.params.operation, info.bottoms
    if op == "PROD":
        out = xs[0]
        for i, x in enumerate(xs[1:], 1):
            out = g.node("Mul", [out, x], info.tops[0] if i == len(xs) - 1 else None,
                         hint=info.name)
    elif op == "MAX":
        g.node("Max", xs, info.tops[0], hint=info.name)
    else:
        coeff = info.layer.coeff
        terms = [x if c == 1 else g.node("Mul", [x, g.const(c, f"{info.name}.coeff")],
                                         hint=f"{info.name}.coeff")
                 for x, c in zip(xs, coeff)]
        g.node("Sum", terms, info.tops[0], hint=info.name)


def _reshape_to(g: Graph, info: LayerInfo, target):
    g.node("Reshape", [info.bottoms[0], g.ints(target, f"{info.name}.shape")], info.tops[0],
           hint=info.name)


@register_onnx("Flatten")
def _flatten(g: Graph, info: LayerInfo):
    shape, out = info.bottom_shapes[0], info.top_shapes[0]
    start = info.params.axis % len(shape)
    # axes before the merged ones are copied (0), the merged one inferred (-1)
    _reshape_to(g, info, [0] * start + [-1] + list(out[start + 1:]))


@register_onnx("Reshape")
def _reshape(g: Graph, info: LayerInfo):
    """The built top shape, with the batch axis left free: copied (0) when the reshape
    keeps axis 0, and the inferred dimension (-1) left to infer."""
    p, shape = info.params, info.bottom_shapes[0]
    start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
    dims = list(p.shape)
    target = list(info.top_shapes[0])
    if start > 0 or (dims and dims[0] == 0):
        target[0] = 0
    if -1 in dims:
        target[start + dims.index(-1)] = -1
    _reshape_to(g, info, target)


@register_onnx("Crop")
def _crop(g: Graph, info: LayerInfo):
    window = info.layer.window
    axes = [i for i, s in enumerate(window) if s != slice(None)]
    starts = [window[i].start for i in axes]
    if axes and axes[0] == 0:
        # the batch axis is cropped to bottom 1's batch: ends from its shape at run time
        reference = g.node("Shape", [info.bottoms[1]], hint=f"{info.name}.shape", start=axes[0])
        ends = g.node("Add", [reference, g.ints(starts, f"{info.name}.offsets")],
                      hint=f"{info.name}.ends")
    else:
        ends = g.ints([window[i].stop for i in axes], f"{info.name}.ends")
    g.node("Slice", [info.bottoms[0], g.ints(starts, f"{info.name}.starts"), ends,
                     g.ints(axes, f"{info.name}.axes")], info.tops[0], hint=info.name)


@register_onnx("Tile")
def _tile(g: Graph, info: LayerInfo):
    ndim = len(info.bottom_shapes[0])
    repeats = [1] * ndim
    repeats[info.params.axis % ndim] = info.params.tiles
    g.node("Tile", [info.bottoms[0], g.ints(repeats, f"{info.name}.repeats")], info.tops[0],
           hint=info.name)


@register_onnx("Reduction")
def _reduction(g: Graph, info: LayerInfo):
    p = info.params
    ndim = len(info.bottom_shapes[0])
    axes = list(range(p.axis % max(ndim, 1), ndim))
    target = info.tops[0] if p.coeff == 1 else None
    op = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare",
          "MEAN": "ReduceMean"}[p.operation]
    if op == "ReduceSum":       # opset 13+: the axes are an input
        reduced = g.node(op, [info.bottoms[0], g.ints(axes, f"{info.name}.axes")], target,
                         hint=info.name, keepdims=0)
    else:
        reduced = g.node(op, [info.bottoms[0]], target, hint=info.name, axes=axes, keepdims=0)
    if target is None:
        g.node("Mul", [reduced, g.const(p.coeff, f"{info.name}.coeff")], info.tops[0],
               hint=f"{info.name}.coeff")


@register_onnx("ArgMax")
def _argmax(g: Graph, info: LayerInfo):
    """Caffe's ArgMax: ties to the larger index (ONNX ArgMax's select_last_index; TopK for
    top_k > 1, whose order among equal values onnxruntime leaves to the smaller index)."""
    p, x = info.params, info.bottoms[0]
    out_shape = info.top_shapes[0]
    if p.axis is None:
        x = g.node("Flatten", [x], hint=f"{info.name}.flatten", axis=1)
        axis = 1
    else:
        axis = info.layer.axis
    if p.top_k == 1:
        index = g.node("ArgMax", [x], hint=info.name, axis=axis, keepdims=1,
                       select_last_index=1)
        values = g.node("ReduceMax", [x], hint=f"{info.name}.max", axes=[axis], keepdims=1) \
            if p.out_max_val else None
    else:
        values, index = g.node("TopK", [x, g.ints([p.top_k], f"{info.name}.k")],
                               [g.fresh(f"{info.name}:values"), g.fresh(f"{info.name}:index")],
                               hint=info.name, axis=axis, largest=1, sorted=1)
    index = g.node("Cast", [index], hint=f"{info.name}.cast", to=1)     # FLOAT
    if p.axis is not None:
        g.node("Identity", [values if p.out_max_val else index], info.tops[0])
        return
    parts = [index, values] if p.out_max_val else [index]
    # (N, top_k) each -> (N, 1 or 2, top_k, 1, ...)
    parts = [g.node("Unsqueeze", [part, g.ints([1], f"{info.name}.axis")],
                    hint=f"{info.name}.unsqueeze") for part in parts]
    joined = parts[0] if len(parts) == 1 else g.node("Concat", parts, hint=f"{info.name}.join",
                                                      axis=1)
    g.node("Reshape", [joined, g.ints([0, *out_shape[1:]], f"{info.name}.shape")],
           info.tops[0], hint=f"{info.name}.reshape")


@register_onnx("Embed")
def _embed(g: Graph, info: LayerInfo):
    index = g.node("Cast", [info.bottoms[0]], hint=f"{info.name}.cast", to=7)     # INT64
    target = None if info.params.bias_term else info.tops[0]
    rows = g.node("Gather", [g.const(info.weight(0), f"{info.name}.weight"), index], target,
                  hint=info.name, axis=0)
    if info.params.bias_term:
        g.node("Add", [rows, g.const(info.weight(1), f"{info.name}.bias")], info.tops[0],
               hint=f"{info.name}.bias")


@register_onnx("Silence")
def _silence(g: Graph, info: LayerInfo):
    """No tops: nothing to compute."""


# ------------------------------------------------- SSD, Fast R-CNN and the forks' layers
register_onnx("DepthwiseConvolution")(_convolution)      # its group is set when built


@register_onnx("Permute")
def _permute(g: Graph, info: LayerInfo):
    g.node("Transpose", [info.bottoms[0]], info.tops[0], hint=info.name,
           perm=list(info.layer.order))


@register_onnx("ShuffleChannel")
def _shuffle_channel(g: Graph, info: LayerInfo):
    """(N, g, C/g, ...) with the two group axes swapped, as a Reshape/Transpose/Reshape."""
    shape = info.bottom_shapes[0]
    group = info.params.group
    rest = list(shape[2:])
    grouped = g.node("Reshape", [info.bottoms[0],
                                 g.ints([0, group, shape[1] // group, *rest],
                                        f"{info.name}.groups")], hint=f"{info.name}.split")
    swapped = g.node("Transpose", [grouped], hint=f"{info.name}.swap",
                     perm=[0, 2, 1, *range(3, 3 + len(rest))])
    g.node("Reshape", [swapped, g.ints([0, shape[1], *rest], f"{info.name}.shape")],
           info.tops[0], hint=info.name)


@register_onnx("Normalize")
def _normalize(g: Graph, info: LayerInfo):
    """``x / sqrt(Σ x² + eps) · scale``, the sum over (C, H, W) or over C."""
    p, ndim = info.params, len(info.bottom_shapes[0])
    axes = list(range(1, ndim)) if p.across_spatial else [1]
    squares = g.node("ReduceSumSquare", [info.bottoms[0]], hint=f"{info.name}.sumsq",
                     axes=axes, keepdims=1)
    shifted = g.node("Add", [squares, g.const(p.eps, f"{info.name}.eps")],
                     hint=f"{info.name}.eps")
    norm = g.node("Sqrt", [shifted], hint=f"{info.name}.norm")
    unit = g.node("Div", [info.bottoms[0], norm], hint=f"{info.name}.unit")
    scale = info.weight(0)
    if not p.channel_shared:
        scale = scale.reshape((1, -1) + (1,) * (ndim - 2))
    g.node("Mul", [unit, g.const(scale, f"{info.name}.scale")], info.tops[0], hint=info.name)


@register_onnx("PriorBox")
def _prior_box(g: Graph, info: LayerInfo):
    """The priors depend on the shapes only: a constant of the built net's."""
    priors = info.layer.priors(info.bottom_shapes[0][2:], info.bottom_shapes[1][2:])[None]
    g.node("Identity", [g.const(priors, f"{info.name}.priors")], info.tops[0], hint=info.name)


@register_onnx("Upsample")
def _upsample(g: Graph, info: LayerInfo):
    """Zeros of the top's size with each value scattered to its mask index in its plane."""
    n, c, out_h, out_w = info.top_shapes[0]
    x, mask = info.bottoms
    planes = g.ints([0, 0, -1], f"{info.name}.planes")
    values = g.node("Reshape", [x, planes], hint=f"{info.name}.values")
    index = g.node("Cast", [g.node("Reshape", [mask, planes], hint=f"{info.name}.mask")],
                   hint=f"{info.name}.index", to=7)                         # int64
    batch = g.node("Slice", [g.node("Shape", [x], hint=f"{info.name}.shape"),
                             g.ints([0], f"{info.name}.start"), g.ints([1], f"{info.name}.end")],
                   hint=f"{info.name}.batch")
    size = g.node("Concat", [batch, g.ints([c, out_h * out_w], f"{info.name}.size")],
                  hint=f"{info.name}.size", axis=0)
    zeros = g.node("Expand", [g.const(np.zeros((1, c, out_h * out_w)), f"{info.name}.zeros"),
                              size], hint=f"{info.name}.zeros")
    scattered = g.node("ScatterElements", [zeros, index, values], hint=f"{info.name}.scatter",
                       axis=2)
    g.node("Reshape", [scattered, g.ints([0, c, out_h, out_w], f"{info.name}.top")],
           info.tops[0], hint=info.name)


@register_onnx("ROIPooling")
def _roi_pooling(g: Graph, info: LayerInfo):
    p = info.params
    rois = g.node("Reshape", [info.bottoms[1], g.ints([-1, 5], f"{info.name}.rois")],
                  hint=f"{info.name}.rois")
    g.node("MaxRoiPool", [info.bottoms[0], rois], info.tops[0], hint=info.name,
           pooled_shape=[p.pooled_h, p.pooled_w], spatial_scale=float(p.spatial_scale))


# ---------------------------------------------------- recurrent layers and BVLC's other types
# Caffe's LSTM rows are the gates (i, f, o, g); ONNX's LSTM wants (i, o, f, c)
_ONNX_LSTM_GATES = (0, 2, 1, 3)


def _gate_rows(array: np.ndarray, hidden: int) -> np.ndarray:
    return np.concatenate([array[k * hidden:(k + 1) * hidden] for k in _ONNX_LSTM_GATES])


def _recurrent_input(g: Graph, info: LayerInfo, weights: list[np.ndarray]):
    """(X as (T, N, I[+I_static]), W for it): a static input joins every step's features,
    its weights beside the input's, so one ONNX recurrent operator computes Caffe's sum."""
    x = g.node("Reshape", [info.bottoms[0], g.ints([0, 0, -1], f"{info.name}.xshape")],
               hint=f"{info.name}.x")
    if not info.layer.static_input:
        return x, weights[0]
    steps = info.bottom_shapes[0][0]
    static = g.node("Flatten", [info.bottoms[2]], hint=f"{info.name}.static", axis=1)
    static = g.node("Unsqueeze", [static, g.ints([0], f"{info.name}.axis0")],
                    hint=f"{info.name}.static1")
    static = g.node("Expand", [static, g.ints([steps, 1, 1], f"{info.name}.steps")],
                    hint=f"{info.name}.static_steps")
    joined = g.node("Concat", [x, static], hint=f"{info.name}.x_static", axis=2)
    return joined, np.concatenate([weights[0], weights[2]], axis=1)


def _initial_states(g: Graph, info: LayerInfo) -> list[str]:
    """h_0 (and c_0) of an ``expose_hidden`` layer, times cont at the first step; '' (ONNX's
    zeros) otherwise. ONNX's recurrent operators take no markers: cont after the first step
    is taken as 1 (a sequence that restarts mid-way needs one call per sequence)."""
    layer = info.layer
    if not layer.params.expose_hidden:
        return ["" for _ in layer.state_names]
    first = g.node("Slice", [info.bottoms[1], g.ints([0], f"{info.name}.s0"),
                             g.ints([1], f"{info.name}.s1"), g.ints([0], f"{info.name}.a0")],
                   hint=f"{info.name}.cont0")
    first = g.node("Unsqueeze", [first, g.ints([2], f"{info.name}.axis2")],
                   hint=f"{info.name}.cont0_3d")
    return [g.node("Mul", [info.bottoms[index], first], hint=f"{info.name}.state{k}")
            for k, index in enumerate(layer.hidden_bottoms)]


@register_onnx("LSTM")
def _lstm(g: Graph, info: LayerInfo):
    """ONNX LSTM with Caffe's gates reordered (i, f, o, g → i, o, f, c), b_c as the input
    bias and a zero recurrence bias; outputs (T, N, H) [, h_T, c_T (1, N, H)]."""
    hidden = info.params.num_output
    weights = [info.weight(j) for j in range(len(info.layer.blobs))]
    x, w_x = _recurrent_input(g, info, weights)
    w = _gate_rows(w_x, hidden)[None]
    r = _gate_rows(weights[-1], hidden)[None]
    b = np.concatenate([_gate_rows(weights[1], hidden), np.zeros(4 * hidden, np.float32)])[None]
    h0, c0 = _initial_states(g, info)
    outputs = [g.fresh(f"{info.name}:Y"),
               info.tops[1] if len(info.tops) > 1 else "",
               info.tops[2] if len(info.tops) > 2 else ""]
    g.node("LSTM", [x, g.const(w, f"{info.name}.W"), g.const(r, f"{info.name}.R"),
                    g.const(b, f"{info.name}.B"), "", h0, c0], outputs, hint=info.name,
           hidden_size=hidden)
    g.node("Squeeze", [outputs[0], g.ints([1], f"{info.name}.axis1")], info.tops[0],
           hint=f"{info.name}.h")


@register_onnx("RNN")
def _rnn(g: Graph, info: LayerInfo):
    """ONNX RNN (tanh) for ``h_t``, then Caffe's output ``o_t = tanh(W_ho h_t + b_o)``."""
    hidden = info.params.num_output
    weights = [info.weight(j) for j in range(len(info.layer.blobs))]
    x, w_x = _recurrent_input(g, info, weights)
    b = np.concatenate([weights[1], np.zeros(hidden, np.float32)])[None]
    (h0,) = _initial_states(g, info)
    outputs = [g.fresh(f"{info.name}:Y"), info.tops[1] if len(info.tops) > 1 else ""]
    w_hh = weights[3 if info.layer.static_input else 2]
    g.node("RNN", [x, g.const(w_x[None], f"{info.name}.W"), g.const(w_hh[None], f"{info.name}.R"),
                   g.const(b, f"{info.name}.B"), "", h0], outputs, hint=info.name,
           hidden_size=hidden)
    states = g.node("Squeeze", [outputs[0], g.ints([1], f"{info.name}.axis1")],
                    hint=f"{info.name}.h")
    product = g.node("MatMul", [states, g.const(weights[-2].T, f"{info.name}.W_ho")],
                     hint=f"{info.name}.o")
    biased = g.node("Add", [product, g.const(weights[-1], f"{info.name}.b_o")],
                    hint=f"{info.name}.o_bias")
    g.node("Tanh", [biased], info.tops[0], hint=f"{info.name}.o_tanh")


@register_onnx("LSTMUnit")
def _lstm_unit(g: Graph, info: LayerInfo):
    """Caffe's one LSTM step from its gate input, as element-wise operators."""
    c_prev, gate_input, cont = info.bottoms
    hidden = info.bottom_shapes[0][2]
    i, f, o, cell = g.node("Split", [gate_input, g.ints([hidden] * 4, f"{info.name}.sizes")],
                           [g.fresh(f"{info.name}:{k}") for k in "ifog"], hint=info.name,
                           axis=2)
    i, f, o = (g.node("Sigmoid", [v], hint=f"{info.name}.sigmoid") for v in (i, f, o))
    cell = g.node("Tanh", [cell], hint=f"{info.name}.tanh")
    cont = g.node("Unsqueeze", [cont, g.ints([2], f"{info.name}.axis2")],
                  hint=f"{info.name}.cont")
    kept = g.node("Mul", [g.node("Mul", [cont, f], hint=f"{info.name}.cf"), c_prev],
                  hint=f"{info.name}.kept")
    c = g.node("Add", [kept, g.node("Mul", [i, cell], hint=f"{info.name}.ig")], info.tops[0],
               hint=f"{info.name}.c")
    g.node("Mul", [o, g.node("Tanh", [c], hint=f"{info.name}.tanh_c")], info.tops[1],
           hint=f"{info.name}.h")


@register_onnx("Threshold")
def _threshold(g: Graph, info: LayerInfo):
    above = g.node("Greater", [info.bottoms[0], g.const(info.params.threshold,
                                                        f"{info.name}.threshold")],
                   hint=info.name)
    g.node("Cast", [above], info.tops[0], hint=f"{info.name}.cast", to=1)     # FLOAT


@register_onnx("BatchReindex")
def _batch_reindex(g: Graph, info: LayerInfo):
    index = g.node("Cast", [info.bottoms[1]], hint=f"{info.name}.cast", to=7)     # INT64
    g.node("Gather", [info.bottoms[0], index], info.tops[0], hint=info.name, axis=0)


@register_onnx("Filter")
def _filter(g: Graph, info: LayerInfo):
    """The items whose selector is non-zero: NonZero of the flattened selector, then Gather."""
    selector = g.node("Reshape", [info.bottoms[-1], g.ints([-1], f"{info.name}.flat")],
                      hint=f"{info.name}.selector")
    chosen = g.node("NonZero", [selector], hint=f"{info.name}.nonzero")
    chosen = g.node("Reshape", [chosen, g.ints([-1], f"{info.name}.flat_index")],
                    hint=f"{info.name}.index")
    for bottom, top in zip(info.bottoms[:-1], info.tops):
        g.node("Gather", [bottom, chosen], top, hint=info.name, axis=0)


@register_onnx("Im2col")
def _im2col(g: Graph, info: LayerInfo):
    """A grouped Conv with one-hot kernels: output channel (c·kh + i)·kw + j copies tap (i, j)
    of channel c, Caffe's layout."""
    layer = info.layer
    channels = info.bottom_shapes[0][1]
    kh, kw = layer.kernel
    taps = np.eye(kh * kw, dtype=np.float32).reshape(kh * kw, 1, kh, kw)
    weight = np.tile(taps, (channels, 1, 1, 1))
    g.node("Conv", [info.bottoms[0], g.const(weight, f"{info.name}.taps")], info.tops[0],
           hint=info.name, kernel_shape=[kh, kw], strides=list(layer.stride),
           pads=[*layer.pad, *layer.pad], dilations=list(layer.dilation), group=channels)


@register_onnx("SPP")
def _spp(g: Graph, info: LayerInfo):
    """Each pyramid level is the Pooling it is built from, flattened and concatenated."""
    parts = []
    single = len(info.layer.levels) == 1
    for pooling, _, output in info.layer.levels:
        target = info.tops[0] if single else g.fresh(f"{info.name}:level")
        _pooling(g, LayerInfo(pooling, [info.bottoms[0]], [target], info.bottom_shapes,
                              [output.shape]))
        if not single:
            parts.append(g.node("Flatten", [target], hint=f"{info.name}.flatten", axis=1))
    if not single:
        g.node("Concat", parts, info.tops[0], hint=info.name, axis=1)
