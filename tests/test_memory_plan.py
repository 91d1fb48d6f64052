"""Shared memory of a net built with ``outputs_only=True``: the same outputs as blobs of
their own, blobs really sharing buffers, never two live at once in one buffer, and the
blobs of layers the plan does not know kept apart."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

import solverkit as sk
from solverkit import ConfigError, memory_plan

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_nets

SHAPE = [2, 3, 12, 12]
GAUSS = {"type": "gaussian", "std": 0.3}


def _conv(name, bottom, num_output=6, **fields):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name,
            "num_output": num_output, "kernel_size": 3, "pad": 1, "weight_filler": GAUSS,
            "bias_filler": GAUSS, **fields}


def _layer(kind, name, bottom, top=None, **fields):
    return {"name": name, "type": kind, "bottom": bottom, "top": top or name, **fields}


def _net(*layers):
    return {"name": "plan", "layers": [
        {"name": "data", "type": "Input", "top": "data", "shape": [SHAPE]}, *layers]}


# every layer type the plan shares blobs around, between two convolutions
PLAIN = {
    "AbsVal": {}, "BNLL": {}, "Clip": {"min": -0.5, "max": 0.5}, "ELU": {"alpha": 0.5},
    "Exp": {"base": 2.0, "scale": 0.1}, "Power": {"power": 2.0, "shift": 1.0},
    "PReLU": {}, "ReLU": {"negative_slope": 0.1}, "Sigmoid": {}, "Swish": {}, "TanH": {},
    "Threshold": {"threshold": 0.1}, "Dropout": {"dropout_ratio": 0.3},
    "BatchNorm": {}, "Bias": {"filler": GAUSS}, "Scale": {"filler": GAUSS, "bias_term": True},
    "LRN": {"local_size": 3}, "Softmax": {},
    "Pooling": {"pool": "AVE", "kernel_size": 3, "stride": 1, "pad": 1},
    "DepthwiseConvolution": {"num_output": 6, "kernel_size": 3, "pad": 1,
                             "weight_filler": GAUSS},
}


def _chains():
    for kind, fields in PLAIN.items():
        yield kind, _net(_conv("conv1", "data"), _layer(kind, "mid", "conv1", **fields),
                         _conv("conv2", "mid"), _layer("ReLU", "relu2", "conv2", "conv2"),
                         _conv("conv3", "conv2"))
    # two bottoms, a shape change, a fan-out joined again (a residual block)
    yield "Eltwise_Concat", _net(
        _conv("conv1", "data"), _conv("a", "conv1"), _conv("b", "conv1"),
        _layer("Eltwise", "sum", ["a", "b"]), _layer("Concat", "cat", ["sum", "conv1"]),
        _conv("conv2", "cat"))
    yield "Log_Flatten_Reshape_InnerProduct", _net(
        _conv("conv1", "data"), _layer("AbsVal", "abs", "conv1"),
        _layer("Power", "pos", "abs", shift=1.0), _layer("Log", "log", "pos"),
        _layer("Flatten", "flat", "log"), _layer("Reshape", "shaped", "flat",
                                                  shape={"dim": [0, -1, 12, 12]}),
        _layer("InnerProduct", "ip", "shaped", num_output=7, weight_filler=GAUSS),
        _layer("InnerProduct", "ip2", "ip", num_output=5, weight_filler=GAUSS))
    yield "Split", _net(
        _conv("conv1", "data"), _layer("Split", "split", "conv1", ["s1", "s2"]),
        _conv("c1", "s1"), _conv("c2", "s2"), _conv("c3", "c1"),
        _layer("Eltwise", "sum", ["c3", "c2"]))


CHAINS = dict(_chains())


def _outputs(spec, outputs_only, x, poison=False):
    net = sk.Net(spec, "TEST", seed=3, inference=True, outputs_only=outputs_only)
    for layer in net.layers:
        if layer.type == "BatchNorm":       # statistics as after training
            mean, var, factor = layer.blobs
            mean.data[...] = np.linspace(-1, 1, mean.count)
            var.data[...] = np.linspace(0.5, 2, var.count)
            factor.data[...] = 2.0
    if poison:      # a layer that read what its top held before would now see NaN
        for slab in net.memory_slabs:
            slab.buffer.view(np.float32)[...] = np.nan
    results = [net.forward(data=x) for _ in range(2)]
    return net, results


@pytest.mark.parametrize("name", list(CHAINS))
def test_shared_blobs_give_the_outputs_of_blobs_of_their_own(name, rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    _, (alone, _) = _outputs(CHAINS[name], False, x)
    net, results = _outputs(CHAINS[name], True, x, poison=True)
    for shared in results:
        assert shared.keys() == alone.keys()
        for key in alone:
            np.testing.assert_array_equal(shared[key], alone[key])
    planned = [blob for slab in net.memory_slabs for blob in slab.blobs]
    assert len(planned) >= 2 and len(net.memory_slabs) < len(planned)     # really shared
    for slab in net.memory_slabs:
        for blob in slab.blobs:
            assert np.shares_memory(blob.data, slab.buffer)
    for name_ in [*net.outputs, *net.input_blobs]:
        assert not any(np.shares_memory(net.blobs[name_].data, slab.buffer)
                       for slab in net.memory_slabs)


def _intervals(net):
    """Per root blob, (first, last) layer position touching it."""
    spans = {}
    for position in range(len(net.layers)):
        for blob in [*net.bottoms[position], *net.tops[position]]:
            root = memory_plan.root(blob)
            first, _ = spans.get(id(root), (position, position))
            spans[id(root)] = (first, position)
    return spans


def test_blobs_in_one_buffer_are_never_live_together():
    spec = bench_nets.NETS["resnet50"][0]()
    spec["layers"][0] = {"name": "data", "type": "Input", "top": "data",
                         "shape": [[1, 3, 32, 32]]}
    loss = spec["layers"][-1]
    spec["layers"][-1] = {"name": "prob", "type": "Softmax", "bottom": loss["bottom"][0],
                          "top": "prob"}
    net = sk.Net(spec, "TEST", seed=0, inference=True, outputs_only=True)
    spans = _intervals(net)
    alone, slabs = memory_plan.shared_bytes(net.memory_slabs)
    assert slabs < alone / 4            # ResNet-50: a few blocks' worth for 50 layers
    for slab in net.memory_slabs:
        taken = sorted(spans[id(blob)] for blob in slab.blobs)
        for (_, last), (first, _) in itertools.pairwise(taken):
            assert last < first


def test_blobs_of_layers_not_known_to_be_plain_keep_their_own_memory():
    """Tile is not in ``PLAIN_LAYERS``: what it reads and writes is left alone."""
    assert "Tile" not in memory_plan.PLAIN_LAYERS
    spec = _net(_conv("conv1", "data"), _layer("Tile", "tiled", "conv1", axis=1, tiles=1),
                _conv("conv2", "tiled"), _conv("conv3", "conv2"), _conv("conv4", "conv3"))
    net = sk.Net(spec, "TEST", seed=0, inference=True, outputs_only=True)
    planned = {blob.name for slab in net.memory_slabs for blob in slab.blobs}
    assert "conv1" not in planned and "tiled" not in planned
    assert "conv2" in planned and "conv3" in planned


def test_a_new_batch_size_is_planned_again(rng):
    spec = CHAINS["Eltwise_Concat"]
    net = sk.Net(spec, "TEST", seed=3, inference=True, outputs_only=True)
    reference = sk.Net(spec, "TEST", seed=3, inference=True)
    for batch in (2, 5, 1):
        x = rng.standard_normal([batch, *SHAPE[1:]]).astype(np.float32)
        np.testing.assert_array_equal(net.forward(data=x)["conv2"],
                                      reference.forward(data=x)["conv2"])
        assert all(np.shares_memory(blob.data, slab.buffer)
                   for slab in net.memory_slabs for blob in slab.blobs)
        assert net.blobs["sum"].shape[0] == batch


def test_outputs_only_needs_a_net_for_inference():
    with pytest.raises(ConfigError, match="outputs_only=True is for a net built for inference"):
        sk.Net(CHAINS["ReLU"], "TEST", outputs_only=True)
    net = sk.Net(CHAINS["ReLU"], "TEST", inference=True, outputs_only=True)
    net.forward()
    with pytest.raises(ConfigError, match="no backward"):
        net.backward(conv3=np.ones(net.blobs["conv3"].shape, np.float32))
