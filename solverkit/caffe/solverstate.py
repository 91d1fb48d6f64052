"""Caffe's snapshot files: the ``SolverState`` message and the HDF5 forms of a snapshot.

A Caffe snapshot at iteration N is two files named from ``snapshot_prefix``:

- ``snapshot_format: BINARYPROTO`` (Caffe's default): ``<prefix>_iter_N.caffemodel`` (a
  NetParameter with every layer's blobs) and ``<prefix>_iter_N.solverstate``, a binary
  ``SolverState``: ``iter`` (1, int32), ``learned_net`` (2, the model file's name as the
  solver wrote it), ``history`` (3, repeated BlobProto) and ``current_step`` (4, int32);
- ``snapshot_format: HDF5``: ``<prefix>_iter_N.caffemodel.h5`` (group ``data``, a group
  per layer, datasets ``0``, ``1``… per parameter it owns) and
  ``<prefix>_iter_N.solverstate.h5`` (int datasets ``iter`` and ``current_step`` of shape
  (1,), a string dataset ``learned_net``, group ``history`` with datasets ``0``, ``1``…).

``history`` holds the update rule's state arrays in Caffe's order: every learnable
parameter's first state array (SGD and Nesterov: the momentum history; AdaGrad, RMSProp:
the running sum or mean of g²; AdaDelta: g²'s mean; Adam: the first moment), then, for
the rules with two arrays per parameter, every parameter's second one (AdaDelta: the mean
of the squared updates; Adam: the second moment). ``history_names`` gives that order for
an update type. ``current_step`` is the number of learning-rate steps taken (the
``step`` and ``multistep`` policies), as Caffe counts it.

The readers are bounded (``MAX_BYTES``) and refuse anything but a regular file; a
truncated or foreign file is a ``SnapshotError`` naming it. HDF5 needs the ``hdf5`` extra.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, SnapshotError
from ..files import read_bytes, write_atomic
from ..protobuf import Field, Message, Writer, decode, encode
from .messages import BLOB_PROTO, blob_fields, blob_from_fields

SOLVER_STATE = Message("SolverState", [
    Field(1, "iter", "int32"),
    Field(2, "learned_net", "string"),
    Field(3, "history", "message", repeated=True, message=BLOB_PROTO),
    Field(4, "current_step", "int32"),
])

FORMATS = ("BINARYPROTO", "HDF5")
MODEL_EXTENSION = {"BINARYPROTO": ".caffemodel", "HDF5": ".caffemodel.h5"}
STATE_EXTENSION = {"BINARYPROTO": ".solverstate", "HDF5": ".solverstate.h5"}
MAX_BYTES = 2**31 - 1           # protobuf's own ceiling; HDF5 state files are held to it too


@dataclass
class SolverState:
    """A Caffe ``SolverState``: what ``caffe train --snapshot`` resumes from."""

    iter: int
    learned_net: str = ""
    history: list[np.ndarray] = field(default_factory=list)
    current_step: int = 0


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's ``Solver::SnapshotFilename``: ``<prefix>_iter_<N><extension>``."""
    return f"{prefix}_iter_{iteration}{extension}"


def history_names(state_names: tuple[str, ...]) -> tuple[str, ...]:
    """The state arrays of an update rule in Caffe's ``history`` order: all parameters'
    first array, then all parameters' second one (a rule's ``state_names`` are declared
    in that order: ``history, update_history`` for AdaDelta, ``m, v`` for Adam)."""
    return tuple(state_names)


# ---------------------------------------------------------------- binary SolverState
def encode_solverstate(state: SolverState) -> bytes:
    """The binary ``SolverState`` (history blobs float32 with a ``shape``, as Caffe writes)."""
    writer = Writer().varint(1, int(state.iter), "int32")
    writer.string(2, state.learned_net)
    for array in state.history:
        writer.message(3, encode(blob_fields(np.asarray(array, dtype=np.float32)), BLOB_PROTO))
    writer.varint(4, int(state.current_step), "int32")
    return writer.getvalue()


def decode_solverstate(data: bytes, *, file: str | None = None) -> SolverState:
    """A binary ``SolverState``; a corrupt message is a DataError naming ``file``."""
    fields = decode(data, SOLVER_STATE, file=file)
    if "iter" not in fields:
        raise DataError("not a Caffe solver state: it has no iter field (truncated, or "
                        "another kind of file?)", file=file)
    if fields["iter"] < 0:
        raise DataError(f"a solver state at a negative iteration ({fields['iter']})", file=file,
                        field="iter")
    history = [blob_from_fields(blob, file=file, where=f"history {i}").array
               for i, blob in enumerate(fields.get("history", []))]
    return SolverState(int(fields["iter"]), fields.get("learned_net", ""), history,
                       int(fields.get("current_step", 0)))


def _read_regular(path: Path, what: str) -> bytes:
    """At most ``MAX_BYTES`` of a regular file (a FIFO or a device is refused at once)."""
    return read_bytes(path, what=what, limit=MAX_BYTES, error=SnapshotError)


def read_solverstate(path) -> SolverState:
    """A ``.solverstate`` or (by its ``.h5`` suffix, as Caffe decides) ``.solverstate.h5``."""
    path = Path(path)
    if path.name.endswith(".h5"):
        return _read_solverstate_h5(path)
    data = _read_regular(path, "solver state")
    try:
        return decode_solverstate(data, file=str(path))
    except DataError as err:
        raise SnapshotError(f"not a readable Caffe solver state (truncated or corrupt?): "
                            f"{err.message}", file=str(path)) from None


def solverstate_bytes(state: SolverState, hdf5: bool = False) -> bytes:
    """The file a ``.solverstate`` (or, with ``hdf5``, a ``.solverstate.h5``) holds."""
    return _solverstate_h5_bytes(state) if hdf5 else encode_solverstate(state)


def write_solverstate(path, state: SolverState) -> bytes:
    """Write ``state`` to ``path`` atomically: binary, or HDF5 when the name ends in
    ``.h5`` (as Caffe decides); returns the bytes written."""
    data = solverstate_bytes(state, hdf5=str(path).endswith(".h5"))
    write_atomic(path, data, operation="write the solver state")
    return data


# ---------------------------------------------------------------- HDF5
def h5py_module():
    """``h5py``, or a DataError naming the ``hdf5`` extra."""
    try:
        import h5py
    except ImportError:
        raise DataError("HDF5 snapshots need h5py: pip install 'solverkit[hdf5]'",
                        field="snapshot_format") from None
    return h5py


def _h5_bytes(fill) -> bytes:
    """An HDF5 file built in memory by ``fill(h5py.File)``, as bytes (written atomically)."""
    h5py = h5py_module()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        fill(handle)
    return buffer.getvalue()


def _h5_string(handle, name: str, text: str) -> None:
    raw = text.encode("utf-8") + b"\0"      # a C string, as H5LTmake_dataset_string stores it
    handle.create_dataset(name, data=np.array(raw, dtype=f"S{len(raw)}"))


def _solverstate_h5_bytes(state: SolverState) -> bytes:
    def fill(handle):
        handle.create_dataset("iter", data=np.array([state.iter], dtype=np.int32))
        _h5_string(handle, "learned_net", state.learned_net)
        handle.create_dataset("current_step", data=np.array([state.current_step],
                                                            dtype=np.int32))
        history = handle.create_group("history")
        for i, array in enumerate(state.history):
            history.create_dataset(str(i), data=np.asarray(array, dtype=np.float32))
    return _h5_bytes(fill)


def _open_h5(path: Path, what: str):
    h5py = h5py_module()
    data = _read_regular(path, what)
    try:
        return h5py.File(io.BytesIO(data), "r")
    except OSError as err:
        raise SnapshotError(f"not a readable HDF5 {what}: {err}", file=str(path)) from None


def _h5_int(handle, name: str, path: Path) -> int:
    if name not in handle or handle[name].size != 1:
        raise SnapshotError(f"no one-element dataset '{name}'", file=str(path), field=name)
    return int(np.asarray(handle[name][()]).reshape(-1)[0])


def _read_solverstate_h5(path: Path) -> SolverState:
    with _open_h5(path, "solver state") as handle:
        iteration = _h5_int(handle, "iter", path)
        current_step = _h5_int(handle, "current_step", path) if "current_step" in handle else 0
        learned = ""
        if "learned_net" in handle:
            raw = handle["learned_net"][()]
            learned = (raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)) \
                .split(b"\0", 1)[0].decode("utf-8", "replace")
        if "history" not in handle:
            raise SnapshotError("no 'history' group", file=str(path), field="history")
        group = handle["history"]
        history = []
        for i in range(len(group)):
            if str(i) not in group:
                raise SnapshotError(f"history dataset '{i}' is missing", file=str(path),
                                    field="history")
            history.append(np.asarray(group[str(i)][()], dtype=np.float32))
    return SolverState(iteration, learned, history, current_step)


def caffemodel_h5_bytes(layers: list[tuple[str, list[tuple[int, np.ndarray]]]]) -> bytes:
    """Caffe's ``Net::ToHDF5`` layout: a group ``data/<layer>`` for every layer and a
    dataset ``<index>`` for each ``(index, array)`` it owns (a shared parameter is stored
    once, under its first layer)."""
    def fill(handle):
        data = handle.create_group("data")
        for name, blobs in layers:
            group = data.require_group(name)
            for j, blob in blobs:
                group.create_dataset(str(j), data=np.asarray(blob, dtype=np.float32))
    return _h5_bytes(fill)


def read_caffemodel_h5(path) -> dict[str, dict[int, np.ndarray]]:
    """``{layer: {index: array}}`` of a ``.caffemodel.h5`` (layers without blobs left out)."""
    path = Path(path)
    found: dict[str, dict[int, np.ndarray]] = {}
    with _open_h5(path, "HDF5 caffemodel") as handle:
        if "data" not in handle:
            raise SnapshotError("not a Caffe HDF5 model: no 'data' group", file=str(path))
        for name, group in handle["data"].items():
            blobs = {int(key): np.asarray(group[key][()], dtype=np.float32)
                     for key in group if key.isdigit()}
            if blobs:
                found[name] = blobs
    return found


def is_caffemodel_h5(path) -> bool:
    return str(path).endswith(".caffemodel.h5")


def is_caffe_state(path) -> bool:
    """A Caffe solver state by name: ``.solverstate`` or ``.solverstate.h5``."""
    return str(path).endswith((".solverstate", ".solverstate.h5"))
