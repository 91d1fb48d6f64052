"""Optimisation: learning-rate policies (``schedule``), parameter updates (``updates``), the loop (``solver``)."""

from .schedule import learning_rate
from .solver import Solver, batches_per_pass
from .updates import UPDATES, Update, make_update

__all__ = ["UPDATES", "Solver", "Update", "batches_per_pass", "learning_rate", "make_update"]
