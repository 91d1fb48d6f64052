"""Model and solver-state files: npz archives without pickle, written atomically.

A model file ``<prefix>_iter_<N>.model.npz`` holds every parameter under ``<layer>/<index>``
(a shared parameter once, under its first layer) and ``__meta__``, a 0-d ``str`` array of
JSON. Writes go to a temporary file in the same folder, are fsynced, then renamed, so a
crash never leaves half a file under the final name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import SnapshotError

META_KEY = "__meta__"
FORMAT_VERSION = 1


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """Write ``arrays`` plus JSON ``meta`` to ``path`` atomically; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    payload = {**arrays, META_KEY: np.array(json.dumps(meta, sort_keys=True))}
    np.savez(buffer, **payload)
    data = buffer.getvalue()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass    # some file systems cannot fsync a folder; the rename is still atomic
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_npz(path: str | os.PathLike, kind: str) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays and the JSON meta of a snapshot file; a SnapshotError if it is not one.

    ``kind`` ("model" or "solverstate") must match the meta's ``kind``.
    """
    path = Path(path)
    if not path.exists():
        raise SnapshotError(f"{kind} file not found", file=str(path))
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise SnapshotError(f"not a readable {kind} snapshot (truncated or corrupt?): {err}",
                            file=str(path)) from None
    if META_KEY not in arrays:
        raise SnapshotError(f"not a solverkit {kind} file (no {META_KEY} entry)", file=str(path))
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except ValueError as err:
        raise SnapshotError(f"corrupt metadata: {err}", file=str(path)) from None
    found = meta.get("kind")
    if found != kind:
        hint = {"model": " (give the .solverstate.npz to --resume; a model goes to --weights)",
                "solverstate": " (a solver state goes to --resume, not --weights)"}.get(found, "")
        raise SnapshotError(f"this is a {found or 'unknown'} file, not a {kind} file{hint}",
                            file=str(path))
    return arrays, meta


def model_arrays(net) -> dict[str, np.ndarray]:
    """Every parameter of ``net`` by ``<layer>/<index>``; a shared Blob once, first layer wins."""
    arrays, seen = {}, set()
    for layer in net.layers:
        for j, blob in enumerate(layer.blobs):
            if id(blob) in seen:
                continue
            seen.add(id(blob))
            arrays[f"{layer.name}/{j}"] = blob.data
    return arrays


def save_model(net, path, extra_meta: dict | None = None) -> str:
    """Write ``net``'s parameters to ``path`` (npz); returns the file's SHA-256."""
    meta = {"kind": "model", "format": FORMAT_VERSION, "net": net.name,
            "dtype": str(net.dtype), "parameters": {k: list(v.shape)
                                                    for k, v in model_arrays(net).items()},
            **(extra_meta or {})}
    from . import __version__
    meta.setdefault("versions", {"solverkit": __version__, "numpy": np.__version__})
    return atomic_write_npz(path, model_arrays(net), meta)


def load_model(net, path, allow_missing: bool = False) -> list[str]:
    """Copy parameters from a model file into ``net``, matching layers by name.

    A layer of the net without weights in the file, a file layer the net lacks, or a shape
    that differs is a SnapshotError naming the layer — unless ``allow_missing`` (fine-tuning
    a new head), which skips the first two and returns the names of layers left as they were.
    """
    arrays, _ = read_npz(path, "model")
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    for key, value in arrays.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise SnapshotError(f"unexpected entry '{key}' (keys are <layer>/<index>)",
                                file=str(path))
        by_layer.setdefault(layer, {})[int(index)] = value
    skipped, shared_done = [], set()
    for layer in net.layers:
        if not layer.blobs:
            continue
        stored = by_layer.pop(layer.name, None)
        if stored is None:
            if all(id(b) in shared_done for b in layer.blobs):
                continue        # every parameter is shared with a layer already loaded
            if not allow_missing:
                raise SnapshotError(f"the file has no weights for this layer (fine-tuning a new "
                                    f"layer? pass --allow-missing)", file=str(path),
                                    layer=layer.name)
            skipped.append(layer.name)
            continue
        for j, blob in enumerate(layer.blobs):
            if j not in stored:
                if id(blob) in shared_done:
                    continue
                raise SnapshotError(f"parameter {j} is missing from the file", file=str(path),
                                    layer=layer.name)
            if stored[j].shape != blob.shape:
                raise SnapshotError(f"parameter {j} has shape {tuple(stored[j].shape)} in the "
                                    f"file but {blob.shape} in the net", file=str(path),
                                    layer=layer.name)
            np.copyto(blob.data, stored[j], casting="same_kind")
            shared_done.add(id(blob))
    if by_layer and not allow_missing:
        names = ", ".join(sorted(by_layer))
        raise SnapshotError(f"the file has weights for layers the net does not have: {names} "
                            f"(pass --allow-missing to ignore them)", file=str(path))
    return skipped
