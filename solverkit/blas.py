"""Matrix products (and SGD's and Nesterov's vector steps): oneDNN's matmul, numpy's BLAS,
or Intel MKL with the ``mkl`` extra.

numpy's wheels bundle OpenBLAS, which multiplies the matrices of a fully-connected net's
step (256×784 by 784×512, say) up to 25% slower than MKL, the library PyTorch uses on the
CPU, and more inside a step, where its threads wake between products; on such a net those
products are most of a training step. With
``pip install 'solverkit[mkl]'`` the two-dimensional float32/float64 products of the
InnerProduct, Convolution and Deconvolution layers go to MKL's ``cblas_?gemm`` through
ctypes instead, and the SGD and Nesterov steps (with their L2 decay) to ``cblas_?axpby``;
everything else stays with numpy.

oneDNN (a dependency on x86-64 Linux, see ``dnnl``) has a matmul primitive whose brgemm
kernels ran every product of a 784-512-512-10 MLP's step 5–35% faster than numpy's
OpenBLAS 0.3.31 on an AVX-512 AMD EPYC, on one thread and on two, and on two threads with
another process busy far more steadily (its OpenMP threads yield where OpenBLAS's wait
for each other). There the float32 products of at least ``MIN_MULTIPLY_ADDS`` go to it,
the bias of a forward product added in the same pass (``matmul(..., bias=b)``); smaller
and float64 products stay with numpy (a call costs oneDNN some 10 µs). The vector steps
of SGD and Nesterov (``axpby``: ``y = a·x + b·y``, with the L2 decay) are one pass of
oneDNN's binary primitive per step on float32 parameters of at least
``MIN_AXPBY_ELEMENTS``: a 784-512-512-10 MLP's update took 290 µs instead of numpy's
540–570 µs.

``SOLVERKIT_BLAS`` chooses: ``auto`` (the default: MKL when it is installed and the CPU is
Intel's, else oneDNN when it loads, else numpy), ``mkl`` or ``dnnl`` (an error without
it) or ``numpy``. On AMD processors MKL takes slower code paths than on Intel's and its
strict mode costs more: ``auto`` leaves it alone there (``mkl`` still forces MKL).

MKL is put in its strict conditional-numerical-reproducibility mode (``MKL_CBWR_AUTO |
MKL_CBWR_STRICT``): a product gives bitwise the same result for any thread count and any
memory alignment, so resumed training stays exact. Without it MKL splits long inner
dimensions over its threads, and 1 and 2 threads round differently. MKL uses solverkit's
thread count (``set_num_threads``), not dynamically fewer, and its threads wait 1 ms after
a product before they sleep (``KMP_BLOCKTIME``, unless set) instead of 200 ms, so the cores
are free for solverkit's own threads between products.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from . import dnnl
from .errors import ConfigError
from .threads import follow_thread_count, num_threads

VARIABLE = "SOLVERKIT_BLAS"
CHOICES = ("auto", "mkl", "dnnl", "numpy")

# cblas enums and MKL's reproducibility modes (mkl_cblas.h, mkl_cbwr.h)
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
CBWR_AUTO, CBWR_STRICT, CBWR_SUCCESS = 2, 0x10000, 0

# MKL's and oneDNN's calls cost more than they save below this many multiply-adds
# (m·n·k): a 64×512 by 512×10 product takes 34 µs on MKL against 12 µs on numpy's BLAS
MIN_MULTIPLY_ADDS = 1 << 21
# below this many elements numpy's two passes over y take less than a oneDNN call
MIN_AXPBY_ELEMENTS = 1 << 14

_lock = threading.Lock()
_library = None         # MKL, once loaded
_mkl = None             # MKL while it is the chosen backend, else None
_dnnl_chosen = False    # oneDNN's matmul is the chosen backend
_plans: dict[tuple, dnnl.MatmulPlan | dnnl.AxpbyPlan] = {}   # oneDNN primitives by layout
_ready: dict[tuple, tuple[bool, tuple]] = {}      # axpby_ready's answers by the arrays' ids
MAX_KEPT = 4096         # plans and answers kept at most (a net has far fewer)
_resolved = False


def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, …; "" when unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _library_path() -> str | None:
    """libmkl_rt from the ``mkl`` package (wherever pip put it), else the system's."""
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.startswith("libmkl_rt.so"):
            return str(Path(file.locate()).resolve())
    return ctypes.util.find_library("mkl_rt")


def _load(path: str):
    os.environ.setdefault("KMP_BLOCKTIME", "1")      # read when MKL's OpenMP starts
    lib = ctypes.CDLL(path)
    if lib.MKL_CBWR_Set(CBWR_AUTO | CBWR_STRICT) != CBWR_SUCCESS:
        raise RuntimeError(f"{path}: MKL refused its strict reproducible mode")
    lib.MKL_Set_Dynamic(0)
    pointer, integer = ctypes.c_void_p, ctypes.c_int
    for name, real in (("cblas_sgemm", ctypes.c_float), ("cblas_dgemm", ctypes.c_double)):
        gemm = getattr(lib, name)
        gemm.argtypes = [integer] * 6 + [real, pointer, integer, pointer, integer,
                                         real, pointer, integer]
        gemm.restype = None
    for name, real in (("cblas_saxpby", ctypes.c_float), ("cblas_daxpby", ctypes.c_double)):
        axpby = getattr(lib, name)
        axpby.argtypes = [integer, real, pointer, integer, real, pointer, integer]
        axpby.restype = None
    lib.MKL_Set_Num_Threads.argtypes = [integer]
    lib.MKL_Set_Num_Threads(num_threads())
    return lib


def backend() -> str:
    """``"mkl"``, ``"dnnl"`` or ``"numpy"``: what products run on (from ``SOLVERKIT_BLAS``,
    on first use)."""
    if not _resolved:
        set_backend(os.environ.get(VARIABLE, "auto"))
    return _name()


def _name() -> str:
    return "mkl" if _mkl is not None else "dnnl" if _dnnl_chosen else "numpy"


def set_backend(choice: str) -> str:
    """Use ``choice`` (auto, mkl, dnnl or numpy, as ``SOLVERKIT_BLAS``) from now on;
    returns the backend it gives. A missing MKL for ``mkl`` or oneDNN for ``dnnl``, or
    another word, is a ``ConfigError``."""
    global _mkl, _library, _resolved, _dnnl_chosen
    choice = str(choice).strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{VARIABLE}={choice!r} is not one of {', '.join(CHOICES)}",
                          field=VARIABLE)
    with _lock:
        if choice in ("auto", "mkl") and (choice == "mkl" or cpu_vendor() == "GenuineIntel") \
                and _library is None:
            path = _library_path()
            if path is None and choice == "mkl":
                raise ConfigError(f"{VARIABLE}=mkl but Intel MKL is not installed; install "
                                  f"it with pip install 'solverkit[mkl]', or unset "
                                  f"{VARIABLE}", field=VARIABLE)
            _library = _load(path) if path else None
        _mkl = _library if choice == "mkl" or (
            choice == "auto" and cpu_vendor() == "GenuineIntel") else None
        if choice == "dnnl" and not dnnl.available():
            raise ConfigError(f"{VARIABLE}=dnnl but oneDNN does not load here; install it "
                              f"with pip install onednn-cpu-gomp==2023.2.0, or unset "
                              f"{VARIABLE}", field=VARIABLE)
        _dnnl_chosen = _mkl is None and choice in ("auto", "dnnl") and dnnl.available()
        _resolved = True
    return _name()


def available(choice: str) -> bool:
    """Whether ``set_backend(choice)`` would work (the backend in use stays)."""
    if choice == "dnnl":
        return dnnl.available()
    if choice != "mkl":
        return choice in CHOICES
    with _lock:
        return _library is not None or _library_path() is not None


def describe() -> str:
    """One line for reports: the library and its version."""
    left_alone = ""
    if _library_path() is not None and cpu_vendor() != "GenuineIntel":
        left_alone = f" (MKL is installed but left alone on this {cpu_vendor() or 'non-Intel'} CPU)"
    if backend() == "dnnl":
        return (f"oneDNN {dnnl.version()} matmul (numpy's BLAS below {MIN_MULTIPLY_ADDS} "
                f"multiply-adds and for float64){left_alone}")
    if backend() == "numpy":
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        except (TypeError, KeyError):       # numpy before 1.25 only prints its config
            blas = {}
        return f"numpy's {blas.get('name', 'BLAS')} {blas.get('version', '')}".strip() + left_alone
    text = ctypes.create_string_buffer(256)
    _mkl.MKL_Get_Version_String(text, len(text))
    return f"{text.value.decode(errors='replace').strip()} (strict reproducible mode)"


def set_num_threads(n: int) -> None:
    """MKL's thread count (numpy's BLAS sizes its own pool at import)."""
    if _library is not None:
        _library.MKL_Set_Num_Threads(int(n))


follow_thread_count(set_num_threads)        # MKL's pool follows solverkit.set_num_threads


def _operand(a: np.ndarray):
    """(transpose flag, leading dimension) of a 2-D array with one unit stride, else None."""
    item = a.itemsize
    rows, cols = a.shape
    if a.strides[1] == item and a.strides[0] % item == 0 and a.strides[0] >= cols * item:
        return NO_TRANS, a.strides[0] // item
    if a.strides[0] == item and a.strides[1] % item == 0 and a.strides[1] >= rows * item:
        return TRANS, a.strides[1] // item
    return None


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool = False,
           bias: np.ndarray | None = None, relu: float | None = None) -> None:
    """``out = a @ b``, or ``out += a @ b`` with ``accumulate``; all three 2-D. ``bias``
    (one value per column of ``out``) is added to every row of a product that is not
    accumulated; ``relu`` (a negative slope) rectifies such a product afterwards:
    ``out = max(p, 0) + relu·min(p, 0)``.

    MKL's gemm and oneDNN's matmul take transposed and row-sliced views as they are and
    accumulate without a temporary; oneDNN adds the bias and rectifies in the same pass.
    Small products, any other case and the numpy backend use ``np.matmul``.
    """
    if accumulate and (bias is not None or relu is not None):
        raise ValueError("matmul adds a bias or rectifies only a product it does not "
                         "accumulate")
    if not _resolved:
        backend()
    if _mkl is not None or _dnnl_chosen:
        layout = _library_layout(a, b, out)
        if layout is not None:
            if _dnnl_chosen:
                if a.dtype == np.float32 and (bias is None or _row_of(bias, out)):
                    _dnnl_matmul(a, b, out, accumulate, bias, relu)
                    return
            else:
                _mkl_gemm(a, b, out, accumulate, layout)
                _finish(out, bias, relu)
                return
    if accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)
        _finish(out, bias, relu)


def _finish(out: np.ndarray, bias: np.ndarray | None, relu: float | None) -> None:
    """The bias and the rectifier of ``matmul`` where the library's product did not apply
    them."""
    if bias is not None:
        out += bias
    if relu == 0:
        np.maximum(out, 0, out=out)
    elif relu is not None:
        np.multiply(out, np.where(out > 0, 1, relu).astype(out.dtype), out=out)


def _mkl_gemm(a, b, out, accumulate, layout) -> None:
    (trans_a, lda), (trans_b, ldb), ldc = layout
    function = _mkl.cblas_sgemm if a.dtype == np.float32 else _mkl.cblas_dgemm
    m, k = a.shape
    function(ROW_MAJOR, trans_a, trans_b, m, b.shape[1], k, 1.0, a.ctypes.data, lda,
             b.ctypes.data, ldb, 1.0 if accumulate else 0.0, out.ctypes.data, ldc)


def _row_of(bias: np.ndarray, out: np.ndarray) -> bool:
    return (bias.dtype == out.dtype and bias.size == out.shape[1]
            and bias.flags.c_contiguous and bias.flags.aligned)


def _dnnl_matmul(a, b, out, accumulate, bias, relu) -> None:
    """The product on oneDNN: a primitive per layout of the operands (shapes, strides,
    with or without bias, rectifier or accumulation) and thread count, made on first use."""
    key = (a.shape, a.strides, b.shape, b.strides, out.shape, out.strides, accumulate,
           bias is not None, relu, num_threads())
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = dnnl.MatmulPlan(a, b, out, bias=bias is not None,
                                             accumulate=accumulate, relu=relu)
    plan.run(a, b, out, bias)


def _library_layout(a, b, out):
    """(a's and b's (transpose flag, leading dimension), out's leading dimension) when a
    library's product can take these arrays as they lie, else None (numpy then)."""
    if not (a.ndim == b.ndim == out.ndim == 2 and a.dtype == b.dtype == out.dtype
            and a.dtype in (np.float32, np.float64) and min(*a.shape, b.shape[1]) > 1
            and a.shape[0] * a.shape[1] * b.shape[1] >= MIN_MULTIPLY_ADDS
            and out.shape == (a.shape[0], b.shape[1]) and a.shape[1] == b.shape[0]
            and a.flags.aligned and b.flags.aligned and out.flags.aligned
            and out.strides[1] == out.itemsize and out.strides[0] % out.itemsize == 0
            and out.strides[0] >= out.shape[1] * out.itemsize):
        return None
    operand_a, operand_b = _operand(a), _operand(b)
    if operand_a is None or operand_b is None or np.may_share_memory(out, a) \
            or np.may_share_memory(out, b):
        return None
    return operand_a, operand_b, out.strides[0] // out.itemsize


def axpby_ready(*arrays: np.ndarray) -> bool:
    """Whether ``axpby`` runs on a library for these arrays: MKL (float32 or float64) or
    oneDNN (float32) is the backend, and they are C-contiguous, of one dtype and one size,
    and none shares memory with another. The answer for the same array objects is kept
    (an update asks it for every parameter at every step; weak references, so that the
    arrays of a net that is gone are not held)."""
    if not _resolved:
        backend()
    key = (_mkl is not None, _dnnl_chosen, *map(id, arrays))
    known = _ready.get(key)
    if known is not None and all(ref() is a for ref, a in zip(known[1], arrays)):
        return known[0]
    first = arrays[0]
    dtypes = (np.float32, np.float64) if _mkl is not None else (np.float32,)
    ready = ((_mkl is not None or _dnnl_chosen) and first.dtype in dtypes
             and first.size < 2**31
             and all(a.dtype == first.dtype and a.size == first.size and a.flags.c_contiguous
                     for a in arrays)
             and not any(np.may_share_memory(a, b)
                         for i, a in enumerate(arrays) for b in arrays[i + 1:]))
    if len(_ready) >= MAX_KEPT:
        _ready.clear()
    _ready[key] = (ready, tuple(weakref.ref(a) for a in arrays))
    return ready


def axpby(alpha: float, x: np.ndarray, beta: float, y: np.ndarray) -> None:
    """``y = alpha·x + beta·y``: one pass of MKL (on its threads) or oneDNN (on one thread,
    from ``MIN_AXPBY_ELEMENTS`` on: a call costs it a few µs) where ``axpby_ready(x, y)``,
    else two numpy passes and a temporary. Element-wise, so the result does not depend on
    the thread count or the alignment (a test checks it)."""
    if axpby_ready(x, y):
        if _mkl is not None:
            function = _mkl.cblas_saxpby if x.dtype == np.float32 else _mkl.cblas_daxpby
            function(x.size, alpha, x.ctypes.data, 1, beta, y.ctypes.data, 1)
            return
        if x.size >= MIN_AXPBY_ELEMENTS:
            # a plan per pair of arrays: it points at them once, and again only when it is
            # given other arrays (another pair that got the ids of a pair gone)
            key = ("axpby", x.size, id(x), id(y))
            plan = _plans.get(key)
            if plan is None:
                if len(_plans) >= MAX_KEPT:
                    _plans.clear()
                plan = _plans[key] = dnnl.AxpbyPlan(x.size)
            plan.run(alpha, x, beta, y)
            return
    y *= beta
    y += alpha * x
