"""Caffe's HDF5 layers: ``HDF5Data`` reads batches from listed ``.h5`` files, ``HDF5Output``
writes its bottoms to one (both need h5py, the ``hdf5`` extra).

    - name: data
      type: HDF5Data
      top: [data, label]                 # each top names a dataset of every file
      source: train.txt                  # a text file: one .h5 path a line
      batch_size: 64
      shuffle: true

HDF5Data reads the files in the list's order, all rows of one file before the next, and
wraps around at the end, as Caffe; with ``shuffle`` the order of the files and the order
of the rows inside each file are drawn anew every pass. One file is held in memory at a
time. A batch may span two files.

HDF5Output keeps every batch it is given and writes them, concatenated along the first
axis, as the datasets ``data`` and ``label`` (bottoms 0 and 1, Caffe's names) of
``file_name`` when the net closes. The file is written whole through a temporary file
beside it and a rename, and **never replaces an existing file**: a ``file_name`` that
exists when the net is built is an error naming it (delete it, or choose another name).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from pydantic import Field

from ..errors import ConfigError, DataError, SnapshotError
from ..files import read_text, require_regular, write_atomic
from ..registry import register_layer
from ..spec.net import LayerParams
from .base import DataLayer, Layer

LIST_LIMIT = 16 << 20            # bytes of a list file of .h5 paths
FILE_LIMIT = 4 << 30             # bytes of one dataset held in memory


def _h5py(what: str):
    try:
        import h5py
    except ImportError:
        raise DataError(f"{what} needs h5py: pip install 'solverkit[hdf5]'") from None
    return h5py


def read_list_file(path: Path, *, what: str, limit: int = LIST_LIMIT) -> list[str]:
    """The non-empty lines of a list file (a regular file of at most ``limit`` bytes)."""
    text = read_text(path, what=what, limit=limit, error=DataError)
    return [line.strip() for line in text.splitlines() if line.strip()]


def _listed(name: str, folders: list[Path]) -> Path:
    """A listed path: the first of ``folders`` (the list's, the net file's, the current
    one: Caffe's files name paths from Caffe's root) where it exists."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    for folder in folders:
        if (folder / path).exists():
            return folder / path
    return folders[0] / path


@register_layer("HDF5Data")
class HDF5Data(DataLayer):
    """Batches of the datasets named by the tops, from the ``.h5`` files ``source`` lists
    (one path a line; the ``hdf5`` extra). Each top is (batch_size, *dataset shape[1:]) in
    the net's dtype; every file holds every top's dataset, all with the same number of rows.
    Files are read in the list's order, all rows of one before the next, wrapping at the end
    (a batch may span two files); ``shuffle`` draws the file order and each file's row order
    anew every pass. One file is in memory at a time.
    """

    class Params(LayerParams):
        source: str = Field(description="a text file listing .h5 files, one a line "
                                        "(relative to the list's folder)")
        batch_size: int = Field(gt=0)
        shuffle: bool = Field(False, description="file order and row order drawn anew each pass")

    min_tops = 1

    def setup(self, bottom, top):
        p = self.params
        self.h5py = _h5py(f"layer '{self.name}' (HDF5Data)")
        base = Path(self.base_dir) if self.base_dir is not None else Path.cwd()
        listing = Path(p.source).expanduser()
        if not listing.is_absolute():
            listing = base / listing
        names = read_list_file(listing, what="HDF5 file list")
        if not names:
            raise DataError("the HDF5 file list names no files", file=str(listing),
                            field="source")
        self.files = [_listed(name, [listing.parent, base, Path.cwd()]) for name in names]
        self.datasets = [blob.name for blob in top]
        self.rows = []
        shapes = None
        for path in self.files:
            found = self._shapes(path)
            rows = {shape[0] for shape in found.values()}
            if len(rows) != 1:
                raise DataError(f"the datasets {', '.join(self.datasets)} have different "
                                f"numbers of rows ({sorted(rows)})", file=str(path))
            inner = {name: shape[1:] for name, shape in found.items()}
            if shapes is not None and inner != shapes:
                raise DataError(f"the datasets' shapes {inner} differ from the first file's "
                                f"{shapes}", file=str(path))
            shapes = inner
            self.rows.append(rows.pop())
        if sum(self.rows) == 0:
            raise DataError("the listed HDF5 files hold no rows", file=str(listing))
        self.sample_shapes = shapes
        self.generator = self.rng.spawn(1)[0]
        self.shard = (0, 1)
        self._start(epoch=0)

    def _shapes(self, path: Path) -> dict[str, tuple[int, ...]]:
        require_regular(path, what="HDF5 file", error=DataError)
        try:
            with self.h5py.File(path, "r") as handle:
                found = {}
                for name in self.datasets:
                    if name not in handle:
                        raise DataError(f"has no dataset '{name}' (the tops name the "
                                        f"datasets; it holds {', '.join(sorted(handle))})",
                                        file=str(path), layer=self.name)
                    found[name] = tuple(handle[name].shape)
                    if not found[name]:
                        raise DataError(f"dataset '{name}' is a scalar; it needs rows",
                                        file=str(path), layer=self.name)
                return found
        except OSError as err:
            raise DataError(f"cannot read the HDF5 file: {err}", file=str(path)) from None

    # ----- the stream of rows: files in order, rows in order, a new pass at the end
    def _start(self, epoch: int) -> None:
        count = len(self.files)
        self.epoch_count = epoch
        self.file_order = (self.generator.permutation(count) if self.params.shuffle
                           else np.arange(count))
        self.file_cursor = 0
        self._open(0)

    def _open(self, row_cursor: int, row_order: np.ndarray | None = None) -> None:
        index = int(self.file_order[self.file_cursor])
        rows = self.rows[index]
        if row_order is None:
            row_order = self.generator.permutation(rows) if self.params.shuffle \
                else np.arange(rows)
        self.row_order = row_order
        self.row_cursor = row_cursor
        self.current = self._read(self.files[index])

    def _read(self, path: Path) -> dict[str, np.ndarray]:
        with self.h5py.File(require_regular(path, what="HDF5 file", error=DataError),
                            "r") as handle:
            arrays = {}
            for name in self.datasets:
                dataset = handle[name]
                if dataset.size * max(dataset.dtype.itemsize, 1) > FILE_LIMIT:
                    raise DataError(f"dataset '{name}' is larger than {FILE_LIMIT} bytes",
                                    file=str(path), layer=self.name)
                arrays[name] = np.asarray(dataset[()], dtype=self.dtype)
            return arrays

    def _take(self, count: int) -> dict[str, list[np.ndarray]]:
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.datasets}
        while count > 0:
            if self.row_cursor == len(self.row_order):
                self.file_cursor += 1
                if self.file_cursor == len(self.files):
                    self._start(self.epoch_count + 1)
                else:
                    self._open(0)
                continue
            chosen = self.row_order[self.row_cursor:self.row_cursor + count]
            for name in self.datasets:
                parts[name].append(self.current[name][chosen])
            self.row_cursor += len(chosen)
            count -= len(chosen)
        return parts

    def reshape(self, bottom, top):
        for blob in top:
            blob.reshape((self.params.batch_size, *self.sample_shapes[blob.name]))

    def forward(self, bottom, top):
        rank, ranks = self.shard
        batch = self.params.batch_size
        parts = self._take(batch * ranks)
        for blob in top:
            rows = np.concatenate(parts[blob.name])
            np.copyto(blob.data, rows[rank * batch:(rank + 1) * batch])

    # ----- the DataLayer contract
    @property
    def num_samples(self) -> int:
        return sum(self.rows)

    @property
    def batch_size(self) -> int:
        return self.params.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.num_samples // self.params.batch_size)

    def get_state(self) -> dict[str, np.ndarray]:
        """``epoch``, ``file_order``, ``file_cursor``, ``row_order``, ``row_cursor``, ``rng``."""
        return {"epoch": np.array(self.epoch_count, dtype=np.int64),
                "file_order": np.array(self.file_order, dtype=np.int64),
                "file_cursor": np.array(self.file_cursor, dtype=np.int64),
                "row_order": np.array(self.row_order, dtype=np.int64),
                "row_cursor": np.array(self.row_cursor, dtype=np.int64),
                "rng": np.array(json.dumps(self.generator.bit_generator.state))}

    def set_state(self, state: dict) -> None:
        try:
            file_order = np.asarray(state["file_order"], dtype=np.int64)
            file_cursor, row_cursor = int(state["file_cursor"]), int(state["row_cursor"])
            row_order = np.asarray(state["row_order"], dtype=np.int64)
            rng_state = json.loads(str(state["rng"]))
            epoch = int(state["epoch"])
        except (KeyError, ValueError, TypeError) as err:
            raise SnapshotError(f"the saved data position of layer '{self.name}' is invalid: "
                                f"{err}", layer=self.name) from None
        count = len(self.files)
        if not (np.array_equal(np.sort(file_order), np.arange(count)) and 0 <= file_cursor < count
                and len(row_order) == self.rows[int(file_order[file_cursor])]
                and 0 <= row_cursor <= len(row_order)):
            raise SnapshotError(f"the saved data position of layer '{self.name}' does not fit "
                                f"its {count} HDF5 files", layer=self.name)
        self.generator.bit_generator.state = rng_state
        self.epoch_count = epoch
        self.file_order, self.file_cursor = file_order, file_cursor
        self._open(row_cursor, row_order)

    def set_shard(self, rank: int, num_ranks: int) -> None:
        self.shard = (int(rank), int(num_ranks))


@register_layer("HDF5Output")
class HDF5Output(Layer):
    """Keeps its bottoms' batches and writes them to ``file_name`` when the net closes, as the
    datasets ``data`` (bottom 0) and ``label`` (bottom 1), the batches concatenated along
    axis 0 (the ``hdf5`` extra). The file is written whole through a temporary file and a
    rename, and never replaces a file: a ``file_name`` that exists when the net is built is
    an error (delete it, or choose another name).
    """

    class Params(LayerParams):
        file_name: str = Field(description="the .h5 file to write; must not exist yet")

    min_bottoms, max_bottoms = 1, 2
    max_tops = 0
    has_backward = False

    DATASETS = ("data", "label")

    def setup(self, bottom, top):
        self.h5py = _h5py(f"layer '{self.name}' (HDF5Output)")
        path = Path(self.params.file_name).expanduser()
        if not path.is_absolute():
            path = (Path(self.base_dir) if self.base_dir is not None else Path.cwd()) / path
        if path.exists() or path.is_symlink():
            raise ConfigError("the output file exists; HDF5Output never replaces a file "
                              "(delete it, or choose another file_name)", file=str(path),
                              layer=self.name, field="file_name")
        self.path = path
        self.batches: list[list[np.ndarray]] = [[] for _ in bottom]

    def reshape(self, bottom, top):
        """No tops."""

    def forward(self, bottom, top):
        for kept, blob in zip(self.batches, bottom):
            kept.append(blob.data.copy())

    def backward(self, top, propagate_down, bottom):
        """Writing has no gradient."""

    def allow_backward_to(self, bottom_index: int) -> bool:
        return False

    def flush(self) -> None:
        """Write everything kept so far to ``file_name`` (atomically; a later flush replaces
        only the file this layer wrote)."""
        if not any(self.batches):
            return
        buffer = io.BytesIO()
        with self.h5py.File(buffer, "w") as handle:
            for name, kept in zip(self.DATASETS, self.batches):
                handle.create_dataset(name, data=np.concatenate(kept))
        write_atomic(self.path, buffer.getvalue(), operation="write the HDF5 output")

    def close(self) -> None:
        if getattr(self, "batches", None) is not None:
            self.flush()
            self.batches = [[] for _ in self.batches]
