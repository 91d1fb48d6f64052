"""Forward values and shapes of the common layers against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from solverkit import ConfigError, ShapeError


def test_lecture_circuit_from_eltwise(make_net, input_layer):
    """f(x, y, z) = (x + y)·z at (-2, 5, -4): f = -12, df/dx = df/dy = z = -4, df/dz = x + y = 3."""
    net = make_net(
        input_layer(x=(1,), y=(1,), z=(1,)),
        {"name": "q", "type": "Eltwise", "bottom": ["x", "y"], "top": "q", "operation": "SUM"},
        {"name": "f", "type": "Eltwise", "bottom": ["q", "z"], "top": "f", "operation": "PROD"})
    out = net.forward(x=[-2.0], y=[5.0], z=[-4.0])
    assert out == {"f": -12.0}
    net.backward(f=1.0)
    assert net.blobs["x"].diff.tolist() == [-4.0]
    assert net.blobs["y"].diff.tolist() == [-4.0]
    assert net.blobs["z"].diff.tolist() == [3.0]
    assert net.blobs["q"].diff.tolist() == [-4.0]


def test_inner_product_forward(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3)),
                   {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y",
                    "num_output": 2})
    w, b = net.params["ip"]
    assert w.shape == (2, 3) and b.shape == (2,)
    w.data[...] = [[1, 0, -1], [2, 1, 0]]
    b.data[...] = [0.5, -1]
    y = net.forward(x=[[1, 2, 3], [0, -1, 4]])["y"]
    assert y.tolist() == [[1 - 3 + 0.5, 2 + 2 - 1], [-4 + 0.5, -1 - 1]]


def test_inner_product_axis_and_transpose(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3, 2)),
                   {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y",
                    "num_output": 4, "axis": 2, "transpose": True, "bias_term": False,
                    "weight_filler": {"type": "gaussian"}})
    (w,) = net.params["ip"]
    assert w.shape == (2, 4)                 # transpose stores (fan_in, num_output)
    x = np.arange(12.0).reshape(2, 3, 2)
    y = net.forward(x=x)["y"]
    assert y.shape == (2, 3, 4)
    np.testing.assert_allclose(y, np.einsum("nsi,io->nso", x, w.data))


def test_eltwise_sum_prod_max_values(make_net, input_layer):
    a, b = np.array([[1.0, -2, 3]]), np.array([[4.0, 5, -6]])
    for fields, expected in (({"coeff": [2, -1]}, 2 * a - b),
                             ({"operation": "PROD"}, a * b),
                             ({"operation": "MAX"}, np.maximum(a, b))):
        net = make_net(input_layer(a=(1, 3), b=(1, 3)),
                       {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                        **fields})
        np.testing.assert_array_equal(net.forward(a=a, b=b)["y"], expected)


def test_eltwise_max_routes_gradient_to_the_winner(make_net, input_layer):
    net = make_net(input_layer(a=(4,), b=(4,)),
                   {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                    "operation": "MAX"})
    net.forward(a=[1.0, 5, -1, 2], b=[3.0, 0, -2, 7])
    net.backward(y=[10.0, 20, 30, 40])
    assert net.blobs["a"].diff.tolist() == [0, 20, 30, 0]
    assert net.blobs["b"].diff.tolist() == [10, 0, 0, 40]


def test_eltwise_sum_in_place_gives_each_bottom_its_coefficient(make_net, input_layer):
    net = make_net(input_layer(a=(2,), b=(2,)),
                   {"name": "copy", "type": "Flatten", "bottom": "a", "top": "h", "axis": 0},
                   {"name": "e", "type": "Eltwise", "bottom": ["h", "b"], "top": "h",
                    "coeff": [2, 3]})
    assert net.forward(a=[1.0, 2], b=[3.0, 4])["h"].tolist() == [11, 16]
    net.backward(h=[1.0, 1.0])
    assert net.blobs["a"].diff.tolist() == [2, 2]
    assert net.blobs["b"].diff.tolist() == [3, 3]


def test_eltwise_coeff_errors(make_net, input_layer):
    with pytest.raises(ShapeError, match="coeff only applies to operation SUM") as err:
        make_net(input_layer(a=(2,), b=(2,)),
                 {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                  "operation": "MAX", "coeff": [1, 2]})
    assert err.value.layer == "e" and err.value.field == "coeff"
    with pytest.raises(ShapeError, match=r"one value per bottom \(2\), got 3"):
        make_net(input_layer(a=(2,), b=(2,)),
                 {"name": "e", "type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                  "coeff": [1, 2, 3]})


@pytest.mark.parametrize("fields, shape_in, shape_out", [
    ({}, (2, 3, 4, 5), (2, 60)),
    ({"axis": 2}, (2, 3, 4, 5), (2, 3, 20)),
    ({"axis": 1, "end_axis": 2}, (2, 3, 4, 5), (2, 12, 5)),
    ({"axis": -3, "end_axis": -2}, (2, 3, 4, 5), (2, 12, 5)),
    ({"axis": 0}, (2, 3), (6,)),
    ({"axis": 1}, (2, 3), (2, 3)),
])
def test_flatten_shapes(make_net, input_layer, fields, shape_in, shape_out):
    net = make_net(input_layer(x=shape_in),
                   {"name": "flat", "type": "Flatten", "bottom": "x", "top": "y", **fields})
    x = np.arange(np.prod(shape_in), dtype=float).reshape(shape_in)
    y = net.forward(x=x)["y"]
    assert y.shape == shape_out
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))


@pytest.mark.parametrize("fields, shape_in, shape_out", [
    ({"shape": [0, -1]}, (2, 3, 4), (2, 12)),
    ({"shape": [-1]}, (2, 3, 4), (24,)),
    ({"shape": {"dim": [0, 2, -1]}}, (2, 8), (2, 2, 4)),
    ({"shape": [3, 1], "axis": 1, "num_axes": 1}, (2, 3, 4), (2, 3, 1, 4)),
    ({"shape": [1], "axis": -1}, (2, 3), (2, 3, 1)),      # Caffe: -1 appends after the last
    ({"shape": [6], "axis": 1, "num_axes": 2}, (1, 2, 3, 4), (1, 6, 4)),
    ({"shape": [0, 0, 0], "axis": 0}, (2, 3, 4), (2, 3, 4)),
    ({"shape": [], "axis": 1, "num_axes": 1}, (4, 1, 2), (4, 2)),
])
def test_reshape_shapes(make_net, input_layer, fields, shape_in, shape_out):
    net = make_net(input_layer(x=shape_in),
                   {"name": "rs", "type": "Reshape", "bottom": "x", "top": "y", **fields})
    x = np.arange(np.prod(shape_in), dtype=float).reshape(shape_in)
    y = net.forward(x=x)["y"]
    assert y.shape == shape_out
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))


@pytest.mark.parametrize("fields, message", [
    ({"shape": [-1, -1]}, "at most one dimension may be -1"),
    ({"shape": [5, -1]}, "cannot infer the -1"),
    ({"shape": [7]}, "has 24"),
    ({"shape": [0, 0, 0, 0]}, "has no axis 3"),
    ({"shape": [2], "axis": 1, "num_axes": 5}, "goes past"),
    ({"shape": [-2, 12]}, "positive, 0 \\(copy\\) or -1"),
])
def test_reshape_errors(make_net, input_layer, fields, message):
    with pytest.raises(ShapeError, match=message) as err:
        make_net(input_layer(x=(2, 3, 4)),
                 {"name": "rs", "type": "Reshape", "bottom": "x", "top": "y", **fields})
    assert err.value.layer == "rs" and err.value.field in ("shape", "num_axes")


def test_concat_values_and_backward(make_net, input_layer):
    net = make_net(input_layer(a=(2, 1), b=(2, 2)),
                   {"name": "cat", "type": "Concat", "bottom": ["a", "b"], "top": "y"})
    y = net.forward(a=[[1.0], [2.0]], b=[[3.0, 4.0], [5.0, 6.0]])["y"]
    assert y.tolist() == [[1, 3, 4], [2, 5, 6]]
    net.backward(y=[[10.0, 11, 12], [13, 14, 15]])
    assert net.blobs["a"].diff.tolist() == [[10], [13]]
    assert net.blobs["b"].diff.tolist() == [[11, 12], [14, 15]]


def test_concat_errors_name_layer_and_field(make_net, input_layer):
    with pytest.raises(ShapeError, match=r"all dimensions except axis 1 must match") as err:
        make_net(input_layer(a=(2, 1, 3), b=(2, 2, 4)),
                 {"name": "cat", "type": "Concat", "bottom": ["a", "b"], "top": "y"})
    assert (err.value.layer, err.value.field) == ("cat", "bottom")
    with pytest.raises(ShapeError, match="not both") as err:
        make_net(input_layer(a=(2, 1), b=(2, 2)),
                 {"name": "cat", "type": "Concat", "bottom": ["a", "b"], "top": "y",
                  "axis": 1, "concat_dim": 1})
    assert err.value.field == "concat_dim"
    with pytest.raises(ShapeError, match="axis 2 is out of range") as err:
        make_net(input_layer(a=(2, 1), b=(2, 2)),
                 {"name": "cat", "type": "Concat", "bottom": ["a", "b"], "top": "y", "axis": 2})
    assert err.value.field == "axis"


def test_slice_values_and_backward(make_net, input_layer):
    net = make_net(input_layer(x=(2, 4)),
                   {"name": "s", "type": "Slice", "bottom": "x", "top": ["a", "b", "c"],
                    "slice_point": [1, 3]})
    out = net.forward(x=[[0.0, 1, 2, 3], [4, 5, 6, 7]])
    assert out["a"].tolist() == [[0], [4]]
    assert out["b"].tolist() == [[1, 2], [5, 6]]
    assert out["c"].tolist() == [[3], [7]]
    net.backward(a=[[1.0], [2]], b=[[3.0, 4], [5, 6]], c=[[7.0], [8]])
    assert net.blobs["x"].diff.tolist() == [[1, 3, 4, 7], [2, 5, 6, 8]]


def test_slice_equal_split_and_errors(make_net, input_layer):
    net = make_net(input_layer(x=(6, 2)),
                   {"name": "s", "type": "Slice", "bottom": "x", "top": ["a", "b", "c"],
                    "axis": 0})
    out = net.forward(x=np.arange(12.0).reshape(6, 2))
    assert [out[k].tolist() for k in "abc"] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]],
                                                [[8, 9], [10, 11]]]
    for fields, message in (({"axis": 1}, "does not split into 3 equal parts"),
                            ({"slice_point": [2]}, "3 tops need 2 slice points"),
                            ({"slice_point": [3, 3]}, "must increase strictly"),
                            ({"slice_point": [1, 6], "axis": 0}, "must increase strictly")):
        with pytest.raises(ShapeError, match=message) as err:
            make_net(input_layer(x=(6, 2)),
                     {"name": "s", "type": "Slice", "bottom": "x", "top": ["a", "b", "c"],
                      **fields})
        assert (err.value.layer, err.value.field) == ("s", "slice_point")


def test_split_shares_data_and_sums_diffs(make_net, input_layer):
    net = make_net(input_layer(x=(2, 2)),
                   {"name": "split", "type": "Split", "bottom": "x", "top": ["a", "b", "c"]})
    out = net.forward(x=[[1.0, 2], [3, 4]])
    assert all(out[k].tolist() == [[1, 2], [3, 4]] for k in "abc")
    assert net.blobs["a"].data is net.blobs["x"].data
    assert net.blobs["c"].data is net.blobs["x"].data
    net.backward(a=np.ones((2, 2)), b=[[1.0, 2], [3, 4]], c=np.full((2, 2), 10.0))
    assert net.blobs["x"].diff.tolist() == [[12, 13], [14, 15]]
    net.forward(x=np.zeros((5, 2)))          # a new batch size: the copies follow
    assert net.blobs["b"].shape == (5, 2) and net.blobs["b"].data is net.blobs["x"].data


def _dropout_net(make_net, input_layer, phase, ratio=0.25, seed=3, shape=(50, 40)):
    return make_net(input_layer(x=shape),
                    {"name": "drop", "type": "Dropout", "bottom": "x", "top": "y",
                     "dropout_ratio": ratio}, phase=phase, seed=seed)


def test_dropout_train_is_inverted(make_net, input_layer):
    net = _dropout_net(make_net, input_layer, "TRAIN")
    x = np.random.default_rng(0).uniform(1, 2, (50, 40))
    y = net.forward(x=x)["y"]
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)      # scaled by 1 / (1 - p)
    assert abs(kept.mean() - 0.75) < 0.03                       # 2000 draws: ±3 sigma ≈ 0.029
    net.backward(y=np.ones_like(x))
    np.testing.assert_allclose(net.blobs["x"].diff, kept / 0.75)
    y2 = net.forward(x=x)["y"]
    assert not np.array_equal(y2 != 0, kept)                   # a new mask every forward


def test_dropout_test_is_identity_and_seed_fixes_the_mask(make_net, input_layer):
    x = np.random.default_rng(0).uniform(1, 2, (50, 40))
    test_net = _dropout_net(make_net, input_layer, "TEST")
    np.testing.assert_array_equal(test_net.forward(x=x)["y"], x)
    test_net.backward(y=np.full_like(x, 3.0))
    np.testing.assert_array_equal(test_net.blobs["x"].diff, np.full_like(x, 3.0))
    a = _dropout_net(make_net, input_layer, "TRAIN", seed=7).forward(x=x)["y"]
    b = _dropout_net(make_net, input_layer, "TRAIN", seed=7).forward(x=x)["y"]
    c = _dropout_net(make_net, input_layer, "TRAIN", seed=8).forward(x=x)["y"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_in_place_and_ratio_bounds(make_net, input_layer):
    net = make_net(input_layer(x=(4, 5)),
                   {"name": "copy", "type": "Flatten", "bottom": "x", "top": "h"},
                   {"name": "drop", "type": "Dropout", "bottom": "h", "top": "h",
                    "dropout_ratio": 0.5})
    h = net.forward(x=np.ones((4, 5)))["h"]
    assert set(np.unique(h)) <= {0.0, 2.0}
    with pytest.raises(ConfigError, match="dropout_ratio"):
        make_net(input_layer(x=(2,)), {"name": "drop", "type": "Dropout", "bottom": "x",
                                       "top": "y", "dropout_ratio": 1.0})


def test_softmax_values(make_net, input_layer):
    net = make_net(input_layer(x=(2, 3)),
                   {"name": "sm", "type": "Softmax", "bottom": "x", "top": "p"})
    p = net.forward(x=[[0.0, np.log(2), np.log(3)], [1000.0, 1000.0, 1000.0]])["p"]
    np.testing.assert_allclose(p, [[1 / 6, 2 / 6, 3 / 6], [1 / 3, 1 / 3, 1 / 3]])
    # dx = p ⊙ (dy − Σ dy·p); with dy = one-hot of class 2 on row 0: p2·(e2 − p)
    net.backward(p=[[0.0, 0, 1], [0, 0, 0]])
    np.testing.assert_allclose(net.blobs["x"].diff[0],
                               [-3 / 6 * 1 / 6, -3 / 6 * 2 / 6, 3 / 6 * (1 - 3 / 6)])


def test_softmax_axis(make_net, input_layer):
    net = make_net(input_layer(x=(1, 2, 2)),
                   {"name": "sm", "type": "Softmax", "bottom": "x", "top": "p", "axis": 2})
    p = net.forward(x=[[[0.0, np.log(3)], [np.log(4), 0]]])["p"]
    np.testing.assert_allclose(p, [[[1 / 4, 3 / 4], [4 / 5, 1 / 5]]])


def test_dummy_data_fills_constant_once_and_random_every_forward(make_net):
    net = make_net({"name": "dummy", "type": "DummyData", "top": ["a", "b", "c"],
                    "shape": [[4, 3], [4], [2, 2, 2]],
                    "data_filler": [{"type": "gaussian", "std": 3.0},
                                    {"type": "constant", "value": 7.0},
                                    {"type": "uniform", "min": 1, "max": 2}]}, seed=1)
    first = {name: net.blobs[name].data.copy() for name in "abc"}
    assert first["a"].shape == (4, 3) and first["c"].shape == (2, 2, 2)
    assert np.all(first["b"] == 7.0) and np.all((first["c"] >= 1) & (first["c"] < 2))
    net.forward()
    assert not np.array_equal(net.blobs["a"].data, first["a"])
    assert np.all(net.blobs["b"].data == 7.0)
    one = make_net({"name": "d", "type": "DummyData", "top": ["x", "y"], "shape": [[2, 3]]})
    assert np.all(one.blobs["x"].data == 0) and one.blobs["y"].shape == (2, 3)


@pytest.mark.parametrize("fields, message", [
    ({"shape": [[2], [3]], "top": ["a", "b", "c"]}, "shape has 2 entries for 3 tops"),
    ({"shape": [[2]], "top": ["a", "b", "c"], "data_filler": [{}, {}]},
     "data_filler has 2 entries for 3 tops"),
    ({"shape": [[2, 0]], "top": ["a"]}, "every dimension must be positive"),
])
def test_dummy_data_errors(make_net, fields, message):
    with pytest.raises(ConfigError, match=message):
        make_net({"name": "d", "type": "DummyData", **fields})
