"""The solver classes: types, nets sharing weights, step, updates, callbacks, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

import caffe

NET = """name: "digits"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "builtin:digits/train" batch_size: 16 }
        transform_param { scale: 0.0625 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "builtin:digits/test" batch_size: 40 }
        transform_param { scale: 0.0625 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


@pytest.fixture
def solver_file(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "net.prototxt" test_iter: 9 test_interval: 1000 base_lr: 0.1 '
                    f'momentum: 0.9 lr_policy: "fixed" max_iter: 30 display: 0 '
                    f'random_seed: 1 snapshot_prefix: "{tmp_path}/snap"')
    return str(path)


def test_types_nets_and_step(solver_file):
    for cls, kind in ((caffe.SGDSolver, "SGD"), (caffe.NesterovSolver, "Nesterov"),
                      (caffe.AdamSolver, "Adam")):
        assert cls(solver_file).param.type == kind
    solver = caffe.get_solver(solver_file)
    assert solver.param.type == "SGD" and solver.param.max_iter == 30
    test_net = solver.test_nets[0]
    assert test_net.params["ip"][0] is solver.net.params["ip"][0]     # shared weights
    before = np.mean([test_net.forward()["acc"] for _ in range(9)])
    solver.step(30)
    assert solver.iter == 30
    after = np.mean([test_net.forward()["acc"] for _ in range(9)])
    assert after > max(before, 0.8)             # the TEST net sees what TRAIN learned


def test_apply_update_callbacks_and_share_weights(solver_file, tmp_path):
    solver = caffe.SGDSolver(solver_file)
    weight = solver.net.params["ip"][0]
    weight.data[...] = 0
    weight.diff[...] = 1
    solver.apply_update()
    np.testing.assert_allclose(weight.data, -0.1)
    assert solver.iter == 0
    events = []
    solver.add_callback(lambda: events.append("start"), lambda: events.append("grad"))
    solver.step(2)
    assert events == ["start", "grad", "start", "grad"]     # as Caffe: per iteration
    other = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    solver.share_weights(other)
    assert other.params["ip"][0] is weight


def test_snapshot_restore_continue_exactly(solver_file, tmp_path):
    straight = caffe.SGDSolver(solver_file)
    straight.step(20)
    first = caffe.SGDSolver(solver_file)
    first.step(10)
    first.snapshot()
    # Caffe's files: the weights as a .caffemodel, the state as a binary SolverState (with
    # solverkit's side file that makes the resume exact)
    assert (tmp_path / "snap_iter_10.caffemodel").is_file()
    state = tmp_path / "snap_iter_10.solverstate"
    assert state.is_file() and (tmp_path / "snap_iter_10.solverstate.sk.npz").is_file()
    reference = caffe.Net(str(tmp_path / "net.prototxt"), str(tmp_path / "snap_iter_10.caffemodel"),
                          caffe.TRAIN)
    assert np.array_equal(reference.params["ip"][0].data, first.net.params["ip"][0].data)
    resumed = caffe.SGDSolver(solver_file)
    resumed.restore(str(state))
    assert resumed.iter == 10
    resumed.step(10)
    assert np.array_equal(resumed.net.params["ip"][0].data, straight.net.params["ip"][0].data)
