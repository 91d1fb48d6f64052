"""Layers written in Python by the net's author: Caffe's ``Python`` layer type.

A net entry names a module and a class (Caffe's ``python_param``)::

    - name: scale
      type: Python
      bottom: x
      top: y
      module: my_layers          # found in the current folder, the net file's folder, PYTHONPATH
      layer: Scale               # a class of that module
      param_str: "factor: 2"     # handed to the class as ``self.param_str``

The class follows pycaffe's contract (``caffe.Layer`` is :class:`PythonLayer`):
``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom, top)``,
``backward(top, propagate_down, bottom)``, where ``bottom`` and ``top`` are lists of
:class:`~solverkit.blob.Blob` (``.data``, ``.diff``, ``.reshape(*shape)``, ``.num``...).
Its learnable parameters are ``self.blobs`` (``self.blobs.add_blob(*shape)`` in
``setup``): the net saves, loads, shares and updates them like any layer's. As in Caffe,
``reshape`` runs before every ``forward``, and an exception raised by the class's code
reaches the caller unchanged (from the ``Net`` constructor when ``setup`` raises).
"""

from __future__ import annotations

import importlib
import os
import sys
from enum import IntEnum

import numpy as np

from ..blob import Blob
from ..errors import ConfigError
from ..registry import register_layer
from ..spec.net import LayerParams
from .base import Layer


class Phase(IntEnum):
    """Caffe's phase enum (``caffe.TRAIN`` is 0, ``caffe.TEST`` is 1)."""

    TRAIN = 0
    TEST = 1


class BlobVec(list):
    """A layer's parameter Blobs; ``add_blob(*shape)`` appends a zero Blob (pycaffe's BlobVec)."""

    def __init__(self, dtype=np.float32, owner: str = ""):
        super().__init__()
        self.dtype = np.dtype(dtype)
        self.owner = owner

    def add_blob(self, *shape) -> None:
        self.append(Blob(tuple(int(s) for s in shape), self.dtype,
                         name=f"{self.owner}/{len(self)}"))


class PythonLayer:
    """Base of a Python layer's class (pycaffe's ``caffe.Layer``).

    Before ``setup`` runs the net sets ``self.blobs`` (a :class:`BlobVec`), ``self.param_str``
    (the entry's string) and ``self.phase`` (a :class:`Phase`). Every method does nothing
    here; a class overrides the ones it needs.
    """

    type = "Python"

    def __init__(self, layer_param=None):
        self.layer_param = layer_param
        self.blobs = BlobVec()
        self.param_str = ""
        self.phase = Phase.TRAIN

    def setup(self, bottom, top):
        """Read ``self.param_str``, check the bottoms, create ``self.blobs``."""

    def reshape(self, bottom, top):
        """Give every top its shape (runs before each forward)."""

    def forward(self, bottom, top):
        """Fill the tops' data from the bottoms' data."""

    def backward(self, top, propagate_down, bottom):
        """Fill the diffs of the bottoms flagged in ``propagate_down``; add into the
        diffs of ``self.blobs``."""


def import_layer_class(module: str, class_name: str, base_dir=None) -> type:
    """``module.class_name``, the module looked up as Caffe's tools find it: the current
    folder, then the net file's folder, then ``sys.path`` (which holds ``PYTHONPATH``)."""
    extra = [os.getcwd()] + ([str(base_dir)] if base_dir is not None else [])
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or not module.startswith(err.name):
            raise                   # the module itself imports something missing
        raise ConfigError(f"cannot import module '{module}' for the Python layer (looked in "
                          f"the current folder, the net file's folder and PYTHONPATH)",
                          field="module") from None
    finally:
        for path in added:
            if path in sys.path:
                sys.path.remove(path)
    cls = getattr(found, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"module '{module}' ({getattr(found, '__file__', '?')}) has no class "
                          f"'{class_name}'", field="layer")
    return cls


@register_layer("Python")
class Python(Layer):
    """A layer whose code is a Python class named by ``module`` and ``layer`` (see the module
    docstring); ``param_str`` is given to it; ``share_in_parallel`` is accepted (one process
    holds one copy of the layer anyway)."""

    class Params(LayerParams):
        module: str
        layer: str
        param_str: str = ""
        share_in_parallel: bool = False

    allows_in_place = True

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        cls = import_layer_class(self.params.module, self.params.layer, self.base_dir)
        self.python = cls(spec)
        self.python.blobs = self.blobs = BlobVec(self.dtype, owner=self.name)
        self.python.param_str = self.params.param_str
        self.python.phase = Phase[self.phase]

    def setup(self, bottom, top):
        self.python.setup(bottom, top)
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        self.python.reshape(bottom, top)

    def forward(self, bottom, top):
        self.python.reshape(bottom, top)
        self.python.forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        self.python.backward(top, list(propagate_down), bottom)
