"""How the spatial coordinates of one net_spec Top relate to another's (pycaffe's coord_map).

A map is ``(axis, a, b)``: coordinate ``x`` of a layer's input lands at ``a·x + b`` of its
output (``axis`` None: any axis). Maps compose along the graph; ``coord_map_from_to``
walks from both tops to a common ancestor; ``crop`` makes the Crop layer that aligns one
top with another (fully convolutional nets).
"""

from __future__ import annotations

import numpy as np

from .net_spec import layers as L

# layers that do not move coordinates
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale",
                       "Sigmoid", "Split", "TanH", "Threshold"]


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping."""


class AxisMismatchException(Exception):
    """Two mappings act on different axes."""


def conv_params(fn):
    """``(axis, stride, effective kernel, pad)`` of a Convolution/Deconvolution/Pooling/Im2col
    layer (its fields, or its ``convolution_param``); the effective kernel counts dilation."""
    params = fn.params.get("convolution_param", fn.params)
    if {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(fn.params):
        raise AssertionError("cropping does not support legacy _h/_w params")
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (params.get("axis", 1), np.array(params.get("stride", 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """``(axis, offset)`` of a Crop layer, Caffe's defaults (axis 2) filled in."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The map of one layer ``fn`` from its input to its output."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, kernel, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (kernel - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, kernel, pad = conv_params(fn)
        return axis, stride, (kernel - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset     # axis - 1: the last axis that is not a coordinate
    raise UndefinedMapException


def compose(base_map, next_map):
    """``base`` then ``next``: scales multiply, ``next``'s shift is scaled by ``base``'s."""
    axis1, a1, b1 = base_map
    axis2, a2, b2 = next_map
    if axis1 is None:
        axis = axis2
    elif axis2 is None or axis1 == axis2:
        axis = axis1
    else:
        raise AxisMismatchException
    return axis, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _mappable_bottoms(top):
    """A Crop maps only its first bottom (the second gives only the size)."""
    return top.fn.inputs[:1] if top.fn.type_name == "Crop" else top.fn.inputs


def _ancestor_maps(start):
    """Every top reachable from ``start`` through mappable layers, with its map."""
    maps = {start: (None, 1, 0)}
    frontier = {start}
    while frontier:
        top = frontier.pop()
        try:
            for bottom in _mappable_bottoms(top):
                maps[bottom] = compose(maps[top], coord_map(top.fn))
                frontier.add(bottom)
        except UndefinedMapException:
            pass
    return maps


def coord_map_from_to(top_from, top_to):
    """The map from ``top_from``'s coordinates to ``top_to``'s, through a common ancestor."""
    from_maps = _ancestor_maps(top_from)
    to_maps = {top_to: (None, 1, 0)}
    frontier = {top_to}
    while frontier:
        top = frontier.pop()
        if top in from_maps:
            return compose(to_maps[top], inverse(from_maps[top]))
        try:
            for bottom in _mappable_bottoms(top):
                to_maps[bottom] = compose(to_maps[top], coord_map(top.fn))
                frontier.add(bottom)
        except UndefinedMapException:
            continue
    raise RuntimeError("Could not compute map between tops; are they connected by spatial "
                       "layers?")


def crop(top_from, top_to):
    """A Crop layer cutting ``top_from`` to align with ``top_to`` (same scale, whole offset)."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    if not (a == 1).all():
        raise AssertionError(f"scale mismatch on crop (a = {a})")
    if not (b <= 0).all():
        raise AssertionError(f"cannot crop negative offset (b = {b})")
    if not (np.round(b) == b).all():
        raise AssertionError(f"cannot crop noninteger offset (b = {b})")
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=axis + 1, offset=list(-np.round(b).astype(int))))
