"""caffe.Net and the module functions against pycaffe's behaviour."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest

import caffe

NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip3" type: "InnerProduct" bottom: "ip1" top: "ip3"
        inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.5 } } }
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return str(path)


def reference(net, x):
    """The same net in numpy, from the params' values."""
    w1, b1 = (b.data for b in net.params["ip1"])
    h = np.maximum(x @ w1.T + b1, 0)
    return h, h @ net.params["ip2"][0].data.T + net.params["ip2"][1].data, \
        h @ net.params["ip3"][0].data.T + net.params["ip3"][1].data


def test_names_and_dicts(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    assert list(net.blobs) == net._blob_names == ["data", "ip1", "ip2", "ip3"]
    assert net._layer_names == ["data", "ip1", "relu", "ip2", "ip3"]
    assert list(net.params) == ["ip1", "ip2", "ip3"]
    assert list(net.layer_dict) == net._layer_names
    assert [layer.type for layer in net.layers] == ["Input", "InnerProduct", "ReLU",
                                                    "InnerProduct", "InnerProduct"]
    assert net.inputs == ["data"] and net.outputs == ["ip2", "ip3"]
    assert net.top_names["relu"] == ["ip1"] and net.bottom_names["ip3"] == ["ip1"]
    blob = net.blobs["data"]
    assert (blob.shape, blob.count, blob.num, blob.channels, blob.height, blob.width) == \
        ((4, 3), 12, 4, 3, 1, 1)
    assert net.params["ip1"][0].data.shape == (5, 3)


def test_forward_returns_the_nets_arrays_and_views_follow_forwards(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    rng = np.random.default_rng(0)
    data_view, out_view = net.blobs["data"].data, net.blobs["ip2"].data
    weight_view = net.params["ip2"][0].data
    for _ in range(2):
        x = rng.normal(size=(4, 3)).astype(np.float32)
        data_view[...] = x                       # an edit through a view feeds the net
        out = net.forward()
        assert out["ip2"] is net.blobs["ip2"].data and out_view is out["ip2"]
        np.testing.assert_allclose(out_view, reference(net, x)[1], rtol=1e-5, atol=1e-6)
    weight_view[...] = 0                         # an edit of a param view is used next
    net.forward()
    np.testing.assert_allclose(out_view, np.broadcast_to(net.params["ip2"][1].data, (4, 2)))
    del net
    gc.collect()
    assert out_view.shape == (4, 2) and float(out_view.sum()) == pytest.approx(out_view.sum())


def test_forward_kwargs_checks_and_start_end(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    with pytest.raises(Exception, match="do not match net inputs"):
        net.forward(ip1=x)
    with pytest.raises(Exception, match="not batch sized"):
        net.forward(data=x[:2])
    full = {k: v.copy() for k, v in net.forward(data=x).items()}
    out = net.forward(end="relu")
    assert set(out) == {"ip1"}
    net.blobs["ip2"].data[...] = 0
    out = net.forward(start="ip2", end="ip2")
    assert set(out) == {"ip2"} and np.array_equal(out["ip2"], full["ip2"])
    out = net.forward(blobs=["ip1"])
    assert set(out) == {"ip1", "ip2", "ip3"}


def test_backward_full_and_partial(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    net.forward(data=x)
    d2, d3 = np.ones((4, 2), np.float32), np.full((4, 1), 2, np.float32)
    with pytest.raises(Exception, match="do not match net outputs"):
        net.backward(ip2=d2)
    grads = net.backward(ip2=d2, ip3=d3)
    h = reference(net, x)[0]
    dh = (d2 @ net.params["ip2"][0].data + d3 @ net.params["ip3"][0].data) * (h > 0)
    np.testing.assert_allclose(grads["data"], dh @ net.params["ip1"][0].data, rtol=1e-5,
                               atol=1e-6)
    # backward from ip3 only down to relu: ip2's stale diff still joins the sum at ip1
    net.blobs["ip3"].diff[...] = 0
    out = net.backward(start="ip3", end="relu")
    assert set(out) == {"ip1"}
    np.testing.assert_allclose(out["ip1"], (d2 @ net.params["ip2"][0].data) * (h > 0),
                               rtol=1e-5, atol=1e-6)


def test_blob_reshape_is_carried_by_the_next_forward(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    net.blobs["data"].reshape(7, 3)
    net.blobs["data"].data[...] = 1
    assert net.forward()["ip2"].shape == (7, 2)


def test_forward_all_pads_and_trims(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    x = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    out = net.forward_all(data=x)
    assert out["ip2"].shape == (10, 2)
    np.testing.assert_allclose(out["ip2"], reference(net, x)[1], rtol=1e-5, atol=1e-6)
    outs, diffs = net.forward_backward_all(data=x, ip2=np.ones((10, 2)), ip3=np.ones((10, 1)))
    assert diffs["data"].shape == (10, 3)


def test_constructor_forms_save_copy_from_share_with(net_file, tmp_path):
    caffe.set_random_seed(5)
    a = caffe.Net(net_file, caffe.TEST)
    a.save(str(tmp_path / "w.caffemodel"))
    b = caffe.Net(net_file, str(tmp_path / "w.caffemodel"), caffe.TEST)
    c = caffe.Net(net_file, caffe.TEST, weights=str(tmp_path / "w.caffemodel"))
    d = caffe.Net(net_file, phase=caffe.TRAIN, level=0, stages=["x"])
    for net in (b, c):
        for name in a.params:
            for p, q in zip(a.params[name], net.params[name]):
                assert np.array_equal(p.data, q.data)
    d.copy_from(str(tmp_path / "w.caffemodel"))
    assert np.array_equal(d.params["ip1"][0].data, a.params["ip1"][0].data)
    e = caffe.Net(net_file, caffe.TEST)
    e.share_with(a)
    assert e.params["ip1"][0] is a.params["ip1"][0]
    with pytest.raises(RuntimeError, match="Could not open file"):
        caffe.Net(str(tmp_path / "missing.prototxt"), caffe.TEST)


def test_hdf5_weights_round_trip(net_file, tmp_path):
    pytest.importorskip("h5py")
    a, b = caffe.Net(net_file, caffe.TEST), caffe.Net(net_file, caffe.TEST)
    a.save_hdf5(str(tmp_path / "w.h5"))
    b.load_hdf5(str(tmp_path / "w.h5"))
    assert np.array_equal(a.params["ip3"][0].data, b.params["ip3"][0].data)


def test_hooks_see_every_layer(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    seen = []
    net.before_forward(lambda i: seen.append(("b", i)))
    net.after_forward(lambda i: seen.append(("a", i)))
    net.forward()
    assert seen == [(k, i) for i in range(5) for k in ("b", "a")]


def test_set_input_arrays_messages(tmp_path):
    path = tmp_path / "m.prototxt"
    path.write_text('layer { name: "mem" type: "MemoryData" top: "data" top: "label" '
                    'memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }')
    net = caffe.Net(str(path), caffe.TEST)
    data = np.arange(12, dtype=np.float32).reshape(4, 1, 1, 3)
    for bad, message in ((data.astype(np.float64), "must be float32"),
                         (data[:, :, :, :2].copy(), "wrong width"),
                         (data[::-1], "C contiguous")):
        with pytest.raises(RuntimeError, match=message):
            net.set_input_arrays(bad, np.zeros(4, np.float32))
    with pytest.raises(RuntimeError, match="multiple of batch size"):
        net.set_input_arrays(data[:3].copy(), np.zeros(3, np.float32))
    net.set_input_arrays(data, np.arange(4, dtype=np.float32))
    net.forward()
    assert net.forward()["label"].tolist() == [2, 3]


def test_module_functions():
    assert caffe.TRAIN == 0 and caffe.TEST == 1
    assert "Python" in caffe.layer_type_list() and "MemoryData" in caffe.layer_type_list()
    assert caffe.has_nccl() is False
    caffe.set_mode_cpu()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        caffe._runtime._state["gpu_warned"] = False
        caffe.set_mode_gpu()
        caffe.set_device(0)
    assert len(caught) == 1 and "CPU" in str(caught[0].message)
    caffe.set_solver_count(2)
    caffe.set_solver_rank(1)
    assert (caffe.solver_count(), caffe.solver_rank()) == (2, 1)
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)
    timer = caffe.Timer()
    timer.start()
    timer.stop()
    assert timer.ms >= 0
    assert isinstance(caffe.__version__, str)
