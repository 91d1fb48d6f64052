"""The array sources a ``Data`` layer reads, as registered formats (see ``formats``):
arrays from Python, the built-in digits, and npz, npy, IDX, CIFAR-10, CSV and HDF5 files,
read whole into a ``Dataset`` (or, for large npy and HDF5 files, streamed: see ``streams``).

An array file is read once, when the net is built, so a bad file fails at construction
with a message naming it.

| format   | recognised by                          | data shape        | labels           |
|----------|----------------------------------------|-------------------|------------------|
| arrays   | a Python pair ``(x, y)`` or a dict     | as given          | as given         |
| builtin  | ``builtin:digits/train`` or ``/test``  | (N, 1, 8, 8)      | 0..9             |
| npz      | ``.npz``                               | as stored (``x``) | ``y``            |
| npy      | ``.npy`` (+ ``label_source: y.npy``)   | as stored         | the label file   |
| idx      | ``*-idx3-ubyte[.gz]`` (MNIST)          | (N, 1, H, W)      | ``*-idx1-ubyte`` |
| cifar10  | ``.bin`` (CIFAR-10 binary batches)     | (N, 3, 32, 32)    | first byte       |
| csv      | ``.csv[.gz]``, numeric, no header      | (N, F)            | ``label_column`` |
| hdf5     | ``.h5``/``.hdf5`` (extra ``hdf5``)     | as stored (data)  | ``label``        |
"""

from __future__ import annotations

import importlib.resources
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ..errors import DataError, did_you_mean
from .. import files
from ..files import LIMITS, read_bytes, require_regular
from .formats import FileFormat, SourceFormat, open_source, register_source_format
from .paths import resolve_paths
from .samples import IN_MEMORY, Dataset, Samples, concatenate, numeric, reason
from .streams import Hdf5Stream, NpyStream

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


class SourceFields(BaseModel):
    """The source fields of a Data layer, for ``load_source`` (the same names and defaults)."""

    model_config = {"arbitrary_types_allowed": True}

    source: object
    format: str | None = None
    x_key: str | None = None
    y_key: str | None = None
    label_source: str | list[str] | None = None
    label_column: int | None = -1
    num_classes: int | None = None
    stream: bool | None = None


def load_source(source, *, format: str | None = None, base_dir=None, x_key: str | None = None,
                y_key: str | None = None, label_source=None, label_column: int | None = -1,
                num_classes: int | None = None, stream: bool | None = None) -> Samples:
    """Read ``source`` (a path, a glob, a list of paths, ``builtin:...``, or arrays) as a
    Data layer with these fields would (see ``formats.open_source``)."""
    given = {"format": format, "x_key": x_key, "y_key": y_key, "label_source": label_source,
             "num_classes": num_classes, "stream": stream}
    fields = {name: value for name, value in given.items() if value is not None}
    if label_column != -1:
        fields["label_column"] = label_column
    return open_source(SourceFields(source=source, **fields), base_dir)


# ---------------------------------------------------------------- in memory and built in
@register_source_format("arrays")
class Arrays(SourceFormat):
    """Arrays from Python: a pair ``(x, y)``, ``(x,)``, one array, or a dict of arrays."""

    kind = "arrays"
    title = IN_MEMORY
    recognised_by = "a pair `(x, y)`, an array or a dict of arrays (from Python)"

    class Params(SourceFormat.Params):
        x_key: str = "x"
        y_key: str = "y"

    @classmethod
    def detect(cls, target, params) -> bool:
        return is_in_memory(target)

    def open(self, source, params) -> Dataset:
        own = self.own_params(params)
        return read_memory(source, own.x_key, own.y_key)


@register_source_format("builtin")
class Builtin(SourceFormat):
    """The built-in digits: ``builtin:digits/train`` (1,437 images) or ``/test`` (360)."""

    kind = "name"
    what = "a built-in data set"
    recognised_by = "`builtin:digits/train`, `builtin:digits/test`"

    @classmethod
    def detect(cls, target, params) -> bool:
        return isinstance(target, str) and target.startswith("builtin:")

    def open(self, source: str, params) -> Dataset:
        return read_builtin(source[len("builtin:"):])


def is_in_memory(source) -> bool:
    if isinstance(source, dict):
        return True
    if isinstance(source, (list, tuple)) and source:
        return not all(isinstance(item, (str, Path)) for item in source)
    return isinstance(source, np.ndarray)


def read_memory(source, x_key: str, y_key: str) -> Dataset:
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
    return Dataset(numeric(data, name, "x"), None if labels is None else
                   numeric(labels, name, "y"), name)


def read_builtin(name: str) -> Dataset:
    if name not in BUILTIN:
        raise DataError(f"unknown built-in data set 'builtin:{name}'"
                        f"{did_you_mean(name, BUILTIN)}; known: "
                        f"{', '.join('builtin:' + n for n in BUILTIN)}", field="source")
    resource = importlib.resources.files("solverkit.data") / "digits.npz"
    with resource.open("rb") as stream, np.load(stream, allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"]
    part = BUILTIN[name]
    return Dataset(x[part], y[part], f"builtin:{name}", num_classes=10)


# ---------------------------------------------------------------- array files
@register_source_format("npz", suffixes=[".npz"])
class Npz(FileFormat):
    """numpy's ``.npz``: the data in array ``x_key``, the labels (if any) in ``y_key``."""

    class Params(SourceFormat.Params):
        x_key: str = "x"
        y_key: str = "y"

    def read(self, path: Path, params) -> Dataset:
        x_key, y_key = params.x_key, params.y_key
        try:    # every declared shape checked against the stored bytes before it is read
            archive = files.load_npz(path, what="data file", limit=LIMITS["array"],
                                     error=DataError)
        except DataError as err:
            raise _array_file_error(path, ".npz", err, "source") from None
        keys = list(archive)
        if x_key not in keys:
            raise DataError(f"'{path}' has no array '{x_key}'{did_you_mean(x_key, keys)}; "
                            f"arrays: {', '.join(keys) or 'none'} (set x_key)", field="x_key")
        data = archive[x_key]
        labels = archive[y_key] if y_key in keys else None
        return Dataset(numeric(data, path, x_key), None if labels is None else
                       numeric(labels, path, y_key), str(path))


@register_source_format("npy", suffixes=[".npy"])
class Npy(FileFormat):
    """numpy's ``.npy``: the data; labels from ``label_source``, another ``.npy``. Large
    files (or ``stream: true``) are read a batch at a time."""

    class Params(SourceFormat.Params):
        label_source: str | list[str] | None = None
        stream: bool | None = None

    def open(self, paths: list[Path], params) -> Samples:
        own = self.own_params(params)
        labels_paths = label_paths(paths, own, self.base_dir)
        if wants_stream(paths, own.stream):
            labels, name = None, str(paths[0])
            if labels_paths:
                labels = numeric(load_npy(labels_paths[0], "label_source"), labels_paths[0],
                                 "labels")
                name = f"{paths[0]} + {labels_paths[0]}"
            return NpyStream(paths[0], labels, name)
        parts = []
        for i, path in enumerate(paths):
            data = numeric(load_npy(path, "source"), path, "data")
            labels_path = labels_paths[i] if labels_paths else None
            labels = None
            if labels_path is not None:
                labels = numeric(load_npy(labels_path, "label_source"), labels_path, "labels")
            parts.append(Dataset(data, labels, f"{path}" + (f" + {labels_path}"
                                                            if labels_path else "")))
        return concatenate(parts)


@register_source_format("idx")
class Idx(FileFormat):
    """MNIST's IDX files: images (N, H, W) become (N, 1, H, W); labels are the idx1 file.

    Recognised by the name (``*idx*ubyte*``). Without ``label_source``, the labels file is
    found by its standard name beside the images: ``train-images-idx3-ubyte`` ->
    ``train-labels-idx1-ubyte`` (``.gz`` kept).
    """

    recognised_by = "a name with `idx` and `ubyte` (`.gz` too)"

    class Params(SourceFormat.Params):
        label_source: str | list[str] | None = None

    @classmethod
    def detect(cls, target, params) -> bool:
        name = target.name.lower().removesuffix(".gz")
        return "idx" in name and "ubyte" in name

    def open(self, paths: list[Path], params) -> Samples:
        labels_paths = label_paths(paths, self.own_params(params), self.base_dir)
        return concatenate([read_idx(path, labels_paths[i] if labels_paths else None)
                            for i, path in enumerate(paths)])


@register_source_format("cifar10", suffixes=[".bin"])
class Cifar10(FileFormat):
    """A CIFAR-10 binary batch: records of 1 label byte + 3072 bytes (R, G, B planes, 32x32)."""

    def read(self, path: Path, params) -> Dataset:
        raw = _read_bytes(path, "source")
        if not raw or len(raw) % CIFAR10_RECORD:
            raise DataError(f"'{path}' is not a CIFAR-10 binary batch: {len(raw)} bytes is not a "
                            f"whole number of {CIFAR10_RECORD}-byte records (truncated?)",
                            field="source")
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
        images = records[:, 1:].reshape(-1, 3, 32, 32)
        return Dataset(images, records[:, 0].copy(), str(path), num_classes=10)


@register_source_format("csv", suffixes=[".csv"])
class Csv(FileFormat):
    """Numeric CSV without header, one sample per row; ``label_column`` (default -1: the
    last) holds the label, or no column does when it is None."""

    class Params(SourceFormat.Params):
        label_column: int | None = -1

    def read(self, path: Path, params) -> Dataset:
        label_column = params.label_column
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


@register_source_format("hdf5", suffixes=[".h5", ".hdf5", ".he5"])
class Hdf5(FileFormat):
    """An HDF5 file (the ``hdf5`` extra): datasets ``x_key`` and ``y_key``. Large files (or
    ``stream: true``) are read a batch at a time."""

    title = "HDF5"

    class Params(SourceFormat.Params):
        x_key: str = "data"
        y_key: str = "label"
        stream: bool | None = None

    def open(self, paths: list[Path], params) -> Samples:
        own = self.own_params(params)
        if wants_stream(paths, own.stream):
            _h5py(paths[0])
            return Hdf5Stream(paths[0], own.x_key, own.y_key, str(paths[0]))
        return concatenate([self.read(path, own) for path in paths])

    def read(self, path: Path, params) -> Dataset:
        x_key, y_key = params.x_key, params.y_key
        h5py = _h5py(path)
        try:
            with h5py.File(_whole(path, "source"), "r") as handle:
                keys = list(handle.keys())
                if x_key not in keys:
                    raise DataError(f"'{path}' has no dataset '{x_key}'{did_you_mean(x_key, keys)}; "
                                    f"datasets: {', '.join(keys) or 'none'} (set x_key)",
                                    field="x_key")
                data = handle[x_key][()]
                labels = handle[y_key][()] if y_key in keys else None
        except OSError as err:
            raise DataError(f"cannot read '{path}' as HDF5: {reason(err)}", field="source") from None
        return Dataset(numeric(data, path, x_key), None if labels is None else
                       numeric(labels, path, y_key), str(path))


# ---------------------------------------------------------------- shared by the readers
def label_paths(paths: list[Path], params, base_dir) -> list[Path] | None:
    """The files of ``label_source``, one per data file, or None."""
    if params.label_source is None:
        return None
    labels = resolve_paths(params.label_source, base_dir, "label_source")
    if len(labels) != len(paths):
        raise DataError(f"label_source names {len(labels)} files for {len(paths)} "
                        f"data files", field="label_source")
    return labels


def wants_stream(paths: list[Path], stream: bool | None) -> bool:
    """Whether to stream: ``stream`` if set, else for a file of ``STREAM_MIN_BYTES`` or more.
    A streamed source is one file."""
    if stream is not None:
        wanted = stream
    else:
        wanted = any(_large(path) for path in paths)
    if wanted and len(paths) > 1:
        raise DataError(f"a streamed source is one file, not {len(paths)}; join them into one "
                        f"or set stream: false to read them whole", field="stream")
    return wanted


def _large(path: Path) -> bool:
    try:
        return path.stat().st_size >= STREAM_MIN_BYTES
    except OSError:
        return False


def _whole(path: Path, field: str) -> Path:
    """``path``, if it is a regular file small enough to be read whole."""
    try:
        return require_regular(path, what="data file", limit=LIMITS["array"], error=DataError)
    except DataError as err:
        raise err.located(field=field) from None


def _h5py(path: Path):
    try:
        import h5py
    except ImportError:
        raise DataError(f"reading '{path}' needs h5py: pip install 'solverkit[hdf5]'",
                        field="source") from None
    return h5py


def read_idx(path: Path, labels_path: Path | None) -> Dataset:
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


def load_npy(path: Path, field: str) -> np.ndarray:
    """A whole ``.npy`` file, its declared shape checked against its size first."""
    try:
        return files.load_npy(path, what="data file", limit=LIMITS["array"], error=DataError)
    except DataError as err:
        raise _array_file_error(path, ".npy", err, field) from None


def _array_file_error(path: Path, kind: str, err: DataError, field: str) -> DataError:
    """The reader's refusal with the data file named in the message, so that the location
    stays the net file's line and layer."""
    detail = err.message.removeprefix("cannot read the data file: ")
    return DataError(f"cannot read '{path}' as {kind}: {detail}", field=field)


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


def _parse_csv(path: Path) -> np.ndarray:
    try:
        text = _read_bytes(path, "source").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"'{path}' is not a text file: {err.reason} at byte {err.start}",
                        field="source") from None
    if not any(line.split("#", 1)[0].strip() for line in text.splitlines()):
        # before numpy, which warns of a file with no data
        raise DataError(f"'{path}' has no rows", field="source")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2,
                           comments="#")
    except ValueError:
        raise _csv_problem(path, text) from None
    if table.size == 0:
        raise DataError(f"'{path}' has no rows", field="source")
    beyond = np.abs(table) > np.finfo(np.float32).max      # NaN and inf are checked later
    if beyond.any():
        row, column = (int(i) + 1 for i in np.argwhere(beyond)[0])
        raise DataError(f"'{path}': row {row}, column {column}: {table[row - 1, column - 1]:g} "
                        f"is beyond float32's range", field="source")
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


def _read_bytes(path: Path, field: str, kind: str = "array") -> bytes:
    """A file's bytes (at most ``files.LIMITS[kind]``), gunzipped when it is gzip (by its
    magic bytes, not its name), the unpacked size bounded by the same limit."""
    limit = LIMITS[kind]
    try:
        raw = read_bytes(path, what="data file", limit=limit, error=DataError)
    except DataError as err:
        raise err.located(field=field) from None
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, path, field, limit)
    return raw


def _gunzip(raw: bytes, path: Path, field: str, limit: int) -> bytes:
    """The members of a gzip file, joined; more than ``limit`` bytes is an error (a small
    file may unpack to any size)."""
    parts, size = [], 0
    while raw:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(raw, limit + 1 - size)
        except zlib.error as err:
            raise DataError(f"'{path}' is a damaged or truncated gzip file: {reason(err)}",
                            field=field) from None
        size += len(part)
        parts.append(part)
        if size > limit or inflater.unconsumed_tail:
            raise DataError(f"'{path}' unpacks to more than the {limit:,} bytes a data file "
                            f"may have", field=field)
        if not inflater.eof:
            raise DataError(f"'{path}' is a damaged or truncated gzip file: it ends before "
                            f"the end-of-stream marker", field=field)
        raw = inflater.unused_data.lstrip(b"\0")       # members may follow, or padding
    return b"".join(parts)
