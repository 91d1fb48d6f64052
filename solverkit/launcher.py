"""What an MPI launcher told this process, read from the environment variables it sets.

Asking costs no import (mpi4py is imported only by ``solverkit.parallel`` when a launcher
started several ranks), so the thread count and the data feeder can divide the cores
among the ranks without loading MPI.
"""

from __future__ import annotations

import os

# Variables MPI launchers set in every process they start: the number of ranks.
# MPICH/Hydra, Intel MPI and Slurm's PMI-2 set PMI_SIZE; Open MPI sets OMPI_COMM_WORLD_SIZE;
# MVAPICH2 MV2_COMM_WORLD_SIZE; Hydra also MPI_LOCALNRANKS (ranks on this node).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
OPT_OUT_VARIABLE = "SOLVERKIT_MPI"


def launcher_size(environ=None) -> int:
    """The number of ranks an MPI launcher says it started (1 without a launcher).

    Read from the environment only, so asking costs no import. Slurm's PMIx plugin sets
    no size variable of its own: there ``PMIX_RANK`` marks the launch and the step's task
    count is the size. ``SOLVERKIT_MPI=off`` (or 0/no/false) answers 1.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_VARIABLE, "").strip().lower() in ("off", "0", "no", "false"):
        return 1
    names = list(SIZE_VARIABLES)
    if "PMIX_RANK" in environ:
        names.append("SLURM_STEP_NUM_TASKS")
    sizes = []
    for name in names:
        try:
            sizes.append(int(environ.get(name, "")))
        except ValueError:
            continue
    return max(sizes, default=1)
