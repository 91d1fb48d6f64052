"""BatchNorm blobs as a trained net has them, for the tests of inference forwards."""

from __future__ import annotations

import numpy as np


def set_trained_statistics(net, *, factor: float = 2.0, mean_std: float = 0.5,
                           seed: int = 5) -> np.random.Generator:
    """Every BatchNorm's stored sums of means and variances with scale factor ``factor``
    (Caffe divides by it; 0 makes it use mean 0 and variance 0). Returns the generator, for
    whatever else the caller draws."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            mean, var, stored = layer.blobs
            mean.data[...] = factor * rng.normal(0, mean_std, mean.shape)
            var.data[...] = factor * rng.uniform(0.5, 1.5, var.shape)
            stored.data[...] = factor
    return rng
