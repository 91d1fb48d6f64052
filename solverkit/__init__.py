"""solverkit: a Caffe-style, config-driven deep-learning framework on numpy."""

import os
import sys


def _quiet_interrupt_as_a_command() -> None:
    """Run as the ``solverkit`` command, Ctrl-C while the modules load prints one line, not a
    traceback (the command's own handler takes over once it runs). A library import keeps
    Python's default."""
    argv = getattr(sys, "orig_argv", [])
    as_module = any(a == "-m" and argv[i + 1:i + 2] == ["solverkit"] for i, a in enumerate(argv))
    as_script = bool(sys.argv) and os.path.basename(sys.argv[0]) == "solverkit"
    if not (as_module or as_script):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            print("solverkit: interrupted", file=sys.stderr)
            return
        previous(kind, value, traceback)

    sys.excepthook = hook


_quiet_interrupt_as_a_command()

# OpenBLAS's threads spin for 2^28 cycles (~0.1 s) after every product before they sleep,
# holding the cores that solverkit's own threads need for the element-wise work between
# products (see threads.py); 2^16 cycles (~25 µs) still bridges back-to-back products.
# OpenBLAS reads this once, when numpy is first imported.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

# importing .layers and .solvers registers the built-in layer types, update rules, lr
# policies and callbacks (the registry itself imports none of them)
from . import blas
from .blob import Blob
from .data import SourceFormat, register_source_format
from .deploy import deploy_net
from .errors import ConfigError, DataError, NonFiniteError, ShapeError, SolverkitError
from .export import Exporter, register_exporter
from .layers import DataLayer, Layer, LayerParams, LossLayer
from .net import Net
from .registry import (
    layer_types,
    register_callback,
    register_layer,
    register_policy,
    register_update,
)
from .solvers import Callback, ElementwiseRule, Policy, Solver, UpdateRule
from .spec import NetSpec, SolverSpec, load_net_spec, load_solver_spec
from .threads import num_threads, set_num_threads
from .version import __version__

__all__ = [
           "Blob",
           "Callback",
           "ConfigError",
           "DataError",
           "DataLayer",
           "ElementwiseRule",
           "Exporter",
           "Layer",
           "LayerParams",
           "LossLayer",
           "Net",
           "NetSpec",
           "NonFiniteError",
           "Policy",
           "ShapeError",
           "Solver",
           "SolverSpec",
           "SolverkitError",
           "SourceFormat",
           "UpdateRule",
           "__version__",
           "blas",
           "deploy_net",
           "layer_types",
           "load_net_spec",
           "load_solver_spec",
           "num_threads",
           "register_callback",
           "register_exporter",
           "register_layer",
           "register_policy",
           "register_source_format",
           "register_update",
           "set_num_threads",
]
