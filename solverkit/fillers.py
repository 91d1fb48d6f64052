"""Weight initialisers (Caffe's fillers), drawing from the layer's own Generator.

Fan-in and fan-out follow Caffe: for a blob of shape (N, C, H, W),
``fan_in = count / N`` and ``fan_out = count / C``.
"""

from __future__ import annotations

import numpy as np

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
    """A new array of ``shape`` filled as ``spec`` says (None: constant 0, Caffe's default)."""
    if spec is None:
        spec = FillerSpec()
    elif isinstance(spec, dict):
        spec = FillerSpec.model_validate(spec)
    shape = tuple(shape)
    kind = spec.type
    if kind == "constant":
        out = np.full(shape, spec.value)
    elif kind == "uniform":
        out = rng.uniform(spec.min, spec.max, size=shape)
    elif kind == "gaussian":
        out = rng.normal(spec.mean, spec.std, size=shape)
        if spec.sparse >= 0:
            # Caffe: each weight is kept with probability sparse / num_outputs (shape[0])
            outputs = shape[0] if shape else 1
            out *= rng.random(shape) < spec.sparse / outputs
    elif kind == "xavier":
        # Caffe: uniform(-a, a) with a = sqrt(3 / n)
        scale = np.sqrt(3.0 / _variance_n(spec, shape))
        out = rng.uniform(-scale, scale, size=shape)
    elif kind == "msra":
        # Caffe: gaussian(0, sqrt(2 / n))
        out = rng.normal(0.0, np.sqrt(2.0 / _variance_n(spec, shape)), size=shape)
    elif kind == "positive_unitball":
        # each output's weights are positive and sum to 1
        out = rng.uniform(0.0, 1.0, size=shape)
        rows = out.reshape(shape[0], -1) if shape else out.reshape(1, -1)
        rows /= rows.sum(axis=1, keepdims=True)
    elif kind == "bilinear":
        out = _bilinear(shape)
    else:  # the FillerSpec literal keeps this unreachable
        raise AssertionError(kind)
    return np.asarray(out, dtype=dtype)


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
