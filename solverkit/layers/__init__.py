"""Built-in layers, one module per family; importing this package registers them all."""

from ..spec.net import LayerParams
from . import (  # noqa: F401  # noqa: F401
    activation,
    batch_selection,
    recurrent,
    common,
    data,
    loss,
    hdf5,
    normalization,
    utility,
    vision,
    window_data,
)
from .base import DataLayer, Layer, LossLayer, spatial_pair

__all__ = ["DataLayer", "Layer", "LayerParams", "LossLayer", "spatial_pair"]
