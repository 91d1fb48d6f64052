"""Built-in layers, one module per family; importing this package registers them all."""

from . import activation, common, loss  # noqa: F401
from . import data  # noqa: F401
from . import normalization, utility  # noqa: F401
from . import vision  # noqa: F401
from .base import Layer, LossLayer, spatial_pair
from ..spec.net import LayerParams

__all__ = ["Layer", "LayerParams", "LossLayer", "spatial_pair"]
