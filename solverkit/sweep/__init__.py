"""Sweeps: many training runs over a grid, random draws or an Optuna search, and the answer.

``space`` says what is tried (settings, seeds, trial names), ``runner`` runs the trials as
``solverkit train`` processes under one folder, ``results`` reads their logs into one row
per setting, ``search`` drives Optuna.
"""

from .results import format_rows, plot, summarize, verdict
from .runner import Sweep, Trial, claim_folder, plan_sweep, run_trials

__all__ = ["Sweep", "Trial", "claim_folder", "format_rows", "plan_sweep", "plot", "run_trials",
           "summarize", "verdict"]
