"""Convolutions and pooling on oneDNN (libdnnl, the library PyTorch's CPU convolutions run
on), through ctypes, with the ``fast`` extra; numpy's im2col and phases otherwise.

PyTorch's CPU convolutions are oneDNN's direct convolutions: blocked layouts (16 channels
innermost on AVX-512) and kernels written for the machine at run time, near the cores'
peak. im2col + GEMM streams a column matrix kh·kw times the image through memory instead
(82 MB for cifar10_quick's conv1 at batch 100). The ``fast`` extra installs oneDNN 3.2
(the ``onednn-cpu-gomp`` wheel: ``libdnnl.so.3`` with its C API, using the system's GNU
OpenMP ``libgomp.so.1``), and this module drives it as ``blas.py`` drives MKL: a small
plan per layer shape, ``ConvolutionPlan`` (``forward``, ``backward_data``,
``backward_weights``; the weights in Caffe's (O, I/g, kh, kw) layout) and ``PoolingPlan``
(``forward``, ``backward``), on float32 NCHW arrays. Convolution primitives choose their
own blocked layouts ("any"); the reorders between numpy's arrays and those layouts are
part of the plan and run on oneDNN's threads, into buffers that all plans share. An
inference plan may also be told that an array already holds the blocked layout
``TAG_BLOCKED`` (nChw16c: a net keeping it between layers, ``layouts.py``), and then
works on it where it lies.

``SOLVERKIT_CONV`` chooses: ``auto`` (the default: oneDNN when it loads, else numpy),
``dnnl`` (an error when it does not) or ``numpy``; ``set_backend`` does the same.

Determinism: oneDNN's results are bitwise the same from run to run for the same thread
count and CPU when its inputs are aligned alike. Every buffer it works in here is 64-byte
aligned (a numpy array that is not is copied into one first), and a primitive is made
for the thread count it runs with (oneDNN divides the work when it makes it), so two runs
with the same count give the same bits. Another thread count may sum the weight
gradients in another order. oneDNN runs on ``libgomp``'s threads, as many as solverkit's
(``threads.num_threads``; the count is set around each call and put back as found, as
PyTorch's wheel shares the same ``libgomp.so.1``), and they wait only briefly before they sleep
(``GOMP_SPINCOUNT``, unless the user set it), so the cores are free for solverkit's own
threads between convolutions.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib.metadata
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .threads import num_threads

VARIABLE = "SOLVERKIT_CONV"
CHOICES = ("auto", "dnnl", "numpy")

# dnnl_types.h / dnnl_common_types.h (oneDNN 3.2)
MAX_NDIMS = 12
F32 = 3
TAG_ANY, TAG_A, TAG_AB, TAG_ABCD, TAG_ABCDE = 1, 2, 3, 5, 6
# aBcd16b, "nChw16c": (N, C/16, H, W, 16), sixteen channels innermost (C a multiple of 16)
TAG_BLOCKED = 78
CPU, STREAM_DEFAULT = 1, 1
FORWARD_TRAINING, FORWARD_INFERENCE = 64, 96
CONVOLUTION_DIRECT = 0x1
POOLING_ALGORITHMS = {"max": 0x1ff, "avg_include_padding": 0x2ff, "avg_exclude_padding": 0x3ff}
ELTWISE_RELU = 0x20
QUERY_WORKSPACE, ARG_WORKSPACE = 135, 64
QUERY_SRC, QUERY_DIFF_SRC, QUERY_WEIGHTS, QUERY_DIFF_WEIGHTS = 129, 130, 131, 132
QUERY_DST, QUERY_DIFF_DST, QUERY_SCRATCHPAD, QUERY_IMPL = 133, 134, 136, 8
SCRATCHPAD_USER = 1
ARG_SRC, ARG_DST, ARG_WEIGHTS, ARG_BIAS, ARG_SCRATCHPAD = 1, 17, 33, 41, 80
ARG_DIFF_SRC, ARG_DIFF_DST, ARG_DIFF_WEIGHTS, ARG_DIFF_BIAS = 129, 145, 161, 169
ARG_FROM, ARG_TO = 1, 17
ARG_SRC_0, ARG_SRC_1, ARG_ATTR_SCALES = 1, 2, 4096
BINARY_ADD = 0x1fff0

# libgomp's busy-wait before a thread sleeps, in iterations (its default: 300000)
SPINCOUNT = "10000"

Dims = ctypes.c_int64 * MAX_NDIMS
Handle = ctypes.c_void_p


class ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", Handle)]


_lock = threading.Lock()
_library = None          # (libdnnl, libgomp), once loaded
_chosen = None           # the same while oneDNN is the chosen backend
_resolved = False
_load_error: str | None = None
_engine = _stream = None


def _library_path() -> str | None:
    """libdnnl.so.3 from the ``onednn-cpu-gomp`` wheel (wherever pip put it), else the system's."""
    for package in ("onednn-cpu-gomp", "onednn"):
        try:
            files = importlib.metadata.files(package) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in files:
            if file.name == "libdnnl.so.3":
                path = Path(file.locate()).resolve()
                if path.exists():
                    return str(path)
    return ctypes.util.find_library("dnnl")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneDNN: {what} failed (status {status})")


def _load(path: str):
    global _engine, _stream
    # read once, when libgomp starts: its threads then spin some 10 µs instead of ~1 ms
    # before they sleep. Set for this load only, so that the environment other libraries
    # and child processes see stays the user's.
    previous = os.environ.get("GOMP_SPINCOUNT")
    if previous is None:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        gomp = ctypes.CDLL("libgomp.so.1")
    finally:
        if previous is None:
            del os.environ["GOMP_SPINCOUNT"]
    lib = ctypes.CDLL(path)
    for name in ("dnnl_memory_desc_create_with_tag", "dnnl_memory_create",
                 "dnnl_memory_set_data_handle", "dnnl_primitive_create",
                 "dnnl_primitive_execute", "dnnl_stream_wait", "dnnl_engine_create",
                 "dnnl_stream_create", "dnnl_primitive_desc_query",
                 "dnnl_convolution_forward_primitive_desc_create",
                 "dnnl_convolution_backward_data_primitive_desc_create",
                 "dnnl_convolution_backward_weights_primitive_desc_create",
                 "dnnl_reorder_primitive_desc_create", "dnnl_primitive_attr_create",
                 "dnnl_pooling_forward_primitive_desc_create",
                 "dnnl_inner_product_forward_primitive_desc_create",
                 "dnnl_pooling_backward_primitive_desc_create",
                 "dnnl_primitive_attr_set_scratchpad_mode", "dnnl_memory_desc_get_size",
                 "dnnl_memory_desc_equal", "dnnl_memory_desc_create_with_strides",
                 "dnnl_matmul_primitive_desc_create", "dnnl_post_ops_create",
                 "dnnl_post_ops_append_sum", "dnnl_primitive_attr_set_post_ops",
                 "dnnl_binary_primitive_desc_create", "dnnl_primitive_attr_set_scales_mask"):
        getattr(lib, name).restype = ctypes.c_int
    lib.dnnl_post_ops_append_eltwise.restype = ctypes.c_int
    lib.dnnl_post_ops_append_eltwise.argtypes = [Handle, ctypes.c_int, ctypes.c_float,
                                                 ctypes.c_float]
    lib.dnnl_primitive_desc_query_md.restype = Handle
    lib.dnnl_primitive_desc_query_md.argtypes = [Handle, ctypes.c_int, ctypes.c_int]
    lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
    lib.dnnl_memory_desc_get_size.argtypes = [Handle]
    lib.dnnl_memory_desc_equal.argtypes = [Handle, Handle]
    lib.dnnl_version.restype = ctypes.POINTER(ctypes.c_int * 3)
    engine, stream = Handle(), Handle()
    _check(lib.dnnl_engine_create(ctypes.byref(engine), CPU, 0), "engine")
    _check(lib.dnnl_stream_create(ctypes.byref(stream), engine, STREAM_DEFAULT), "stream")
    _engine, _stream = engine, stream
    return lib, gomp


def backend() -> str:
    """``"dnnl"`` or ``"numpy"``: what convolutions run on (``SOLVERKIT_CONV``, on first use)."""
    if not _resolved:
        set_backend(os.environ.get(VARIABLE, "auto"))
    return "dnnl" if _chosen is not None else "numpy"


def set_backend(choice: str) -> str:
    """Use ``choice`` (auto, dnnl or numpy, as ``SOLVERKIT_CONV``) from now on; returns the
    backend it gives. oneDNN missing for ``dnnl``, or another word, is a ``ConfigError``."""
    global _chosen, _resolved
    choice = str(choice).strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{VARIABLE}={choice!r} is not one of {', '.join(CHOICES)}",
                          field=VARIABLE)
    with _lock:
        if choice != "numpy":
            _load_once()
        if choice == "dnnl" and _library is None:
            raise ConfigError(f"{VARIABLE}=dnnl but {_load_error}; solverkit installs it "
                              f"on x86-64 Linux (pip install onednn-cpu-gomp==2023.2.0), or unset "
                              f"{VARIABLE}", field=VARIABLE)
        _chosen = None if choice == "numpy" else _library
        _resolved = True
    return "dnnl" if _chosen is not None else "numpy"


def _load_once() -> None:
    """Load oneDNN the first time (under ``_lock``); a failure is kept in ``_load_error``."""
    global _library, _load_error
    if _library is None and _load_error is None:
        path = _library_path()
        if path is None:
            _load_error = "oneDNN is not installed"
        else:
            try:
                _library = _load(path)
            except (OSError, RuntimeError, AttributeError) as error:
                _load_error = f"oneDNN did not load ({error})"


def available() -> bool:
    """Whether oneDNN loads on this machine (loading it if needed; the convolution backend
    in use stays). ``blas`` runs matrix products on it."""
    with _lock:
        _load_once()
    return _library is not None


def version() -> str | None:
    """oneDNN's version (``"3.2.0"``), or None when it does not load."""
    if not available():
        return None
    return ".".join(str(part) for part in _library[0].dnnl_version().contents)


def describe() -> str:
    """One line for reports: which library runs convolutions, and why not oneDNN."""
    if backend() == "numpy":
        reason = f" ({_load_error})" if _load_error else ""
        return f"numpy (im2col and BLAS products){reason}"
    major, minor, patch = _chosen[0].dnnl_version().contents
    return f"oneDNN {major}.{minor}.{patch}"


@contextlib.contextmanager
def _openmp_threads(count: int):
    """OpenMP on ``count`` threads inside, and afterwards the count it had before. The count
    belongs to the calling thread and to every library on the same ``libgomp.so.1``
    (PyTorch's wheel brings one): it is put back as found, so neither library's parallel
    regions run on the other's count."""
    gomp = _library[1]
    before = gomp.omp_get_max_threads()
    if before != count:
        gomp.omp_set_num_threads(count)
    try:
        yield
    finally:
        if before != count:
            gomp.omp_set_num_threads(before)


def _on_solverkit_threads(method):
    """``method`` with OpenMP at solverkit's count (``threads.num_threads``): a primitive
    divides its work for the count it is made with, and runs with that count."""
    @functools.wraps(method)
    def on_threads(*args, **kwargs):
        with _openmp_threads(num_threads()):
            return method(*args, **kwargs)
    return on_threads


def _dims(values) -> Dims:
    return Dims(*[int(v) for v in values])


def _memory_desc(shape, tag) -> Handle:
    lib = _library[0]
    desc = Handle()
    _check(lib.dnnl_memory_desc_create_with_tag(ctypes.byref(desc), len(shape), _dims(shape),
                                                F32, tag), "memory descriptor")
    return desc


def _plain_tag(ndim: int) -> int:
    return {1: TAG_A, 2: TAG_AB, 4: TAG_ABCD, 5: TAG_ABCDE}[ndim]


class _Arena:
    """The buffers oneDNN's layouts live in while a primitive runs, shared by every plan.

    Nothing in them outlives a call (each call reorders its inputs anew), so one buffer per
    role (source, weights, destination, bias, scratch space) of the size the largest plan
    needs serves every layer: memory grows with the largest layer, not with their sum.
    """

    def __init__(self):
        self._buffers: dict[str, np.ndarray] = {}

    def address(self, role: str, size: int) -> int:
        """A 64-byte aligned buffer of at least ``size`` bytes for ``role``."""
        buffer = self._buffers.get(role)
        if buffer is None or buffer.size < size:
            raw = np.empty(size + 64, np.uint8)
            offset = (-raw.ctypes.data) % 64
            buffer = self._buffers[role] = raw[offset:offset + size]
        return buffer.ctypes.data


_arena = _Arena()
_arena_lock = threading.Lock()      # one call at a time uses the arena


class _Memory:
    """A oneDNN memory over a buffer given at each call: a numpy array (plain layout) or
    the arena's buffer for a role (the primitive's layout)."""

    def __init__(self, desc: Handle, role: str | None = None):
        lib = _library[0]
        self.desc = desc
        self.role = role
        self.handle = Handle()
        self.size = lib.dnnl_memory_desc_get_size(desc)
        _check(lib.dnnl_memory_create(ctypes.byref(self.handle), desc, _engine, None),
               "memory")

    def point_to(self, array: np.ndarray) -> None:
        self._set(array.ctypes.data)

    def in_arena(self) -> _Memory:
        self._set(_arena.address(self.role, self.size))
        return self

    def _set(self, address: int) -> None:
        _check(_library[0].dnnl_memory_set_data_handle(self.handle, Handle(address)),
               "data handle")


class _Primitive:
    def __init__(self, desc: Handle):
        lib = _library[0]
        self.desc = desc
        self.handle = Handle()
        _check(lib.dnnl_primitive_create(ctypes.byref(self.handle), desc), "primitive")
        scratch = _query(desc, QUERY_SCRATCHPAD)
        self.scratchpad = (_Memory(scratch, "scratch")
                           if scratch and lib.dnnl_memory_desc_get_size(scratch) else None)

    def implementation(self) -> str:
        name = ctypes.c_char_p()
        _library[0].dnnl_primitive_desc_query(self.desc, QUERY_IMPL, 0, ctypes.byref(name))
        return name.value.decode()

    def run(self, args: list[tuple[int, _Memory]]) -> None:
        if self.scratchpad is not None:
            args = [*args, (ARG_SCRATCHPAD, self.scratchpad.in_arena())]
        array = (ExecArg * len(args))(*[ExecArg(arg, memory.handle) for arg, memory in args])
        _check(_library[0].dnnl_primitive_execute(self.handle, _stream, len(args), array),
               "execute")


def _attr(relu: float | None = None) -> Handle:
    """Primitive attributes: user scratch space and, with ``relu`` (a negative slope), a
    ReLU applied to the result before it is stored (a post-op)."""
    lib = _library[0]
    attr = Handle()
    _check(lib.dnnl_primitive_attr_create(ctypes.byref(attr)), "attributes")
    # scratch space in buffers allocated once per plan (not per call inside oneDNN)
    _check(lib.dnnl_primitive_attr_set_scratchpad_mode(attr, SCRATCHPAD_USER), "scratchpad")
    if relu is not None:
        post_ops = Handle()
        _check(lib.dnnl_post_ops_create(ctypes.byref(post_ops)), "post-ops")
        _check(lib.dnnl_post_ops_append_eltwise(post_ops, ELTWISE_RELU, float(relu), 0.0),
               "ReLU post-op")
        _check(lib.dnnl_primitive_attr_set_post_ops(attr, post_ops), "post-ops")
    return attr


class _Tensor:
    """One argument of a primitive: numpy's plain layout outside, the primitive's layout in
    a buffer of oneDNN's own inside, and the reorders between them.

    Where the two layouts are the same and numpy's array is 64-byte aligned, the primitive
    works on the array itself; otherwise the array is reordered (or, for equal layouts,
    copied) into the buffer and back, so that oneDNN always sees the same alignment.
    """

    def __init__(self, shape, chosen: Handle, role: str, blocked: bool = False):
        lib = _library[0]
        # numpy's side: the array's memory in plain order, or in TAG_BLOCKED's (a blob of a
        # net that keeps the blocked layout between its layers, see ``layouts.py``)
        outside = TAG_BLOCKED if blocked else _plain_tag(len(shape))
        self.plain = _Memory(_memory_desc(shape, outside))
        self.same = bool(lib.dnnl_memory_desc_equal(self.plain.desc, chosen))
        self.inner = _Memory(chosen, role)
        self._in = self._out = None
        self._direct = False
        self._packed = None

    def _use_directly(self, array: np.ndarray) -> bool:
        if not (array.flags.c_contiguous and array.dtype == np.float32):
            raise ValueError("oneDNN plans take C-contiguous float32 arrays")
        self.plain.point_to(array)
        self._direct = self.same and array.ctypes.data % 64 == 0
        return self._direct

    def load(self, array: np.ndarray) -> _Memory:
        """The primitive's memory holding ``array``."""
        if self._use_directly(array):
            return self.plain
        if self._in is None:
            self._in = _reorder(self.plain.desc, self.inner.desc)
        self._in.run([(ARG_FROM, self.plain), (ARG_TO, self.inner.in_arena())])
        return self.inner

    def packed(self, array: np.ndarray) -> _Memory:
        """The primitive's memory holding ``array``, reordered into a buffer of this
        tensor's own on the first call and reused while the caller passes the same array
        object (weights that cannot change: see ``ConvolutionPlan.forward``)."""
        if self._use_directly(array):       # already in the primitive's layout
            return self.plain
        if self._packed is not None and self._packed[0] is array:
            return self._packed[1]
        if not (array.flags.c_contiguous and array.dtype == np.float32):
            raise ValueError("oneDNN plans take C-contiguous float32 arrays")
        memory = _Memory(self.inner.desc)
        raw = np.empty(memory.size + 64, np.uint8)
        offset = (-raw.ctypes.data) % 64
        buffer = raw[offset:offset + memory.size]
        memory._set(buffer.ctypes.data)
        memory.buffer = buffer                  # kept alive with the memory
        self.plain.point_to(array)
        if self._in is None:
            self._in = _reorder(self.plain.desc, self.inner.desc)
        self._in.run([(ARG_FROM, self.plain), (ARG_TO, memory)])
        self._packed = (array, memory)
        return memory

    @property
    def direct(self) -> bool:
        """Whether the last call read or wrote the array itself (no copy in between)."""
        return self._direct

    def target(self, array: np.ndarray) -> _Memory:
        """The primitive's memory to write into; ``store()`` then puts it into ``array``."""
        return self.plain if self._use_directly(array) else self.inner.in_arena()

    def store(self) -> None:
        if not self._direct:
            if self._out is None:
                self._out = _reorder(self.inner.desc, self.plain.desc)
            self._out.run([(ARG_FROM, self.inner), (ARG_TO, self.plain)])


def _reorder(source: Handle, target: Handle) -> _Primitive:
    desc = Handle()
    _check(_library[0].dnnl_reorder_primitive_desc_create(ctypes.byref(desc), source, _engine,
                                                          target, _engine, _attr()), "reorder")
    return _Primitive(desc)


def _query(desc: Handle, what: int) -> Handle:
    found = _library[0].dnnl_primitive_desc_query_md(desc, what, 0)
    return Handle(found) if found else None


def _run_forward(plan, x, weight, bias, destination: _Memory, constant_weight: bool) -> None:
    """A convolution's or inner product's forward primitive (``plan._forward`` with its
    ``x``, ``weight`` and ``bias`` tensors) from the arrays into ``destination``; the
    caller holds ``_arena_lock``. ``constant_weight``: see ``ConvolutionPlan.forward``."""
    weights = plan.weight.packed(weight) if constant_weight else plan.weight.load(weight)
    args = [(ARG_SRC, plan.x.load(x)), (ARG_WEIGHTS, weights), (ARG_DST, destination)]
    if plan.bias is not None:
        args.append((ARG_BIAS, plan.bias.load(bias)))
    plan._forward.run(args)


class ConvolutionPlan:
    """Convolution of float32 NCHW images of one shape with Caffe's parameters.

    ``x`` (N, C, H, W), weights (O, C/g, kh, kw) (g > 1: viewed as (g, O/g, C/g, kh, kw)),
    bias (O,) or None, ``y`` (N, O, OH, OW). The primitives are made at construction (the
    backward ones only with ``training``), each with its own reorders and scratch space.

    Without ``training`` the forward primitive is oneDNN's inference kind, and ``relu`` (a
    negative slope, or None) fuses ``y = max(y, 0) + relu · min(y, 0)`` into it: the
    result is stored once, already rectified. ``blocked_source`` and ``blocked_result``
    (inference only) say that ``x``, respectively ``y``, holds its values in TAG_BLOCKED's
    order (nChw16c) instead of NCHW: the primitive then works on it as it lies.
    """

    @_on_solverkit_threads
    def __init__(self, x_shape, y_shape, weight_shape, groups, bias, stride, pad, dilation,
                 training=True, relu: float | None = None, blocked_source: bool = False,
                 blocked_result: bool = False):
        if training and relu is not None:
            raise ValueError("a fused ReLU is for inference plans only")
        if training and (blocked_source or blocked_result):
            raise ValueError("blocked blobs are for inference plans only")
        lib = _library[0]
        # a primitive divides its work for the thread count it is made with: make it with
        # the count it runs with (a plan is for one thread count)
        self.threads = num_threads()
        h, w = x_shape[2:]
        o = weight_shape[0]
        out_h, out_w = y_shape[2:]
        self.groups = groups
        weights = (weight_shape if groups == 1 else
                   (groups, o // groups, *weight_shape[1:]))
        strides, dilates = _dims(stride), _dims([d - 1 for d in dilation])
        pad_l = _dims(pad)
        # Caffe's floor: the right padding is what the last window actually covers
        pad_r = _dims([(out - 1) * s + (k - 1) * d + 1 - size - p
                       for out, s, k, d, size, p in zip((out_h, out_w), stride,
                                                        weight_shape[2:], dilation, (h, w), pad)])
        any_ = TAG_ANY
        # A 1×1 convolution (stride 1, no padding) of NCHW images is one matrix product per
        # image, W (O×C) · x (C×HW): in inference it runs on the blobs' own layout, which
        # spares reordering its input and output to and from a blocked one (measured
        # faster on ResNet-50 and GoogLeNet at batch 1 and 16).
        pointwise = (tuple(weight_shape[2:]) == (1, 1) and tuple(stride) == (1, 1)
                     and tuple(pad) == (0, 0))
        layout = TAG_ABCD if (not training and pointwise) else any_
        if blocked_source or blocked_result:
            # the other side "any" (oneDNN then takes the blocked layout there too and the
            # tensor reorders): NCHW on one side and blocked on the other has only oneDNN's
            # reference kernel, hundreds of times slower
            src = _memory_desc(x_shape, TAG_BLOCKED if blocked_source else any_)
            dst = _memory_desc(y_shape, TAG_BLOCKED if blocked_result else any_)
        else:
            src, dst = _memory_desc(x_shape, layout), _memory_desc(y_shape, layout)
        wei = _memory_desc(weights, any_)
        bias_desc = _memory_desc((o,), TAG_A) if bias else None
        attr = _attr()
        forward = Handle()
        _check(lib.dnnl_convolution_forward_primitive_desc_create(
            ctypes.byref(forward), _engine, FORWARD_TRAINING if training else FORWARD_INFERENCE,
            CONVOLUTION_DIRECT, src, wei, bias_desc, dst, strides, dilates, pad_l, pad_r,
            attr if relu is None else _attr(relu)), "convolution forward")
        self.relu = relu
        self._forward = _Primitive(forward)
        self.x = _Tensor(x_shape, _query(forward, QUERY_SRC), "src", blocked=blocked_source)
        self.weight = _Tensor(weights, _query(forward, QUERY_WEIGHTS), "weights")
        self.y = _Tensor(y_shape, _query(forward, QUERY_DST), "dst", blocked=blocked_result)
        self.bias = _Tensor((o,), bias_desc, "bias") if bias else None
        self._backward_data = self._backward_weights = None
        if training:
            data = Handle()
            _check(lib.dnnl_convolution_backward_data_primitive_desc_create(
                ctypes.byref(data), _engine, CONVOLUTION_DIRECT, src, wei, dst, strides,
                dilates, pad_l, pad_r, forward, attr), "convolution backward data")
            self._backward_data = _Primitive(data)
            self.dx = _Tensor(x_shape, _query(data, QUERY_DIFF_SRC), "src")
            self.dy_data = _Tensor(y_shape, _query(data, QUERY_DIFF_DST), "dst")
            self.weight_data = _Tensor(weights, _query(data, QUERY_WEIGHTS), "weights")
            grads = Handle()
            _check(lib.dnnl_convolution_backward_weights_primitive_desc_create(
                ctypes.byref(grads), _engine, CONVOLUTION_DIRECT, src, wei, bias_desc, dst,
                strides, dilates, pad_l, pad_r, forward, attr), "convolution backward weights")
            self._backward_weights = _Primitive(grads)
            self.x_grads = _Tensor(x_shape, _query(grads, QUERY_SRC), "src")
            self.dy_grads = _Tensor(y_shape, _query(grads, QUERY_DIFF_DST), "dst")
            self.dweight = _Tensor(weights, _query(grads, QUERY_DIFF_WEIGHTS), "weights")
            self.dbias = _Tensor((o,), bias_desc, "bias") if bias else None
        self.training = training

    def implementations(self) -> list[str]:
        return [p.implementation() for p in (self._forward, self._backward_data,
                                             self._backward_weights) if p is not None]

    @_on_solverkit_threads
    def forward(self, x, weight, bias, y, constant_weight=False) -> None:
        """``y`` = the convolution of ``x`` (with the fused ReLU of an inference plan).

        With ``constant_weight``, ``weight`` is reordered into the primitive's layout once
        and reused while the same array object comes: the caller promises that its values
        cannot change (solverkit says so only for a read-only array that owns its memory,
        see ``Convolution._forward_dnnl``).
        """
        with _arena_lock:
            self._forward_locked(x, weight, bias, y, constant_weight)

    def _forward_locked(self, x, weight, bias, y, constant_weight=False) -> None:
        _run_forward(self, x, weight, bias, self.y.target(y), constant_weight)
        self.y.store()

    @_on_solverkit_threads
    def backward_data(self, dy, weight, dx) -> None:
        with _arena_lock:
            self._backward_data.run([(ARG_DIFF_DST, self.dy_data.load(dy)),
                                     (ARG_WEIGHTS, self.weight_data.load(weight)),
                                     (ARG_DIFF_SRC, self.dx.target(dx))])
            self.dx.store()

    @_on_solverkit_threads
    def backward_weights(self, x, dy, dweight, dbias) -> None:
        """``dweight`` (and ``dbias``) overwritten with this batch's gradients."""
        with _arena_lock:
            self._backward_weights_locked(x, dy, dweight, dbias)

    def _backward_weights_locked(self, x, dy, dweight, dbias) -> None:
        args = [(ARG_SRC, self.x_grads.load(x)), (ARG_DIFF_DST, self.dy_grads.load(dy)),
                (ARG_DIFF_WEIGHTS, self.dweight.target(dweight))]
        if self.dbias is not None:
            args.append((ARG_DIFF_BIAS, self.dbias.target(dbias)))
        self._backward_weights.run(args)
        self.dweight.store()
        if self.dbias is not None:
            self.dbias.store()


class InnerProductPlan:
    """The inference forward of a fully connected layer: ``x`` (N, K) float32, weights
    (O, K) (Caffe's layout), bias (O,) or None, ``y`` (N, O) = x Wᵀ + b, with ``relu`` (a
    negative slope, or None) fused as in ``ConvolutionPlan``. The weights take the
    primitive's own layout ("any"), which ``constant_weight`` computes once, or with
    ``plain_weights`` stay in Caffe's (an aligned array is then read where it lies)."""

    @_on_solverkit_threads
    def __init__(self, n, fan_in, num_output, bias, relu: float | None = None,
                 plain_weights: bool = False):
        lib = _library[0]
        self.threads = num_threads()
        src = _memory_desc((n, fan_in), TAG_AB)
        dst = _memory_desc((n, num_output), TAG_AB)
        wei = _memory_desc((num_output, fan_in), TAG_AB if plain_weights else TAG_ANY)
        bias_desc = _memory_desc((num_output,), TAG_A) if bias else None
        forward = Handle()
        _check(lib.dnnl_inner_product_forward_primitive_desc_create(
            ctypes.byref(forward), _engine, FORWARD_INFERENCE, src, wei, bias_desc, dst,
            _attr(relu)), "inner product forward")
        self._forward = _Primitive(forward)
        self.relu = relu
        self.x = _Tensor((n, fan_in), src, "src")
        self.weight = _Tensor((num_output, fan_in), _query(forward, QUERY_WEIGHTS), "weights")
        self.y = _Tensor((n, num_output), dst, "dst")
        self.bias = _Tensor((num_output,), bias_desc, "bias") if bias else None

    def implementations(self) -> list[str]:
        return [self._forward.implementation()]

    @_on_solverkit_threads
    def forward(self, x, weight, bias, y, constant_weight=False) -> None:
        """``y`` = x Wᵀ + b (rectified with ``relu``); ``constant_weight`` as in
        ``ConvolutionPlan.forward``."""
        with _arena_lock:
            _run_forward(self, x, weight, bias, self.y.target(y), constant_weight)
            self.y.store()


class PoolingPlan:
    """MAX or average pooling of float32 NCHW images of one shape (``x`` (N, C, H, W) to
    ``y`` (N, C, OH, OW)), on the images' own layout. ``algorithm``: ``max``,
    ``avg_include_padding`` or ``avg_exclude_padding``. The right padding is what the
    last window covers beyond the image (Caffe's ceil overhang included); MAX keeps the
    index of each window's maximum for ``backward`` in a workspace of the plan. With
    ``relu`` (a negative slope; inference only) the pooled values are rectified before they
    are stored (a post-op), as an in-place ReLU after the pooling would. ``blocked_source``
    and ``blocked_result`` (inference only) say that ``x``, respectively ``y``, holds its
    values in TAG_BLOCKED's order (nChw16c) instead of NCHW."""

    @_on_solverkit_threads
    def __init__(self, x_shape, y_shape, kernel, stride, pad, algorithm, training=True,
                 relu: float | None = None, blocked_source: bool = False,
                 blocked_result: bool = False):
        lib = _library[0]
        self.threads = num_threads()
        h, w = x_shape[2:]
        out_h, out_w = y_shape[2:]
        pad_r = _dims([(out - 1) * s + k - size - p for out, s, k, size, p
                       in zip((out_h, out_w), stride, kernel, (h, w), pad)])
        src = _memory_desc(x_shape, TAG_BLOCKED if blocked_source else TAG_ABCD)
        # the result in the source's layout where oneDNN chooses (its fast kernels pool
        # within one layout), reordered as it is stored where the top's differs
        dst = _memory_desc(y_shape, TAG_ANY if blocked_source or blocked_result else TAG_ABCD)
        alg = POOLING_ALGORITHMS[algorithm]
        if (blocked_source or blocked_result) and training:
            raise ValueError("blocked blobs are for inference plans only")
        if relu is not None and training:
            raise ValueError("a pooling plan rectifies its result only for inference")
        attr = _attr()
        forward = Handle()
        _check(lib.dnnl_pooling_forward_primitive_desc_create(
            ctypes.byref(forward), _engine, FORWARD_TRAINING if training else FORWARD_INFERENCE,
            alg, src, dst, _dims(stride), _dims(kernel), _dims((0, 0)), _dims(pad), pad_r,
            _attr(relu)), "pooling forward")
        self._forward = _Primitive(forward)
        self.x = _Tensor(x_shape, src, "src", blocked=blocked_source)
        self.y = _Tensor(y_shape, _query(forward, QUERY_DST), "dst", blocked=blocked_result)
        workspace = _query(forward, QUERY_WORKSPACE)
        self._workspace = None
        if workspace is not None and lib.dnnl_memory_desc_get_size(workspace):
            self._workspace = _Memory(workspace)
            raw = np.empty(self._workspace.size + 64, np.uint8)
            offset = (-raw.ctypes.data) % 64
            self._workspace_buffer = raw[offset:offset + self._workspace.size]
            self._workspace._set(self._workspace_buffer.ctypes.data)
        self.training = training
        self._backward = None
        if training:
            backward = Handle()
            _check(lib.dnnl_pooling_backward_primitive_desc_create(
                ctypes.byref(backward), _engine, alg, src, dst, _dims(stride), _dims(kernel),
                _dims((0, 0)), _dims(pad), pad_r, forward, attr), "pooling backward")
            self._backward = _Primitive(backward)
            self.dx = _Tensor(x_shape, src, "src")
            self.dy = _Tensor(y_shape, dst, "dst")

    def implementations(self) -> list[str]:
        return [p.implementation() for p in (self._forward, self._backward) if p is not None]

    @_on_solverkit_threads
    def forward(self, x, y) -> None:
        with _arena_lock:
            args = [(ARG_SRC, self.x.load(x)), (ARG_DST, self.y.target(y))]
            if self._workspace is not None:
                args.append((ARG_WORKSPACE, self._workspace))
            self._forward.run(args)
            self.y.store()

    @_on_solverkit_threads
    def backward(self, dy, dx) -> None:
        """``dx`` overwritten with the gradient of the last ``forward``'s windows."""
        with _arena_lock:
            args = [(ARG_DIFF_DST, self.dy.load(dy)), (ARG_DIFF_SRC, self.dx.target(dx))]
            if self._workspace is not None:
                args.append((ARG_WORKSPACE, self._workspace))
            self._backward.run(args)
            self.dx.store()


class MatmulPlan:
    """``out = a @ b`` (``+ bias`` broadcast over the rows, then rectified with ``relu``, a
    negative slope; or ``+= a @ b`` with ``accumulate``) on float32 2-D arrays of given shapes and strides, with oneDNN's
    matmul primitive (its brgemm kernels; faster than OpenBLAS's sgemm on a fully-connected
    net's products, on one thread and on two).

    Operands are used where they lie: a transposed view is a stride, not a copy. The
    primitive is made for the thread count it runs with; its results are bitwise the same
    from call to call for the same count, shapes and strides (a test checks it at several
    alignments).
    """

    @_on_solverkit_threads
    def __init__(self, a, b, out, bias: bool = False, accumulate: bool = False,
                 relu: float | None = None):
        if accumulate and relu is not None:
            raise ValueError("a rectified product is not accumulated")
        lib = _library[0]
        self.threads = num_threads()
        self.a, self.b, self.out = (_Memory(_strided_desc(array)) for array in (a, b, out))
        self.bias = _Memory(_strided_desc(np.empty((1, out.shape[1]), np.float32))) \
            if bias else None
        attr = _attr(relu)
        if accumulate:          # dst = 1·dst + a @ b (oneDNN's sum post-op)
            post_ops = Handle()
            _check(lib.dnnl_post_ops_create(ctypes.byref(post_ops)), "post-ops")
            _check(lib.dnnl_post_ops_append_sum(post_ops, ctypes.c_float(1.0), 0, F32),
                   "sum post-op")
            _check(lib.dnnl_primitive_attr_set_post_ops(attr, post_ops), "post-ops")
        desc = Handle()
        _check(lib.dnnl_matmul_primitive_desc_create(
            ctypes.byref(desc), _engine, self.a.desc, self.b.desc,
            self.bias.desc if bias else None, self.out.desc, attr), "matmul")
        self._primitive = _Primitive(desc)

    def implementation(self) -> str:
        return self._primitive.implementation()

    @_on_solverkit_threads
    def run(self, a, b, out, bias=None) -> None:
        with _arena_lock:           # the scratch space is the arena's
            self.a.point_to(a)
            self.b.point_to(b)
            self.out.point_to(out)
            args = [(ARG_SRC, self.a), (ARG_WEIGHTS, self.b), (ARG_DST, self.out)]
            if self.bias is not None:
                self.bias.point_to(bias)
                args.append((ARG_BIAS, self.bias))
            self._primitive.run(args)


def _strided_desc(array: np.ndarray) -> Handle:
    """A float32 memory descriptor of ``array``'s shape and strides (in elements)."""
    lib = _library[0]
    desc = Handle()
    _check(lib.dnnl_memory_desc_create_with_strides(
        ctypes.byref(desc), array.ndim, _dims(array.shape), F32,
        _dims([s // array.itemsize for s in array.strides])), "memory descriptor")
    return desc


class AxpbyPlan:
    """``y = alpha·x + beta·y`` on two C-contiguous float32 arrays of ``size`` elements: one
    pass of oneDNN's binary primitive (``dst = beta·y + alpha·x``, y read and written in
    place), ``alpha`` and ``beta`` given at each call (run-time scales), so one primitive
    serves every learning rate. Element by element: the result does not depend on the
    arrays' alignment.

    It runs on one thread: a pass over a parameter is bound by the cache's bandwidth (two
    threads took as long as one on a 784×512 weight), and a one-thread call neither wakes
    a second thread nor waits for one that another process has taken the core from.
    """

    def __init__(self, size: int):
        lib = _library[0]
        desc = _memory_desc((size,), TAG_A)
        self.x, self.y = _Memory(desc), _Memory(desc)
        scale_desc = _memory_desc((1,), TAG_A)
        self._scales = np.zeros(2, np.float32)       # beta (on y), alpha (on x)
        self.beta, self.alpha = _Memory(scale_desc), _Memory(scale_desc)
        self.beta.point_to(self._scales[0:1])
        self.alpha.point_to(self._scales[1:2])
        attr = _attr()
        for arg in (ARG_SRC_0, ARG_SRC_1):         # one scale for the whole array (mask 0)
            _check(lib.dnnl_primitive_attr_set_scales_mask(attr, arg, 0), "scales")
        primitive = Handle()
        with _openmp_threads(1):
            _check(lib.dnnl_binary_primitive_desc_create(ctypes.byref(primitive), _engine,
                                                         BINARY_ADD, desc, desc, desc, attr),
                   "binary")
            self._primitive = _Primitive(primitive)
        if self._primitive.scratchpad is not None:
            raise RuntimeError("oneDNN: the binary primitive asks for scratch space")
        args = [(ARG_SRC_0, self.y), (ARG_SRC_1, self.x), (ARG_DST, self.y),
                (ARG_ATTR_SCALES | ARG_SRC_0, self.beta), (ARG_ATTR_SCALES | ARG_SRC_1, self.alpha)]
        self._args = (ExecArg * len(args))(*[ExecArg(arg, memory.handle) for arg, memory in args])
        self._bound = None

    def implementation(self) -> str:
        return self._primitive.implementation()

    def run(self, alpha: float, x: np.ndarray, beta: float, y: np.ndarray) -> None:
        with _arena_lock, _openmp_threads(1):     # the memories' data handles are this plan's
            self._scales[0], self._scales[1] = beta, alpha
            if self._bound is None or self._bound[0]() is not x or self._bound[1]() is not y:
                # the same array objects keep their buffers: point to them once (weak
                # references: the plan does not keep a net's arrays alive)
                self.x.point_to(x)
                self.y.point_to(y)
                self._bound = (weakref.ref(x), weakref.ref(y))
            _check(_library[0].dnnl_primitive_execute(self._primitive.handle, _stream,
                                                      len(self._args), self._args), "execute")
