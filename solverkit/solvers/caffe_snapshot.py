"""Snapshots in Caffe's files (``snapshot_format: BINARYPROTO`` or ``HDF5``) and resuming
from them, whether we or Caffe wrote them.

A snapshot at iteration N writes, each atomically and in this order:

1. ``<prefix>_iter_N.caffemodel`` (``.caffemodel.h5``): every layer of the TRAIN net with
   its blobs;
2. ``<prefix>_iter_N.solverstate`` (``.solverstate.h5``): Caffe's ``SolverState`` — the
   iteration, ``learned_net`` (the model's name as the solver wrote it), the update rule's
   state in Caffe's ``history`` order and the step policy's ``current_step``;
3. ``<prefix>_iter_N.solverstate.sk.npz``, the side file: everything else an exact resume
   needs (data cursors, random generators, the loss window, the callbacks' states), a
   solverkit solver state whose model is the ``.caffemodel`` and which records the
   SHA-256 of the ``.solverstate`` it goes with.

Resuming from a ``.solverstate`` with its side file beside it (and matching) continues
bit-exactly, as ``--resume`` from an npz snapshot does. Without it (a state written by
Caffe, or copied alone), the resume is Caffe's: weights from ``learned_net``, the
iteration, the history and the step; data layers start from their first record and the
loss window is empty, as in a new Caffe process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..caffe.solverstate import (
    MODEL_EXTENSION,
    STATE_EXTENSION,
    SolverState,
    caffemodel_h5_bytes,
    history_names,
    read_solverstate,
    snapshot_filename,
    write_solverstate,
)
from ..caffe.weights import encode_caffemodel
from ..errors import SnapshotError
from ..files import write_atomic
from ..snapshot import (
    file_sha256,
    load_model,
    read_npz,
    restore_solver,
    write_solver_state,
)

SIDE_SUFFIX = ".sk.npz"


def side_file(state_path) -> Path:
    """The exact-resume side file of a Caffe solver state: ``<state name>.sk.npz``."""
    return Path(f"{state_path}{SIDE_SUFFIX}")


def caffe_history(solver) -> list[np.ndarray]:
    """The update rule's state as Caffe's ``history``: for each state array name in order,
    one array per learnable parameter (zeros for a parameter the rule does not update)."""
    arrays = solver.updater.state_arrays()
    return [arrays.get(f"{param.key}/{name}", np.zeros_like(param.blob.data))
            for name in history_names(solver.updater.rule.state_names)
            for param in solver.net.learnable_params]


def current_step(spec, iteration: int) -> int:
    """Caffe's ``current_step`` after the update of iteration ``iteration - 1``: the steps
    of ``step`` (``it // stepsize``) or ``multistep`` (stepvalues reached) taken so far."""
    last = iteration - 1
    if last < 0:
        return 0
    if spec.lr_policy == "step":
        return last // spec.stepsize
    if spec.lr_policy == "multistep":
        return sum(1 for value in spec.stepvalue if last >= value)
    return 0


def _model_bytes(net, snapshot_format: str) -> bytes:
    if snapshot_format == "HDF5":
        owned, seen = [], set()
        for layer in net.layers:       # Caffe stores a shared parameter under its owner only
            blobs = [(j, blob.data) for j, blob in enumerate(layer.blobs) if id(blob) not in seen]
            seen.update(id(blob) for blob in layer.blobs)
            owned.append((layer.name, blobs))
        return caffemodel_h5_bytes(owned)
    layers = [(layer.name, layer.spec.type, list(layer.spec.bottom), list(layer.spec.top),
               [np.asarray(blob.data, dtype=np.float32) for blob in layer.blobs])
              for layer in net.layers]
    return encode_caffemodel(net.name, layers)


def save_caffe_snapshot(solver) -> Path:
    """Write the snapshot of ``solver.iter`` in ``solver.spec.snapshot_format`` (see the
    module's docstring); returns the ``.solverstate`` path."""
    snapshot_format = solver.spec.snapshot_format
    state = solver.get_state()
    iteration, prefix = state["iter"], solver.snapshot_prefix
    model_path = Path(snapshot_filename(prefix, iteration, MODEL_EXTENSION[snapshot_format]))
    state_path = Path(snapshot_filename(prefix, iteration, STATE_EXTENSION[snapshot_format]))
    model = _model_bytes(solver.net, snapshot_format)
    write_atomic(model_path, model, operation="write the snapshot")
    caffe_state = SolverState(iteration, str(model_path), caffe_history(solver),
                              current_step(solver.spec, iteration))
    written = write_solverstate(state_path, caffe_state)
    write_solver_state(solver, state, side_file(state_path), model_path,
                       hashlib.sha256(model).hexdigest(),
                       {"caffe_state": state_path.name,
                        "caffe_state_sha256": hashlib.sha256(written).hexdigest()})
    return state_path


def learned_net_path(state_path: Path, learned_net: str) -> Path | None:
    """The model a state names: as written (relative to the working folder, as Caffe reads
    it), else the file of that name beside the state; ``None`` when it names none."""
    if not learned_net:
        return None
    named = Path(learned_net)
    if named.is_file():
        return named
    beside = state_path.parent / named.name
    if beside.is_file():
        return beside
    raise SnapshotError(f"its model file {learned_net} (learned_net) is missing: neither "
                        f"there nor beside the state", file=str(state_path),
                        field="learned_net")


def restore_caffe_snapshot(solver, path, warn=None, allow_world_size_change: bool = False) -> str:
    """Continue ``solver`` from a Caffe ``.solverstate`` (``.h5``); returns ``"exact"`` when
    the side file made it a bit-exact resume, ``"caffe"`` when it was Caffe's resume."""
    path = Path(path)
    caffe_state = read_solverstate(path)
    side = side_file(path)
    if side.is_file():
        _, meta = read_npz(side, "solverstate")
        if meta.get("caffe_state_sha256") == file_sha256(path):
            restore_solver(solver, side, warn=warn,
                           allow_world_size_change=allow_world_size_change)
            return "exact"
        if warn is not None:
            warn(f"{side.name} was written with another {path.name}: resuming as Caffe does "
                 f"(data from the first record, a new loss window)")
    model = learned_net_path(path, caffe_state.learned_net)
    if model is not None:
        skipped = load_model(solver.net, model, allow_missing=True)
        if skipped and warn is not None:
            warn(f"{model} has no weights for {', '.join(skipped)} (left as initialised)")
    params = solver.net.learnable_params
    names = history_names(solver.updater.rule.state_names)
    if len(caffe_state.history) != len(names) * len(params):
        raise SnapshotError(f"incorrect length of history blobs: the file has "
                            f"{len(caffe_state.history)}, a {solver.spec.type} solver of this "
                            f"net keeps {len(names) * len(params)} ({len(names)} per learnable "
                            f"parameter, {len(params)} parameters)", file=str(path),
                            field="history")
    update = {}
    for i, (name, param) in enumerate((name, param) for name in names for param in params):
        saved = caffe_state.history[i]
        if saved.size != param.blob.data.size:
            raise SnapshotError(f"history blob {i} has {saved.size} values but parameter "
                                f"{param.key} has shape {param.blob.data.shape}",
                                file=str(path), field="history")
        update[f"{param.key}/{name}"] = saved.reshape(param.blob.data.shape)
    kept = {key: update[key] for key in solver.updater.state_arrays() if key in update}
    solver.set_state({"iter": caffe_state.iter, "update": kept})
    expected = current_step(solver.spec, caffe_state.iter)
    if caffe_state.current_step != expected and warn is not None:
        warn(f"{path}: current_step is {caffe_state.current_step}, but lr_policy "
             f"{solver.spec.lr_policy} at iteration {caffe_state.iter} has taken {expected} "
             f"step(s): the rate follows the solver's settings")
    return "caffe"
