"""Built-in layers, one module per family; importing this package registers them all."""

from ..spec.models import LayerParams
from . import (  # noqa: F401
    activation,
    arithmetic,
    batch_selection,
    data,
    detection,
    forks,
    hdf5,
    inner_product,
    inputs,
    loss,
    memory,
    normalization,
    python,
    recurrent,
    shape,
    vision,
    window_data,
)
from .base import DataLayer, Layer, LossLayer, spatial_pair

__all__ = ["DataLayer", "Layer", "LayerParams", "LossLayer", "spatial_pair"]
