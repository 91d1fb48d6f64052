"""ONNX export of the recurrent layers (ONNX LSTM/RNN, Caffe's gates reordered) and of
Threshold, BatchReindex, Filter, Im2col, SPP and LSTMUnit: onnxruntime equals the TEST forward."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from solverkit.export.onnx_model import to_onnx  # noqa: E402


def run_both(layers, feeds, seed=0):
    shapes = [list(np.shape(v)) for v in feeds.values()]
    spec = {"name": "n", "layers": [
        {"name": "input", "type": "Input", "top": list(feeds), "shape": shapes}, *layers]}
    net = sk.Net(spec, phase="TEST", seed=seed)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for blob in layer.blobs:
            blob.data[...] = rng.normal(size=blob.shape) * 0.5
    model = to_onnx(net)
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {k: np.asarray(v, np.float32) for k, v in feeds.items()}
    net.forward(**feeds)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    for name in net.outputs:
        np.testing.assert_allclose(got[name], net.blobs[name].data, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    return net, got


T, N, I, H = 5, 3, 4, 6


def sequence_feeds(rng, static=False, expose=False, states=("h0",)):
    cont = np.ones((T, N))
    cont[0] = 0 if not expose else 1
    feeds = {"x": rng.standard_normal((T, N, I)), "cont": cont}
    if static:
        feeds["xs"] = rng.standard_normal((N, 2, 2))
    if expose:
        for name in states:
            feeds[name] = rng.standard_normal((1, N, H))
    return feeds


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static,expose", [(False, False), (True, True)])
def test_recurrent_layers_match_onnxruntime(rng, kind, static, expose):
    states = ("h0", "c0") if kind == "LSTM" else ("h0",)
    feeds = sequence_feeds(rng, static, expose, states)
    bottom = ["x", "cont"] + (["xs"] if static else []) + (list(states) if expose else [])
    top = ["y"] + ([s.replace("0", "T") for s in states] if expose else [])
    run_both([{"name": "rec", "type": kind, "bottom": bottom, "top": top, "num_output": H,
               "expose_hidden": expose}], feeds)


def test_lstm_unit_threshold_reindex_filter_im2col_spp_match_onnxruntime(rng):
    run_both([{"name": "unit", "type": "LSTMUnit", "bottom": ["c", "g", "cont"],
               "top": ["c1", "h1"]}],
             {"c": rng.standard_normal((1, N, H)), "g": rng.standard_normal((1, N, 4 * H)),
              "cont": np.array([[1.0, 0.0, 1.0]])})
    run_both([{"name": "t", "type": "Threshold", "bottom": "x", "top": "y", "threshold": 0.3}],
             {"x": rng.standard_normal((2, 3, 4))})
    run_both([{"name": "r", "type": "BatchReindex", "bottom": ["x", "i"], "top": "y"}],
             {"x": rng.standard_normal((4, 3)), "i": np.array([3.0, 0.0, 3.0])})
    run_both([{"name": "f", "type": "Filter", "bottom": ["x", "s"], "top": "y"}],
             {"x": rng.standard_normal((4, 3)), "s": np.array([1.0, 0.0, 1.0, 1.0])})
    run_both([{"name": "c", "type": "Im2col", "bottom": "x", "top": "y", "kernel_size": 3,
               "stride": 2, "pad": 1, "dilation": 1}], {"x": rng.standard_normal((2, 3, 7, 6))})
    for height, pool in ((3, "MAX"), (2, "AVE"), (1, "MAX")):
        run_both([{"name": "spp", "type": "SPP", "bottom": "x", "top": "y",
                   "pyramid_height": height, "pool": pool}],
                 {"x": rng.standard_normal((2, 3, 7, 9))})


def test_hdf5_output_has_no_onnx_mapping_and_the_error_names_it(tmp_path, rng):
    pytest.importorskip("h5py")
    net = sk.Net({"name": "n", "layers": [
        {"name": "input", "type": "Input", "top": ["x"], "shape": [[2, 3]]},
        {"name": "save", "type": "HDF5Output", "bottom": ["x"],
         "file_name": str(tmp_path / "o.h5")}]}, phase="TEST")
    with pytest.raises(sk.ConfigError, match="save.*HDF5Output has no ONNX mapping"):
        to_onnx(net)
