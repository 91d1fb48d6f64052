"""The shipped example nets, with tiny data files where they read files not shipped."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXAMPLE_NETS = sorted(CONFIGS.glob("*/*_net.yaml"))
EXAMPLE_IDS = [f"{p.parent.name}/{p.stem}" for p in EXAMPLE_NETS]


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def example_spec(config: Path, tmp_path: Path) -> Path:
    """``config``, copied beside small TEST data files of its format (MNIST, CIFAR-10)."""
    rng = np.random.default_rng(0)
    if config.parent.name == "mnist":
        (tmp_path / "data").mkdir()
        _idx(tmp_path / "data" / "t10k-images-idx3-ubyte", rng.integers(0, 256, (100, 28, 28)))
        _idx(tmp_path / "data" / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 100))
    elif config.parent.name == "cifar10":
        (tmp_path / "data").mkdir()
        labels = rng.integers(0, 10, size=(100, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, size=(100, 3 * 32 * 32), dtype=np.uint8)
        (tmp_path / "data" / "test_batch.bin").write_bytes(np.hstack([labels, pixels]).tobytes())
    else:
        return config
    target = tmp_path / config.name
    target.write_text(config.read_text())
    return target
