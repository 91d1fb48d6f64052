"""Net behaviour: graph rules, phases and rules, loss weights, sharing, backward control."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import solverkit as sk
from solverkit import register_layer
from solverkit.gradient_check import check_net_gradients

GAUSS = {"type": "gaussian", "std": 1.0}


def ip(name, bottom, top, num_output, **fields):
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": top,
            "num_output": num_output, "weight_filler": GAUSS, "bias_filler": GAUSS, **fields}


def euclidean(bottom, top="loss", **fields):
    return {"name": top, "type": "EuclideanLoss", "bottom": bottom, "top": top, **fields}


# ------------------------------------------------------------------ phases and rules

RULED = [
    {"name": "input", "type": "Input", "top": "x", "shape": [[1, 2]]},
    {"name": "train_only", "type": "ReLU", "bottom": "x", "top": "a", "include": {"phase": "TRAIN"}},
    {"name": "test_only", "type": "ReLU", "bottom": "x", "top": "b", "include": [{"phase": "TEST"}]},
    {"name": "not_test", "type": "ReLU", "bottom": "x", "top": "c", "exclude": {"phase": "TEST"}},
    {"name": "stage_deploy", "type": "ReLU", "bottom": "x", "top": "d",
     "include": {"stage": "deploy"}},
    {"name": "stages_both", "type": "ReLU", "bottom": "x", "top": "e",
     "include": {"stage": ["deploy", "fast"]}},
    {"name": "not_fast", "type": "ReLU", "bottom": "x", "top": "f",
     "include": {"not_stage": "fast"}},
    {"name": "level_1_2", "type": "ReLU", "bottom": "x", "top": "g",
     "include": {"min_level": 1, "max_level": 2}},
    {"name": "train_or_level3", "type": "ReLU", "bottom": "x", "top": "h",
     "include": [{"phase": "TRAIN"}, {"min_level": 3}]},
    {"name": "exclude_deploy_test", "type": "ReLU", "bottom": "x", "top": "i",
     "exclude": {"phase": "TEST", "stage": "deploy"}},
]


@pytest.mark.parametrize("phase, level, stages, expected", [
    ("TRAIN", 0, (), ["train_only", "not_test", "not_fast", "train_or_level3",
                      "exclude_deploy_test"]),
    ("TEST", 0, (), ["test_only", "not_fast", "exclude_deploy_test"]),
    ("TEST", 0, ("deploy",), ["test_only", "stage_deploy", "not_fast"]),
    ("TEST", 0, ("deploy", "fast"), ["test_only", "stage_deploy", "stages_both"]),
    ("TRAIN", 2, ("fast",), ["train_only", "not_test", "level_1_2", "train_or_level3",
                             "exclude_deploy_test"]),
    ("TEST", 3, (), ["test_only", "not_fast", "train_or_level3", "exclude_deploy_test"]),
])
def test_include_exclude_rules(phase, level, stages, expected):
    net = sk.Net({"layers": RULED}, phase=phase, level=level, stages=stages)
    assert net.layer_names == ["input", *expected]


def test_phase_name_is_checked():
    with pytest.raises(sk.ConfigError, match="did you mean 'TRAIN'"):
        sk.Net({"layers": RULED}, phase="TRIAN")


# ------------------------------------------------------------------ graph

def test_file_order_shape_inference_and_in_place(make_net, input_layer):
    net = make_net(input_layer(x=(3, 2, 2, 2)),
                   {"name": "flat", "type": "Flatten", "bottom": "x", "top": "h"},
                   {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h",
                    "negative_slope": 0.5},
                   {"name": "sig", "type": "Sigmoid", "bottom": "h", "top": "h"},
                   ip("ip", "h", "y", 5))
    # shapes are known before any forward
    assert net.blobs["h"].shape == (3, 8) and net.blobs["y"].shape == (3, 5)
    assert net.layer_names == ["input", "flat", "relu", "sig", "ip"]
    assert list(net.blobs) == ["x", "h", "y"]                # in place: no new blob
    assert net.outputs == ["y"]
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 2))
    y = net.forward(x=x)["y"]
    h = x.reshape(3, 8)
    h = 1 / (1 + np.exp(-np.where(h > 0, h, 0.5 * h)))       # ReLU first, then Sigmoid
    w, b = (p.data for p in net.params["ip"])
    np.testing.assert_allclose(y, h @ w.T + b, rtol=1e-12)


def test_outputs_are_unread_blobs(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3), t=(2, 2)),
                   ip("ip", "x", "y", 2),
                   {"name": "relu", "type": "ReLU", "bottom": "y", "top": "y"},
                   {"name": "sm", "type": "Softmax", "bottom": "y", "top": "p"},
                   euclidean(["y", "t"]))
    assert sorted(net.outputs) == ["loss", "p"]
    out = net.forward(x=np.ones((2, 3)), t=np.zeros((2, 2)))
    assert set(out) == {"loss", "p"} and isinstance(out["loss"], float)


def test_fan_out_sums_diffs(make_net, input_layer):
    """x feeds two InnerProducts: dL/dx = dy1 W1 + dy2 W2, the blob diff holds the sum."""
    net = make_net(input_layer(x=(2, 3), t1=(2, 2), t2=(2, 4)),
                   ip("ip1", "x", "y1", 2), ip("ip2", "x", "y2", 4),
                   euclidean(["y1", "t1"], "loss1"), euclidean(["y2", "t2"], "loss2"))
    rng = np.random.default_rng(1)
    x, t1, t2 = rng.standard_normal((2, 3)), rng.standard_normal((2, 2)), rng.standard_normal((2, 4))
    net.forward(x=x, t1=t1, t2=t2)
    net.backward()
    (w1, b1), (w2, b2) = ([p.data for p in net.params[k]] for k in ("ip1", "ip2"))
    dy1 = (x @ w1.T + b1 - t1) / 2          # Euclidean: (a − b) / N
    dy2 = (x @ w2.T + b2 - t2) / 2
    np.testing.assert_allclose(net.blobs["x"].diff, dy1 @ w1 + dy2 @ w2, rtol=1e-12)
    np.testing.assert_allclose(net.params["ip1"][0].diff, dy1.T @ x, rtol=1e-12)


def test_fan_out_and_in_place_on_the_same_version_is_an_error(make_net, input_layer):
    with pytest.raises(sk.ConfigError, match="also reads") as err:
        make_net(input_layer(x=(2, 3)),
                 {"name": "copy", "type": "Flatten", "bottom": "x", "top": "h"},
                 ip("ip", "h", "y", 2),
                 {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h"})
    assert err.value.layer == "relu" and err.value.field == "top"


# ------------------------------------------------------------------ losses and outputs

def test_loss_weights_number_list_and_non_loss_top(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3), t=(2, 3), label=(2,)),
                   euclidean(["x", "t"], "l2", loss_weight=0.5),
                   {"name": "sml", "type": "SoftmaxWithLoss", "bottom": ["x", "label"],
                    "top": ["sml", "prob"], "loss_weight": [2.0, 0.0]},
                   # a non-loss layer with a one-element top: s = Σ x
                   {"name": "sum", "type": "InnerProduct", "bottom": "x", "top": "s",
                    "num_output": 1, "bias_term": False, "axis": 0, "loss_weight": 0.25,
                    "weight_filler": {"type": "constant", "value": 1}},
                   # a top of several elements adds weight · Σ top, as Caffe
                   {"name": "flat", "type": "Flatten", "bottom": "x", "top": "f",
                    "loss_weight": -1})
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    out = net.forward(x=x, t=t, label=[0.0, 2.0])
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    l2 = ((x - t) ** 2).sum() / 4
    sml = -np.log(p[[0, 1], [0, 2]]).mean()
    # loss tops hold the unweighted values; net.loss is the weighted sum
    assert out["l2"] == pytest.approx(l2) and out["sml"] == pytest.approx(sml)
    assert out["s"] == pytest.approx(x.sum())
    np.testing.assert_allclose(out["prob"], p)
    assert net.loss == pytest.approx(0.5 * l2 + 2 * sml + 0.25 * x.sum() - x.sum())
    net.backward()
    onehot = np.eye(3)[[0, 2]]
    expected = 0.5 * (x - t) / 2 + 2 * (p - onehot) / 2 + 0.25 - 1
    np.testing.assert_allclose(net.blobs["x"].diff, expected, rtol=1e-10)


@pytest.mark.parametrize("reader_propagates", [True, False])
def test_loss_weight_on_a_top_that_later_layers_read(make_net, input_layer, reader_propagates):
    """As Caffe (which splits such a top): dL/dy = weight + whatever the readers send back."""
    net = make_net(input_layer(x=(2, 3), t=(2, 3)),
                   {"name": "th", "type": "TanH", "bottom": "x", "top": "y", "loss_weight": 0.5},
                   euclidean(["y", "t"], propagate_down=[reader_propagates, True]))
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    net.forward(x=x, t=t)
    y = np.tanh(x)
    assert net.loss == pytest.approx(0.5 * y.sum() + ((y - t) ** 2).sum() / 4)
    for _ in range(2):                       # the same result on a second pass
        net.backward()
        dy = 0.5 + ((y - t) / 2 if reader_propagates else 0)
        np.testing.assert_allclose(net.blobs["y"].diff, np.broadcast_to(dy, y.shape))
        np.testing.assert_allclose(net.blobs["x"].diff, dy * (1 - y * y), rtol=1e-12)
    if reader_propagates:
        assert set(check_net_gradients(net)) == {"input:x", "input:t"}


def test_loss_weight_count_must_match_tops(make_net, input_layer):
    with pytest.raises(sk.ConfigError, match="loss_weight has 2 values for 1 tops") as err:
        make_net(input_layer(x=(2, 3), t=(2, 3)), euclidean(["x", "t"], loss_weight=[1, 2]))
    assert err.value.field == "loss_weight" and err.value.layer == "loss"


def test_backward_seeds_outputs_and_rejects_unknown(make_net, input_layer):
    net = make_net(input_layer(x=(2, 2)), {"name": "th", "type": "TanH", "bottom": "x",
                                           "top": "y"})
    x = np.array([[0.0, 1], [-1, 2]])
    net.forward(x=x)
    net.backward(y=np.full((2, 2), 2.0))
    np.testing.assert_allclose(net.blobs["x"].diff, 2 * (1 - np.tanh(x) ** 2))
    with pytest.raises(sk.ConfigError, match="did you mean 'y'"):
        net.backward(yy=np.ones((2, 2)))


# ------------------------------------------------------------------ parameters

def test_weight_sharing_by_param_name(make_net, input_layer):
    shared = [{"name": "w"}, {"name": "b"}]
    net = make_net(input_layer(a=(2, 3), b=(2, 3), t=(2, 2)),
                   ip("ip_a", "a", "ya", 2, param=shared),
                   ip("ip_b", "b", "yb", 2, param=shared),
                   {"name": "sum", "type": "Eltwise", "bottom": ["ya", "yb"], "top": "y"},
                   euclidean(["y", "t"]))
    assert net.params["ip_a"][0] is net.params["ip_b"][0]
    assert net.params["ip_a"][1] is net.params["ip_b"][1]
    assert [p.key for p in net.learnable_params] == ["ip_a/0", "ip_a/1"]
    rng = np.random.default_rng(3)
    a, b, t = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((2, 2))
    net.forward(a=a, b=b, t=t)
    net.clear_param_diffs()
    net.backward()
    w, bias = (p.data for p in net.params["ip_a"])
    dy = (a @ w.T + b @ w.T + 2 * bias - t) / 2
    np.testing.assert_allclose(net.params["ip_a"][0].diff, dy.T @ a + dy.T @ b, rtol=1e-12)
    np.testing.assert_allclose(net.params["ip_b"][1].diff, 2 * dy.sum(axis=0), rtol=1e-12)
    worst = check_net_gradients(net)
    assert {"param:ip_a/0", "param:ip_a/1"} <= set(worst)


def test_shared_param_shapes_must_agree(make_net, input_layer):
    with pytest.raises(sk.ConfigError, match="shared parameter 'w'") as err:
        make_net(input_layer(a=(2, 3), b=(2, 4)),
                 ip("ip_a", "a", "ya", 2, param=[{"name": "w"}]),
                 ip("ip_b", "b", "yb", 2, param=[{"name": "w"}]))
    assert (err.value.layer, err.value.field) == ("ip_b", "param")


def test_shared_param_multipliers_must_agree(make_net, input_layer):
    with pytest.raises(sk.ConfigError, match="lr_mult 2.0 here but 1.0") as err:
        make_net(input_layer(a=(2, 3), b=(2, 3)),
                 ip("ip_a", "a", "ya", 2, param=[{"name": "w", "lr_mult": 1}]),
                 ip("ip_b", "b", "yb", 2, param=[{"name": "w", "lr_mult": 2}]))
    assert (err.value.layer, err.value.field) == ("ip_b", "param")
    # not giving it means "the owner's": no error
    make_net(input_layer(a=(2, 3), b=(2, 3)),
             ip("ip_a", "a", "ya", 2, param=[{"name": "w", "lr_mult": 3}]),
             ip("ip_b", "b", "yb", 2, param=[{"name": "w"}]))


def test_propagate_down_false_stops_the_gradient(make_net, input_layer):
    net = make_net(input_layer(a=(2, 2), b=(2, 2)),
                   {"name": "prod", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                    "operation": "PROD", "propagate_down": [True, False]})
    assert net.bottom_need_backward[1] == [True, False]
    net.forward(a=np.full((2, 2), 2.0), b=np.full((2, 2), 3.0))
    net.blobs["b"].diff[...] = 7.0
    net.backward(y=np.ones((2, 2)))
    assert net.blobs["a"].diff.tolist() == [[3, 3], [3, 3]]
    assert net.blobs["b"].diff.tolist() == [[7, 7], [7, 7]]     # untouched


def test_lr_mult_zero_means_no_parameter_gradient(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3), t=(2, 2)),
                   ip("ip", "x", "y", 2, param=[{"lr_mult": 0}, {"lr_mult": 2, "decay_mult": 0}]),
                   euclidean(["y", "t"]))
    layer = net.layer("ip")
    assert layer.param_propagate_down == [False, True]
    assert [(p.lr_mult, p.decay_mult) for p in net.learnable_params] == [(0, 1), (2, 0)]
    net.forward(x=np.ones((2, 3)), t=np.zeros((2, 2)))
    net.backward()
    assert not net.params["ip"][0].diff.any()
    assert net.params["ip"][1].diff.any()


@register_layer("TestConstantSource")
class ConstantSource(sk.Layer):
    """Like a Data layer: produces a blob (here 1, 2, 3, ...) that wants no gradient."""

    class Params(sk.LayerParams):
        shape: list[int]

    max_bottoms = 0
    min_tops = max_tops = 1
    has_backward = False

    def reshape(self, bottom, top):
        top[0].reshape(self.params.shape)

    def forward(self, bottom, top):
        top[0].data[...] = np.arange(1, top[0].count + 1).reshape(top[0].shape)


def _sourced(ip_lr_mult, **net_fields):
    return sk.Net({"dtype": "float64", **net_fields, "layers": [
        {"name": "data", "type": "TestConstantSource", "top": "x", "shape": [2, 3]},
        {"name": "target", "type": "TestConstantSource", "top": "t", "shape": [2, 2]},
        ip("ip", "x", "y", 2, param=[{"lr_mult": ip_lr_mult}, {"lr_mult": ip_lr_mult}]),
        {"name": "relu", "type": "ReLU", "bottom": "y", "top": "y", "negative_slope": 0.5},
        euclidean(["y", "t"])]}, seed=0)


def test_need_backward_follows_learnable_params():
    """Caffe's analysis: a layer runs backward only if a bottom or a parameter needs it."""
    learning = _sourced(1)
    assert learning.layer_need_backward == [False, False, True, True, True]
    assert learning.bottom_need_backward[2] == [False]          # data tops get no diff
    frozen = _sourced(0)
    assert frozen.layer_need_backward == [False, False, False, False, False]
    frozen.forward()
    frozen.backward()
    assert not frozen.params["ip"][0].diff.any() and not frozen.blobs["y"].diff.any()


def test_force_backward():
    forced = _sourced(0, force_backward=True)
    assert forced.layer_need_backward == [False, False, True, True, True]
    forced.forward()
    forced.backward()
    # the data blob now gets its gradient: dL/dx = dy W, dy = relu'·(y − t)/N
    w, b = (p.data for p in forced.params["ip"])
    x, t = np.arange(1.0, 7).reshape(2, 3), np.arange(1.0, 5).reshape(2, 2)
    pre = x @ w.T + b
    y = np.where(pre > 0, pre, 0.5 * pre)
    dy = (y - t) / 2 * np.where(pre > 0, 1, 0.5)
    np.testing.assert_allclose(forced.blobs["x"].diff, dy @ w, rtol=1e-12)
    assert not forced.params["ip"][0].diff.any()                # lr_mult 0 still holds


def test_param_diffs_accumulate_and_clear(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3), t=(2, 2)), ip("ip", "x", "y", 2), euclidean(["y", "t"]))
    net.forward(x=np.ones((2, 3)), t=np.zeros((2, 2)))
    net.backward()
    once = net.params["ip"][0].diff.copy()
    x_diff = net.blobs["x"].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params["ip"][0].diff, 2 * once)
    np.testing.assert_allclose(net.blobs["x"].diff, x_diff)        # blob diffs overwrite
    net.clear_param_diffs()
    assert not net.params["ip"][0].diff.any() and not net.params["ip"][1].diff.any()


# ------------------------------------------------------------------ running

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype(make_net, input_layer, dtype):
    net = make_net(input_layer(x=(2, 3), t=(2, 2)), ip("ip", "x", "y", 2),
                   euclidean(["y", "t"]), dtype=dtype)
    net.forward(x=np.ones((2, 3)), t=np.zeros((2, 2)))
    net.backward()
    arrays = [b.data for b in net.blobs.values()] + [b.diff for b in net.blobs.values()]
    arrays += [p.blob.data for p in net.learnable_params] + [p.blob.diff for p in net.learnable_params]
    assert {a.dtype for a in arrays} == {np.dtype(dtype)}


def test_default_dtype_is_float32():
    net = sk.Net({"layers": [{"name": "input", "type": "Input", "top": "x", "shape": [[1]]}]})
    assert net.blobs["x"].data.dtype == np.float32


def test_new_batch_size_reshapes_the_net(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3), t=(2, 2)), ip("ip", "x", "y", 2),
                   {"name": "relu", "type": "ReLU", "bottom": "y", "top": "y"},
                   euclidean(["y", "t"]))
    w, b = (p.data for p in net.params["ip"])
    x = np.random.default_rng(4).standard_normal((5, 3))
    loss = net.forward(x=x, t=np.zeros((5, 2)))["loss"]
    assert net.blobs["y"].shape == (5, 2)
    assert loss == pytest.approx((np.maximum(x @ w.T + b, 0) ** 2).sum() / 10)
    net.backward()
    assert net.blobs["x"].diff.shape == (5, 3)
    with pytest.raises(sk.ShapeError, match="2 dimensions"):
        net.forward(x=np.ones(3))


def test_input_with_another_feature_size_fails_in_the_inner_product(write_net, input_layer):
    path = write_net({"layers": [input_layer(x=(2, 3)), ip("ip", "x", "y", 2)]})
    net = sk.Net(str(path))
    with pytest.raises(sk.ShapeError) as err:
        net.forward(x=np.ones((2, 4)))
    message = str(err.value)
    assert "net.yaml" in message and "layer 'ip'" in message and "field 'bottom'" in message
    assert "4 inputs per sample" in message and "made for 3" in message


def test_forward_returns_copies(make_net, input_layer):
    net = make_net(input_layer(x=(2, 2)), {"name": "relu", "type": "ReLU", "bottom": "x",
                                           "top": "y"})
    out = net.forward(x=np.ones((2, 2)))
    out["y"][...] = 42
    assert net.blobs["y"].data.tolist() == [[1, 1], [1, 1]]
    assert net.forward(x=np.ones((2, 2)))["y"].tolist() == [[1, 1], [1, 1]]


def test_seeded_fillers_are_reproducible(make_net, input_layer):
    def weights(seed):
        net = make_net(input_layer(x=(2, 3)), ip("ip1", "x", "y", 4),
                       ip("ip2", "y", "z", 2, weight_filler={"type": "xavier"}), seed=seed)
        return [p.blob.data.copy() for p in net.learnable_params]

    a, b, c = weights(5), weights(5), weights(6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not any(np.array_equal(u, v) for u, v in zip(a, c))
    assert not np.array_equal(a[1][:2], a[3])     # layers draw from their own streams


def test_plugin_layer(write_net, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    path = write_net("""
name: plugged
dtype: float64
plugins: [plugin_layers]
layers:
  - {name: input, type: Input, top: x, shape: [[2, 2]]}
  - {name: scale, type: TestScale, bottom: x, top: y, factor: 3}
""")
    net = sk.Net(path)
    assert net.forward(x=[[1.0, 2], [3, 4]])["y"].tolist() == [[3, 6], [9, 12]]
    net.backward(y=np.ones((2, 2)))
    assert net.blobs["x"].diff.tolist() == [[3, 3], [3, 3]]
    with pytest.raises(sk.ConfigError, match="did you mean 'factor'"):
        sk.Net(path.read_text().replace("factor: 3", "facter: 3"))


def test_missing_plugin_module(write_net):
    path = write_net({"plugins": ["no_such_plugin_module"], "layers": []})
    with pytest.raises(sk.ConfigError, match="cannot import plugin module") as err:
        sk.Net(path)
    assert err.value.field == "plugins"


def test_sharing_with_another_net_keeps_name_sharing_of_layers_it_lacks():
    """TRAIN has 'a'; TEST has 'a' and 'b', both sharing 'w': b must see TRAIN's weights."""
    spec = {"layers": [
        {"name": "input", "type": "Input", "top": "x", "shape": [[2, 3]]},
        {"name": "a", "type": "InnerProduct", "bottom": "x", "top": "ya", "num_output": 2,
         "param": [{"name": "w"}], "bias_term": False},
        {"name": "b", "type": "InnerProduct", "bottom": "x", "top": "yb", "num_output": 2,
         "param": [{"name": "w"}], "bias_term": False, "include": {"phase": "TEST"}},
    ]}
    train = sk.Net(spec, phase="TRAIN", seed=1)
    train.params["a"][0].data[...] = 5.0
    test = sk.Net(spec, phase="TEST", seed=2, share_from=train)
    assert test.params["a"][0] is train.params["a"][0]
    assert test.params["b"][0] is train.params["a"][0]
    assert [p.blob for p in test.learnable_params] == [train.params["a"][0]]


def test_a_label_out_of_range_met_in_a_forward_names_the_net_file_and_layer(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(yaml.safe_dump({"name": "n", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [[2, 3]]},
        {"name": "label", "type": "Input", "top": "label", "shape": [[2]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 4},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]}))
    net = sk.Net(str(spec))
    with pytest.raises(sk.SolverkitError) as caught:
        net.forward(data=np.zeros((2, 3), np.float32), label=np.array([1, 7], np.float32))
    message = str(caught.value)
    assert message.startswith(f"{spec}:") and "layer 'loss'" in message
    assert "label 7 is outside 0..3" in message
