"""pycaffe's module-level functions: modes, seeds, logging, the layer list, solver counts.

There is one device here, the CPU. ``set_mode_gpu`` and ``set_device`` warn once and the
work stays on the CPU, so a script written for a GPU runs unchanged.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np

import solverkit
from solverkit.layers.python import Phase

TRAIN = Phase.TRAIN
TEST = Phase.TEST

logger = logging.getLogger("caffe")

_state = {"mode": "CPU", "gpu_warned": False, "solver_count": 1, "solver_rank": 0,
          "multiprocess": False, "seed": None}


def _warn_gpu(what: str) -> None:
    if not _state["gpu_warned"]:
        _state["gpu_warned"] = True
        warnings.warn(f"caffe.{what}: this caffe runs on the CPU only; continuing on the CPU",
                      RuntimeWarning, stacklevel=3)


def set_mode_cpu() -> None:
    _state["mode"] = "CPU"


def set_mode_gpu() -> None:
    _warn_gpu("set_mode_gpu")


def set_device(device_id: int) -> None:
    _warn_gpu("set_device")


def set_random_seed(seed: int) -> None:
    """Seed the generators of the nets built afterwards (fillers, dropout) and numpy's own."""
    _state["seed"] = int(seed)
    np.random.seed(int(seed) % 2**32)


def random_seed() -> int | None:
    """The seed given to ``set_random_seed`` (None: each net draws its own)."""
    return _state["seed"]


def layer_type_list() -> list[str]:
    """Every registered layer type, sorted (Caffe's ``LayerRegistry::LayerTypeList``)."""
    return sorted(solverkit.layer_types())


def has_nccl() -> bool:
    return False


def init_log(level: int = 0, stderr: bool = False) -> None:
    """Caffe's glog levels: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL."""
    python_level = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR}.get(int(level),
                                                                                logging.CRITICAL)
    for name in ("caffe", "solverkit"):
        logging.getLogger(name).setLevel(python_level)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname).1s %(asctime)s %(name)s] %(message)s")


def log(message: str) -> None:
    logger.info("%s", message)


def solver_count() -> int:
    return _state["solver_count"]


def set_solver_count(count: int) -> None:
    _state["solver_count"] = int(count)


def solver_rank() -> int:
    return _state["solver_rank"]


def set_solver_rank(rank: int) -> None:
    _state["solver_rank"] = int(rank)


def set_multiprocess(multiprocess: bool) -> None:
    _state["multiprocess"] = bool(multiprocess)


class Timer:
    """Wall-clock timer in milliseconds: ``start()``, ``stop()``, ``ms`` (Caffe's CPU Timer)."""

    def __init__(self):
        self._start: float | None = None
        self._elapsed = 0.0
        self._running = False

    def start(self) -> None:
        self._start = time.perf_counter()
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._elapsed = time.perf_counter() - self._start
            self._running = False

    @property
    def ms(self) -> float:
        if self._running:
            self.stop()
        return self._elapsed * 1000.0


class NCCL:
    """Present for imports; this caffe has no GPUs to synchronise (``has_nccl()`` is False)."""

    def __init__(self, solver, uid):
        raise RuntimeError("NCCL is not available: this caffe runs on the CPU only")
