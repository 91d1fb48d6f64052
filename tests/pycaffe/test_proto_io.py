"""caffe_pb2 against solverkit's own codec and reader; caffe.io; net_spec; coord_map; draw."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
import solverkit as sk
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2
from solverkit.caffe.messages import BLOB_PROTO, DATUM
from solverkit.caffe.weights import read_caffemodel
from solverkit.protobuf import decode, encode


def test_blobproto_and_datum_agree_with_our_codec():
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    ours = encode({"shape": {"dim": np.array(array.shape)}, "data": array.ravel()}, BLOB_PROTO)
    theirs = caffe_pb2.BlobProto.FromString(ours)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(theirs), array)
    back = decode(caffe.io.array_to_blobproto(array).SerializeToString(), BLOB_PROTO)
    np.testing.assert_array_equal(back["data"].reshape(back["shape"]["dim"]), array)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    image = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    datum = caffe.io.array_to_datum(image, label=4)
    fields = decode(datum.SerializeToString(), DATUM)
    assert fields["data"] == image.tobytes() and fields["label"] == 4
    assert np.array_equal(caffe.io.datum_to_array(datum), image)
    assert caffe.io.datum_to_array(caffe.io.array_to_datum(image / 2.0)).dtype == np.float64
    with pytest.raises(ValueError, match="Incorrect array shape"):
        caffe.io.array_to_datum(image[0])
    arrays = [array, np.ones((2, 2))]
    got = caffe.io.blobprotovector_str_to_arraylist(
        caffe.io.arraylist_to_blobprotovector_str(arrays))
    assert all(np.array_equal(a, b) for a, b in zip(arrays, got))


def lenet(batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                         dict(dim=[batch_size])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=50, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def test_net_spec_text_is_read_alike_by_protobuf_and_by_solverkit(tmp_path):
    proto = lenet(4)
    text = str(proto)
    assert 'name: "relu1"' in text and 'top: "ip1"' in text          # in place, named
    parsed = text_format.Parse(text, caffe_pb2.NetParameter())
    assert parsed == proto
    assert caffe_pb2.NetParameter.FromString(proto.SerializeToString()) == proto
    path = tmp_path / "lenet.prototxt"
    path.write_text(text)
    net = sk.Net(str(path), "TRAIN")
    assert net.layer_names == [layer.name for layer in parsed.layer]
    for layer, spec in zip(parsed.layer, net.layer_specs):
        assert (list(layer.bottom), list(layer.top), layer.type) == \
            (spec.bottom, spec.top, spec.type)
    assert net.blobs["conv1"].shape == (4, 20, 24, 24)
    assert [p.lr_mult for p in net.layer_specs[5].param] == [1, 2]


def test_net_spec_automatic_names_and_errors():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3]))
    top = L.ReLU(L.ReLU(n.data))
    names = [layer.name for layer in caffe.to_proto(top).layer]
    assert names == ["Input1", "ReLU1", "ReLU2"]
    silence = L.Silence(n.data, ntop=0)
    assert [layer.name for layer in caffe.to_proto(n.data).layer] == ["Input1"]
    assert silence.ntop == 0
    with pytest.raises(TypeError, match="Convolution input 0 is not a Top"):
        L.Convolution("data")
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE


def test_coord_map_crop_aligns_a_deconvolved_map():
    from caffe.coord_map import coord_map_from_to, crop
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 100, 100]))
    n.conv = L.Convolution(n.data, kernel_size=3, pad=100, num_output=1)
    n.pool = L.Pooling(n.conv, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(kernel_size=4, stride=2,
                                                          num_output=1))
    axis, a, b = coord_map_from_to(n.up, n.data)
    assert axis == 1 and a == 1 and b == -(100 - 1 + 1)     # pad 100, then the conv's 1
    n.score = crop(n.up, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and list(layer.crop_param.offset) == [100]


def test_draw_gives_dot_text(tmp_path):
    dot = caffe.draw.draw_net(lenet(2), "LR", ext="dot").decode()
    assert dot.startswith("digraph") and '"conv1_Convolution" -> "conv1_blob" [label=20]' in dot
    assert "kernel size: 5" in dot and "#90EE90" in dot      # the in-place ReLU is green
    caffe.draw.draw_net_to_file(lenet(2), str(tmp_path / "n.raw"), phase=caffe.TRAIN)
    assert (tmp_path / "n.raw").read_text() == dot


def test_transformer_round_trip_and_errors():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    image = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    x = t.preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[[2, 1, 0]] * 255 -
                np.array([10, 20, 30])[:, None, None]) * 0.5
    np.testing.assert_allclose(x, expected, rtol=1e-5)
    np.testing.assert_allclose(t.deprocess("data", x), image, rtol=1e-5, atol=1e-6)
    assert t.preprocess("data", np.ones((8, 10, 3))).shape == (3, 4, 5)   # resized first
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.preprocess("x", image)
    with pytest.raises(Exception, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels"):
        t.set_mean("data", np.zeros(2))


def test_load_image_resize_and_oversample(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgb = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    img = caffe.io.load_image(str(tmp_path / "a.png"))
    assert img.dtype == np.float32 and img.shape == (6, 8, 3)
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-6)
    gray = caffe.io.load_image(str(tmp_path / "a.png"), color=False)
    assert gray.shape == (6, 8, 1)
    np.testing.assert_allclose(gray[..., 0], rgb @ [0.2125, 0.7154, 0.0721] / 255, atol=1e-5)
    cv2 = pytest.importorskip("cv2")
    resized = caffe.io.resize_image(img, (12, 16))
    reference = cv2.resize(img, (16, 12), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resized, reference, atol=1e-5)
    crops = caffe.io.oversample([img], (4, 4))
    assert crops.shape == (10, 4, 4, 3)
    assert np.array_equal(crops[0], img[:4, :4]) and np.array_equal(crops[5], img[:4, :4][:, ::-1])
    assert np.array_equal(crops[4], img[1:5, 2:6])


def test_net_and_solver_take_caffe_pb2_messages(tmp_path):
    proto = lenet(3)
    net = caffe.Net(proto, caffe.TRAIN)
    assert net._layer_names == [layer.name for layer in proto.layer]
    solver_param = caffe_pb2.SolverParameter(base_lr=0.01, max_iter=2, display=0,
                                             snapshot_prefix=str(tmp_path / "s"))
    solver_param.net_param.CopyFrom(proto)
    solver = caffe.SGDSolver(solver_param)
    solver.step(2)
    assert solver.iter == 2 and solver.param.base_lr == 0.01
