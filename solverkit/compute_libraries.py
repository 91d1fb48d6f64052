"""Which libraries compute: one line for ``solverkit check``, the benchmark and reports."""

from __future__ import annotations

from . import blas, dnnl, threads


def summary() -> str:
    """``compute: matrix products on …; convolutions on …; N threads``."""
    return (f"compute: matrix products on {blas.describe()}; convolutions on "
            f"{dnnl.describe()}; {threads.num_threads()} threads")


def check_choices() -> None:
    """Resolve ``SOLVERKIT_BLAS`` and ``SOLVERKIT_CONV`` now: a wrong value is a
    ``ConfigError`` before any work."""
    blas.backend()
    dnnl.backend()
