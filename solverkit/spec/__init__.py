"""The YAML schema: pydantic models for the net and solver specs, loading and error text."""

from .net import (
                  FillerSpec,
                  LayerParams,
                  LayerSpec,
                  NetSpec,
                  NetStateRule,
                  ParamSpec,
                  StrictModel,
                  load_net_spec,
)
from .solver import SolverSpec, load_solver_spec
from .source import SpecSource, read_spec_source, validation_error

__all__ = ["FillerSpec", "LayerParams", "LayerSpec", "NetSpec", "NetStateRule", "ParamSpec",
           "SolverSpec", "SpecSource", "StrictModel", "load_net_spec", "load_solver_spec",
           "read_spec_source", "validation_error"]
