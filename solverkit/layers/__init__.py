"""Built-in layers, one module per family; importing this package registers them all."""

from ..spec.models import LayerParams
from . import (  # noqa: F401
    activation,
    common,
    data,
    detection,
    forks,
    loss,
    memory,
    normalization,
    python,
    utility,
    vision,
)
from .base import DataLayer, Layer, LossLayer, spatial_pair

__all__ = ["DataLayer", "Layer", "LayerParams", "LossLayer", "spatial_pair"]
