"""Which libraries compute matrix products (``blas``) and convolutions (``dnnl``).

``check_choices()`` refuses a wrong ``SOLVERKIT_BLAS`` or ``SOLVERKIT_CONV`` before any work;
``summary()`` names the choice in one line for ``solverkit check`` and Caffe's ``caffe`` command.
"""

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
