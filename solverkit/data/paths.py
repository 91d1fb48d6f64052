"""Where a data file named in a spec is: every data path is resolved here.

A relative name is relative to ``base_dir`` (the folder of the spec that names it) or,
without one, to the working directory; ``~`` is the user's home.
"""

from __future__ import annotations

import glob
from pathlib import Path

from ..errors import DataError


def resolve(name, base_dir) -> Path:
    """``name`` as an absolute-or-base-relative path (it need not exist)."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    return (Path(base_dir) if base_dir is not None else Path.cwd()) / path


def resolve_existing(name, base_dir, field: str) -> Path:
    """``name`` resolved; it must exist (a file or a folder)."""
    path = resolve(name, base_dir)
    if not path.exists():
        raise DataError(f"'{path}' does not exist", field=field)
    return path


def resolve_paths(source, base_dir, field: str) -> list[Path]:
    """A path, a glob pattern or a list of them -> existing regular files.

    A missing ``NAME`` whose ``NAME.gz`` exists is read from the ``.gz``."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise DataError("no file given", field=field)
    paths = []
    for item in items:
        if not isinstance(item, (str, Path)):
            raise DataError(f"expected a file name, got {type(item).__name__}", field=field)
        path = resolve(item, base_dir)
        if glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(path)))
            if not matches:
                raise DataError(f"no file matches '{path}'", field=field)
            paths.extend(matches)
            continue
        if not path.exists() and path.with_name(path.name + ".gz").exists():
            path = path.with_name(path.name + ".gz")    # MNIST as downloaded, still gzipped
        if not path.exists():
            if path.is_symlink():
                raise DataError(f"data file '{path}' is a symbolic link that leads nowhere (a "
                                f"loop, or its target does not exist)", field=field)
            raise DataError(f"data file '{path}' does not exist", field=field)
        if path.is_dir():
            raise DataError(f"'{path}' is a folder; name the data file(s) in it", field=field)
        if not path.is_file():      # a FIFO or a device would block or never end
            raise DataError(f"data file '{path}' is not a regular file (a FIFO or a device?)",
                            field=field)
        paths.append(path)
    return paths
