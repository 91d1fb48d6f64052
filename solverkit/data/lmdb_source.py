"""Caffe's LMDB databases (``backend: LMDB``, the ``lmdb`` extra), read a record at a time.

Each value is a Caffe ``Datum`` (see ``solverkit.caffe.messages``): ``channels``,
``height``, ``width`` and either ``data`` (uint8 pixels, C x H x W) or ``float_data``, a
``label``; with ``encoded`` the data is a PNG/JPEG file, decoded as Caffe does (gray
images stay one channel, colour ones are BGR). Records are served in key order, as
Caffe's data layer reads them (``convert-imageset`` writes ``%08d_PATH`` keys, so key
order is the list's order). Every record must have the shape of the first one.

Only the keys are held in memory (one byte string of them, plus offsets). LMDB reads
through a memory map, and every page fault on it maps the pages around the one read too
(Linux's fault-around, 64 KiB), so random reads make the resident memory grow some 16
times faster than the data read, up to the size of the database. The map is therefore
reopened after every ``REOPEN_RECORDS`` records, which drops the pages read so far from
the process (they stay in the system's page cache).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..caffe.messages import decode_datum
from ..errors import DataError
from ..protobuf import Limits
from . import images
from .formats import SourceFormat, register_source_format
from .records import RecordSource

REOPEN_RECORDS = 256

# a record is one image: bounded far below protobuf's own 2 GiB ceiling
DATUM_LIMITS = Limits(max_bytes=1 << 30, max_depth=4, max_repeated=1 << 28)


def lmdb_module():
    """The ``lmdb`` package, or a ``DataError`` naming the extra that installs it."""
    try:
        import lmdb
    except ImportError:
        raise DataError("reading LMDB needs the 'lmdb' extra: pip install 'solverkit[lmdb]'",
                        field="backend") from None
    return lmdb


def open_environment(folder: Path, *, write: bool = False, map_size: int = 1 << 30):
    """An LMDB environment on ``folder`` (read-only without locks, or for writing)."""
    lmdb = lmdb_module()
    try:
        if write:
            return lmdb.open(str(folder), map_size=map_size, subdir=True, lock=True)
        if not (folder / "data.mdb").is_file():
            raise DataError(f"'{folder}' is not an LMDB database (it has no data.mdb)",
                            field="source")
        return lmdb.open(str(folder), readonly=True, lock=False, readahead=False,
                         subdir=True, max_readers=4)
    except lmdb.Error as err:
        raise DataError(f"cannot open LMDB database '{folder}': {err}",
                        field="source") from None


class Database:
    """The one LMDB environment of a database folder in this process (py-lmdb refuses to
    open one twice), shared by every source reading it; all reads hold its lock. The
    environment is closed after every ``REOPEN_RECORDS`` records read, and reopened on
    the next read (about 0.1 ms), which drops the mapped pages from the process."""

    _all: ClassVar[dict[str, Database]] = {}
    _all_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, folder: Path):
        self.folder = folder
        self.lock = threading.Lock()
        self._env = None
        self._records = 0

    @classmethod
    def of(cls, folder: Path) -> Database:
        key = os.path.realpath(folder)
        with cls._all_lock:
            if key not in cls._all:
                cls._all[key] = cls(folder)
            return cls._all[key]

    def _environment(self):
        if self._env is None:
            self._env = open_environment(self.folder)
        return self._env

    def _count(self, records: int) -> None:
        self._records += records
        if self._records >= REOPEN_RECORDS:
            self.close_unlocked()

    def close_unlocked(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
        self._records = 0

    def close(self) -> None:
        with self.lock:
            self.close_unlocked()

    def values(self, keys: list[bytes]) -> list[bytes | None]:
        """The values of ``keys`` (None for a key that is not there)."""
        with self.lock:
            with self._environment().begin(buffers=False) as txn:
                values = [txn.get(key) for key in keys]
            self._count(len(keys))
        return values

    def keys(self) -> tuple[bytes, np.ndarray]:
        """Every key in order, as one byte string and the (N + 1,) offsets into it; read in
        chunks of ``REOPEN_RECORDS`` keys, each from a fresh map."""
        parts: list[bytes] = []
        with self.lock:
            while True:
                with self._environment().begin(buffers=False) as txn:
                    cursor = txn.cursor()
                    if not parts:
                        more = cursor.first()
                    else:                       # continue after the last key read
                        more = cursor.set_range(parts[-1])
                        if more and cursor.key() == parts[-1]:
                            more = cursor.next()
                    count = 0
                    while more and count < REOPEN_RECORDS:
                        parts.append(cursor.key())
                        count += 1
                        more = cursor.next()
                self.close_unlocked()
                if not more:
                    break
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(key) for key in parts], out=offsets[1:])
        return b"".join(parts), offsets


class LmdbSource(RecordSource):
    """The Datum records of one LMDB database, in key order."""

    def __init__(self, folder: Path, *, skip_bad: bool = False,
                 max_pixels: int = images.MAX_PIXELS, is_color: bool | None = None,
                 keys: tuple[bytes, np.ndarray] | None = None,
                 sample: tuple[tuple, np.dtype] | None = None):
        super().__init__(str(folder), skip_bad=skip_bad)
        self.folder = folder
        self.is_color = is_color        # encoded records: BGR, gray, or as stored (None)
        self.max_pixels = max_pixels
        self.database = Database.of(folder)
        self._batch = threading.local()     # .values: the records of the run being read
        # (a worker process's copy is given the keys and sample shape the parent found)
        self._keys, self._offsets = self.database.keys() if keys is None else keys
        if len(self) == 0:
            raise DataError(f"LMDB database '{folder}' holds no records", field="source")
        if sample is not None:
            self._shape, self._dtype = tuple(sample[0]), np.dtype(sample[1])
            return
        self._shape = None
        self._dtype = np.dtype(np.uint8)
        _, first = self.first_good()
        self._shape, self._dtype = tuple(first.shape), first.dtype
        self.database.close()

    def recipe(self):
        settings = {"folder": str(self.folder), "skip_bad": self.skip_bad,
                    "max_pixels": self.max_pixels, "is_color": self.is_color,
                    "shape": list(self._shape), "dtype": self._dtype.str}
        keys = np.frombuffer(self._keys, dtype=np.uint8)
        return __name__, type(self).__name__, settings, {"keys": keys, "offsets": self._offsets}

    @classmethod
    def from_recipe(cls, settings: dict, arrays: dict) -> LmdbSource:
        return cls(Path(settings["folder"]), skip_bad=settings["skip_bad"],
                   max_pixels=settings["max_pixels"], is_color=settings["is_color"],
                   keys=(arrays["keys"].tobytes(), np.array(arrays["offsets"])),
                   sample=(settings["shape"], settings["dtype"]))

    def key(self, index: int) -> bytes:
        return self._keys[self._offsets[index]:self._offsets[index + 1]]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def sample_shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    def where(self, index: int) -> str:
        return f"record '{self.key(index).decode('utf-8', 'replace')}' of '{self.folder}'"

    def decode_rows(self, indices, out, labels, sources, found):
        # the run's records in one transaction, then decoded one by one
        wanted = np.unique(indices).tolist()
        self._batch.values = dict(zip(wanted, self.database.values([self.key(i)
                                                                   for i in wanted])))
        try:
            super().decode_rows(indices, out, labels, sources, found)
        finally:
            self._batch.values = {}

    def read(self, index: int):
        values = getattr(self._batch, "values", {})
        if index in values:
            value = values[index]
        else:                   # a record read in place of a bad one (skip_bad)
            value = self.database.values([self.key(index)])[0]
        if value is None:
            raise DataError(f"{self.where(index)} has vanished (was the "
                            f"database changed while it was read?)", field="source")
        try:
            datum = decode_datum(value, file=str(self.folder), limits=DATUM_LIMITS)
        except DataError as err:
            raise DataError(f"{self.where(index)} is not a Caffe Datum "
                            f"({err.message})", field="source") from None
        if datum.encoded:
            pixels = self._decode_encoded(datum.data, index)
        else:
            try:
                pixels = datum.array(file=str(self.folder))
            except DataError as err:
                raise DataError(f"{self.where(index)}: {err.message}",
                                field="source") from None
            if pixels.size == 0:
                raise DataError(f"{self.where(index)} holds no values (is "
                                f"this a Caffe Datum database?)", field="source")
        if self._shape is not None and pixels.dtype != self._dtype:
            if self._dtype == np.uint8:
                raise DataError(f"{self.where(index)} holds float_data but "
                                f"the first record holds bytes", field="source")
            pixels = pixels.astype(self._dtype)
        return pixels, datum.label

    def _decode_encoded(self, raw: bytes, index: int) -> np.ndarray:
        return images.decode_image_u8(raw, name=f"{self.where(index)}",
                                      is_color=self.is_color, max_pixels=self.max_pixels)

    def close(self) -> None:
        super().close()
        self.database.close()


@register_source_format("lmdb")
class Lmdb(SourceFormat):
    """A Caffe LMDB database folder of Datum records: ``backend: LMDB``, or any folder
    holding a ``data.mdb``."""

    kind = "path"
    title = "LMDB"
    what = "an LMDB database"
    recognised_by = "`backend: LMDB`, or a folder holding `data.mdb`"

    class Params(SourceFormat.Params):
        skip_bad: bool = False

    @classmethod
    def detect(cls, target, params) -> bool:
        return getattr(params, "backend", None) == "LMDB" or (target / "data.mdb").is_file()

    def open(self, path: Path, params) -> LmdbSource:
        if not path.exists():
            raise DataError(f"LMDB database '{path}' does not exist", field="source")
        if not path.is_dir():
            raise DataError(f"'{path}' is a file; backend: LMDB reads the database "
                            f"folder (the one holding data.mdb)", field="source")
        return LmdbSource(path, skip_bad=self.own_params(params).skip_bad,
                          is_color=forced_color(params))


def forced_color(params) -> bool | None:
    """How a Data layer's encoded records decode: True (BGR: ``transform.force_color`` or
    ``force_encoded_color``), False (gray: ``transform.force_gray``), None (as stored)."""
    transform = getattr(params, "transform", None)
    color = bool(getattr(transform, "force_color", False))
    gray = bool(getattr(transform, "force_gray", False))
    if color and gray:
        raise DataError("give force_color or force_gray, not both", field="transform.force_gray")
    if gray:
        return False
    return True if (color or getattr(params, "force_encoded_color", False)) else None
