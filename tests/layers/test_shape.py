"""Flatten, Reshape, Concat, Slice, Split, Tile, Crop, Silence: shapes, values, backward, errors."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit import ConfigError, ShapeError
from solverkit.gradient_check import check_layer_gradients, layer_net


def _run(layer: dict, inputs: dict) -> sk.Net:
    net = layer_net(layer, inputs)
    net.forward()
    return net


def _check_same_values_new_shape(make_net, input_layer, kind, fields, shape_in, shape_out):
    """A ``kind`` layer gives ``shape_out`` from ``shape_in``, the values in the same order."""
    net = make_net(input_layer(x=shape_in),
                   {"name": "layer", "type": kind, "bottom": "x", "top": "y", **fields})
    x = np.arange(np.prod(shape_in), dtype=float).reshape(shape_in)
    y = net.forward(x=x)["y"]
    assert y.shape == shape_out
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))


@pytest.mark.parametrize("fields, shape_in, shape_out", [
    ({}, (2, 3, 4, 5), (2, 60)),
    ({"axis": 2}, (2, 3, 4, 5), (2, 3, 20)),
    ({"axis": 1, "end_axis": 2}, (2, 3, 4, 5), (2, 12, 5)),
    ({"axis": -3, "end_axis": -2}, (2, 3, 4, 5), (2, 12, 5)),
    ({"axis": 0}, (2, 3), (6,)),
    ({"axis": 1}, (2, 3), (2, 3)),
])
def test_flatten_shapes(make_net, input_layer, fields, shape_in, shape_out):
    _check_same_values_new_shape(make_net, input_layer, "Flatten", fields, shape_in, shape_out)


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
    _check_same_values_new_shape(make_net, input_layer, "Reshape", fields, shape_in, shape_out)


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


@pytest.mark.parametrize("axis,tiles", [(1, 3), (0, 2), (-1, 2)])
def test_tile(rng, axis, tiles):
    x = rng.normal(size=(2, 3, 2))
    layer = {"name": "t", "type": "Tile", "bottom": "x", "top": "y", "axis": axis,
             "tiles": tiles}
    net = _run(layer, {"x": x})
    # Caffe repeats the whole block of axes from ``axis`` on: copies laid end to end
    expected = np.concatenate([x] * tiles, axis=axis)
    np.testing.assert_allclose(net.blobs["y"].data, expected)
    check_layer_gradients(layer, {"x": x})


@pytest.mark.parametrize("fields,window", [
    ({}, (slice(None), slice(None), slice(0, 2), slice(0, 3))),
    ({"offset": [1]}, (slice(None), slice(None), slice(1, 3), slice(1, 4))),
    ({"offset": [2, 0]}, (slice(None), slice(None), slice(2, 4), slice(0, 3))),
    ({"axis": 1, "offset": [1, 0, 2]}, (slice(None), slice(1, 3), slice(0, 2), slice(2, 5))),
])
def test_crop(rng, fields, window):
    x = rng.normal(size=(2, 4, 4, 5))
    ref = np.zeros((1, 2, 2, 3))
    layer = {"name": "crop", "type": "Crop", "bottom": ["x", "ref"], "top": "y", **fields}
    net = _run(layer, {"x": x, "ref": ref})
    np.testing.assert_allclose(net.blobs["y"].data, x[window])
    check_layer_gradients(layer, {"x": x, "ref": ref})


def test_crop_out_of_bounds_names_offset():
    with pytest.raises(ConfigError, match="offset") as info:
        layer_net({"name": "crop", "type": "Crop", "bottom": ["x", "ref"], "top": "y",
                   "offset": [3]}, {"x": np.zeros((1, 1, 4, 4)), "ref": np.zeros((1, 1, 2, 2))})
    assert info.value.field == "offset"


def test_silence_hides_a_blob_from_the_outputs(rng):
    net = sk.Net({"name": "s", "dtype": "float64", "layers": [
        {"name": "input", "type": "Input", "top": ["x", "unused"], "shape": [[2, 3], [2]]},
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2},
        {"name": "quiet", "type": "Silence", "bottom": "unused"}]})
    assert net.outputs == ["y"]
    out = net.forward(x=rng.normal(size=(2, 3)), unused=np.ones(2))
    assert set(out) == {"y"}


def test_silence_backward_zeroes_diffs():
    blob = sk.Blob((2, 2), np.float64, name="b")
    blob.diff[...] = 5.0
    layer = layer_net({"name": "quiet", "type": "Silence", "bottom": "x"},
                      {"x": np.ones((2, 2))}).layer("quiet")
    layer.backward([], [True], [blob])
    assert not np.any(blob.diff)
