"""The YAML schema: pydantic models for the net and solver specs, loading and error text.

``models`` (net models, ``StrictModel``; imports nothing of solverkit but its errors),
``training`` (training-control and callback fields) and ``solver_fields`` (the solver's
fields, with those of the registered rules and policies) are the schema; ``source``
(bounded YAML reading, error text), ``net`` and ``solver`` (loading: files, plugins,
overrides) sit above them.
"""

from .models import (
                     FillerSpec,
                     LayerParams,
                     LayerSpec,
                     NetSpec,
                     NetStateRule,
                     ParamSpec,
                     SpecSource,
                     StrictModel,
)
from .net import load_net_spec
from .solver import load_solver_spec
from .solver_fields import SolverSpec
from .source import read_spec_source, validation_error

__all__ = ["FillerSpec", "LayerParams", "LayerSpec", "NetSpec", "NetStateRule", "ParamSpec",
           "SolverSpec", "SpecSource", "StrictModel", "load_net_spec", "load_solver_spec",
           "read_spec_source", "validation_error"]
