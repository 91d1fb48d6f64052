"""Pictures of a ``NetParameter`` (pycaffe's ``caffe.draw``), written as Graphviz DOT.

Layers are boxes (name, type, kernel/stride/pad for spatial layers), blobs are octagons,
an edge from a layer to its top is labelled with its size (``num_output``, the batch
size). A layer with one bottom and one top that are the same blob (in place) is drawn
green. ``draw_net(..., ext="dot")`` (or ``"raw"``) returns the DOT text itself; other
formats are rendered by Graphviz's ``dot`` program when it is installed.
``get_pydot_graph`` needs the ``pydot`` package.
"""

from __future__ import annotations

import shutil
import subprocess

from .proto import caffe_pb2

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
TEXT_FORMATS = ("dot", "gv", "raw", "canon")


def get_pooling_types_dict() -> dict[int, str]:
    """Pooling method number -> name (MAX, AVE, STOCHASTIC)."""
    enum = caffe_pb2.PoolingParameter.DESCRIPTOR.enum_types_by_name["PoolMethod"]
    return {value.number: value.name for value in enum.values}


def get_edge_label(layer) -> str:
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer) -> tuple[float, float]:
    """The weight and bias ``lr_mult`` of a Convolution/Deconvolution/InnerProduct layer."""
    if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    rates = [p.lr_mult for p in layer.param]
    if len(rates) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    return tuple(rates + [1.0] * (2 - len(rates)))


def get_layer_label(layer, rankdir, display_lrm=False) -> str:
    """The quoted label of a layer's node; words stacked when the graph runs left-right."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    parts = [layer.name]
    if layer.type == "Pooling":
        parts.append(f"({layer.type} {get_pooling_types_dict()[layer.pooling_param.pool]})")
    else:
        parts.append(f"({layer.type})")
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            pad = p.pad[0] if len(p.pad) else 0
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}",
                                     f"pad: {pad}"]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        weight_rate, bias_rate = get_layer_lr_mult(layer)
        if weight_rate or bias_rate:
            parts.append(f"lr mult: {weight_rate:.1f}, {bias_rate:.1f}")
    return '"' + separator.join(parts) + '"'


def choose_color_by_layertype(layertype) -> str:
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _included(layer, phase) -> bool:
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    included = not len(layer.include)
    for rule in layer.include:
        included = included or rule.phase == phase
    for rule in layer.exclude:
        included = included and rule.phase != phase
    return included


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attributes(style: dict, label: str) -> str:
    items = [f"label={label}"] + [f"{k}={_quote(v)}" for k, v in style.items()]
    return "[" + ", ".join(items) + "]"


def net_to_dot(caffe_net, rankdir="LR", label_edges=True, phase=None,
               display_lrm=False) -> str:
    """The DOT text of ``caffe_net`` (a NetParameter), only ``phase``'s layers if given."""
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    for layer in caffe_net.layer:
        if not _included(layer, phase):
            continue
        node = f"{layer.name}_{layer.type}"
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        in_place = (len(layer.bottom) == 1 and len(layer.top) == 1
                    and layer.bottom[0] == layer.top[0])
        style = NEURON_LAYER_STYLE if in_place else \
            {**LAYER_STYLE_DEFAULT, "fillcolor": choose_color_by_layertype(layer.type)}
        nodes[node] = _attributes(style, label)
        for bottom in layer.bottom:
            nodes.setdefault(f"{bottom}_blob", _attributes(BLOB_STYLE, _quote(bottom)))
            edges.append((f"{bottom}_blob", node, '""'))
        for top in layer.top:
            nodes[f"{top}_blob"] = _attributes(BLOB_STYLE, _quote(top))
            edges.append((node, f"{top}_blob",
                          get_edge_label(layer) if label_edges else '""'))
    lines = [f"digraph {_quote(caffe_net.name or 'Net')} {{", f"  rankdir={rankdir};"]
    lines += [f"  {_quote(name)} {attributes};" for name, attributes in nodes.items()]
    lines += [f"  {_quote(src)} -> {_quote(dst)} [label={label}];" for src, dst, label in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The graph as a ``pydot.Dot`` (needs ``pip install pydot``)."""
    try:
        import pydot
    except ImportError:
        raise ImportError("caffe.draw.get_pydot_graph needs pydot: pip install pydot "
                          "(draw_net(..., ext='dot') writes DOT without it)") from None
    return pydot.graph_from_dot_data(net_to_dot(caffe_net, rankdir, label_edges, phase,
                                                display_lrm))[0]


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False) -> bytes:
    """The picture of ``caffe_net`` in format ``ext``: DOT text for dot/gv/raw, else what
    Graphviz's ``dot -T<ext>`` renders."""
    dot = net_to_dot(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext in TEXT_FORMATS:
        return dot.encode()
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(f"drawing a .{ext} needs Graphviz's 'dot' program (apt-get install "
                           f"graphviz); ext='dot' gives the DOT text without it")
    return subprocess.run([program, f"-T{ext}"], input=dot.encode(), capture_output=True,
                          check=True, timeout=120).stdout


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False) -> None:
    """Write the picture to ``filename`` in the format its extension names (``.raw`` and
    ``.dot``: DOT text)."""
    ext = filename[filename.rfind(".") + 1:]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as out:
        out.write(data)
