"""Link Caffe's tools into a Caffe source tree's build/ folder: solverkit caffe-build-links DIR

Caffe's example scripts call the tools by their build paths (``./build/tools/caffe``,
``build/examples/mnist/convert_mnist_data.bin``, ...). This makes each of those paths under
DIR a symbolic link to the command installed with solverkit, so the scripts run unchanged
from DIR. A path that already holds something else is left alone and reported.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..errors import SolverkitError

TOOLS = ("caffe", "convert_imageset", "compute_image_mean", "extract_features",
         "upgrade_net_proto_text", "upgrade_net_proto_binary", "upgrade_solver_proto_text")
EXAMPLES = {"convert_mnist_data": "examples/mnist", "convert_cifar_data": "examples/cifar10"}


def build_paths() -> dict[str, str]:
    """Each path under ``build/`` (with and without ``.bin``) -> the command it runs."""
    paths = {}
    for name in TOOLS:
        paths[f"build/tools/{name}"] = paths[f"build/tools/{name}.bin"] = name
    for name, folder in EXAMPLES.items():
        paths[f"build/{folder}/{name}.bin"] = paths[f"build/{folder}/{name}"] = name
    return paths


def installed(name: str) -> Path:
    """The installed console script ``name``: beside this Python, else on the PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise SolverkitError(f"the command '{name}' is not installed (pip install solverkit "
                             f"installs it; in a source tree: pip install -e .)")
    return Path(found)


def link_tools(root) -> tuple[list[Path], list[Path]]:
    """Make the links under ``root``; returns (made or already right, left alone)."""
    root = Path(root)
    if not root.is_dir():
        raise SolverkitError(f"'{root}' is not a folder", field="DIR")
    made, kept = [], []
    for relative, name in build_paths().items():
        target, link = installed(name).resolve(), root / relative
        if link.is_symlink() and Path(os.readlink(link)).resolve() == target:
            made.append(link)
            continue
        if link.exists() or link.is_symlink():
            kept.append(link)
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        made.append(link)
    return made, kept


def add_arguments(parser) -> None:
    parser.add_argument("root", metavar="DIR", help="the Caffe source tree (its build/ is made)")


def run(args) -> int:
    made, kept = link_tools(args.root)
    print(f"{len(made)} tool paths under {Path(args.root) / 'build'} run solverkit's commands")
    for path in kept:
        print(f"left alone (something else is there): {path}")
    return 0
