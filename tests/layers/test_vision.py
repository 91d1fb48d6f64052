"""Convolution, Deconvolution and Pooling: values against direct loops, Caffe's output sizes,
numeric gradients through the shared checker, the conv/deconv adjoint, and config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import solverkit as sk
from solverkit import ConfigError
from solverkit.gradient_check import check_layer_gradients
from solverkit.layers import method_choice


# ---------------------------------------------------------------- direct implementations
def _pair(value):
    return (value, value) if np.isscalar(value) else tuple(value)


def direct_conv(x, w, b, stride=1, pad=0, dilation=1, group=1):
    """Convolution by loops over output pixels: y[n,o] = b[o] + Σ W[o,c,i,j]·x_pad[n,c,·,·]."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // group
    y = np.zeros((n, o, oh, ow))
    for out in range(o):
        g = out // og
        for r in range(oh):
            for q in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           r * sh:r * sh + dh * (kh - 1) + 1:dh,
                           q * sw:q * sw + dw * (kw - 1) + 1:dw]
                y[:, out, r, q] = np.sum(patch * w[out], axis=(1, 2, 3))
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def direct_deconv(x, w, b, stride=1, pad=0, dilation=1, group=1):
    """Deconvolution by scattering every input pixel through the kernel (Caffe's definition)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // group
    oh = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
    ow = sw * (wd - 1) + dw * (kw - 1) + 1 - 2 * pw
    full = np.zeros((n, og * group, oh + 2 * ph, ow + 2 * pw))
    for ch in range(c):
        g = ch // cg
        for r in range(h):
            for q in range(wd):
                for i in range(kh):
                    for j in range(kw):
                        full[:, g * og:(g + 1) * og, r * sh + i * dh, q * sw + j * dw] += (
                            x[:, ch, r, q][:, None] * w[ch, :, i, j][None, :])
    y = full[:, :, ph:ph + oh, pw:pw + ow]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


def caffe_pool_size(size, kernel, stride, pad, ceil=True):
    """Caffe's PoolingLayer::Reshape, written from its source."""
    ratio = (size + 2 * pad - kernel) / stride
    out = (math.ceil(ratio) if ceil else math.floor(ratio)) + 1
    return out


def direct_pool(x, kernel, stride=1, pad=0, pool="MAX", ceil=True):
    """Caffe's CPU pooling loops (Forward_cpu), window by window; returns (y, mask)."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    n, c, h, w = x.shape
    oh, ow = caffe_pool_size(h, kh, sh, ph, ceil), caffe_pool_size(w, kw, sw, pw, ceil)
    if ph or pw:
        oh -= (oh - 1) * sh >= h + ph
        ow -= (ow - 1) * sw >= w + pw
    y = np.zeros((n, c, oh, ow))
    mask = np.zeros((n, c, oh, ow))
    for r in range(oh):
        for q in range(ow):
            h0, w0 = r * sh - ph, q * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            pool_size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            if pool == "MAX":
                k = window.argmax(axis=2)
                y[:, :, r, q] = window.max(axis=2)
                mask[:, :, r, q] = (h0 + k // (w1 - w0)) * w + w0 + k % (w1 - w0)
            else:
                y[:, :, r, q] = window.sum(axis=2) / pool_size
    return y, mask


def _net(*layers, dtype="float64", seed=0):
    return sk.Net({"name": "vision", "dtype": dtype, "layers": list(layers)}, seed=seed)


def _input(shape, name="x"):
    return {"name": "input", "type": "Input", "top": name, "shape": [list(shape)]}


def _conv(**fields):
    layer = {"name": "conv", "type": "Convolution", "bottom": "x", "top": "y",
             "weight_filler": {"type": "gaussian", "std": 0.5},
             "bias_filler": {"type": "gaussian", "std": 0.5}}
    layer.update(fields)
    return layer


def _deconv(**fields):
    return {**_conv(**fields), "name": "deconv", "type": "Deconvolution"}


def _pool(**fields):
    return {"name": "pool", "type": "Pooling", "bottom": "x", "top": "y", **fields}


# ---------------------------------------------------------------- convolution
CONV_CASES = [
    {"num_output": 4, "kernel_size": 3},
    {"num_output": 3, "kernel_size": 3, "stride": 2, "pad": 1},
    {"num_output": 4, "kernel_size": 2, "dilation": 2, "pad": 1},
    {"num_output": 4, "kernel_size": 3, "group": 2, "pad": 1, "bias_term": False},
    {"num_output": 2, "kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 1,
     "pad_h": 1, "pad_w": 0},
    {"num_output": 6, "kernel_size": [1, 3], "group": 2, "stride": [1, 2], "dilation": [1, 2],
     "pad": [0, 2]},
    {"num_output": 2, "kernel_size": 1},
    # vertical stride 1 with a horizontal stride and a vertical dilation (KernelRows' case)
    {"num_output": 3, "kernel_size": 3, "stride_h": 1, "stride_w": 2, "pad_h": 2, "pad_w": 1,
     "dilation": [2, 1]},
    {"num_output": 3, "kernel_size": 3, "pad": 1, "bias_term": False},
]


@pytest.fixture(params=["columns", "per_sample", "kernel_rows"])
def conv_products(request, blas_backend):
    """Every way Convolution multiplies: im2col and one product over a block of samples,
    one product per sample, or kernel row by kernel row (KernelRows, where it applies);
    each on every product library the machine has."""
    previous = method_choice.prefer(request.param)
    yield request.param
    method_choice.prefer(previous)


def _expected_method(case, requested):
    """The method a layer uses when ``requested`` is preferred (KernelRows needs vertical
    stride 1 and one group)."""
    stride_h = case.get("stride_h", _pair(case.get("stride", 1))[0])
    if requested == "kernel_rows" and (stride_h != 1 or case.get("group", 1) != 1):
        return "columns"
    return requested


def _conv_args(case):
    pick = {}
    for name in ("stride", "pad", "dilation"):
        if f"{name}_h" in case:
            pick[name] = (case[f"{name}_h"], case[f"{name}_w"])
        elif name in case:
            pick[name] = case[name]
    pick["group"] = case.get("group", 1)
    return pick


@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution_forward_matches_direct_loops(case, rng, conv_products):
    x = rng.standard_normal((2, 4, 7, 6))
    net = _net(_input(x.shape), _conv(**case))
    assert net.layers[1].method == _expected_method(case, conv_products)
    y = net.forward(x=x)["y"]
    w = net.params["conv"][0].data
    b = net.params["conv"][1].data if case.get("bias_term", True) else None
    assert w.shape == (case["num_output"], 4 // case.get("group", 1),
                       *_pair(case.get("kernel_size",
                                       (case.get("kernel_h"), case.get("kernel_w")))))
    np.testing.assert_allclose(y, direct_conv(x, w, b, **_conv_args(case)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution_gradients(case, rng, conv_products):
    x = rng.standard_normal((2, 4, 5, 5))
    check_layer_gradients(_conv(**case), {"x": x})


@pytest.mark.parametrize("case", CONV_CASES[1:4])
def test_convolution_in_blocks_of_samples(case, rng, monkeypatch, conv_products):
    """A column matrix too big for the block size is built a few samples at a time."""
    monkeypatch.setattr(method_choice, "CONV_BLOCK_BYTES", 1)             # one sample per block
    x = rng.standard_normal((3, 4, 6, 5))
    net = _net(_input(x.shape), _conv(**case))
    assert len(net.layers[1].blocks) == 3
    w = net.params["conv"][0].data
    b = net.params["conv"][1].data if case.get("bias_term", True) else None
    np.testing.assert_allclose(net.forward(x=x)["y"], direct_conv(x, w, b, **_conv_args(case)),
                               rtol=1e-10, atol=1e-12)
    check_layer_gradients(_conv(**case), {"x": x})


def test_convolution_float32_and_changing_batch(rng):
    """Buffers follow the batch size; float32 results agree with float64 loops."""
    net = _net(_input((3, 2, 8, 8)), _conv(num_output=5, kernel_size=3, pad=1, stride=2),
               dtype="float32")
    w, b = (p.data.astype(np.float64) for p in net.params["conv"])
    for n in (3, 1, 4, 3):
        x = rng.standard_normal((n, 2, 8, 8)).astype(np.float32)
        y = net.forward(x=x)["y"]
        assert y.dtype == np.float32 and y.shape == (n, 5, 4, 4)
        np.testing.assert_allclose(y, direct_conv(x.astype(np.float64), w, b, 2, 1),
                                   rtol=1e-4, atol=1e-5)


def test_convolution_backward_twice_and_param_accumulation(rng, conv_products):
    """Parameter diffs add up over backward passes (Caffe); bottom diffs are overwritten."""
    x = rng.standard_normal((2, 3, 6, 6))
    net = _net(_input(x.shape), _conv(num_output=4, kernel_size=3, pad=1))
    net.forward(x=x)
    dy = rng.standard_normal((2, 4, 6, 6))
    net.backward(y=dy)
    first_w, first_x = net.params["conv"][0].diff.copy(), net.blobs["x"].diff.copy()
    net.backward(y=dy)
    np.testing.assert_allclose(net.params["conv"][0].diff, 2 * first_w)
    np.testing.assert_allclose(net.blobs["x"].diff, first_x)
    # dW against its definition: Σ dy[n,o,r,q] · x_pad[n, c, r+i, q+j]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((4, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            expected[:, :, i, j] = np.einsum("norq,ncrq->oc", dy, xp[:, :, i:i + 6, j:j + 6])
    np.testing.assert_allclose(first_w, expected, rtol=1e-10)


def test_convolution_shapes_follow_caffe_formula():
    """floor((in + 2p − (d(k−1)+1)) / s) + 1, worked by hand for each case."""
    cases = [  # (H, W), fields, (OH, OW)
        ((28, 28), {"kernel_size": 5}, (24, 24)),                       # LeNet conv1
        ((12, 12), {"kernel_size": 5}, (8, 8)),                         # LeNet conv2
        ((32, 32), {"kernel_size": 5, "pad": 2}, (32, 32)),                # cifar10_quick
        ((7, 7), {"kernel_size": 3, "stride": 2}, (3, 3)),                 # (7−3)/2+1
        ((8, 8), {"kernel_size": 3, "stride": 2}, (3, 3)),                 # floor(5/2)+1
        ((8, 8), {"kernel_size": 3, "stride": 2, "pad": 1}, (4, 4)),          # floor(7/2)+1
        ((10, 9), {"kernel_size": 3, "dilation": 2}, (6, 5)),              # extent 5
        ((5, 7), {"kernel_h": 5, "kernel_w": 1, "stride_h": 1, "stride_w": 3}, (1, 3)),  # 6/3+1
        ((6, 6), {"kernel_size": 1, "stride": 4}, (2, 2)),                 # floor(5/4)+1
        ((3, 3), {"kernel_size": 4, "pad": 1}, (2, 2)),                    # 3+2−4+1
        ((11, 4), {"kernel_size": [3, 2], "stride": [4, 1], "pad": [2, 0]}, (4, 3)),
    ]
    for (h, w), fields, expected in cases:
        net = _net(_input((1, 1, h, w)), _conv(num_output=2, **fields))
        assert net.blobs["y"].shape == (1, 2, *expected), (h, w, fields)


# ---------------------------------------------------------------- deconvolution
DECONV_CASES = [
    {"num_output": 3, "kernel_size": 3},
    {"num_output": 2, "kernel_size": 4, "stride": 2, "pad": 1},
    {"num_output": 4, "kernel_size": 3, "stride": 2, "group": 2, "bias_term": False},
    {"num_output": 2, "kernel_h": 2, "kernel_w": 3, "stride_h": 3, "stride_w": 2, "pad_w": 1,
     "pad_h": 0,
         "dilation": 2},
]


@pytest.mark.parametrize("case", DECONV_CASES)
def test_deconvolution_forward_matches_scatter_loops(case, rng):
    x = rng.standard_normal((2, 4, 4, 3))
    net = _net(_input(x.shape), _deconv(**case))
    y = net.forward(x=x)["y"]
    w = net.params["deconv"][0].data
    b = net.params["deconv"][1].data if case.get("bias_term", True) else None
    group = case.get("group", 1)
    assert w.shape[:2] == (4, case["num_output"] // group)      # Caffe: (C, out/group, kh, kw)
    np.testing.assert_allclose(y, direct_deconv(x, w, b, **_conv_args(case)), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("case", DECONV_CASES)
def test_deconvolution_gradients(case, rng):
    check_layer_gradients(_deconv(**case), {"x": rng.standard_normal((2, 4, 3, 3))})


@pytest.mark.parametrize("case", [
    {"kernel_size": 3},
    {"kernel_size": 3, "stride": 2, "pad": 1},
    {"kernel_size": 4, "stride": 2, "pad": 1, "group": 2},
    {"kernel_size": 2, "stride": 3, "dilation": 2},
    {"kernel_h": 3, "kernel_w": 1, "stride_h": 2, "stride_w": 1, "pad_h": 1, "pad_w": 0,
     "group": 2},
])
def test_deconvolution_is_the_adjoint_of_convolution(case, rng):
    """⟨conv_W(x), y⟩ = ⟨x, deconv_W(y)⟩ with one weight array for both layers."""
    channels, features = 4, 6
    y = rng.standard_normal((2, features, 3, 4))
    deconv = _net(_input(y.shape, "x"), _deconv(num_output=channels, bias_term=False, **case))
    out_shape = deconv.blobs["y"].shape
    x = rng.standard_normal(out_shape)
    conv = _net(_input(out_shape), _conv(num_output=features, bias_term=False, **case))
    assert conv.blobs["y"].shape == y.shape                    # the sizes invert each other
    conv.params["conv"][0].data[...] = deconv.params["deconv"][0].data
    lhs = np.sum(conv.forward(x=x)["y"] * y)
    rhs = np.sum(x * deconv.forward(x=y)["y"])
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_deconvolution_shapes_follow_caffe_formula():
    """s(in − 1) + d(k − 1) + 1 − 2p."""
    for (h, w), fields, expected in [
        ((4, 4), {"kernel_size": 4, "stride": 2, "pad": 1}, (8, 8)),        # 2·3+3+1−2
        ((5, 3), {"kernel_size": 3}, (7, 5)),
        ((3, 3), {"kernel_size": 3, "stride": 3}, (9, 9)),
        ((2, 6), {"kernel_size": 2, "dilation": 3, "pad": 1}, (3, 7)),      # 1+3+1−2, 5+3+1−2
        ((4, 4), {"kernel_h": 1, "kernel_w": 5, "stride_h": 2, "stride_w": 1, "pad_w": 2,
                  "pad_h": 0}, (7, 4)),
    ]:
        net = _net(_input((1, 2, h, w)), _deconv(num_output=3, **fields))
        assert net.blobs["y"].shape == (1, 3, *expected), fields


def test_bilinear_deconvolution_upsamples_a_constant_image_to_a_constant_interior():
    channels = 3
    net = _net(_input((1, channels, 5, 4)),
               _deconv(num_output=channels, group=channels, kernel_size=4, stride=2, pad=1,
                       bias_term=False, weight_filler={"type": "bilinear"}), dtype="float32")
    y = net.forward(x=np.full((1, channels, 5, 4), 3.0))["y"]
    assert y.shape == (1, channels, 10, 8)
    np.testing.assert_allclose(y[:, :, 1:-1, 1:-1], 3.0, rtol=1e-6)
    # the border rows lose the taps that fall outside: 3 · (0.75 + 0) along one axis
    np.testing.assert_allclose(y[:, :, 0, 1:-1], 3.0 * 0.75, rtol=1e-6)


# ---------------------------------------------------------------- pooling
POOL_CASES = [  # fields, input (H, W)
    ({"kernel_size": 2, "stride": 2}, (6, 6)),                   # tiles the image
    ({"kernel_size": 3, "stride": 2}, (7, 8)),                   # overlapping, ceil overhang on W
    ({"kernel_size": 3, "stride": 2, "pad": 1}, (6, 5)),
    ({"kernel_size": 2, "stride": 3, "pad": 1}, (4, 7)),            # padding clip on H (3 -> 2)
    ({"kernel_h": 3, "kernel_w": 2, "stride_h": 1, "stride_w": 2, "pad_h": 2, "pad_w": 0}, (5, 5)),
    ({"kernel_size": 3, "stride": 2, "round_mode": "FLOOR"}, (7, 8)),
    ({"kernel_size": 2, "stride": 2, "round_mode": "FLOOR"}, (5, 5)),
    ({"kernel_size": 3, "stride": 2}, (5, 5)),
]


def _pool_args(fields):
    kernel = fields.get("kernel_size", (fields.get("kernel_h"), fields.get("kernel_w")))
    stride = (fields["stride_h"], fields["stride_w"]) if "stride_h" in fields else fields.get(
        "stride", 1)
    pad = (fields["pad_h"], fields["pad_w"]) if "pad_h" in fields else fields.get("pad", 0)
    return {"kernel": kernel, "stride": stride, "pad": pad,
            "ceil": fields.get("round_mode") != "FLOOR"}


def _distinct(rng, shape):
    """Random values without ties (MAX pooling's gradient is not defined at a tie)."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("fields, size", POOL_CASES)
def test_pooling_forward_matches_caffe_loops(fields, size, pool, rng):
    x = _distinct(rng, (2, 3, *size))
    tops = ["y", "mask"] if pool == "MAX" else "y"
    net = _net(_input(x.shape), {**_pool(pool=pool, **fields), "top": tops})
    out = net.forward(x=x)
    expected, mask = direct_pool(x, pool=pool, **_pool_args(fields))
    np.testing.assert_allclose(out["y"], expected, rtol=1e-12)
    if pool == "MAX":
        np.testing.assert_array_equal(out["mask"], mask)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("fields, size", POOL_CASES)
def test_pooling_gradients(fields, size, pool, rng):
    check_layer_gradients(_pool(pool=pool, **fields), {"x": _distinct(rng, (2, 2, *size))})


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_global_pooling_values_and_gradients(pool, rng):
    x = _distinct(rng, (2, 3, 4, 5))
    net = _net(_input(x.shape), _pool(pool=pool, global_pooling=True))
    y = net.forward(x=x)["y"]
    reduce = np.max if pool == "MAX" else np.mean
    np.testing.assert_allclose(y, reduce(x, axis=(2, 3), keepdims=True), rtol=1e-12)
    check_layer_gradients(_pool(pool=pool, global_pooling=True), {"x": x})


def test_max_pooling_ties_go_to_the_first_pixel_as_caffe():
    x = np.zeros((1, 1, 4, 4))
    net = _net(_input(x.shape), {**_pool(kernel_size=2, stride=2), "top": ["y", "mask"]})
    out = net.forward(x=x)
    np.testing.assert_array_equal(out["mask"][0, 0], [[0, 2], [8, 10]])
    net.backward(y=np.ones((1, 1, 2, 2)))
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(net.blobs["x"].diff[0, 0], expected)


def test_pooling_window_outside_the_image_gives_caffe_values():
    """kernel < stride with ceil: a last window with no pixel (Caffe: -FLT_MAX, mask -1; AVE 0)."""
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    net = _net(_input(x.shape), {**_pool(kernel_size=1, stride=3), "top": ["y", "mask"]})
    out = net.forward(x=x)
    assert out["y"].shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(out["y"][0, 0, :2, :2], [[0, 3], [15, 18]])
    assert np.all(out["y"][0, 0, 2] == np.finfo(np.float64).min)
    assert np.all(out["mask"][0, 0, 2] == -1) and out["mask"][0, 0, 1, 1] == 18
    ave = _net(_input(x.shape), _pool(pool="AVE", kernel_size=1, stride=3))
    np.testing.assert_array_equal(ave.forward(x=x)["y"][0, 0], [[0, 3, 0], [15, 18, 0],
                                                                [0, 0, 0]])


def test_pooling_shapes_follow_caffe_formula():
    """ceil((in + 2p − k)/s) + 1, minus one if padded and the last window starts ≥ in + p."""
    cases = [  # (H, W), fields, (OH, OW)
        ((24, 24), {"kernel_size": 2, "stride": 2}, (12, 12)),           # LeNet pool1
        ((32, 32), {"kernel_size": 3, "stride": 2}, (16, 16)),           # ceil(29/2)+1
        ((32, 32), {"kernel_size": 3, "stride": 2, "round_mode": "FLOOR"}, (15, 15)),
        ((7, 7), {"kernel_size": 3, "stride": 2, "pad": 1}, (4, 4)),        # ceil(6/2)+1, 6 < 8
        ((4, 4), {"kernel_size": 2, "stride": 3, "pad": 1}, (2, 2)),        # 3, then 6 ≥ 5: 2
        ((10, 10), {"kernel_size": 3, "stride": 4, "pad": 2}, (3, 3)),      # 4, then 12 ≥ 12: 3
        ((10, 10), {"kernel_size": 3, "stride": 4, "pad": 2, "round_mode": "FLOOR"}, (3, 3)),
        ((5, 9), {"kernel_h": 5, "kernel_w": 3, "stride_h": 1, "stride_w": 3}, (1, 3)),
        ((6, 6), {"kernel_size": 4, "stride": 3}, (2, 2)),               # ceil(2/3)+1
        ((6, 6), {"kernel_size": 4, "stride": 3, "round_mode": "FLOOR"}, (1, 1)),
        ((7, 5), {"global_pooling": True}, (1, 1)),
        ((3, 3), {"kernel_size": 3, "pad": 1}, (3, 3)),
        # no padding, no clip: the last row's window starts beyond the image (Caffe keeps it)
        ((5, 6), {"kernel_size": 1, "stride": 3}, (3, 3)),
        # a pad on W only still applies the clip to H: 2·3 ≥ 5 drops that row
        ((5, 6), {"kernel_h": 1, "kernel_w": 2, "stride": 3, "pad_h": 0, "pad_w": 1}, (2, 3)),
    ]
    for (h, w), fields, expected in cases:
        net = _net(_input((1, 2, h, w)), _pool(**fields))
        assert net.blobs["y"].shape == (1, 2, *expected), (h, w, fields)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("layer, field, words", [
    (_conv(num_output=2, kernel_size=6), "kernel_size", "larger than the padded input"),
    (_conv(num_output=2, kernel_h=3, kernel_w=9), "kernel_h", "larger than the padded input"),
    (_conv(num_output=2, kernel_size=3, group=2), "group", "does not divide the 3 input"),
    (_conv(num_output=2, kernel_size=0), "kernel_size", "must be positive"),
    (_conv(num_output=2, kernel_size=3, stride=0), "stride", "must be positive"),
    (_conv(num_output=0, kernel_size=3), "num_output", "positive"),
    (_conv(num_output=2, kernel_size=3, pad=-1), "pad", "non-negative"),
    (_conv(num_output=2, kernel_size=3, axis=2), "axis", "axis 1"),
    (_conv(num_output=2), "kernel_size", "required"),
    (_deconv(num_output=2, kernel_size=1, pad=3), "pad", "not positive"),
    (_pool(kernel_size=2, pad=2), "pad", "smaller than the kernel"),
    (_pool(kernel_size=7), "kernel_size", "larger than the padded input"),
    (_pool(kernel_size=3, stride=0), "stride", "must be positive"),
    (_pool(pool="STOCHASTIC", kernel_size=2), "pool", "STOCHASTIC"),
    (_pool(global_pooling=True, kernel_size=2), "kernel_size", "global_pooling"),
    (_pool(global_pooling=True, stride=2), "stride", "stride 1"),
    ({**_pool(pool="AVE", kernel_size=2), "top": ["y", "mask"]}, "top", "MAX"),
])
def test_bad_configs_name_the_layer_and_the_field(layer, field, words):
    with pytest.raises(ConfigError) as info:
        _net(_input((1, 3, 5, 5)), layer)
    err = info.value
    assert err.layer == layer["name"] and err.field == field, str(err)
    assert words in str(err) and f"layer '{layer['name']}'" in str(err)


def test_convolution_group_not_dividing_num_output():
    with pytest.raises(ConfigError, match="group 2 does not divide num_output 3") as info:
        _net(_input((1, 4, 5, 5)), _conv(num_output=3, kernel_size=3, group=2))
    assert info.value.field == "group"


def test_non_4d_bottom_is_an_error_from_a_yaml_file(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("layers:\n"
                    "  - {name: input, type: Input, top: x, shape: [[2, 3, 5]]}\n"
                    "  - {name: conv1, type: Convolution, bottom: x, top: y, num_output: 2,\n"
                    "     kernel_size: 3}\n")
    with pytest.raises(ConfigError) as info:
        sk.Net(str(path))
    assert "net.yaml" in str(info.value) and "layer 'conv1'" in str(info.value)
    assert "4-d" in str(info.value)


def test_misspelled_field_gets_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'kernel_size'"):
        _net(_input((1, 3, 5, 5)), _conv(num_output=2, kernal_size=3))
