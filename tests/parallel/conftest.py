"""Run code under ``mpirun -n K`` in a subprocess, with a timeout so a hang fails the test.

Tests needing MPI are skipped, with the reason, when mpi4py or an ``mpirun`` is missing
(``pip install -e '.[mpi]'`` provides both: mpi4py and the MPICH wheel's launcher).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def find_mpirun() -> tuple[str | None, str]:
    """(path of the launcher, "") or (None, why not)."""
    if importlib.util.find_spec("mpi4py") is None:
        return None, "mpi4py is not installed (pip install -e '.[mpi]')"
    # The MPICH wheel puts its launcher beside the interpreter; it matches mpi4py's MPI.
    for name in ("mpirun", "mpiexec"):
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside), ""
    found = shutil.which("mpirun") or shutil.which("mpiexec")
    if found is None:
        return None, "no mpirun/mpiexec found (pip install -e '.[mpi]' installs MPICH's)"
    return found, ""


def mpi_env(**extra) -> dict:
    """The environment for ranks: one BLAS thread each (2 cores), no launcher variables."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PMI_", "OMPI_", "MPI_LOCAL", "HYDRA_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.pop("SOLVERKIT_MPI", None)
    env.update(extra)
    return env


@pytest.fixture
def mpirun(tmp_path):
    """``mpirun(script_or_args, n=2, timeout=60, cwd=tmp_path)`` -> CompletedProcess.

    A string is a Python script (dedented, written to a file); a list is the arguments
    after the interpreter (e.g. ``["-m", "solverkit", "train", ...]``).
    """
    launcher, reason = find_mpirun()
    if launcher is None:
        pytest.skip(reason)

    def run(program, n: int = 2, timeout: float = 60, cwd=None, env=None):
        if isinstance(program, str):
            script = tmp_path / f"mpi_program_{len(list(tmp_path.glob('mpi_program_*')))}.py"
            script.write_text(textwrap.dedent(program))
            program = [str(script)]
        command = [launcher, "-n", str(n), sys.executable, *program]
        # A session of its own: on a hang the launcher *and* its ranks are killed together.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=cwd or tmp_path, env=mpi_env(**(env or {})),
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"{' '.join(command)} hung for {timeout} s\nstdout: {stdout}\n"
                        f"stderr: {stderr}")
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    return run
