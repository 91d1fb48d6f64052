"""Input's and DummyData's blobs: shapes, fills and the errors that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from solverkit import ConfigError


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
