"""Dropout: inverted scaling in TRAIN, identity in TEST, the seeded mask, in place."""

from __future__ import annotations

import numpy as np
import pytest

from solverkit import ConfigError


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
