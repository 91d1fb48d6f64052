"""Reading and writing a user's files: one bounded reader, one atomic writer.

Reading (``read_bytes``, ``read_text``, ``require_regular``): only a regular file is read (a
symbolic link is followed and its target must be one). A FIFO, a device, a socket or a
folder is refused at once: the path is stat-ed, then opened with ``O_NONBLOCK`` (a FIFO
swapped in since the stat does not wait for a writer) and fstat-ed again. At most
``limit + 1`` bytes are read, so a file larger than its kind may be, or one growing while it
is read, ends in an error naming the file and the limit instead of filling the memory.

Writing (``atomic_writer``, ``write_atomic``): the data goes to a hidden temporary file
beside the target (``.<name>.<random>.tmp``), is fsynced, gets the mode any new file gets
(``0o666`` less the umask), and is renamed over the target; the folder is fsynced after.
A crash leaves either the old file or the new one under the final name, never half a file;
a failure removes the temporary file. ``check_output`` is the rule every command that
writes applies first: never an input of the same command, never an existing file unless
forced.

Every refusal is a ``SolverkitError`` (or the subclass the caller names with ``error=``)
whose message names the file and what it was expected to be.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import tempfile
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from .errors import SolverkitError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# The largest file of each kind that is read, in bytes. Generous: they exist so that a
# hostile or mistaken path (a runaway file, a sparse file of terabytes) ends in a message,
# not so that a real file is refused. No reader goes beyond a file's real size either way.
LIMITS = {
    "spec": 16 * MiB,               # YAML / prototxt net and solver specs
    "caffemodel": 2 * GiB - 1,      # protobuf's (and Caffe's) own ceiling for one message
    "binaryproto": 2 * GiB - 1,     # Caffe mean files (a BlobProto)
    "model": 16 * GiB,              # .model.npz / .solverstate.npz, --weights and --resume
    "array": 16 * GiB,              # other .npy / .npz files (mean files, infogain matrices)
    "list": 1 * GiB,                # image lists, label and class-name files
    "log": 4 * GiB,                 # CSV training logs read back (plot)
    "image": 1 * GiB,               # one encoded image file
    "record": 64 * KiB,             # small side files (a lock file's record)
}


def os_error(err: OSError, operation: str, path=None) -> SolverkitError:
    """An environment failure (read-only folder, full disk, a file where a folder should be)
    as a user error naming the path and the operation."""
    reason = {errno.ENOSPC: "no space left on the device",
              errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied",
              errno.ELOOP: "a loop of symbolic links",
              errno.ENOTDIR: "a part of the path is a file, not a folder"}.get(
        err.errno, err.strerror or str(err))
    return SolverkitError(f"cannot {operation}: {reason}",
                          file=str(err.filename or path) if (err.filename or path) else None)


@contextlib.contextmanager
def file_operation(operation: str, path=None):
    """``with file_operation("write the snapshot", path):`` turns an OSError into a
    SolverkitError naming the path and the operation."""
    try:
        yield
    except OSError as err:
        raise os_error(err, operation, path) from None


@contextlib.contextmanager
def _writing(operation: str, path):
    """As ``file_operation``, but the message names ``path`` (the file the user asked for),
    not the hidden temporary file the failing call was given."""
    try:
        yield
    except OSError as err:
        failure = os_error(err, operation, path)
        failure.file = str(path)
        raise failure from None


# ---------------------------------------------------------------------------- reading

def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse_irregular(mode: int, path, what: str, error) -> None:
    if not stat.S_ISREG(mode):
        raise error(f"cannot read the {what}: it is {_kind_of(mode)}, not a regular file",
                    file=str(path))


def _stat(path, what: str, error) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(f"{what} not found (a symbolic link to '{os.readlink(path)}', which "
                        f"does not exist)", file=str(path)) from None
        raise error(f"{what} not found", file=str(path)) from None
    except OSError as err:
        reason = os_error(err, "x").message.removeprefix("cannot x: ")
        raise error(f"cannot read the {what}: {reason}", file=str(path)) from None


def _too_large(path, what: str, limit: int, error, size: int | None = None):
    told = f"{size:,} bytes, " if size is not None else ""
    return error(f"cannot read the {what}: {told}more than the {limit:,} bytes such a file "
                 f"may have", file=str(path))


def require_regular(path, *, what: str, limit: int | None = None,
                    error: type[SolverkitError] = SolverkitError) -> Path:
    """``path`` as a Path if it names a regular file (of at most ``limit`` bytes), for code
    that hands the path to a library (numpy.load, h5py, Pillow); else ``error`` naming it."""
    info = _stat(path, what, error)
    _refuse_irregular(info.st_mode, path, what, error)
    if limit is not None and info.st_size > limit:
        raise _too_large(path, what, limit, error, info.st_size)
    return Path(path)


@contextlib.contextmanager
def open_regular(path, *, what: str, limit: int | None = None,
                 error: type[SolverkitError] = SolverkitError) -> Iterator[IO[bytes]]:
    """``with open_regular(path, what=...) as handle:`` a binary handle on the regular file
    ``path`` (of at most ``limit`` bytes by its size), for readers that parse a stream
    (zip archives). Opened without waiting on a FIFO; the file opened is the one checked."""
    info = _stat(path, what, error)
    _refuse_irregular(info.st_mode, path, what, error)
    if limit is not None and info.st_size > limit:
        raise _too_large(path, what, limit, error, info.st_size)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        reason = os_error(err, "x").message.removeprefix("cannot x: ")
        raise error(f"cannot read the {what}: {reason}", file=str(path)) from None
    try:
        info = os.fstat(fd)         # the file opened, not the one stat-ed before
        _refuse_irregular(info.st_mode, path, what, error)
        if limit is not None and info.st_size > limit:
            raise _too_large(path, what, limit, error, info.st_size)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_bytes(path, *, what: str, limit: int,
               error: type[SolverkitError] = SolverkitError) -> bytes:
    """The whole content of the regular file ``path``, at most ``limit`` bytes.

    ``what`` ("net spec", "caffemodel") names the file in messages; ``error`` is the
    SolverkitError subclass raised. Never blocks on a FIFO and never reads more than
    ``limit + 1`` bytes, whatever the file claims or turns out to be.
    """
    with open_regular(path, what=what, limit=limit, error=error) as handle:
        try:
            # one read of the size the file claims (+1 to see it end), then bounded chunks
            # for a file that grows under us or claims 0 bytes (files in /proc)
            claimed = os.fstat(handle.fileno()).st_size
            data = handle.read(min(claimed, limit) + 1)
            if len(data) > claimed:
                parts = [data]
                size = len(data)
                while size <= limit:
                    chunk = handle.read(min(limit + 1 - size, 16 * MiB))
                    if not chunk:
                        break
                    parts.append(chunk)
                    size += len(chunk)
                data = b"".join(parts)
        except OSError as err:
            reason = os_error(err, "x").message.removeprefix("cannot x: ")
            raise error(f"cannot read the {what}: {reason}", file=str(path)) from None
    if len(data) > limit:
        raise _too_large(path, what, limit, error)
    return data


def read_text(path, *, what: str, limit: int, encoding: str = "utf-8",
              error: type[SolverkitError] = SolverkitError) -> str:
    """``read_bytes`` decoded; ``utf-8-sig`` drops a byte-order mark. Text that does not
    decode is ``error`` naming the file and the byte."""
    data = read_bytes(path, what=what, limit=limit, error=error)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise error(f"cannot read the {what}: not {encoding.removesuffix('-sig')} text "
                    f"({err.reason} at byte {err.start})", file=str(path)) from None


# ---------------------------------------------------------------------------- arrays

# numpy parses a .npy header with Python's tokenizer: a damaged one raises its errors
_ARCHIVE_FAILURES = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                     tokenize.TokenError, SyntaxError,
                     NotImplementedError, KeyError, OverflowError)


def _npy_header(stream, total: int, path, what: str, entry: str, error) -> None:
    """Check one .npy header against the data of the ``total`` bytes it begins: no Python objects
    (they would need pickle), and a declared shape the stored bytes can hold (Python ints,
    so a shape of [2**32, 2**32] cannot wrap to a small size before anything is allocated)."""
    where = f" entry '{entry}'" if entry else ""
    version = np.lib.format.read_magic(stream)
    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        shape, _, dtype = header(stream)
    warned = [w for w in warned if issubclass(w.category, UserWarning)
              and "header" in str(w.message)]      # not a finaliser's ResourceWarning
    if warned:      # numpy reads it only with a fix-up of its own (a Python 2 header)
        raise error(f"cannot read the {what}:{where} has a header numpy reads only with a "
                    f"warning ({str(warned[0].message).split('.')[0]}); save it again",
                    file=str(path))
    stored = total - stream.tell()
    if dtype.hasobject:
        raise error(f"cannot read the {what}:{where} holds Python objects, which are not "
                    f"read (they would need pickle)", file=str(path))
    declared = math.prod(int(d) for d in shape) * dtype.itemsize
    if declared > stored:
        raise error(f"cannot read the {what}:{where} declares shape {list(shape)} of "
                    f"{dtype} ({declared:,} bytes) but holds {max(stored, 0):,} bytes "
                    f"(truncated or corrupt)", file=str(path))


def load_npz(path, *, what: str, limit: int,
             error: type[SolverkitError] = SolverkitError) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``path`` (no pickle), bounded: a regular file of
    at most ``limit`` bytes whose entries declare at most ``limit`` bytes in all, each
    array's declared shape checked against its stored size before it is allocated."""
    with open_regular(path, what=what, limit=limit, error=error) as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                entries = archive.infolist()
                declared = sum(entry.file_size for entry in entries)
                if declared > limit:
                    raise error(f"cannot read the {what}: its entries unpack to "
                                f"{declared:,} bytes, more than the {limit:,} bytes such a "
                                f"file may have", file=str(path))
                for entry in entries:
                    if entry.flag_bits & 0x1:
                        raise error(f"cannot read the {what}: entry '{entry.filename}' is "
                                    f"encrypted", file=str(path))
                    if entry.filename.endswith(".npy"):
                        with archive.open(entry) as member:
                            _npy_header(member, entry.file_size, path, what,
                                        entry.filename[:-4], error)
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as arrays:
                return {key: arrays[key] for key in arrays.files}
        except SolverkitError:
            raise
        except _ARCHIVE_FAILURES as err:
            raise error(f"cannot read the {what}: not a readable .npz archive (truncated or "
                        f"corrupt?): {err}", file=str(path)) from None


def load_npy(path, *, what: str, limit: int,
             error: type[SolverkitError] = SolverkitError) -> np.ndarray:
    """The array of the ``.npy`` file ``path`` (no pickle), bounded as ``load_npz``."""
    with open_regular(path, what=what, limit=limit, error=error) as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            _npy_header(handle, size, path, what, "", error)
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
        except SolverkitError:
            raise
        except _ARCHIVE_FAILURES as err:
            raise error(f"cannot read the {what}: not a readable .npy file (truncated or "
                        f"corrupt?): {err}", file=str(path)) from None


# ---------------------------------------------------------------------------- writing

def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new link in ``folder`` durable (where the file system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass        # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path, mode: str = "wb", *, operation: str = "write the file",
                  encoding: str = "utf-8") -> Iterator[IO]:
    """``with atomic_writer(path) as handle: handle.write(...)``: the file appears under
    ``path`` complete when the block ends, or not at all when it raises.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding``, no newline translation). A missing
    folder is created. A file-system failure is a SolverkitError naming ``operation`` and
    the path; the temporary file is removed and an existing file under ``path`` is kept.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    with _writing(operation, path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    text = {"encoding": encoding, "newline": ""} if mode == "w" else {}
    try:
        # an OSError of the block is one of writing this file too (a full disk)
        with _writing(operation, path), os.fdopen(fd, mode, **text) as handle:
            os.fchmod(fd, 0o666 & ~_umask())        # mkstemp's own mode is 0600
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with _writing(operation, path):
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_folder(folder)


@contextlib.contextmanager
def atomic_path(path, *, operation: str = "write the file") -> Iterator[Path]:
    """``with atomic_path(path) as temporary: save(temporary)``: ``atomic_writer`` for code
    that takes a file name (a library's save function, a plugin exporter). ``temporary`` is
    beside ``path`` and ends in its suffix; when the block ends it is fsynced, given the
    umask's mode and renamed to ``path``; when the block raises it is removed."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    with _writing(operation, path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                         dir=folder)
        os.close(fd)
    try:
        yield Path(temporary)
        with _writing(operation, path):
            os.chmod(temporary, 0o666 & ~_umask())      # mkstemp's own mode is 0600
            fd = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_folder(folder)


def write_atomic(path, data: bytes | str, *, operation: str = "write the file") -> None:
    """Write ``data`` (bytes, or str as utf-8) to ``path`` through ``atomic_writer``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path, "wb", operation=operation) as handle:
        handle.write(payload)


def same_file(a, b) -> bool:
    """Whether two paths name one file (through links, or spelled differently)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output(path, *, inputs: Iterable = (), force: bool = False, option: str = "-o",
                 what: str = "output", error: type[SolverkitError] = SolverkitError) -> Path:
    """Refuse to write ``path`` when it is one of ``inputs`` (with or without ``force``: the
    command would destroy what it reads) or when it exists and ``force`` is not given."""
    path = Path(path)
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and os.path.lexists(path) \
                and same_file(path, source):
            raise error(f"the {what} '{path}' is also an input of this command ({source}); "
                        f"write it elsewhere", file=str(path), field=option)
    if os.path.lexists(path) and not force:
        kind = "a folder" if path.is_dir() else "a file"
        raise error(f"the {what} '{path}' already exists ({kind}); remove it or pass --force "
                    f"to replace it", file=str(path), field=option)
    return path
