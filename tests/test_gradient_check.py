"""The shared numeric gradient checker on every layer with a backward, several setups each.

Each case builds ``Input -> layer [-> extra layers]`` in float64 and compares ``backward``
with central differences for every input that receives a gradient and every parameter.
In-place cases put the in-place layer after a Reshape, so the Input blobs the checker
perturbs are never overwritten.
"""

from __future__ import annotations

import numpy as np
import pytest

from solverkit import Layer, LayerParams, register_layer
from solverkit.gradient_check import GradientMismatch, check_layer_gradients, check_net_gradients

GAUSS = {"type": "gaussian", "std": 1.0}


def normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(*shape, seed=0):
    """Values with |x| >= 0.1, so kinks (ReLU, |x|, max ties) are never within eps."""
    x = normal(*shape, seed=seed)
    return np.sign(x) * (0.1 + np.abs(x))


def labels(n, classes, seed=0, shape=None):
    values = np.random.default_rng(seed).integers(0, classes, n).astype(np.float64)
    return values.reshape(shape or (n,))


def copy_of(blob, top):
    """A Reshape that keeps the shape: gives an in-place layer a blob the Input does not own."""
    return {"name": f"copy_{blob}", "type": "Reshape", "bottom": blob, "top": top,
            "shape": [0], "axis": 0, "num_axes": 1}


def in_place(layer_type, blob="h", **fields):
    return {"name": "in_place", "type": layer_type, "bottom": blob, "top": blob, **fields}


# (id, layer entry, inputs, extra layers, phase)
CASES = [
    # InnerProduct: axis, transpose, bias on/off
    ("ip", {"type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 3,
            "weight_filler": GAUSS, "bias_filler": GAUSS}, {"x": normal(2, 4)}, [], "TRAIN"),
    ("ip_4d", {"type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2,
               "weight_filler": GAUSS}, {"x": normal(2, 2, 2, 2)}, [], "TRAIN"),
    ("ip_axis2", {"type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2, "axis": 2,
                  "weight_filler": GAUSS, "bias_filler": GAUSS}, {"x": normal(2, 3, 2)}, [],
     "TRAIN"),
    ("ip_axis_neg", {"type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 2,
                     "axis": -1, "weight_filler": GAUSS}, {"x": normal(3, 2, 2)}, [], "TRAIN"),
    ("ip_transpose", {"type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 3,
                      "transpose": True, "weight_filler": GAUSS, "bias_filler": GAUSS},
     {"x": normal(2, 4)}, [], "TRAIN"),
    ("ip_no_bias", {"type": "InnerProduct", "bottom": "x", "top": "y", "num_output": 3,
                    "bias_term": False, "weight_filler": GAUSS}, {"x": normal(2, 3)}, [], "TRAIN"),
    # Eltwise
    ("eltwise_sum_coeff", {"type": "Eltwise", "bottom": ["a", "b"], "top": "y",
                           "coeff": [2.0, -0.5]}, {"a": normal(2, 3), "b": normal(2, 3, seed=1)},
     [], "TRAIN"),
    ("eltwise_sum3", {"type": "Eltwise", "bottom": ["a", "b", "c"], "top": "y",
                      "coeff": [1.0, 3.0, -1.0]},
     {"a": normal(2, 2), "b": normal(2, 2, seed=1), "c": normal(2, 2, seed=2)}, [], "TRAIN"),
    ("eltwise_prod3", {"type": "Eltwise", "bottom": ["a", "b", "c"], "top": "y",
                       "operation": "PROD"},
     {"a": normal(2, 3), "b": normal(2, 3, seed=1), "c": normal(2, 3, seed=2)}, [], "TRAIN"),
    ("eltwise_max3", {"type": "Eltwise", "bottom": ["a", "b", "c"], "top": "y",
                      "operation": "MAX"},
     {"a": normal(2, 3), "b": normal(2, 3, seed=1), "c": normal(2, 3, seed=2)}, [], "TRAIN"),
    ("eltwise_prod_same_blob", {"type": "Eltwise", "bottom": ["a", "a"], "top": "y",
                                "operation": "PROD"}, {"a": normal(2, 3)}, [], "TRAIN"),
    ("eltwise_prod_in_place", copy_of("a", "h"), {"a": normal(2, 3), "b": normal(2, 3, seed=1)},
     [in_place("Eltwise", bottom=["h", "b"], operation="PROD")], "TRAIN"),
    ("eltwise_sum_in_place", copy_of("a", "h"), {"a": normal(2, 3), "b": normal(2, 3, seed=1)},
     [in_place("Eltwise", bottom=["h", "b"], coeff=[2.0, 3.0])], "TRAIN"),
    ("eltwise_prod_in_place_on_second", copy_of("a", "h"),
     {"a": normal(2, 3), "b": normal(2, 3, seed=1), "c": normal(2, 3, seed=2)},
     [in_place("Eltwise", bottom=["b", "h", "c"], operation="PROD")], "TRAIN"),
    ("eltwise_max_in_place", copy_of("a", "h"), {"a": normal(2, 3), "b": normal(2, 3, seed=1)},
     [in_place("Eltwise", bottom=["h", "b"], operation="MAX")], "TRAIN"),
    # Flatten, Reshape
    ("flatten", {"type": "Flatten", "bottom": "x", "top": "y"}, {"x": normal(2, 3, 2)}, [],
     "TRAIN"),
    ("flatten_axes", {"type": "Flatten", "bottom": "x", "top": "y", "axis": 1, "end_axis": -2},
     {"x": normal(2, 2, 2, 3)}, [], "TRAIN"),
    ("reshape_infer", {"type": "Reshape", "bottom": "x", "top": "y", "shape": [0, -1]},
     {"x": normal(2, 3, 2)}, [], "TRAIN"),
    ("reshape_axis", {"type": "Reshape", "bottom": "x", "top": "y",
                      "shape": {"dim": [3, 1, -1]}, "axis": 1, "num_axes": 1},
     {"x": normal(2, 6, 1)}, [], "TRAIN"),
    # Concat, Slice, Split
    ("concat_channels", {"type": "Concat", "bottom": ["a", "b", "c"], "top": "y"},
     {"a": normal(2, 1, 2), "b": normal(2, 3, 2, seed=1), "c": normal(2, 2, 2, seed=2)}, [],
     "TRAIN"),
    ("concat_axis0", {"type": "Concat", "bottom": ["a", "b"], "top": "y", "axis": 0},
     {"a": normal(1, 3), "b": normal(2, 3, seed=1)}, [], "TRAIN"),
    ("concat_dim_last", {"type": "Concat", "bottom": ["a", "b"], "top": "y", "concat_dim": 2},
     {"a": normal(2, 2, 1), "b": normal(2, 2, 3, seed=1)}, [], "TRAIN"),
    ("concat_same_blob", {"type": "Concat", "bottom": ["a", "a"], "top": "y", "axis": -1},
     {"a": normal(2, 3)}, [], "TRAIN"),
    ("slice_points", {"type": "Slice", "bottom": "x", "top": ["a", "b", "c"],
                      "slice_point": [1, 3]}, {"x": normal(2, 4, 2)}, [], "TRAIN"),
    ("slice_equal_axis0", {"type": "Slice", "bottom": "x", "top": ["a", "b"], "axis": 0},
     {"x": normal(4, 3)}, [], "TRAIN"),
    ("slice_dim_last", {"type": "Slice", "bottom": "x", "top": ["a", "b"], "slice_dim": 2,
                        "slice_point": [2]}, {"x": normal(2, 2, 3)}, [], "TRAIN"),
    ("split", {"type": "Split", "bottom": "x", "top": ["a", "b"]}, {"x": normal(2, 3)}, [],
     "TRAIN"),
    ("split_fan_out", {"type": "Split", "bottom": "x", "top": ["a", "b", "c"]},
     {"x": normal(2, 3)},
     [{"name": "ab", "type": "Eltwise", "bottom": ["a", "b"], "top": "ab", "operation": "PROD"},
      {"name": "ac", "type": "Eltwise", "bottom": ["a", "c"], "top": "ac", "coeff": [1, -2]}],
     "TRAIN"),
    # Dropout (the checker re-seeds the layer's generator before every forward)
    ("dropout", {"type": "Dropout", "bottom": "x", "top": "y"}, {"x": normal(3, 4)}, [],
     "TRAIN"),
    ("dropout_ratio", {"type": "Dropout", "bottom": "x", "top": "y", "dropout_ratio": 0.2},
     {"x": normal(3, 4)}, [], "TRAIN"),
    ("dropout_in_place", copy_of("x", "h"), {"x": normal(3, 4)},
     [in_place("Dropout", dropout_ratio=0.3)], "TRAIN"),
    ("dropout_test", {"type": "Dropout", "bottom": "x", "top": "y"}, {"x": normal(3, 4)}, [],
     "TEST"),
    # Softmax
    ("softmax", {"type": "Softmax", "bottom": "x", "top": "y"}, {"x": normal(2, 4)}, [],
     "TRAIN"),
    ("softmax_axis_last", {"type": "Softmax", "bottom": "x", "top": "y", "axis": -1},
     {"x": normal(2, 2, 3)}, [], "TRAIN"),
    ("softmax_spatial_in_place", copy_of("x", "h"), {"x": normal(2, 3, 2)},
     [in_place("Softmax")], "TRAIN"),
    # activations
    ("relu", {"type": "ReLU", "bottom": "x", "top": "y"}, {"x": away_from_zero(2, 5)}, [],
     "TRAIN"),
    ("relu_leaky", {"type": "ReLU", "bottom": "x", "top": "y", "negative_slope": 0.1},
     {"x": away_from_zero(2, 5)}, [], "TRAIN"),
    ("relu_in_place", copy_of("x", "h"), {"x": away_from_zero(2, 5)},
     [in_place("ReLU")], "TRAIN"),
    ("relu_leaky_in_place", copy_of("x", "h"), {"x": away_from_zero(2, 5)},
     [in_place("ReLU", negative_slope=0.1)], "TRAIN"),
    ("sigmoid", {"type": "Sigmoid", "bottom": "x", "top": "y"}, {"x": 3 * normal(2, 5)}, [],
     "TRAIN"),
    ("sigmoid_in_place", copy_of("x", "h"), {"x": normal(2, 5)}, [in_place("Sigmoid")], "TRAIN"),
    ("tanh", {"type": "TanH", "bottom": "x", "top": "y"}, {"x": 2 * normal(2, 5)}, [], "TRAIN"),
    ("tanh_in_place", copy_of("x", "h"), {"x": normal(2, 5)}, [in_place("TanH")], "TRAIN"),
    # losses
    ("softmax_loss", {"type": "SoftmaxWithLoss", "bottom": ["x", "label"], "top": "loss"},
     {"x": normal(4, 3), "label": labels(4, 3)}, [], "TRAIN"),
    ("softmax_loss_ignore", {"type": "SoftmaxWithLoss", "bottom": ["x", "label"], "top": "loss",
                             "ignore_label": 1},
     {"x": normal(5, 3), "label": np.array([0., 1, 2, 1, 0])}, [], "TRAIN"),
    ("softmax_loss_spatial_full", {"type": "SoftmaxWithLoss", "bottom": ["x", "label"],
                                   "top": "loss", "normalization": "FULL", "ignore_label": 0,
                                   "loss_weight": 2.5},
     {"x": normal(2, 3, 2), "label": labels(4, 3, shape=(2, 2))}, [], "TRAIN"),
    ("softmax_loss_batch_size", {"type": "SoftmaxWithLoss", "bottom": ["x", "label"],
                                 "top": "loss", "normalization": "BATCH_SIZE"},
     {"x": normal(2, 3, 2), "label": labels(4, 3, shape=(2, 2))}, [], "TRAIN"),
    ("softmax_loss_none", {"type": "SoftmaxWithLoss", "bottom": ["x", "label"], "top": "loss",
                           "normalization": "NONE"},
     {"x": normal(3, 4), "label": labels(3, 4)}, [], "TRAIN"),
    ("softmax_loss_axis2", {"type": "SoftmaxWithLoss", "bottom": ["x", "label"], "top": "loss",
                            "axis": 2},
     {"x": normal(2, 2, 3), "label": labels(4, 3, shape=(2, 2))}, [], "TRAIN"),
    ("euclidean", {"type": "EuclideanLoss", "bottom": ["a", "b"], "top": "loss"},
     {"a": normal(3, 4), "b": normal(3, 4, seed=1)}, [], "TRAIN"),
    ("euclidean_reshaped_weighted", {"type": "EuclideanLoss", "bottom": ["a", "b"],
                                     "top": "loss", "loss_weight": 0.5},
     {"a": normal(2, 4), "b": normal(2, 2, 2, seed=1)}, [], "TRAIN"),
    ("l1", {"type": "L1Loss", "bottom": ["a", "b"], "top": "loss"},
     {"a": away_from_zero(3, 4), "b": np.zeros((3, 4))}, [], "TRAIN"),
    ("l1_weighted", {"type": "L1Loss", "bottom": ["a", "b"], "top": "loss", "loss_weight": 3},
     {"a": 2 + away_from_zero(2, 3), "b": away_from_zero(2, 3, seed=1) - 2}, [], "TRAIN"),
]


@pytest.mark.parametrize("layer, inputs, extra, phase",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_layer_gradient(layer, inputs, extra, phase):
    layer = {"name": "layer", **layer}
    worst = check_layer_gradients(layer, inputs, extra_layers=extra, phase=phase)
    # every Input blob that feeds a differentiable bottom is checked, labels are not
    expected = {f"input:{name}" for name in inputs if name != "label"}
    assert expected <= set(worst)


def test_fan_out_into_different_layers(make_net, input_layer):
    """x read by an InnerProduct, a Sigmoid and an Eltwise: its diff is the sum of three."""
    net = make_net(
        input_layer(x=(2, 3)),
        {"name": "ip", "type": "InnerProduct", "bottom": "x", "top": "ip", "num_output": 3,
         "weight_filler": GAUSS},
        {"name": "sig", "type": "Sigmoid", "bottom": "x", "top": "sig"},
        {"name": "mix", "type": "Eltwise", "bottom": ["ip", "sig", "x"], "top": "mix",
         "operation": "PROD"},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["mix", "x"], "top": "loss"})
    net.set_input("x", normal(2, 3))
    worst = check_net_gradients(net)
    assert set(worst) == {"input:x", "param:ip/0", "param:ip/1"}


# --- the checker itself must catch wrong gradients --------------------------------------

@register_layer("GradientCheckWrongBottom")
class WrongBottomGradient(Layer):
    """``y = 2x`` with the factor 2 forgotten in backward."""

    min_bottoms = max_bottoms = min_tops = max_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


@register_layer("GradientCheckWrongParam")
class WrongParamGradient(Layer):
    """``y = w ⊙ x`` whose weight gradient misses the sum over the batch."""

    class Params(LayerParams):
        pass

    min_bottoms = max_bottoms = min_tops = max_tops = 1

    def setup(self, bottom, top):
        self.make_param(bottom[0].shape[1:], {"type": "gaussian"})

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff += (top[0].diff * bottom[0].data)[0]
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data


def test_checker_catches_wrong_bottom_gradient():
    layer = {"name": "wrong", "type": "GradientCheckWrongBottom", "bottom": "x", "top": "y"}
    with pytest.raises(GradientMismatch, match="input:x"):
        check_layer_gradients(layer, {"x": normal(2, 3)})


def test_checker_catches_wrong_param_gradient():
    layer = {"name": "wrong", "type": "GradientCheckWrongParam", "bottom": "x", "top": "y"}
    with pytest.raises(GradientMismatch, match="param:wrong/0"):
        check_layer_gradients(layer, {"x": normal(3, 2)})


def test_whole_net_with_sharing_in_place_fan_out_and_plumbing():
    """In place on a fanned-out blob's producer, shared weights, Dropout, Concat/Slice/Split,
    three readers of one blob in one Eltwise, and two weighted losses, checked end to end."""
    from solverkit import Net

    # small weights and inputs keep the cubed logits far from softmax saturation
    small = {"type": "gaussian", "std": 0.5}
    layers = [
        {"name": "input", "type": "Input", "top": ["x", "label"], "shape": [[3, 4], [3]]},
        {"name": "copy", "type": "Reshape", "bottom": "x", "top": "h", "shape": [0, -1]},
        {"name": "relu", "type": "ReLU", "bottom": "h", "top": "h", "negative_slope": 0.2},
        {"name": "ip1", "type": "InnerProduct", "bottom": "h", "top": "a", "num_output": 3,
         "weight_filler": small, "param": [{"name": "w"}]},
        {"name": "ip2", "type": "InnerProduct", "bottom": "h", "top": "b", "num_output": 3,
         "weight_filler": small, "param": [{"name": "w"}]},
        {"name": "drop", "type": "Dropout", "bottom": "b", "top": "b"},
        {"name": "cat", "type": "Concat", "bottom": ["a", "b", "x"], "top": "c"},
        {"name": "slice", "type": "Slice", "bottom": "c", "top": ["c1", "c2"],
         "slice_point": [5]},
        {"name": "split", "type": "Split", "bottom": "c1", "top": ["s1", "s2"]},
        {"name": "prod", "type": "Eltwise", "bottom": ["s1", "s2", "c1"], "top": "e",
         "operation": "PROD"},
        {"name": "softmax", "type": "Softmax", "bottom": "c2", "top": "p"},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["e", "label"], "top": "loss"},
        {"name": "l2", "type": "EuclideanLoss", "bottom": ["p", "c2"], "top": "l2",
         "loss_weight": 0.3},
    ]
    net = Net({"dtype": "float64", "layers": layers}, seed=1)
    net.set_input("x", 0.5 * away_from_zero(3, 4, seed=5))
    net.set_input("label", np.array([0.0, 2, 4]))
    worst = check_net_gradients(net)
    assert set(worst) == {"input:x", "param:ip1/0", "param:ip1/1", "param:ip2/1"}
