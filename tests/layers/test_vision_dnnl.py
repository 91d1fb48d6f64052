"""Convolution and Deconvolution on oneDNN (float32) against the float64 numpy path, whose
gradients the numeric checks in test_vision.py verify: outputs, bottom and parameter
gradients, accumulation into parameter diffs, TEST-phase plans, and the backend choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_vision import CONV_CASES, DECONV_CASES, POOL_CASES, _conv, _deconv, _input, _net, _pool

import solverkit as sk
from solverkit import ConfigError, dnnl
from solverkit.layers import method_choice

HAVE_DNNL = dnnl.set_backend("auto") == "dnnl"
needs_dnnl = pytest.mark.skipif(not HAVE_DNNL, reason="oneDNN is not installed (the fast extra)")


def _run(layer, x, dy, method, dtype, params=None, passes=1):
    """(y, dx, parameter diffs) of ``layer`` with ``method`` preferred; ``passes`` backward
    passes accumulate into the parameter diffs."""
    previous = method_choice.prefer(method)
    try:
        net = _net(_input(x.shape), layer, dtype=dtype)
        name = layer["name"]
        if params is not None:
            for blob, value in zip(net.params[name], params):
                blob.data[...] = value
        assert net.layers[1].method == method
        y = net.forward(x=x.astype(dtype))["y"].copy()
        for _ in range(passes):
            net.backward(y=dy.astype(dtype))
        return (y, net.blobs["x"].diff.copy(), [blob.diff.copy() for blob in net.params[name]],
                [blob.data.copy() for blob in net.params[name]])
    finally:
        method_choice.prefer(previous)


def _compare(layer, x, rng, passes=1):
    reference = _run(layer, x, np.zeros(1), "columns", "float64")       # for the shapes
    dy = rng.standard_normal(reference[0].shape)
    expected = _run(layer, x, dy, "columns", "float64", passes=passes)
    got = _run(layer, x, dy, "dnnl", "float32", params=expected[3], passes=passes)
    for want, have in [(expected[0], got[0]), (expected[1], got[1]), *zip(expected[2], got[2])]:
        np.testing.assert_allclose(have, want, rtol=2e-4, atol=2e-5 * np.abs(want).max())


@needs_dnnl
@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution_on_onednn_matches_the_float64_path(case, rng):
    _compare(_conv(**case), rng.standard_normal((3, 4, 7, 6)), rng)


@needs_dnnl
@pytest.mark.parametrize("case", DECONV_CASES)
def test_deconvolution_on_onednn_matches_the_float64_path(case, rng):
    _compare(_deconv(**case), rng.standard_normal((2, 4, 4, 3)), rng)


@needs_dnnl
@pytest.mark.parametrize("make", [_conv, _deconv])
def test_parameter_gradients_accumulate_over_backward_passes(make, rng):
    _compare(make(num_output=4, kernel_size=3, pad=1), rng.standard_normal((2, 4, 5, 5)), rng,
             passes=2)


@needs_dnnl
def test_a_test_phase_layer_runs_forward_only_then_backward_on_demand(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    previous = method_choice.prefer("dnnl")
    try:
        test = _net(_input(x.shape), _conv(num_output=4, kernel_size=3), dtype="float32")
        test.layers[1].inference = True        # as in a TEST net before any backward
        train = _net(_input(x.shape), _conv(num_output=4, kernel_size=3), dtype="float32")
        y_test = test.forward(x=x)["y"].copy()
        assert not test.layers[1]._plan.training
        np.testing.assert_array_equal(y_test, train.forward(x=x)["y"])
        dy = np.ones_like(y_test)
        test.backward(y=dy)
        train.backward(y=dy)
        np.testing.assert_array_equal(test.blobs["x"].diff, train.blobs["x"].diff)
        np.testing.assert_array_equal(test.params["conv"][0].diff, train.params["conv"][0].diff)
    finally:
        method_choice.prefer(previous)


def _pool_run(fields, x, dy, method, dtype):
    previous = method_choice.prefer(method)
    try:
        net = _net(_input(x.shape), _pool(**fields), dtype=dtype)
        layer = net.layers[1]
        y = net.forward(x=x.astype(dtype))["y"].copy()
        net.backward(y=dy.astype(dtype))
        return layer.method, y, net.blobs["x"].diff.copy()
    finally:
        method_choice.prefer(previous)


@needs_dnnl
@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("fields, size", POOL_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_pooling_on_onednn_matches_caffe_where_it_is_used(fields, size, pool, ties, rng):
    """Where oneDNN's windows are Caffe's it is used and gives Caffe's values and
    gradients, MAX's ties going to the first pixel of the window as in Caffe (values
    drawn from {0, 1, 2}); elsewhere the layer stays on numpy's phases, with the same."""
    shape = (2, 17, *size)
    x = rng.integers(0, 3, shape).astype(float) if ties else rng.standard_normal(shape)
    fields = {"pool": pool, **fields}
    _, want_y, _ = _pool_run(fields, x, np.zeros(1), "columns", "float64")
    dy = rng.standard_normal(want_y.shape)
    _, want_y, want_dx = _pool_run(fields, x, dy, "columns", "float64")
    method, y, dx = _pool_run(fields, x, dy, None, "float32")
    assert method in ("dnnl", "phases")
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)


@needs_dnnl
def test_pooling_uses_onednn_for_the_benchmark_nets_and_numpy_for_the_mask():
    for fields, shape, pool in [({"kernel_size": 3, "stride": 2}, (2, 3, 32, 32), "MAX"),
                                ({"kernel_size": 3, "stride": 2}, (2, 3, 16, 16), "AVE"),
                                ({"kernel_size": 2, "stride": 2}, (2, 3, 24, 24), "MAX")]:
        net = _net(_input(shape), _pool(pool=pool, **fields), dtype="float32")
        assert net.layers[1].method == "dnnl"
    masked = _net(_input((1, 2, 6, 6)), {**_pool(pool="MAX", kernel_size=2, stride=2),
                                         "top": ["y", "mask"]}, dtype="float32")
    assert masked.layers[1].method == "phases"
    # Caffe's AVE divisor counts the padding but not the overhang beyond it: no oneDNN match
    overhang = _net(_input((1, 2, 6, 5)), _pool(pool="AVE", kernel_size=3, stride=2, pad=1),
                    dtype="float32")
    assert overhang.layers[1].method == "phases"


def test_float64_and_the_numpy_backend_use_the_numpy_path():
    layer = _conv(num_output=2, kernel_size=3)
    assert _net(_input((1, 1, 5, 5)), layer).layers[1].method != "dnnl"
    try:
        dnnl.set_backend("numpy")
        net = _net(_input((1, 1, 5, 5)), layer, dtype="float32")
        assert net.layers[1].method == "per_sample"
        assert dnnl.describe().startswith("numpy")
    finally:
        dnnl.set_backend("auto")


def test_an_unknown_choice_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError, match="SOLVERKIT_CONV='mkl' is not one of auto, dnnl, numpy"):
        dnnl.set_backend("mkl")


def test_asking_for_onednn_without_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(dnnl, "_library", None)
    monkeypatch.setattr(dnnl, "_load_error", None)
    monkeypatch.setattr(dnnl, "_library_path", lambda: None)
    try:
        with pytest.raises(ConfigError, match=r"pip install onednn-cpu-gomp==2023\.2\.0"):
            dnnl.set_backend("dnnl")
        assert dnnl.set_backend("auto") == "numpy"
        assert "oneDNN is not installed" in dnnl.describe()
    finally:
        monkeypatch.undo()
        dnnl.set_backend("auto")


def test_check_names_the_libraries_that_compute(tmp_path):
    (tmp_path / "net.yaml").write_text(
        "name: n\nlayers:\n  - {name: x, type: Input, top: x, shape: [[1, 1, 6, 6]]}\n"
        "  - {name: c, type: Convolution, bottom: x, top: y, num_output: 2, kernel_size: 3}\n")
    done = subprocess.run([sys.executable, "-m", "solverkit", "check", "--net", "net.yaml"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("compute:"))
    assert "matrix products on" in line
    assert ("oneDNN 3." in line) == HAVE_DNNL


@needs_dnnl
def test_resume_is_bit_exact_with_convolutions_on_onednn(tmp_path):
    """The digits LeNet (float32) trained 8 steps straight, and 4 + snapshot + restore + 4:
    bitwise the same weights, with its convolutions and pooling on oneDNN."""
    import solverkit as sk
    net = Path(__file__).resolve().parents[2] / "configs" / "digits" / "lenet_net.yaml"
    spec = {"net": str(net), "type": "SGD", "base_lr": 0.05, "momentum": 0.9, "max_iter": 8,
            "random_seed": 3, "snapshot_prefix": str(tmp_path / "run")}
    straight = sk.Solver(spec, progress=False)
    assert {layer.method for layer in straight.net.layers
            if layer.type in ("Convolution", "Pooling")} == {"dnnl"}
    straight.step(8)
    first = sk.Solver(spec, progress=False)
    first.step(4)
    state = first.snapshot()
    first.close()
    second = sk.Solver(spec, progress=False)
    second.restore(state)
    second.step(4)
    for p, q in zip(straight.net.learnable_params, second.net.learnable_params):
        assert np.array_equal(p.blob.data, q.blob.data), p.key
    straight.close()
    second.close()


def _conv_pool_ip_step(x, dy, **net_options):
    """Output, input gradient and parameter gradients of a convolution → pooling → inner
    product net on oneDNN (the forward only when ``net_options`` make it an inference net)."""
    previous = method_choice.prefer("dnnl")
    try:
        net = sk.Net({"name": "omp", "dtype": "float32", "layers": [
            _input(x.shape),
            {**_conv(num_output=16, kernel_size=3, pad=1), "top": "c"},
            {**_pool(pool="MAX", kernel_size=2, stride=2), "bottom": "c", "top": "p"},
            {"name": "ip", "type": "InnerProduct", "bottom": "p", "top": "y", "num_output": 5,
             "weight_filler": {"type": "xavier"}}]}, seed=3, **net_options)
        y = net.forward(x=x)["y"].copy()
        if net_options:
            return [y]
        net.backward(y=dy)
        return [y, net.blobs["x"].diff.copy(),
                *[blob.diff.copy() for name in ("conv", "ip") for blob in net.params[name]]]
    finally:
        method_choice.prefer(previous)


@needs_dnnl
@pytest.mark.parametrize("net_options", [{}, {"phase": "TEST", "inference": True, "outputs_only": True}])
def test_onednn_leaves_another_librarys_openmp_thread_count_as_it_found_it(net_options, rng):
    """OpenMP's thread count is shared with every library on the same libgomp (PyTorch's
    wheel brings one): solverkit's primitives run on solverkit's count and put the other
    count back, and their results are the bits they give when nobody changed it."""
    gomp = dnnl._library[1]
    before = gomp.omp_get_max_threads()
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    expected = _conv_pool_ip_step(x, dy, **net_options)
    try:
        gomp.omp_set_num_threads(3)           # as another library set it
        got = _conv_pool_ip_step(x, dy, **net_options)
        assert gomp.omp_get_max_threads() == 3
    finally:
        gomp.omp_set_num_threads(before)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(have, want)
