"""Every filler against its formula: statistics of a large draw, bounds, exact values.

Caffe's fans for a blob (N, C, H, W): fan_in = count / N, fan_out = count / C.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from solverkit import ConfigError, fillers
from solverkit.fillers import fill

SHAPE = (40, 30, 3, 3)            # 10 800 values; fan_in = 270, fan_out = 360
FAN_IN, FAN_OUT = 30 * 9, 40 * 9


def draw(spec, shape=SHAPE, dtype=np.float64, seed=0):
    return fill(spec, shape, dtype, np.random.default_rng(seed))


def assert_mean_std(values, mean, std):
    """Sample mean within 5 standard errors, sample std within 3 %."""
    n = values.size
    assert abs(values.mean() - mean) < 5 * std / np.sqrt(n)
    assert abs(values.std() - std) < 0.03 * std


def test_default_and_constant():
    assert not draw(None).any()
    w = draw({"type": "constant", "value": -0.25}, dtype=np.float32)
    assert w.dtype == np.float32 and w.shape == SHAPE and np.all(w == -0.25)


def test_uniform():
    w = draw({"type": "uniform", "min": -2, "max": 5})
    assert w.min() >= -2 and w.max() <= 5
    assert w.min() < -1.99 and w.max() > 4.99
    assert_mean_std(w, 1.5, 7 / np.sqrt(12))
    default = draw({"type": "uniform"})
    assert default.min() >= 0 and default.max() <= 1


def test_gaussian():
    assert_mean_std(draw({"type": "gaussian", "mean": 1, "std": 2}), 1.0, 2.0)
    assert_mean_std(draw({"type": "gaussian"}), 0.0, 1.0)          # Caffe's defaults


@pytest.mark.parametrize("norm, n", [("FAN_IN", FAN_IN), ("FAN_OUT", FAN_OUT),
                                     ("AVERAGE", (FAN_IN + FAN_OUT) / 2)])
def test_xavier(norm, n):
    """Caffe: uniform(−a, a), a = sqrt(3 / n): variance 1 / n."""
    w = draw({"type": "xavier", "variance_norm": norm})
    a = np.sqrt(3 / n)
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.99 * a
    assert_mean_std(w, 0.0, np.sqrt(1 / n))


@pytest.mark.parametrize("norm, n", [("FAN_IN", FAN_IN), ("FAN_OUT", FAN_OUT),
                                     ("AVERAGE", (FAN_IN + FAN_OUT) / 2)])
def test_msra(norm, n):
    """Caffe: gaussian(0, sqrt(2 / n))."""
    assert_mean_std(draw({"type": "msra", "variance_norm": norm}), 0.0, np.sqrt(2 / n))


def test_xavier_default_is_fan_in_for_an_inner_product_weight():
    w = draw({"type": "xavier"}, shape=(500, 64))           # (num_output, fan_in)
    assert np.abs(w).max() <= np.sqrt(3 / 64)
    assert_mean_std(w, 0.0, np.sqrt(1 / 64))


def test_positive_unitball():
    w = draw({"type": "positive_unitball"}, shape=(6, 3, 2, 2))
    assert np.all(w > 0)
    np.testing.assert_allclose(w.reshape(6, -1).sum(axis=1), np.ones(6), rtol=1e-12)
    assert len(np.unique(w)) == w.size                       # random, not a constant 1/12


def _caffe_bilinear(k):
    """Caffe's BilinearFiller loop, transcribed: one (k, k) kernel."""
    f = int(np.ceil(k / 2))
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    out = np.empty(k * k)
    for i in range(k * k):
        x, y = i % k, (i // k) % k
        out[i] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    return out.reshape(k, k)


@pytest.mark.parametrize("k, ramp", [(4, [0.25, 0.75, 0.75, 0.25]),
                                     (5, [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3]),
                                     (2, [1.0, 0.0])])       # factor 1: the identity
def test_bilinear(k, ramp):
    w = draw({"type": "bilinear"}, shape=(2, 3, k, k))
    expected = np.outer(ramp, ramp)
    np.testing.assert_allclose(_caffe_bilinear(k), expected, rtol=1e-12)
    for n in range(2):
        for c in range(3):
            np.testing.assert_allclose(w[n, c], expected, rtol=1e-12)


def test_bilinear_needs_a_square_4d_kernel():
    with pytest.raises(ConfigError, match="square 4-d kernel"):
        draw({"type": "bilinear"}, shape=(2, 3, 4, 3))


def test_same_generator_state_same_draw():
    for spec in ({"type": "gaussian"}, {"type": "xavier"}, {"type": "msra"},
                 {"type": "uniform"}, {"type": "positive_unitball"}):
        np.testing.assert_array_equal(draw(spec, seed=5), draw(spec, seed=5))
        assert not np.array_equal(draw(spec, seed=5), draw(spec, seed=6))


def test_unknown_filler_type_in_a_net_suggests(tmp_path):
    import solverkit as sk

    path = tmp_path / "net.yaml"
    path.write_text("""layers:
  - {name: input, type: Input, top: x, shape: [[1, 3]]}
  - {name: ip, type: InnerProduct, bottom: x, top: y, num_output: 2,
     weight_filler: {type: xaiver}}
""")
    with pytest.raises(ConfigError, match="did you mean 'xavier'") as info:
        sk.Net(path)
    assert info.value.layer == "ip" and info.value.field == "weight_filler.type"


def test_sparse_gaussian_keeps_sparse_of_num_outputs():
    """Caffe's sparse gaussian: each weight kept with probability sparse / shape[0]."""
    w = draw({"type": "gaussian", "std": 2.0, "sparse": 10}, shape=(200, 500))
    assert abs(np.mean(w != 0) - 10 / 200) < 0.005
    kept = w[w != 0]
    assert_mean_std(kept, 0.0, 2.0)
    assert np.all((w != 0).sum(axis=0) < 40)             # about 10 per input column
    dense = draw({"type": "gaussian", "std": 2.0}, shape=(200, 500))
    assert np.all(dense != 0)
    with pytest.raises(ValidationError):
        draw({"type": "gaussian", "sparse": -2})


@pytest.mark.parametrize("spec", [{"type": "gaussian", "std": 0.1},
                                  {"type": "uniform", "min": -1, "max": 2},
                                  {"type": "xavier"}, {"type": "msra", "variance_norm": "FAN_OUT"}])
def test_a_large_weight_drawn_in_chunks_has_the_values_of_one_draw(spec, monkeypatch):
    """Big weights are drawn a chunk at a time (no float64 copy of the whole weight):
    the values are those of one draw of the whole shape, aligned for oneDNN."""
    shape = (7, 3001)
    monkeypatch.setattr(fillers, "DRAW_CHUNK", 1000)
    chunked = fillers.fill(spec, shape, np.float32, np.random.default_rng(5))
    one_draw = np.random.default_rng(5)
    if spec["type"] == "gaussian":
        expected = one_draw.normal(0.0, 0.1, size=shape)
    elif spec["type"] == "uniform":
        expected = one_draw.uniform(-1, 2, size=shape)
    elif spec["type"] == "xavier":
        scale = np.sqrt(3.0 / 3001)
        expected = one_draw.uniform(-scale, scale, size=shape)
    else:
        expected = one_draw.normal(0.0, np.sqrt(2.0 / (7 * 3001 / 3001)), size=shape)
    np.testing.assert_array_equal(chunked, expected.astype(np.float32))
    assert chunked.dtype == np.float32 and chunked.ctypes.data % 64 == 0
