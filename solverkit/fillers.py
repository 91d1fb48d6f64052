"""Weight initialisers (Caffe's fillers), drawing from the layer's own Generator.

Fan-in and fan-out follow Caffe: for a blob of shape (N, C, H, W),
``fan_in = count / N`` and ``fan_out = count / C``.
"""

from __future__ import annotations

import numpy as np

from .blob import aligned_zeros
from .errors import ConfigError
from .spec.models import FillerSpec


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    count = int(np.prod(shape)) if shape else 1
    fan_in = count / shape[0] if len(shape) >= 1 and shape[0] else count
    fan_out = count / shape[1] if len(shape) >= 2 and shape[1] else count
    return fan_in, fan_out


def _variance_n(spec: FillerSpec, shape) -> float:
    fan_in, fan_out = _fans(shape)
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[
        spec.variance_norm]


def fill(spec: FillerSpec | dict | None, shape, dtype, rng: np.random.Generator) -> np.ndarray:
    """A new array of ``shape`` filled as ``spec`` says (None: constant 0, Caffe's default),
    64-byte aligned (``blob.aligned_zeros``). The random fillers draw float64 values a
    chunk at a time into it, the same values as one draw of the whole shape, so a large
    weight is never held in float64 as well."""
    if spec is None:
        spec = FillerSpec()
    elif isinstance(spec, dict):
        spec = FillerSpec.model_validate(spec)
    shape = tuple(shape)
    out = aligned_zeros(shape, dtype)
    kind = spec.type
    if kind == "constant":
        out[...] = spec.value
    elif kind == "uniform":
        _draw(out, lambda size: rng.uniform(spec.min, spec.max, size=size))
    elif kind == "gaussian":
        if spec.sparse >= 0:
            # Caffe: each weight is kept with probability sparse / num_outputs (shape[0]);
            # the mask is drawn after every value, so the values are drawn in one go
            values = rng.normal(spec.mean, spec.std, size=shape)
            outputs = shape[0] if shape else 1
            values *= rng.random(shape) < spec.sparse / outputs
            out[...] = values
        else:
            _draw(out, lambda size: rng.normal(spec.mean, spec.std, size=size))
    elif kind == "xavier":
        # Caffe: uniform(-a, a) with a = sqrt(3 / n)
        scale = np.sqrt(3.0 / _variance_n(spec, shape))
        _draw(out, lambda size: rng.uniform(-scale, scale, size=size))
    elif kind == "msra":
        # Caffe: gaussian(0, sqrt(2 / n))
        std = np.sqrt(2.0 / _variance_n(spec, shape))
        _draw(out, lambda size: rng.normal(0.0, std, size=size))
    elif kind == "positive_unitball":
        # each output's weights are positive and sum to 1
        values = rng.uniform(0.0, 1.0, size=shape)
        rows = values.reshape(shape[0], -1) if shape else values.reshape(1, -1)
        rows /= rows.sum(axis=1, keepdims=True)
        out[...] = values
    elif kind == "bilinear":
        out[...] = _bilinear(shape)
    else:  # the FillerSpec literal keeps this unreachable
        raise AssertionError(kind)
    return out


# values drawn in float64 per call of a random filler: 32 MB at a time
DRAW_CHUNK = 1 << 22


def _draw(out: np.ndarray, draw) -> None:
    """Fill ``out`` with ``draw(size)``'s float64 values, ``DRAW_CHUNK`` at a time (a
    Generator's stream does not depend on how the draws are cut)."""
    flat = out.reshape(-1)
    for start in range(0, flat.size, DRAW_CHUNK):
        stop = min(start + DRAW_CHUNK, flat.size)
        flat[start:stop] = draw(stop - start)


def _bilinear(shape) -> np.ndarray:
    """Caffe's bilinear upsampling kernel, the same for every (n, c); needs a 4-d square kernel."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ConfigError(f"the bilinear filler needs a square 4-d kernel, got shape {shape}",
                          field="weight_filler")
    k = shape[3]
    f = np.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(k) / f - c)
    return np.broadcast_to(np.outer(ramp, ramp), shape).copy()
