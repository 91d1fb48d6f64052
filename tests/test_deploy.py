"""Deploy nets derived from train/test nets, and Net.predict in batches."""

from __future__ import annotations

import numpy as np
import pytest
from example_data import EXAMPLE_IDS, EXAMPLE_NETS, example_spec

import solverkit as sk
from solverkit.deploy import derive_deployment
from solverkit.layers.base import LossLayer
from solverkit.registry import layer_class


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("config", EXAMPLE_NETS, ids=EXAMPLE_IDS)
def test_derived_deploy_net_builds_without_loss_and_gives_the_softmax_of_the_scores(
        config, tmp_path):
    path = example_spec(config, tmp_path)
    spec = sk.deploy_net(path)
    types = [layer.type for layer in spec.layers]
    assert not any(layer_class(t).is_loss or issubclass(layer_class(t), LossLayer)
                   for t in types)
    assert "Data" not in types and "Input" in types
    deploy = sk.Net(spec, phase="TEST", seed=0)
    assert deploy.loss_weights == []
    test = sk.Net(path, phase="TEST", seed=0)
    rng = np.random.default_rng(0)
    for layer in test.layers:              # weights that are not the fillers' constants
        for blob in layer.blobs:
            blob.data[...] = rng.uniform(0.5, 1.5, blob.shape) if layer.type == "BatchNorm" \
                else rng.normal(size=blob.shape) * 0.3
    with_loss = [s for s in test.layer_specs if s.type == "SoftmaxWithLoss"]
    path_weights = tmp_path / "w.model.npz"
    test.save(path_weights)
    deploy.load(path_weights, allow_extra=True)
    test.forward()
    feeds = {name: test.blobs[name].data for name in deploy.input_blobs}
    got = deploy.forward(**feeds)
    try:
        if with_loss:
            scores = test.blobs[with_loss[0].bottom[0]].data
            np.testing.assert_allclose(got["prob"], _softmax(scores), rtol=1e-5, atol=1e-6)
            assert deploy.outputs == ["prob"]
        for name in deploy.outputs:
            if name != "prob":
                np.testing.assert_allclose(np.asarray(got[name]), test.blobs[name].data,
                                           rtol=1e-6)
    finally:
        test.close()


def test_input_shapes_and_transform_are_the_test_data_layers():
    deployment = derive_deployment({"name": "n", "layers": [
        {"name": "d", "type": "Data", "top": ["data", "label"], "source": "builtin:digits/test",
         "batch_size": 30, "include": {"phase": "TEST"},
         "transform": {"scale": 0.5, "crop_size": 6, "mean_value": 3}},
        {"name": "d", "type": "Data", "top": ["data", "label"],
         "source": "builtin:digits/train", "batch_size": 10, "include": {"phase": "TRAIN"}},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 3},
        {"name": "acc", "type": "Accuracy", "bottom": ["ip", "label"], "top": "acc"},
        {"name": "sil", "type": "Silence", "bottom": "label"},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"},
        {"name": "own", "type": "Softmax", "bottom": "ip", "top": "prob"},
        {"name": "prob", "type": "Softmax", "bottom": "ip", "top": "only_in_train",
         "include": {"phase": "TRAIN"}}]})
    spec = deployment.spec
    assert [(s.name, s.type, s.top) for s in spec.layers] == [
        ("d", "Input", ["data"]), ("ip", "InnerProduct", ["ip"]),
        ("prob_2", "Softmax", ["prob_2"]), ("own", "Softmax", ["prob"])]
    assert spec.layers[0].params.shape == [[30, 1, 6, 6]]
    source = deployment.inputs["data"]
    assert source.shape == (1, 6, 6) and source.pixel_max == 16
    assert source.transform.scale == 0.5 and source.transform.crop_size == 6
    assert source.transform.sample_shape == (1, 8, 8) and not source.transform.train


def test_a_net_written_for_deployment_is_used_as_is():
    spec = sk.load_net_spec({"name": "n", "layers": [
        {"name": "in", "type": "Input", "top": "x", "shape": [[1, 4]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2},
        {"name": "sm", "type": "Softmax", "bottom": "y", "top": "p"}]})
    assert sk.deploy_net(spec) is spec
    assert not derive_deployment(spec).derived


def test_predict_in_batches_equals_one_forward_and_touches_no_diff():
    net = sk.Net(sk.deploy_net("configs/digits/lenet_net.yaml"), phase="TEST", seed=3)
    x = np.random.default_rng(0).uniform(0, 1, (1000, 1, 8, 8)).astype(np.float32)
    out = net.predict(x, batch_size=64)
    assert set(out) == {"prob"} and out["prob"].shape == (1000, 10)
    assert all(not blob.has_diff for blob in net.blobs.values())
    assert all(not b.has_diff for layer in net.layers for b in layer.blobs)
    whole = net.forward(data=x)["prob"]
    np.testing.assert_allclose(out["prob"], whole, rtol=1e-5, atol=1e-7)
    assert not np.allclose(out["prob"][:64], out["prob"][64:128])


def test_predict_errors():
    net = sk.Net(sk.deploy_net("configs/digits/mlp_net.yaml"), phase="TEST")
    with pytest.raises(sk.ShapeError, match="dimensions"):
        net.predict(np.zeros((3, 64), np.float32))
    with pytest.raises(sk.ConfigError, match="batch_size"):
        net.predict(np.zeros((3, 1, 8, 8), np.float32), batch_size=0)
    with pytest.raises(sk.ConfigError, match="phase='TEST'"):
        sk.Net(sk.deploy_net("configs/digits/mlp_net.yaml")).predict(np.zeros((1, 1, 8, 8)))
    with pytest.raises(sk.ConfigError, match="deploy_net"):
        sk.Net("configs/digits/mlp_net.yaml", phase="TEST").predict(np.zeros((1, 1, 8, 8)))


def test_a_softmax_with_loss_with_a_probability_top_makes_that_blob():
    spec = sk.deploy_net({"name": "n", "layers": [
        {"name": "d", "type": "Data", "top": ["data", "label"],
         "source": "builtin:digits/test", "batch_size": 4},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 10,
         "weight_filler": {"type": "gaussian"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"],
         "top": ["loss", "p"]},
        {"name": "top1", "type": "ArgMax", "bottom": "p", "top": "best"}]})
    assert [(s.name, s.type, s.top) for s in spec.layers] == [
        ("d", "Input", ["data"]), ("ip", "InnerProduct", ["ip"]), ("loss", "Softmax", ["p"]),
        ("top1", "ArgMax", ["best"])]
    net = sk.Net(spec, phase="TEST")
    out = net.forward(data=np.random.default_rng(0).normal(size=(3, 1, 8, 8)))
    assert out["best"].reshape(-1).tolist() == net.blobs["p"].data.argmax(axis=1).tolist()
