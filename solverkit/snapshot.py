"""Model and solver-state files: npz archives without pickle, written atomically.

A model file ``<prefix>_iter_<N>.model.npz`` holds every parameter under ``<layer>/<index>``
(a shared parameter once, under its first layer) and ``__meta__``, a 0-d ``str`` array of
JSON. Writes go to a temporary file in the same folder, are fsynced, then renamed, so a
crash never leaves half a file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from .errors import SnapshotError
from .files import (
    LIMITS,
    file_operation,
    fsync_folder,
    load_npz,
    open_regular,
    write_atomic,
)
from .runs import RunFiles, read_record
from .version import __version__

META_KEY = "__meta__"
FORMAT_VERSION = 1


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """Write ``arrays`` plus JSON ``meta`` to ``path`` atomically; returns the file's SHA-256."""
    buffer = io.BytesIO()
    payload = {**arrays, META_KEY: np.array(json.dumps(meta, sort_keys=True))}
    np.savez(buffer, **payload)
    data = buffer.getvalue()
    write_atomic(path, data, operation="write the snapshot")
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open_regular(path, what="model file", error=SnapshotError) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_npz(path: str | os.PathLike, kind: str) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays and the JSON meta of a snapshot file; a SnapshotError if it is not one.

    ``kind`` ("model" or "solverstate") must match the meta's ``kind``.
    """
    path = Path(path)
    arrays = load_npz(path, what=f"{kind} file", limit=LIMITS["model"], error=SnapshotError)
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
    meta.setdefault("versions", {"solverkit": __version__, "numpy": np.__version__})
    return atomic_write_npz(path, model_arrays(net), meta)


def _model_entries(path) -> dict[str, dict[int, np.ndarray]]:
    arrays, _ = read_npz(path, "model")
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    for key, value in arrays.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise SnapshotError(f"unexpected entry '{key}' (keys are <layer>/<index>)",
                                file=str(path))
        by_layer.setdefault(layer, {})[int(index)] = value
    return by_layer


def load_model(net, path, allow_missing: bool = False, allow_extra: bool = False) -> list[str]:
    """Copy parameters from a model file (or a Caffe ``.caffemodel``) into ``net`` by layer name.

    A layer of the net without weights in the file, a file layer the net lacks, or a shape
    that differs is a SnapshotError naming the layer — unless ``allow_missing`` (fine-tuning
    a new head), which skips the first two and returns the names of layers left as they were.
    ``allow_extra`` alone ignores file layers the net lacks (a TEST net reading a TRAIN model).
    """
    from .caffe.solverstate import is_caffemodel_h5, read_caffemodel_h5
    from .caffe.weights import is_caffemodel, legacy_fits, stored_parameters
    legacy: set[tuple[str, int]] = set()     # caffemodel blobs of Caffe's old 4-D shape
    if is_caffemodel_h5(path):
        by_layer = read_caffemodel_h5(path)
    elif is_caffemodel(path):
        by_layer, legacy = stored_parameters(path)
    else:
        by_layer = _model_entries(path)
    skipped, shared_done = [], set()
    for layer in net.layers:
        if not layer.blobs:
            continue
        stored = by_layer.pop(layer.name, None)
        if stored is None:
            if all(id(b) in shared_done for b in layer.blobs):
                continue        # every parameter is shared with a layer already loaded
            if not allow_missing:
                raise SnapshotError("the file has no weights for this layer (fine-tuning a new "
                                    "layer? pass --allow-missing)", file=str(path),
                                    layer=layer.name)
            skipped.append(layer.name)
            continue
        if len(stored) > len(layer.blobs):
            raise SnapshotError(f"the file has {len(stored)} parameters for this layer, the "
                                f"net's layer has {len(layer.blobs)}", file=str(path),
                                layer=layer.name)
        for j, blob in enumerate(layer.blobs):
            if j not in stored:
                if id(blob) in shared_done:
                    continue
                raise SnapshotError(f"parameter {j} is missing from the file", file=str(path),
                                    layer=layer.name)
            if (layer.name, j) in legacy and legacy_fits(stored[j].shape, blob.shape):
                stored[j] = stored[j].reshape(blob.shape)
            if stored[j].shape != blob.shape:
                raise SnapshotError(f"parameter {j} has shape {tuple(stored[j].shape)} in the "
                                    f"file but {blob.shape} in the net", file=str(path),
                                    layer=layer.name)
            np.copyto(blob.data, stored[j], casting="same_kind")
            shared_done.add(id(blob))
    if by_layer and not (allow_missing or allow_extra):
        names = ", ".join(sorted(by_layer))
        raise SnapshotError(f"the file has weights for layers the net does not have: {names} "
                            f"(pass --allow-missing to ignore them)", file=str(path))
    return skipped


# ---------------------------------------------------------------------------- solver state
def snapshot_paths(prefix: str, it: int) -> tuple[Path, Path]:
    """``<prefix>_iter_<N>.model.npz`` and ``<prefix>_iter_<N>.solverstate.npz``."""
    files = RunFiles(prefix)
    return files.model(it), files.state(it)


def _jsonable(value):
    """Spec values as JSON (in-memory data sources become a short description)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _parameter_list(net) -> list[list]:
    return [[key, list(array.shape)] for key, array in model_arrays(net).items()]


def save_solver(solver, stem: str | None = None) -> Path:
    """Write the model and ``solver.get_state()`` for ``solver.iter``; returns the state's path.

    Arrays go in as ``update/<layer>/<index>/<name>`` and ``data/<phase>/<layer>/<field>``,
    the rest into the JSON metadata. The model goes first: a crash between the two leaves
    a model without a state, which ``latest`` skips. The state records the model's file
    name and SHA-256. ``stem`` (``best``) names the pair ``<prefix>_<stem>.*`` instead of
    ``<prefix>_iter_<N>.*``: it is written into a fresh folder, then switched to with one
    atomic rename (``switch_pair``), so the named model and state always match. The
    callbacks' states (the best value and its iteration…) go into both files' metadata.
    """
    state = solver.get_state()
    files = RunFiles(solver.snapshot_prefix)
    if stem is None:
        model_path, state_path = files.model(state["iter"]), files.state(state["iter"])
    else:
        pair = files.pair_folder(stem, state["iter"])
        model_path, state_path = pair / "model.npz", pair / "solverstate.npz"
    model_sha = save_model(solver.net, model_path,
                           {"iter": state["iter"], "callbacks": state["callbacks"]})
    write_solver_state(solver, state, state_path, model_path, model_sha)
    if stem is None:
        return state_path
    switch_pair(files, stem, pair)
    return files.named_state(stem)


def write_solver_state(solver, state: dict, state_path, model_path, model_sha: str,
                       extra_meta: dict | None = None) -> str:
    """Write ``state`` (``solver.get_state()``) to ``state_path`` as a solverstate npz whose
    model is ``model_path`` (already written, SHA-256 ``model_sha``); returns its SHA-256."""
    model_path = Path(model_path)
    arrays = {f"update/{key}": array for key, array in state["update"].items()}
    generators = {}
    for phase, net_state in state["nets"].items():
        generators[phase] = net_state["generators"]
        for name, layer_state in net_state["data"].items():
            for field, value in layer_state.items():
                arrays[f"data/{phase}/{name}/{field}"] = np.asarray(value)
    meta = {
        "kind": "solverstate", "format": FORMAT_VERSION, "iter": state["iter"],
        "type": solver.spec.type, "solver": _jsonable(solver.spec.model_dump()),
        "net": solver.net.name, "net_spec": _jsonable(solver.net.spec.to_dict()),
        "parameters": _parameter_list(solver.net),
        "model_file": model_path.name, "model_sha256": model_sha,
        "rate": solver.rate(), "seed": solver.seed, "generators": generators,
        "schedule": state["schedule"], "run_id": state.get("run_id"),
        "callbacks": state["callbacks"], "last_test": state["last_test"],
        "smoothed_losses": state["smoothed_losses"], "seconds": state["seconds"],
        "world_size": solver.world.size,
        "versions": {"solverkit": __version__, "numpy": np.__version__},
        **(extra_meta or {}),
    }
    return atomic_write_npz(state_path, arrays, meta)


def switch_pair(files: RunFiles, name: str, pair: Path) -> None:
    """Make the complete pair in the folder ``pair`` the named snapshot ``name``.

    ``<prefix>_<name>.model.npz`` and ``.solverstate.npz`` are links through the link
    ``<prefix>_<name>.pair``, which is replaced by one rename: a process killed at any
    instant leaves the old pair or the new one, never one of each. The old folder goes last.
    """
    link = files.named_pair(name)
    old = files.current_pair(name)
    with file_operation("switch the named snapshot", link):
        _link_atomically(pair.name, link)
        fsync_folder(files.folder)
        for fixed, inside in ((files.named_state(name), "solverstate.npz"),
                              (files.named_model(name), "model.npz")):
            target = f"{link.name}/{inside}"
            if not (fixed.is_symlink() and os.readlink(fixed) == target):
                _link_atomically(target, fixed)     # once (a file of an older run: replaced)
        fsync_folder(files.folder)
    if old is not None and old.name != pair.name:
        shutil.rmtree(old, ignore_errors=True)


def _link_atomically(target: str, link: Path) -> None:
    temporary = link.with_name(f".{link.name}.{secrets.token_hex(4)}.tmp")
    os.symlink(target, temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _state_from_file(arrays: dict, meta: dict) -> dict:
    """The ``Solver.get_state()`` dict a solverstate file holds (see ``save_solver``)."""
    nets = {phase: {"generators": generators, "data": {}}
            for phase, generators in meta.get("generators", {}).items()}
    for key, value in arrays.items():
        kind, _, rest = key.partition("/")
        if kind == "data":
            phase, _, rest = rest.partition("/")
            name, _, field = rest.rpartition("/")
            nets.setdefault(phase, {"generators": {}, "data": {}})["data"].setdefault(
                name, {})[field] = value
    return {"iter": int(meta["iter"]), "smoothed_losses": meta.get("smoothed_losses", []),
            "run_id": meta.get("run_id"),
            "seconds": meta.get("seconds", 0.0), "schedule": meta.get("schedule", {}),
            "callbacks": meta.get("callbacks", {}), "last_test": meta.get("last_test"),
            "update": {k[len("update/"):]: v for k, v in arrays.items()
                       if k.startswith("update/")},
            "nets": nets}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    names = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            names.append(f"{prefix}{key} ({old.get(key)!r} -> {new.get(key)!r})")
    return names


def _layer_entries(spec: dict) -> dict[str, dict]:
    """The layer entries of a net spec dict by a label for messages. A name several entries
    share (Caffe nets name their TRAIN and TEST Data layers alike) is told apart by the
    entry's include phase, or else by its place among them."""
    layers = spec.get("layers", [])
    names = [layer.get("name") for layer in layers]
    entries, seen = {}, {}
    for name, layer in zip(names, layers):
        seen[name] = seen.get(name, 0) + 1
        label = f"layer '{name}'"
        if names.count(name) > 1:
            phases = [rule.get("phase") for rule in layer.get("include", [])]
            only = phases[0] if len(phases) == 1 and phases[0] else None
            label += f" ({only})" if only else f" (entry {seen[name]} of that name)"
        entries[label] = layer
    return entries


def _net_differences(old: dict, new: dict) -> list[str]:
    old_layers, new_layers = _layer_entries(old), _layer_entries(new)
    found = _differences({k: v for k, v in old.items() if k != "layers"},
                         {k: v for k, v in new.items() if k != "layers"}, "net ")
    for label in old_layers:
        if label in new_layers:
            found += _differences(old_layers[label], new_layers[label], f"{label} ")
    return found


def restore_solver(solver, path, warn=None, allow_world_size_change: bool = False) -> None:
    """Continue ``solver`` exactly from a ``.solverstate.npz``: bit for bit what the run
    that wrote it would have done next.

    Only the solver type and the parameter list (layer, index, shape) must match; other
    differences (hyperparameters, data paths, batch sizes) are reported through ``warn``.
    So is another number of MPI ranks with ``allow_world_size_change``; without, an error.
    A named snapshot's links are resolved once, first: the state and the model read are
    of one pair even if a running training switches the pair meanwhile.
    """
    where = str(path)
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    arrays, meta = read_npz(path, "solverstate")
    if meta.get("type") != solver.spec.type:
        raise SnapshotError(f"this state is of a {meta.get('type')} solver, but the solver spec "
                            f"says {solver.spec.type}: resume with the same type, or start a "
                            f"fresh solver from the weights with --weights "
                            f"{path.parent / meta.get('model_file', '<model file>')}",
                            file=where, field="type")
    saved_params = [(k, tuple(s)) for k, s in meta.get("parameters", [])]
    current = [(k, tuple(s)) for k, s in _parameter_list(solver.net)]
    if saved_params != current:
        saved_map, current_map = dict(saved_params), dict(current)
        diffs = [f"'{k}' {saved_map.get(k, 'absent')} in the snapshot, "
                 f"{current_map.get(k, 'absent')} in the net"
                 for k in dict.fromkeys([*saved_map, *current_map])
                 if saved_map.get(k) != current_map.get(k)]
        raise SnapshotError("the net's parameters differ from the snapshot's: "
                            f"{'; '.join(diffs[:5])}{' …' if len(diffs) > 5 else ''}; to start "
                            f"from these weights with another net use --weights "
                            f"(with --allow-missing for new layers)", file=where)
    saved_size = meta.get("world_size", 1)
    if saved_size != solver.world.size:
        change = (f"this state was written by {saved_size} MPI rank(s) but this run has "
                  f"{solver.world.size}")
        if not allow_world_size_change:
            raise SnapshotError(f"{change}: resume with mpirun -n {saved_size}, or pass "
                                f"--allow-world-size-change to go on with {solver.world.size} "
                                f"(the effective batch changes with it)", file=where,
                                field="world_size")
        if warn is not None:
            warn(f"resuming with a changed setting: {change} (the effective batch changes)")
    model_path = path.parent / meta["model_file"]
    if not model_path.exists():
        raise SnapshotError(f"its model file {model_path.name} is missing (it must sit beside "
                            f"the state)", file=where)
    if file_sha256(model_path) != meta["model_sha256"]:
        raise SnapshotError(f"the model file {model_path.name} does not match the state (its "
                            f"SHA-256 differs: overwritten or corrupt)", file=where)
    load_model(solver.net, model_path)
    try:
        solver.set_state(_state_from_file(arrays, meta))
    except SnapshotError as err:
        raise err.located(file=where) from None
    if warn is not None:
        changed = _differences(meta.get("solver", {}), _jsonable(solver.spec.model_dump()),
                               "solver ")
        changed += _net_differences(meta.get("net_spec", {}),
                                    _jsonable(solver.net.spec.to_dict()))
        for change in changed:
            warn(f"resuming with a changed setting: {change}")


def latest_snapshot(prefix: str, warn=None) -> Path | None:
    """The state file with the highest N whose state and model are both complete.

    When ``<prefix>.lock`` names the run that owns the prefix, only that run's snapshots
    count. Each newer snapshot passed over because it is damaged is reported through
    ``warn``.
    """
    owner = read_record(prefix).get("run_id")
    found = [(it, kinds["solverstate"]) for it, kinds in RunFiles(prefix).snapshots().items()
             if "solverstate" in kinds]
    for _, candidate in sorted(found, reverse=True):
        try:
            _, meta = read_npz(candidate, "solverstate")
            if owner is not None and meta.get("run_id") not in (owner, None):
                continue        # another run's file: never resumed as this one's
            model = candidate.parent / meta["model_file"]
            if not model.exists():
                problem = f"its model file {model.name} is missing"
            elif file_sha256(model) != meta["model_sha256"]:
                problem = f"its model file {model.name} does not match it"
            else:
                return candidate
        except SnapshotError as err:
            problem = err.message
        except KeyError as err:
            problem = f"its metadata lacks {err}"
        if warn is not None:
            warn(f"--resume latest: skipped {candidate} ({problem})")
    return None


def resolve_resume(value: str, prefix: str, warn=None) -> Path:
    """``--resume PATH`` or ``--resume latest`` (for the solver's snapshot prefix)."""
    if value == "latest":
        found = latest_snapshot(prefix, warn=warn)
        if found is None:
            raise SnapshotError(f"no complete snapshot found for the prefix '{prefix}' "
                                f"(looked for {prefix}_iter_<N>.solverstate.npz)",
                                field="--resume")
        return found
    return Path(value)
