"""Data sources: the array formats a ``Data`` layer reads, loaded whole into a ``Dataset``
(or, for large npy and HDF5 files, streamed: see ``streams``). Every source is a
``Samples``; image files (``image_sources``) and LMDB databases (``lmdb_source``) are
streamed ones.

An array file is read once, when the net is built, so a bad file fails at construction
with a message naming it. Samples stay in the dtype they were stored in (``uint8`` images
take a quarter of the memory of float32); the batch feeder converts one batch at a time.

| format   | recognised by                          | data shape        | labels           |
|----------|----------------------------------------|-------------------|------------------|
| npz      | ``.npz``                               | as stored (``x``) | ``y``            |
| npy      | ``.npy`` (+ ``label_source: y.npy``)   | as stored         | the label file   |
| idx      | ``*-idx3-ubyte[.gz]`` (MNIST)          | (N, 1, H, W)      | ``*-idx1-ubyte`` |
| cifar10  | ``.bin`` (CIFAR-10 binary batches)     | (N, 3, 32, 32)    | first byte       |
| csv      | ``.csv[.gz]``, numeric, no header      | (N, F)            | ``label_column`` |
| hdf5     | ``.h5``/``.hdf5`` (extra ``hdf5``)     | as stored (data)  | ``label``        |
| builtin  | ``builtin:digits/train`` or ``/test``  | (N, 1, 8, 8)      | 0..9             |
| memory   | a Python pair ``(x, y)`` or a dict     | as given          | as given         |
"""

from __future__ import annotations

import abc
import glob
import gzip
import importlib.resources
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, did_you_mean

FORMATS = ("npz", "npy", "idx", "cifar10", "csv", "hdf5")     # the file formats
IN_MEMORY = "the in-memory source"

# The built-in digits: 1,797 images stored permuted (see scripts/make_digits.py);
# the first 1,437 are the training set, the last 360 the test set.
DIGITS_TRAIN = 1437
BUILTIN = {"digits/train": slice(0, DIGITS_TRAIN), "digits/test": slice(DIGITS_TRAIN, None)}

# npy and HDF5 files at least this large are streamed (read a batch at a time) unless
# ``stream`` says otherwise
STREAM_MIN_BYTES = 256 << 20

CIFAR10_RECORD = 1 + 3 * 32 * 32    # one label byte, then the R, G and B planes of 32x32

# IDX element types (third byte of the magic number) -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class Samples(abc.ABC):
    """What a batch feeder reads: ``len(self)`` samples of ``sample_shape`` in ``dtype`` and,
    when ``has_labels``, one label each; ``take(indices)`` returns them as arrays.

    ``Dataset`` holds its samples in memory. A *streamed* source (``streamed = True``: image
    files, an LMDB, a large npy or HDF5 file) reads and decodes only the samples asked
    for, so its memory does not grow with the data set; its reads run on the feeder's
    prefetch thread. ``take`` must be safe to call from that one thread while the training
    thread does other work; it is never called from two threads at once.
    """

    name: str = ""
    num_classes: int | None = None
    labels: np.ndarray | None = None    # the labels, when they are held in memory
    label_type: str = "class"           # "class" or "value" (see ``check_labels``)
    streamed = False

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @property
    @abc.abstractmethod
    def sample_shape(self) -> tuple[int, ...]: ...

    @property
    @abc.abstractmethod
    def dtype(self) -> np.dtype: ...

    @property
    @abc.abstractmethod
    def has_labels(self) -> bool: ...

    @abc.abstractmethod
    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(data (len(indices), *sample_shape), labels (len(indices),) or None)."""

    def close(self) -> None:
        """Release open files (a closed source may be reopened by the next ``take``)."""

    @property
    def title(self) -> str:
        """The name as messages show it: file names quoted, ``builtin:...`` as is."""
        return describe(self.name)


@dataclass
class Dataset(Samples):
    """Samples and labels of one source, in memory, in storage order.

    ``data`` is (N, ...) in its stored dtype; ``labels`` is (N,) or None;
    ``name`` says where it came from (file names) for messages; ``num_classes`` is
    known for class-labelled formats (digits, MNIST, CIFAR-10).
    """

    data: np.ndarray
    labels: np.ndarray | None
    name: str
    num_classes: int | None = None

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def take(self, indices):
        return self.data[indices], None if self.labels is None else self.labels[indices]


def describe(name) -> str:
    name = str(name)
    return name if name == IN_MEMORY or name.startswith("builtin:") else f"'{name}'"


def load_source(source, *, format: str | None = None, base_dir=None, x_key: str | None = None,
                y_key: str | None = None, label_source=None, label_column: int | None = -1,
                num_classes: int | None = None, stream: bool | None = None) -> Samples:
    """Read ``source`` (a path, a glob, a list of paths, ``builtin:...``, or arrays).

    Several files (a list or a glob such as ``data_batch_*.bin``) are read in order and
    concatenated. An npy or HDF5 file is streamed (see ``streams``) when ``stream`` is
    true, or when it is None and the file is large. Raises ``DataError`` (field
    ``source``) naming the file on any problem.
    """
    if _is_in_memory(source):
        dataset = _read_memory(source, x_key or "x", y_key or "y")
    elif isinstance(source, str) and source.startswith("builtin:"):
        if format is not None:
            raise DataError(f"'{source}' is a built-in data set; drop format: {format}",
                            field="format")
        dataset = _read_builtin(source[len("builtin:"):])
    else:
        paths = resolve_paths(source, base_dir, "source")
        fmt = format or _detect_format(paths[0])
        if fmt not in _READERS:
            raise DataError(f"unknown format '{fmt}'{did_you_mean(fmt, FORMATS)}; formats: "
                            f"{', '.join(FORMATS)}", field="format")
        labels_paths = (resolve_paths(label_source, base_dir, "label_source")
                        if label_source is not None else None)
        if labels_paths is not None and fmt not in ("npy", "idx"):
            raise DataError(f"label_source is for formats that keep labels in their own file "
                            f"(npy, idx), not {fmt}", field="label_source")
        if labels_paths is not None and len(labels_paths) != len(paths):
            raise DataError(f"label_source names {len(labels_paths)} files for {len(paths)} "
                            f"data files", field="label_source")
        streamed = _stream(fmt, paths, labels_paths, stream, x_key, y_key)
        if streamed is not None:
            streamed.num_classes = num_classes
            _check_dataset(streamed)
            return streamed
        parts = []
        for i, path in enumerate(paths):
            labels_path = labels_paths[i] if labels_paths else None
            parts.append(_READERS[fmt](path, x_key=x_key, y_key=y_key, labels_path=labels_path,
                                       label_column=label_column))
        dataset = _concatenate(parts)
    if num_classes is not None:
        dataset.num_classes = num_classes
    _check_dataset(dataset)
    return dataset


def _stream(fmt, paths, labels_paths, stream, x_key, y_key) -> Samples | None:
    """The streamed reader of an npy or HDF5 source, or None to read it whole."""
    if stream and fmt not in ("npy", "hdf5"):
        raise DataError(f"stream: true is for npy and HDF5 files (image lists, folders and "
                        f"LMDB always stream), not {fmt}", field="stream")
    if fmt not in ("npy", "hdf5") or not any(_wants_stream(p, stream) for p in paths):
        return None
    if len(paths) > 1:
        raise DataError(f"a streamed source is one file, not {len(paths)}; join them into one "
                        f"or set stream: false to read them whole", field="stream")
    from .streams import Hdf5Stream, NpyStream
    path = paths[0]
    if fmt == "hdf5":
        _h5py(path)
        return Hdf5Stream(path, x_key or "data", y_key or "label", str(path))
    labels = None
    name = str(path)
    if labels_paths:
        labels = _numeric(_load_npy(labels_paths[0], "label_source"), labels_paths[0], "labels")
        name = f"{path} + {labels_paths[0]}"
    return NpyStream(path, labels, name)


def _wants_stream(path: Path, stream: bool | None) -> bool:
    if stream is not None:
        return stream
    try:
        return path.stat().st_size >= STREAM_MIN_BYTES
    except OSError:
        return False


def _h5py(path: Path):
    try:
        import h5py
    except ImportError:
        raise DataError(f"reading '{path}' needs h5py: pip install 'solverkit[hdf5]'",
                        field="source") from None
    return h5py


def resolve_paths(source, base_dir, field: str) -> list[Path]:
    """A path, a glob pattern or a list of them -> existing files (relative to ``base_dir``).

    A missing ``NAME`` whose ``NAME.gz`` exists is read from the ``.gz``."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise DataError("no file given", field=field)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    paths = []
    for item in items:
        if not isinstance(item, (str, Path)):
            raise DataError(f"expected a file name, got {type(item).__name__}", field=field)
        path = Path(item).expanduser()
        path = path if path.is_absolute() else base / path
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


def _detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".h5", ".hdf5", ".he5")):
        return "hdf5"
    if name.endswith(".bin"):
        return "cifar10"
    if "idx" in name and "ubyte" in name:
        return "idx"
    raise DataError(f"cannot tell the format of '{path}' from its name; set format: to one of "
                    f"{', '.join(FORMATS)}", field="format")


# ---------------------------------------------------------------- readers
def _is_in_memory(source) -> bool:
    if isinstance(source, dict):
        return True
    if isinstance(source, (list, tuple)) and source:
        return not all(isinstance(item, (str, Path)) for item in source)
    return isinstance(source, np.ndarray)


def _read_memory(source, x_key: str, y_key: str) -> Dataset:
    name = IN_MEMORY
    if isinstance(source, dict):
        if x_key not in source:
            raise DataError(f"{name} has no array '{x_key}'{did_you_mean(x_key, source)}; "
                            f"keys: {', '.join(map(str, source))} (set x_key)", field="x_key")
        data, labels = source[x_key], source.get(y_key)
    elif isinstance(source, np.ndarray):
        data, labels = source, None
    else:
        if len(source) not in (1, 2):
            raise DataError(f"{name} must be a pair (x, y) or (x,), got {len(source)} items",
                            field="source")
        data, labels = source[0], source[1] if len(source) == 2 else None
    return Dataset(_numeric(data, name, "x"), None if labels is None else
                   _numeric(labels, name, "y"), name)


def _read_builtin(name: str) -> Dataset:
    if name not in BUILTIN:
        raise DataError(f"unknown built-in data set 'builtin:{name}'"
                        f"{did_you_mean(name, BUILTIN)}; known: "
                        f"{', '.join('builtin:' + n for n in BUILTIN)}", field="source")
    resource = importlib.resources.files("solverkit.data") / "digits.npz"
    with resource.open("rb") as stream, np.load(stream, allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"]
    part = BUILTIN[name]
    return Dataset(x[part], y[part], f"builtin:{name}", num_classes=10)


def _read_npz(path: Path, *, x_key, y_key, **_) -> Dataset:
    x_key, y_key = x_key or "x", y_key or "y"
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if x_key not in keys:
                raise DataError(f"'{path}' has no array '{x_key}'{did_you_mean(x_key, keys)}; "
                                f"arrays: {', '.join(keys) or 'none'} (set x_key)", field="x_key")
            data = archive[x_key]
            labels = archive[y_key] if y_key in keys else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"cannot read '{path}' as .npz: {_reason(err)}", field="source") from None
    return Dataset(_numeric(data, path, x_key), None if labels is None else
                   _numeric(labels, path, y_key), str(path))


def _load_npy(path: Path, field: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read '{path}' as .npy: {_reason(err)}", field=field) from None


def _read_npy(path: Path, *, labels_path, **_) -> Dataset:
    data = _numeric(_load_npy(path, "source"), path, "data")
    labels = None
    if labels_path is not None:
        labels = _numeric(_load_npy(labels_path, "label_source"), labels_path, "labels")
    name = f"{path}" + (f" + {labels_path}" if labels_path else "")
    return Dataset(data, labels, name)


def _read_idx(path: Path, *, labels_path, **_) -> Dataset:
    """MNIST's IDX files: images (N, H, W) become (N, 1, H, W); labels are the idx1 file.

    Without ``label_source``, the labels file is found by its standard name beside the
    images: ``train-images-idx3-ubyte`` -> ``train-labels-idx1-ubyte`` (``.gz`` kept).
    """
    images = read_idx_file(path)
    if images.ndim == 1:
        raise DataError(f"'{path}' holds a 1-d IDX array (labels?); give the images file "
                        f"(magic 0x00000803) as source", field="source")
    if images.ndim == 3:
        images = images[:, None]
    if labels_path is None:
        guess = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
        for candidate in (guess, guess.with_name(guess.name + ".gz")):
            if candidate != path and candidate.exists():
                labels_path = candidate
                break
    labels = None
    if labels_path is not None:
        labels = read_idx_file(labels_path, "label_source")
        if labels.ndim != 1:
            raise DataError(f"'{labels_path}' is not an IDX labels file: it holds a "
                            f"{labels.ndim}-d array (labels have magic 0x00000801)",
                            field="label_source")
    name = f"{path}" + (f" + {labels_path}" if labels_path else "")
    return Dataset(images, labels, name, num_classes=10)


def read_idx_file(path: Path, field: str = "source") -> np.ndarray:
    """One IDX file (plain or gzip): magic ``00 00 TYPE NDIM``, NDIM big-endian uint32 sizes,
    then the values, big-endian."""
    raw = _read_bytes(path, field)
    if len(raw) < 4:
        raise DataError(f"'{path}' is truncated: {len(raw)} bytes, not even an IDX header",
                        field=field)
    zero, type_code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\0\0" or type_code not in IDX_TYPES or ndim == 0:
        magic = struct.unpack(">I", raw[:4])[0]
        raise DataError(f"'{path}' is not an IDX file: wrong magic number 0x{magic:08x} "
                        f"(MNIST images start with 0x00000803, labels with 0x00000801)",
                        field=field)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"'{path}' is truncated inside its IDX header", field=field)
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have != expected:
        problem = "is truncated" if have < expected else "has trailing bytes"
        raise DataError(f"'{path}' {problem}: its header promises "
                        f"{'x'.join(map(str, dims))} values ({expected} bytes) but "
                        f"{have} bytes follow", field=field)
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_cifar10(path: Path, **_) -> Dataset:
    """A CIFAR-10 binary batch: records of 1 label byte + 3072 bytes (R, G, B planes, 32x32)."""
    raw = _read_bytes(path, "source")
    if not raw or len(raw) % CIFAR10_RECORD:
        raise DataError(f"'{path}' is not a CIFAR-10 binary batch: {len(raw)} bytes is not a "
                        f"whole number of {CIFAR10_RECORD}-byte records (truncated?)",
                        field="source")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    images = records[:, 1:].reshape(-1, 3, 32, 32)
    return Dataset(images, records[:, 0].copy(), str(path), num_classes=10)


def _read_csv(path: Path, *, label_column, **_) -> Dataset:
    """Numeric CSV without header, one sample per row; ``label_column`` (default -1: the last)
    holds the label, or no column does when it is None."""
    table = _parse_csv(path)
    labels = None
    if label_column is not None:
        columns = table.shape[1]
        if not -columns <= label_column < columns:
            raise DataError(f"label_column {label_column} is outside the {columns} columns of "
                            f"'{path}'", field="label_column")
        labels = table[:, label_column]
        table = np.delete(table, label_column % columns, axis=1)
        if table.shape[1] == 0:
            raise DataError(f"'{path}' has only the label column, no features",
                            field="label_column")
    return Dataset(table, labels, str(path))


def _parse_csv(path: Path) -> np.ndarray:
    try:
        text = _read_bytes(path, "source").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"'{path}' is not a text file: {err.reason} at byte {err.start}",
                        field="source") from None
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2,
                           comments="#")
    except ValueError:
        raise _csv_problem(path, text) from None
    if table.size == 0:
        raise DataError(f"'{path}' has no rows", field="source")
    return table


def _csv_problem(path: Path, text: str) -> DataError:
    """Find the first bad cell (only on failure, so the fast path stays numpy's)."""
    width = None
    for row, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cells = line.split(",")
        for column, cell in enumerate(cells, 1):
            try:
                float(cell)
            except ValueError:
                hint = " (the file must have no header line)" if row == 1 else ""
                return DataError(f"'{path}': row {row}, column {column}: '{cell.strip()}' is "
                                 f"not a number{hint}", field="source")
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            return DataError(f"'{path}': row {row} has {len(cells)} columns but the rows "
                             f"before it have {width}", field="source")
    return DataError(f"'{path}' is not a numeric CSV file", field="source")


def _read_hdf5(path: Path, *, x_key, y_key, **_) -> Dataset:
    x_key, y_key = x_key or "data", y_key or "label"
    h5py = _h5py(path)
    try:
        with h5py.File(path, "r") as handle:
            keys = list(handle.keys())
            if x_key not in keys:
                raise DataError(f"'{path}' has no dataset '{x_key}'{did_you_mean(x_key, keys)}; "
                                f"datasets: {', '.join(keys) or 'none'} (set x_key)",
                                field="x_key")
            data = handle[x_key][()]
            labels = handle[y_key][()] if y_key in keys else None
    except OSError as err:
        raise DataError(f"cannot read '{path}' as HDF5: {_reason(err)}", field="source") from None
    return Dataset(_numeric(data, path, x_key), None if labels is None else
                   _numeric(labels, path, y_key), str(path))


_READERS = {"npz": _read_npz, "npy": _read_npy, "idx": _read_idx, "cifar10": _read_cifar10,
            "csv": _read_csv, "hdf5": _read_hdf5}


# ---------------------------------------------------------------- checks
def _read_bytes(path: Path, field: str) -> bytes:
    """A file's bytes, gunzipped when it is gzip (by its magic bytes, not its name)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read '{path}': {_reason(err)}", field=field) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DataError(f"'{path}' is a damaged or truncated gzip file: {_reason(err)}",
                            field=field) from None
    return raw


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _numeric(array, where, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{describe(where)}: '{what}' must be numeric, not {array.dtype}",
                        field="source")
    if array.ndim == 0:
        raise DataError(f"{describe(where)}: '{what}' is a single value, not one per sample",
                        field="source")
    return array


def _concatenate(parts: list[Dataset]) -> Dataset:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for part in parts[1:]:
        if part.data.shape[1:] != first.data.shape[1:]:
            raise DataError(f"'{part.name}' holds samples of shape {part.data.shape[1:]} but "
                            f"'{first.name}' holds {first.data.shape[1:]}", field="source")
        if (part.labels is None) != (first.labels is None):
            raise DataError(f"'{part.name}' and '{first.name}' differ in having labels",
                            field="source")
    labels = None if first.labels is None else np.concatenate([p.labels for p in parts])
    return Dataset(np.concatenate([p.data for p in parts]), labels,
                   ", ".join(p.name for p in parts), first.num_classes)


def _check_dataset(dataset: Samples) -> None:
    """Shape and value checks every source gets (labels: see ``check_labels``); a streamed
    source's samples are checked as they are read."""
    where = dataset.title
    if len(dataset) == 0:
        raise DataError(f"{where} holds no samples", field="source")
    if isinstance(dataset, Dataset) and dataset.data.dtype.kind == "f" \
            and not np.all(np.isfinite(dataset.data)):
        raise DataError(f"{where} contains NaN or infinite values", field="source")
    labels = dataset.labels
    if labels is None:
        return
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = dataset.labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: labels must be one value per sample, got shape {labels.shape}",
                        field="source")
    if labels.shape[0] != len(dataset):
        raise DataError(f"{where}: the data has {len(dataset)} samples but there are "
                        f"{labels.shape[0]} labels", field="source")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise DataError(f"{where}: labels contain NaN or infinite values", field="source")


def check_labels(dataset: Samples, label_type: str) -> None:
    """Class labels (``label_type: class``) must be integers in ``[0, num_classes)``;
    ``label_type: value`` (regression targets) takes any finite number. Labels held in
    memory are checked now; a streamed source checks each batch it reads."""
    dataset.label_type = label_type
    if dataset.labels is not None:
        check_label_values(dataset.labels, dataset.title, label_type, dataset.num_classes)


def check_label_values(labels: np.ndarray, where: str, label_type: str,
                       num_classes: int | None, sample=lambda i: f"sample {i}") -> None:
    """``check_labels`` for an array of labels; ``sample(i)`` names the i-th in messages."""
    if label_type == "value":
        return
    if labels.dtype.kind == "f":
        fractional = labels != np.round(labels)
        if np.any(fractional):
            i = int(np.argmax(fractional))
            raise DataError(f"{where}: label {labels[i]:g} of {sample(i)} is not a class number "
                            f"(integer); for regression targets set label_type: value",
                            field="source")
    negative = labels < 0
    if np.any(negative):
        i = int(np.argmax(negative))
        raise DataError(f"{where}: label {labels[i]:g} of {sample(i)} is negative; class labels "
                        f"are 0, 1, ... (for regression targets set label_type: value)",
                        field="source")
    if num_classes is not None:
        high = labels >= num_classes
        if np.any(high):
            i = int(np.argmax(high))
            raise DataError(f"{where}: label {labels[i]:g} of {sample(i)} is out of range for "
                            f"{num_classes} classes (0..{num_classes - 1})", field="source")
