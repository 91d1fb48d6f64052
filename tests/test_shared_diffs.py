"""Shared diffs in solver-driven training (``Net(share_diffs=True)``): the same parameters,
bit for bit, as a net that keeps every diff; diffs really sharing buffers; the diffs a
buffer holds never both live at once (buffers poisoned before every step); debug_info,
resume, the non-finite search and pycaffe's every-diff semantics unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import solverkit as sk
from solverkit import ConfigError, memory_plan

GAUSS = {"type": "gaussian", "std": 0.2}
N, SIDE, CLASSES = 4, 8, 5


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3 * N, 3, SIDE, SIDE)).astype(np.float32)
    y = rng.integers(0, CLASSES, 3 * N).astype(np.float32)
    return x, y


def _conv(name, bottom, num_output=6, kernel=3, top=None, **fields):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": top or name,
            "num_output": num_output, "kernel_size": kernel, "pad": kernel // 2,
            "weight_filler": GAUSS, **fields}


def _layer(kind, name, bottom, top=None, **fields):
    return {"name": name, "type": kind, "bottom": bottom, "top": top or name, **fields}


def _bn_scale(prefix, blob):
    """In-place BatchNorm + Scale + ReLU on ``blob``."""
    return [_layer("BatchNorm", f"{prefix}_bn", blob, blob),
            _layer("Scale", f"{prefix}_scale", blob, blob, bias_term=True),
            _layer("ReLU", f"{prefix}_relu", blob, blob)]


def _head(bottom, **loss_fields):
    return [_layer("Pooling", "pool", bottom, pool="AVE", global_pooling=True),
            _layer("InnerProduct", "ip", "pool", num_output=CLASSES, weight_filler=GAUSS),
            _layer("Dropout", "drop", "ip", "ip", dropout_ratio=0.3),
            _layer("SoftmaxWithLoss", "loss", ["ip", "label"], "loss", **loss_fields),
            _layer("Accuracy", "accuracy", ["ip", "label"])]


def _net(*layers):
    x, y = _data()
    return {"name": "shared", "layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"], "source": (x, y),
         "batch_size": N, "shuffle": False}, *layers]}


# a residual block: fan-out (and an explicit Split), in-place BatchNorm/Scale/ReLU, Eltwise
RESIDUAL = _net(
    _conv("conv1", "data", bias_term=False), *_bn_scale("c1", "conv1"),
    _conv("a1", "conv1", kernel=1, bias_term=False), *_bn_scale("a1", "a1"),
    _conv("a2", "a1", bias_term=False), *_bn_scale("a2", "a2"),
    _layer("Eltwise", "sum", ["a2", "conv1"]), _layer("ReLU", "sum_relu", "sum", "sum"),
    _layer("Split", "split", "sum", ["s1", "s2"]),
    _conv("b1", "s1"), _layer("Eltwise", "sum2", ["b1", "s2"], coeff=[1.0, 0.5]),
    *_head("sum2"))

# inception-like: Concat of branches, LRN, MAX pooling, a weighted top that later layers
# read, a second loss, and a layer that propagates to only one of its bottoms
INCEPTION = _net(
    _conv("stem", "data"), _layer("ReLU", "stem_relu", "stem", "stem"),
    _layer("LRN", "norm", "stem", local_size=3),
    _conv("b1", "norm", kernel=1), _conv("b3", "norm", num_output=4),
    _layer("Pooling", "bp", "norm", pool="MAX", kernel_size=3, stride=1, pad=1),
    _layer("Concat", "cat", ["b1", "b3", "bp"]),
    _layer("Sigmoid", "gate", "cat", loss_weight=[0.01]),
    _conv("mix", "gate", num_output=4),
    _layer("EuclideanLoss", "match", ["mix", "b3"], loss_weight=[0.1],
           propagate_down=[True, False]),
    _layer("TanH", "squash", "mix"),
    *_head("squash", loss_weight=[0.7]))

NETS = {"residual": RESIDUAL, "inception": INCEPTION}
SOLVER = {"type": "SGD", "base_lr": 0.05, "momentum": 0.9, "weight_decay": 0.001,
          "max_iter": 1000, "display": 0, "test_interval": 0, "snapshot": 0,
          "snapshot_after_train": False, "random_seed": 3}


def _solver(tmp_path, net, keep_diffs=False, **fields):
    spec = dict(SOLVER, snapshot_prefix=str(tmp_path / ("kept" if keep_diffs else "shared")),
                **fields)
    return sk.Solver(spec, net=net, keep_diffs=keep_diffs, progress=False)


def _poison(net) -> None:
    """NaN in every shared buffer: a diff read before this backward wrote all of it (or a
    layer adding into one) would carry NaN into the parameters."""
    for slab in net.diff_slabs:
        slab.buffer.view(np.float32)[:] = np.nan


def _train(solver, steps):
    for _ in range(steps):
        _poison(solver.net)
        solver.step(1)
    return {p.key: p.blob.data.copy() for p in solver.net.learnable_params}


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("fields", [{}, {"iter_size": 2, "type": "Adam", "base_lr": 0.01}],
                         ids=["sgd", "adam_iter_size_2"])
def test_training_with_shared_diffs_gives_the_same_parameters(tmp_path, name, fields):
    shared = _solver(tmp_path, NETS[name], **fields)
    kept = _solver(tmp_path, NETS[name], keep_diffs=True, **fields)
    assert shared.net.share_diffs and shared.net.diff_slabs
    assert not kept.net.share_diffs and not kept.net.diff_slabs
    a, b = _train(shared, 4), _train(kept, 4)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert shared.smoothed_losses == kept.smoothed_losses
    assert all(np.isfinite(v).all() for v in a.values())


def _planned(net):
    return [blob for slab in net.diff_slabs for blob in slab.blobs]


@pytest.mark.parametrize("name", list(NETS))
def test_diffs_really_share_buffers(tmp_path, name):
    solver = _solver(tmp_path, NETS[name])
    solver.step(2)
    net = solver.net
    planned = _planned(net)
    buffers = {blob._diff.__array_interface__["data"][0] for blob in planned}
    assert len(planned) >= 10
    assert len(buffers) == len(net.diff_slabs) < len(planned) / 2
    alone, together = (sum(b.data.nbytes for b in planned),
                       sum(slab.size for slab in net.diff_slabs))
    assert together < alone / 2
    # what keeps its own diff: parameters, the loss tops, the net's outputs
    pinned = {id(blob) for blob, _ in net.loss_weights}
    pinned |= {id(net.blobs[name]) for name in net.outputs}
    pinned |= {id(p.blob) for p in net.learnable_params}
    assert not pinned & {id(blob) for blob in planned}


def test_a_plain_net_and_debug_info_keep_every_diff(tmp_path):
    assert not sk.Net(RESIDUAL, "TRAIN", seed=0).diff_slabs
    rows = []
    for keep in (False, True):
        solver = _solver(tmp_path / str(keep), RESIDUAL, keep_diffs=keep, debug_info=True)
        assert not solver.net.diff_slabs          # debug_info reads every diff
        solver.step(2)
        debug = next(cb for cb in solver.callbacks if type(cb).__name__ == "DebugInfo")
        rows.append(debug.last)
        solver.close()
    assert rows[0] == rows[1]
    diffs = {(layer, blob): value for layer, blob, quantity, value in rows[0]
             if quantity == "diff" and not blob.startswith("param")}
    assert diffs[("a1_scale", "a1")] > 0 and diffs[("conv1", "conv1")] > 0


def test_a_debug_info_callback_from_the_spec_makes_the_net_keep_every_diff(tmp_path):
    """``callbacks: [{type: DebugInfo}]`` (not ``debug_info``) reads every diff too: adding
    it gives every blob its diff back, and its rows are those of a solver keeping them."""
    rows = []
    for keep in (False, True):
        solver = _solver(tmp_path / str(keep), RESIDUAL, keep_diffs=keep,
                         callbacks=[{"type": "DebugInfo"}])
        assert not solver.net.diff_slabs and not solver.net.share_diffs
        solver.step(2)
        debug = next(cb for cb in solver.callbacks if type(cb).__name__ == "DebugInfo")
        rows.append(debug.last)
        solver.close()
    assert rows[0] == rows[1]


def test_share_diffs_matches_every_diff_kept_across_reshapes():
    """``Net(share_diffs=True)`` directly, batch size changing (the plan is made again):
    parameter and input diffs equal those of a net keeping every diff."""
    spec = dict(RESIDUAL, layers=[{"name": "data", "type": "Input", "top": ["data", "label"],
                                   "shape": [[N, 3, SIDE, SIDE], [N]]}, *RESIDUAL["layers"][1:]],
                force_backward=True)
    shared = sk.Net(spec, "TRAIN", seed=1, share_diffs=True)
    kept = sk.Net(spec, "TRAIN", seed=1)
    x, y = _data()
    for batch in (N, 2 * N, 3):
        first = shared.diff_slabs
        for net in (shared, kept):
            net.clear_param_diffs()
            net.forward(data=x[:batch], label=y[:batch])
            net.backward()
        if batch != N:
            assert shared.diff_slabs is not first
        for slab in shared.diff_slabs:
            assert slab.size >= max(blob.data.nbytes for blob in slab.blobs)
        assert np.array_equal(shared.blobs["data"].diff, kept.blobs["data"].diff)
        assert np.abs(shared.blobs["data"].diff).max() > 0
        for p, q in zip(shared.learnable_params, kept.learnable_params):
            assert np.array_equal(p.blob.diff, q.blob.diff), p.key


def test_resume_with_shared_diffs_is_exact(tmp_path):
    straight = _solver(tmp_path, RESIDUAL)
    a = _train(straight, 4)
    first = _solver(tmp_path, RESIDUAL)
    first.step(2)
    state = first.snapshot()
    first.close()
    second = _solver(tmp_path, RESIDUAL)
    second.restore(state)
    b = _train(second, 2)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_non_finite_search_ignores_shared_diffs(tmp_path):
    """After a backward a shared buffer holds some other blob's gradient: a NaN there names
    no layer, while a NaN in a parameter's gradient (which keeps its own) still does."""
    solver = _solver(tmp_path, RESIDUAL)
    solver.step(1)
    net = solver.net
    _poison(net)
    assert net.find_nonfinite() is None
    net.layer("a2").blobs[0].diff[0] = np.nan
    assert net.find_nonfinite() == "layer 'a2' (Convolution): gradient of parameter 0"


def test_layers_the_plan_does_not_know_keep_their_diffs(tmp_path):
    """A layer type outside GRADIENT_PLAIN_LAYERS (here PReLU) keeps every blob it touches
    out of the shared buffers."""
    assert "PReLU" not in memory_plan.GRADIENT_PLAIN_LAYERS
    net = _net(_conv("conv1", "data"), _layer("PReLU", "act", "conv1"),
               _conv("conv2", "act"), _layer("ReLU", "relu2", "conv2", "conv2"),
               *_head("conv2"))
    solver = _solver(tmp_path, net)
    planned = {blob.name for blob in _planned(solver.net)}
    assert "conv2" in planned and not {"conv1", "act"} & planned


def test_share_diffs_is_refused_for_a_net_built_for_inference():
    spec = {"name": "n", "layers": [{"name": "data", "type": "Input", "top": "data",
                                     "shape": [[1, 3]]},
                                    _layer("ReLU", "relu", "data")]}
    with pytest.raises(ConfigError, match="share_diffs"):
        sk.Net(spec, "TEST", inference=True, share_diffs=True)


PYCAFFE_NET = """name: "two_layers"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "builtin:digits/train" batch_size: 8 }
        transform_param { scale: 0.0625 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 12 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "mid" type: "InnerProduct" bottom: "ip1" top: "mid"
        inner_product_param { num_output: 12 weight_filler { type: "xavier" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "mid" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def test_pycaffe_solver_keeps_every_diff(tmp_path):
    """pycaffe's solver net keeps Caffe's semantics: after a step every blob's diff holds
    its gradient (checked against the gradient written out in numpy)."""
    caffe = pytest.importorskip("caffe")
    (tmp_path / "net.prototxt").write_text(PYCAFFE_NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 10 '
                    f'display: 0 random_seed: 1 snapshot_prefix: "{tmp_path}/snap"')
    solver = caffe.SGDSolver(str(path))
    w1, b1, wm, bm, w2, b2 = (blob.data.copy() for name in ("ip1", "mid", "ip2")
                              for blob in solver.net.params[name])
    solver.step(1)
    x = solver.net.blobs["data"].data.reshape(8, -1).astype(np.float64)
    labels = solver.net.blobs["label"].data.astype(int)
    h = np.maximum(x @ w1.T + b1, 0)
    m = h @ wm.T + bm
    z = m @ w2.T + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(10)[labels]) / 8
    dm = dz @ w2
    dh = (dm @ wm) * (h > 0)
    np.testing.assert_allclose(solver.net.blobs["ip2"].diff, dz, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(solver.net.blobs["mid"].diff, dm, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(solver.net.blobs["ip1"].diff, dh, rtol=1e-4, atol=1e-7)
