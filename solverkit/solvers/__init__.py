"""Optimisation: learning-rate policies (``schedule``), parameter updates (``updates``),
callbacks (``callbacks``; the loop's own work in ``loop_callbacks``, MPI data parallelism in
``data_parallel``), which nets a solver builds (``nets``), the loop (``solver``) and snapshots
in Caffe's files (``caffe_snapshot``)."""

from .callbacks import Callback
from .schedule import Policy, PolicyParams, Schedule, learning_rate
from .solver import Solver, batches_per_pass
from .updates import ElementwiseRule, Updater, UpdateRule

__all__ = ["Callback", "ElementwiseRule", "Policy", "PolicyParams", "Schedule", "Solver", "UpdateRule",
           "Updater", "batches_per_pass", "learning_rate"]
