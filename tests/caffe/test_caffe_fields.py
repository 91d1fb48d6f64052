"""Fields Caffe accepts that solverkit once refused: loss_param on every loss, fields that only
tune Caffe's implementation (noted, no effect), layer-level phase, rand_skip, force_color,
force_gray and force_encoded_color (honoured)."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

import solverkit as sk
from solverkit.caffe.messages import encode_datum
from solverkit.spec.net import load_net_spec

LOSSES = """\
input: "a" input_shape { dim: 2 dim: 3 }
input: "b" input_shape { dim: 2 dim: 3 }
input: "y" input_shape { dim: 2 }
input: "s" input_shape { dim: 2 dim: 1 }
input: "c" input_shape { dim: 1 dim: 1 dim: 2 dim: 2 }
layer { name: "euclid" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l1"
        loss_param { normalization: FULL ignore_label: 2 } }
layer { name: "hinge" type: "HingeLoss" bottom: "a" bottom: "y" top: "l2"
        loss_param { normalize: false } }
layer { name: "prob" type: "Softmax" bottom: "a" top: "p" }
layer { name: "mlogistic" type: "MultinomialLogisticLoss" bottom: "p" bottom: "y" top: "l3"
        loss_param { ignore_label: -1 } }
layer { name: "contrastive" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "s"
        top: "l4" loss_param { normalization: VALID } }
layer { name: "conv" type: "Convolution" bottom: "c" top: "conv"
        convolution_param { num_output: 1 kernel_size: 1 force_nd_im2col: true engine: CAFFE } }
"""


def test_loss_param_on_every_loss_is_accepted_and_caffes_unused_ones_noted(caplog):
    with caplog.at_level(logging.INFO, logger="solverkit"):
        net = sk.Net(LOSSES, phase="TEST")
    a = np.array([[1.0, 2, 3], [0, -1, 2]])
    b = np.array([[0.0, 2, 1], [1, 1, 1]])
    out = net.forward(a=a, b=b, y=np.array([0.0, 2.0]), s=np.array([[1.0], [0.0]]),
                      c=np.ones((1, 1, 2, 2)))
    # EuclideanLoss keeps Caffe's 1/(2N) whatever loss_param says (Caffe ignores it too)
    assert out["l1"] == pytest.approx(np.sum((a - b) ** 2) / 4, rel=1e-6)
    notes = " ".join(r.getMessage() for r in caplog.records)
    for field in ("loss_param.normalization (unused by EuclideanLoss", "force_nd_im2col",
                  "loss_param.ignore_label (unused by MultinomialLogisticLoss"):
        assert field in notes


DROPOUT = """\
input: "x" input_shape { dim: 4 dim: 50 }
layer { name: "drop" type: "Dropout" bottom: "x" top: "y" phase: TEST
        dropout_param { dropout_ratio: 0.5 } }
layer { name: "drop2" type: "Dropout" bottom: "x" top: "z" dropout_param { dropout_ratio: 0.5 } }
"""


def test_a_layer_level_phase_runs_the_layer_in_that_phase():
    net = sk.Net(DROPOUT, phase="TRAIN", seed=0)
    x = np.ones((4, 50))
    out = net.forward(x=x)
    np.testing.assert_array_equal(out["y"], x)          # a TEST dropout: the identity
    assert np.any(out["z"] == 0)                        # the TRAIN one drops
    assert load_net_spec(DROPOUT).layers[1].phase == "TEST"
    from solverkit.caffe import net_to_prototxt
    assert "phase: TEST" in net_to_prototxt(load_net_spec(DROPOUT))


def skip_net(source: str, rand_skip: int) -> str:
    return f"""\
layer {{ name: "data" type: "Data" top: "data" top: "label"
        data_param {{ source: "{source}" batch_size: 2 rand_skip: {rand_skip} }} }}
"""


def test_rand_skip_starts_at_a_random_record_below_it(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20))
    (tmp_path / "net.prototxt").write_text(skip_net("d.npz", 7))
    starts = set()
    for seed in range(12):
        net = sk.Net(tmp_path / "net.prototxt", seed=seed)
        net.forward()
        start = int(net.blobs["label"].data[0])
        np.testing.assert_array_equal(net.blobs["label"].data, [start, start + 1])
        starts.add(start)
        again = sk.Net(tmp_path / "net.prototxt", seed=seed)       # the seed decides
        again.forward()
        assert int(again.blobs["label"].data[0]) == start
    assert starts <= set(range(7)) and len(starts) > 2
    (tmp_path / "net.prototxt").write_text(skip_net("d.npz", 0))
    net = sk.Net(tmp_path / "net.prototxt", seed=0)
    net.forward()
    assert net.blobs["label"].data.tolist() == [0, 1]


@pytest.mark.parametrize("fields,channels", [("", 1), ("force_encoded_color: true", 3)])
def test_force_color_and_gray_decide_how_encoded_records_decode(tmp_path, fields, channels):
    lmdb = pytest.importorskip("lmdb")
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, pixels in enumerate([gray, gray]):
            buffer = io.BytesIO()
            image_module.fromarray(pixels).save(buffer, format="PNG")
            txn.put(f"{i:03d}".encode(), encode_datum(buffer.getvalue(), i, encoded=True))
    env.close()
    text = f"""\
layer {{ name: "data" type: "Data" top: "data" top: "label"
        data_param {{ source: "db" batch_size: 2 backend: LMDB {fields} }} }}
"""
    (tmp_path / "net.prototxt").write_text(text)
    net = sk.Net(tmp_path / "net.prototxt")
    net.forward()
    assert net.blobs["data"].shape == (2, channels, 5, 6)
    for c in range(channels):                 # a gray image made colour: equal channels
        np.testing.assert_array_equal(net.blobs["data"].data[0, c], gray)
    with_gray = text.replace("data_param", "transform_param { force_gray: true } data_param")
    (tmp_path / "net.prototxt").write_text(with_gray.replace(fields, ""))
    assert sk.Net(tmp_path / "net.prototxt").blobs["data"].shape == (2, 1, 5, 6)
    both = text.replace("data_param",
                        "transform_param { force_gray: true force_color: true } data_param")
    (tmp_path / "net.prototxt").write_text(both)
    with pytest.raises(sk.SolverkitError, match="force_color or force_gray"):
        sk.Net(tmp_path / "net.prototxt")
