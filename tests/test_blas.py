"""Matrix products on numpy's BLAS or MKL: the same values as an independent float64 product,
every operand layout, accumulation, bitwise reproducibility under MKL, and the choice."""

import os
import subprocess
import sys

import numpy as np
import pytest

from solverkit import blas, dnnl, threads
from solverkit.gradient_check import check_layer_gradients

MKL = blas.available("mkl")
DNNL = blas.available("dnnl")
blas.set_backend(os.environ.get(blas.VARIABLE, "auto"))
needs_mkl = pytest.mark.skipif(not MKL, reason="Intel MKL is not installed (the mkl extra)")
needs_dnnl = pytest.mark.skipif(not DNNL, reason="oneDNN does not load on this machine")


def _from_environment():
    blas.set_backend(os.environ.get(blas.VARIABLE, "auto"))


def _layout(a: np.ndarray, kind: str) -> np.ndarray:
    """``a``'s values as a C array, a transposed view of one, or a row-sliced view of a
    wider one (a leading dimension larger than the number of columns)."""
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "T":
        return np.ascontiguousarray(a.T).T
    wide = np.zeros((a.shape[0], a.shape[1] + 3), a.dtype)
    wide[:, 1:1 + a.shape[1]] = a
    return wide[:, 1:1 + a.shape[1]]


def _reference(a, b):
    return np.einsum("ik,kj->ij", a.astype(np.float64), b.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind_a", ["C", "T", "rows"])
@pytest.mark.parametrize("kind_b", ["C", "T", "rows"])
def test_products_of_every_layout_match_a_float64_reference(blas_backend, dtype, kind_a, kind_b, rng):
    a = rng.standard_normal((7, 33)).astype(dtype)
    b = rng.standard_normal((33, 5)).astype(dtype)
    out = np.full((7, 5), np.nan, dtype)
    blas.matmul(_layout(a, kind_a), _layout(b, kind_b), out=out)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, _reference(a, b), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.0, 0.1])
@pytest.mark.parametrize("kind_b", ["C", "T"])
def test_a_rectified_product_with_bias_matches_a_float64_reference(blas_backend, dtype, slope,
                                                                   kind_b, rng):
    a = rng.standard_normal((16, 40)).astype(dtype)
    b = rng.standard_normal((40, 24)).astype(dtype)
    bias = rng.standard_normal(24).astype(dtype)
    out = np.full((16, 24), np.nan, dtype)
    blas.matmul(a, _layout(b, kind_b), out=out, bias=bias, relu=slope)
    product = _reference(a, b) + bias
    expected = np.where(product > 0, product, slope * product)
    assert (product < 0).sum() > 50            # the rectifier has work to do
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)
    with pytest.raises(ValueError, match="accumulate"):
        blas.matmul(a, b, out=out, accumulate=True, relu=slope)


def test_accumulate_adds_the_product_to_what_out_holds(blas_backend, rng):
    a, b = rng.standard_normal((6, 40)), rng.standard_normal((40, 9))
    start = rng.standard_normal((6, 9))
    out = start.copy()
    blas.matmul(a.T.copy().T, b, out=out, accumulate=True)
    np.testing.assert_allclose(out, start + _reference(a, b), rtol=1e-12)


def test_an_output_that_is_a_row_slice_of_a_wider_array(blas_backend, rng):
    a, b = rng.standard_normal((4, 10)), rng.standard_normal((10, 3))
    wide = np.zeros((4, 8))
    blas.matmul(a, b, out=wide[:, 2:5])
    np.testing.assert_allclose(wide[:, 2:5], _reference(a, b), rtol=1e-12)
    assert not wide[:, :2].any() and not wide[:, 5:].any()


@pytest.mark.parametrize("case", ["batched", "strided", "vector", "integer", "aliased"])
def test_what_gemm_cannot_take_falls_back_to_numpy(blas_backend, case, rng):
    a, b = rng.standard_normal((5, 6)), rng.standard_normal((6, 4))
    if case == "batched":
        a, b = rng.standard_normal((3, 5, 6)), rng.standard_normal((3, 6, 4))
    elif case == "strided":
        a = rng.standard_normal((5, 12))[:, ::2]
    elif case == "vector":
        a = rng.standard_normal((1, 6))
    elif case == "integer":
        a, b = rng.integers(-5, 5, (5, 6)), rng.integers(-5, 5, (6, 4))
    expected = np.matmul(a, b)
    if case == "aliased":       # out overlaps an input: numpy buffers the product
        square = rng.standard_normal((6, 6))
        expected = square @ square
        blas.matmul(square, square, out=square)
        np.testing.assert_allclose(square, expected, rtol=1e-12)
        return
    out = np.empty(expected.shape, expected.dtype)
    blas.matmul(a, b, out=out)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def _bitwise_the_same_for_any_thread_count_and_alignment(compute, *inputs, library="mkl"):
    """``compute(*copies)`` on ``library`` with 1 and 2 threads, the copies of ``inputs``
    starting 0 to 3 floats past an aligned address: every result is bitwise the first one."""
    blas.set_backend(library)
    before = threads.num_threads()
    results = []
    try:
        for count in (1, 2):
            threads.set_num_threads(count)
            for offset in range(4):
                copies = []
                for array in inputs:
                    copy = np.empty(array.size + offset, array.dtype)[offset:]
                    copy = copy.reshape(array.shape)
                    copy[...] = array
                    copies.append(copy)
                results.append(compute(*copies))
    finally:
        threads.set_num_threads(before)
        _from_environment()
    for other in results[1:]:
        assert np.array_equal(results[0], other)


@needs_mkl
def test_mkl_products_are_bitwise_the_same_for_any_thread_count_and_alignment(rng):
    """A long inner dimension is what MKL splits over its threads; the strict reproducible
    mode keeps the sums in one order (1 and 2 threads differ without it)."""
    def product(a, b):
        out = np.empty((20, 25), np.float32)
        blas.matmul(a, b, out=out)
        return out

    _bitwise_the_same_for_any_thread_count_and_alignment(
        product, rng.standard_normal((20, 40000)).astype(np.float32),
        rng.standard_normal((40000, 25)).astype(np.float32))


@needs_mkl
def test_training_on_mkl_follows_training_on_numpy(make_net, input_layer, rng, monkeypatch):
    """The same net and data, a few SGD steps: the two libraries round differently but
    the losses agree closely."""
    monkeypatch.setattr(blas, "MIN_MULTIPLY_ADDS", 0)       # these products are small
    x, labels = rng.standard_normal((16, 3, 6, 6)), rng.integers(0, 4, 16).astype(float)
    losses = {}
    for name in ("numpy", "mkl"):
        blas.set_backend(name)
        net = make_net(input_layer(x=x.shape, label=labels.shape),
                       {"name": "conv", "type": "Convolution", "bottom": "x", "top": "c",
                        "num_output": 5, "kernel_size": 3, "weight_filler": {"type": "xavier"}},
                       {"name": "ip", "type": "InnerProduct", "bottom": "c", "top": "y",
                        "num_output": 4, "weight_filler": {"type": "xavier"}},
                       {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["y", "label"],
                        "top": "loss"})
        trace = []
        for _ in range(5):
            net.clear_param_diffs()
            trace.append(float(net.forward(x=x, label=labels)["loss"]))
            net.backward()
            for param in net.learnable_params:
                param.blob.data -= 0.1 * param.blob.diff
        losses[name] = trace
    _from_environment()
    assert losses["numpy"][-1] < losses["numpy"][0]
    np.testing.assert_allclose(losses["mkl"], losses["numpy"], rtol=1e-10)


@pytest.mark.parametrize("fields", [
    {"num_output": 3},
    {"num_output": 2, "axis": 2, "bias_term": False},
    {"num_output": 3, "transpose": True},
])
def test_inner_product_gradients_on_every_library(blas_backend, fields, rng):
    layer = {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y",
             "weight_filler": {"type": "gaussian", "std": 1.0}, **fields}
    check_layer_gradients(layer, {"x": rng.standard_normal((4, 3, 5))})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpby_matches_its_formula(blas_backend, dtype, rng):
    x, y = rng.standard_normal(1000).astype(dtype), rng.standard_normal(1000).astype(dtype)
    expected = 0.3 * x.astype(np.float64) - 1.5 * y.astype(np.float64)
    blas._plans.clear()         # a cache: emptied, so that what is in it now is this call's
    on_library = blas_backend == "mkl" or (blas_backend == "dnnl" and dtype == np.float32)
    assert blas.axpby_ready(x, y) == on_library
    blas.axpby(0.3, x, -1.5, y)
    # oneDNN's pass ran (its plan for this pair of arrays is kept)
    assert (("axpby", x.size, id(x), id(y)) in blas._plans) == \
        (blas_backend == "dnnl" and on_library)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12      # of the terms' size, ~1
    np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance)


def test_axpby_leaves_to_numpy_what_mkl_cannot_take(blas_backend, rng):
    x = rng.standard_normal(12)
    assert not blas.axpby_ready(x, x)                       # the same memory
    assert not blas.axpby_ready(x[::2], x[:6].copy())       # not contiguous
    assert not blas.axpby_ready(x.astype(np.float32), x)    # two dtypes
    y = x[::-1].copy()
    expected = 2.0 * x[::2] + 0.5 * y[::2]
    target = y[::2]
    blas.axpby(2.0, x[::2], 0.5, target)                    # numpy does it
    np.testing.assert_allclose(target, expected, rtol=1e-12)


@pytest.mark.parametrize("library", [name for name in ("mkl", "dnnl") if blas.available(name)])
def test_axpby_is_bitwise_the_same_for_any_thread_count_and_alignment(library, rng):
    def axpby(x, y):
        blas.axpby(0.01, x, 0.9, y)
        return y

    _bitwise_the_same_for_any_thread_count_and_alignment(
        axpby, rng.standard_normal(70001).astype(np.float32),
        rng.standard_normal(70001).astype(np.float32), library=library)


@pytest.mark.skipif(not DNNL, reason="oneDNN does not load here")
def test_dnnl_axpby_follows_arrays_given_anew(chosen_again, rng):
    """A plan points at its pair of arrays once: another pair, or the same pair after the
    values changed, is still computed from what the arrays hold now."""
    blas.set_backend("dnnl")
    size = blas.MIN_AXPBY_ELEMENTS + 3
    x, y = (rng.standard_normal(size).astype(np.float32) for _ in range(2))
    for alpha, beta in ((0.5, 2.0), (-1.0, 1.0), (0.01, 0.9)):
        x[:5] = rng.standard_normal(5)
        expected = alpha * x.astype(np.float64) + beta * y.astype(np.float64)
        blas.axpby(alpha, x, beta, y)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    other = rng.standard_normal(size).astype(np.float32)
    expected = 3.0 * other.astype(np.float64) + y
    blas.axpby(3.0, other, 1.0, y)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert ("axpby", size, id(other), id(y)) in blas._plans


@pytest.mark.skipif(not DNNL, reason="oneDNN does not load here")
def test_dnnl_axpby_leaves_the_openmp_thread_count_as_it_found_it(chosen_again, rng):
    """The count is the process's (PyTorch's libgomp.so.1 is the same library): a step on
    one thread must not leave another library's parallel regions on one thread."""
    from solverkit import dnnl
    blas.set_backend("dnnl")
    gomp = dnnl._library[1]
    before = gomp.omp_get_max_threads()
    try:
        gomp.omp_set_num_threads(3)         # as another library set it
        x, y = (rng.standard_normal(blas.MIN_AXPBY_ELEMENTS).astype(np.float32)
                for _ in range(2))
        expected = 0.5 * x.astype(np.float64) + 2.0 * y
        blas.axpby(0.5, x, 2.0, y)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
        assert gomp.omp_get_max_threads() == 3
    finally:
        gomp.omp_set_num_threads(before)


@pytest.mark.skipif(not DNNL, reason="oneDNN does not load here")
def test_dnnl_axpby_keeps_no_array_alive(chosen_again, rng):
    import gc
    import weakref
    blas.set_backend("dnnl")
    x, y = (rng.standard_normal(blas.MIN_AXPBY_ELEMENTS).astype(np.float32) for _ in range(2))
    blas.axpby(0.5, x, 2.0, y)
    gone = weakref.ref(x), weakref.ref(y)
    del x, y
    gc.collect()
    assert gone[0]() is None and gone[1]() is None


def test_an_unknown_choice_is_a_config_error_naming_the_variable():
    with pytest.raises(blas.ConfigError, match="SOLVERKIT_BLAS='openblas' is not one of"):
        blas.set_backend("openblas")


@pytest.fixture
def chosen_again():
    """Choose from the environment again after the test (and after its monkeypatch undo)."""
    yield
    _from_environment()


def test_asking_for_mkl_without_it_says_how_to_install_it(chosen_again, monkeypatch):
    monkeypatch.setattr(blas, "_library", None)
    monkeypatch.setattr(blas, "_library_path", lambda: None)
    with pytest.raises(blas.ConfigError, match=r"pip install 'solverkit\[mkl\]'"):
        blas.set_backend("mkl")
    # auto goes on without it: oneDNN on an Intel CPU too, else numpy
    assert blas.set_backend("auto") == ("dnnl" if DNNL else "numpy")


@pytest.mark.parametrize("vendor,intel", [("GenuineIntel", True), ("AuthenticAMD", False),
                                          ("", False)])
def test_auto_takes_mkl_on_intel_cpus_only(vendor, intel, chosen_again, monkeypatch):
    """MKL's code paths on AMD processors ran every benchmark case slower than numpy's
    OpenBLAS: auto leaves MKL alone there (oneDNN, else numpy); ``mkl`` still forces it."""
    if not MKL:
        pytest.skip("Intel MKL is not installed (the mkl extra)")
    monkeypatch.setattr(blas, "cpu_vendor", lambda: vendor)
    expected = "mkl" if intel else "dnnl" if DNNL else "numpy"
    assert blas.set_backend("auto") == expected
    assert blas.set_backend("mkl") == "mkl"
    blas.set_backend("auto")
    assert ("left alone" in blas.describe()) == (not intel)


def test_the_command_line_reports_a_wrong_choice_in_one_line(tmp_path):
    env = {"SOLVERKIT_BLAS": "fast", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "solverkit", "check", "--net", "net.yaml"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        ("solverkit: error: field 'SOLVERKIT_BLAS': SOLVERKIT_BLAS='fast' is not one of "
         "auto, mkl, dnnl, numpy")]


def test_a_bias_is_added_to_every_row_of_the_product(blas_backend, rng):
    a = rng.standard_normal((9, 30)).astype(np.float32)
    w = rng.standard_normal((7, 30)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    out = np.full((9, 7), np.nan, np.float32)
    blas.matmul(a, w.T, out=out, bias=bias)
    np.testing.assert_allclose(out, _reference(a, w.T) + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="bias"):
        blas.matmul(a, w.T, out=out, accumulate=True, bias=bias)


@pytest.fixture
def dnnl_products(chosen_again, monkeypatch):
    """oneDNN chosen, with a record of the products its matmul primitives ran."""
    if not DNNL:
        pytest.skip("oneDNN does not load on this machine")
    ran = []
    run = dnnl.MatmulPlan.run
    monkeypatch.setattr(dnnl.MatmulPlan, "run",
                        lambda plan, a, b, out, bias=None: (ran.append((a.shape, b.shape)),
                                                            run(plan, a, b, out, bias)))
    assert blas.set_backend("dnnl") == "dnnl"
    return ran


def test_dnnl_takes_large_float32_products_and_leaves_the_rest_to_numpy(dnnl_products, rng):
    """The choice per product: oneDNN for float32 products of MIN_MULTIPLY_ADDS or more
    (an MLP layer's), numpy for a small one (a 10-class output layer's) and for float64."""
    x = rng.standard_normal((64, 784)).astype(np.float32)
    w = rng.standard_normal((512, 784)).astype(np.float32)
    small = rng.standard_normal((784, 10)).astype(np.float32)
    for a, b, expected in ((x, w.T, True), (x, small, False),
                           (x.astype(np.float64), w.T.astype(np.float64), False)):
        dnnl_products.clear()
        out = np.empty((a.shape[0], b.shape[1]), a.dtype)
        blas.matmul(a, b, out=out)
        assert bool(dnnl_products) == expected, (a.shape, b.shape, a.dtype)
        np.testing.assert_allclose(out, _reference(a, b), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("vendor,mkl,dnnl_loads,expected", [
    ("AuthenticAMD", True, True, "dnnl"), ("AuthenticAMD", False, False, "numpy"),
    ("GenuineIntel", False, True, "dnnl"), ("GenuineIntel", False, False, "numpy")])
def test_auto_chooses_dnnl_where_mkl_is_not_taken(vendor, mkl, dnnl_loads, expected,
                                                  chosen_again, monkeypatch):
    monkeypatch.setattr(blas, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(dnnl, "available", lambda: dnnl_loads)
    if not mkl:
        monkeypatch.setattr(blas, "_library", None)
        monkeypatch.setattr(blas, "_library_path", lambda: None)
    assert blas.set_backend("auto") == expected
    if not dnnl_loads:
        with pytest.raises(blas.ConfigError, match="SOLVERKIT_BLAS=dnnl but oneDNN"):
            blas.set_backend("dnnl")


@needs_dnnl
def test_dnnl_products_are_bitwise_the_same_at_any_alignment(chosen_again, rng):
    """Exact resume needs the same bits from the same product, wherever numpy put the
    arrays: operands 0 to 3 floats past an aligned address, one thread count."""
    blas.set_backend("dnnl")
    x = rng.standard_normal((64, 784)).astype(np.float32)
    w = rng.standard_normal((512, 784)).astype(np.float32)
    bias = rng.standard_normal(512).astype(np.float32)
    results = []
    for offset in range(4):
        copies = []
        for array in (x, w, bias):
            copy = np.empty(array.size + offset, np.float32)[offset:].reshape(array.shape)
            copy[...] = array
            copies.append(copy)
        out = np.empty(64 * 512 + offset, np.float32)[offset:].reshape(64, 512)
        grad = np.empty((512, 784), np.float32)
        blas.matmul(copies[0], copies[1].T, out=out, bias=copies[2])
        blas.matmul(out.T, copies[0], out=grad)           # a weight gradient's layout
        results.append((out.copy(), grad))
    for out, grad in results[1:]:
        assert np.array_equal(out, results[0][0]) and np.array_equal(grad, results[0][1])


@needs_dnnl
def test_float32_inner_product_on_dnnl_passes_a_numeric_gradient_check(chosen_again, make_net,
                                                                       input_layer, rng):
    """An MLP-sized float32 InnerProduct on oneDNN (forward with its bias, both backward
    products, accumulation into the weight diff): its outputs and gradients against an
    independent numpy computation, and central differences of L = Σ r·y (exact for a
    linear layer up to float32 rounding)."""
    blas.set_backend("dnnl")
    layer = {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y",
             "num_output": 512, "weight_filler": {"type": "gaussian", "std": 0.05},
             "bias_filler": {"type": "gaussian", "std": 1.0}}
    x = rng.standard_normal((64, 784)).astype(np.float32)
    net = make_net(input_layer(x=x.shape), layer, dtype="float32")
    net.blobs["x"].data[...] = x
    ran = []
    run = dnnl.MatmulPlan.run
    dnnl.MatmulPlan.run = lambda plan, *args: (ran.append(1), run(plan, *args))
    try:
        w, b = (blob.data.astype(np.float64) for blob in net.params["ip"])
        r = rng.standard_normal((64, 512)).astype(np.float32)
        net.forward()
        y = net.blobs["y"].data
        np.testing.assert_allclose(y, x.astype(np.float64) @ w.T + b, rtol=1e-4, atol=1e-4)
        for step in range(2):           # the second pass accumulates into the weight diff
            if step == 0:
                net.clear_param_diffs()
            net.backward(y=r)
        assert len(ran) == 5            # forward; per backward, the weight gradient and dx
        np.testing.assert_allclose(net.blobs["x"].diff, r.astype(np.float64) @ w,
                                   rtol=1e-4, atol=1e-4)
        dw, db = (blob.diff.astype(np.float64) for blob in net.params["ip"])
        np.testing.assert_allclose(dw, 2 * r.T.astype(np.float64) @ x, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(db, 2 * r.astype(np.float64).sum(0), rtol=1e-4, atol=1e-3)
        blob = net.params["ip"][0].data
        for i, j in ((0, 0), (17, 300), (511, 783)):
            numeric = []
            for sign in (1, -1):
                saved = blob[i, j]
                blob[i, j] = saved + sign * 0.5
                net.forward()
                numeric.append(float(np.dot(r.ravel().astype(np.float64),
                                            net.blobs["y"].data.ravel())))
                blob[i, j] = saved
            assert abs((numeric[0] - numeric[1]) / 1.0 - dw[i, j] / 2) <= 1e-3 * (
                1 + abs(dw[i, j]))
    finally:
        dnnl.MatmulPlan.run = run
