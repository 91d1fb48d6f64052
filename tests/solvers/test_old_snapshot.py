"""A solver state written by the solver before update rules and lr policies became
registered components (``old_snapshot/``: Adam, step policy, a shuffled Data layer and
Dropout, 3 of 6 iterations) still resumes, and exactly: its key names did not change."""

import shutil
from pathlib import Path

import numpy as np

import solverkit as sk

OLD = Path(__file__).parent / "old_snapshot"


def test_an_old_state_resumes_exactly(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(OLD, folder)
    with np.load(folder / "run_iter_3.solverstate.npz") as state:
        keys = set(state.files)
    assert {f"update/{layer}/{i}/{name}" for layer in ("ip1", "ip2") for i in (0, 1)
            for name in ("m", "v")} <= keys
    assert {"data/TRAIN/data/cursor", "data/TRAIN/data/order"} <= keys

    resumed = sk.Solver(folder / "solver.yaml", progress=False)
    resumed.restore(folder / "run_iter_3.solverstate.npz")
    assert resumed.iter == 3 and len(resumed.smoothed_losses) == 2
    resumed.step(3)
    straight = sk.Solver(folder / "solver.yaml", overrides=["snapshot_prefix=" +
                                                            str(tmp_path / "straight")],
                         progress=False)
    straight.step(6)
    for (key, a), b in zip(resumed.updater.state_arrays().items(),
                           straight.updater.state_arrays().values()):
        np.testing.assert_array_equal(a, b, err_msg=key)
    for layer in ("ip1", "ip2"):
        for a, b in zip(resumed.net.params[layer], straight.net.params[layer]):
            np.testing.assert_array_equal(a.data, b.data)
    resumed.close()
    straight.close()
