"""One run, one snapshot prefix: the lock, the run id, and the file-system checks at start.

A training run claims its ``snapshot_prefix`` before any work (``claim_prefix``):

- the prefix's folder must be a folder that can be written (tested by creating a file);
- ``<prefix>.lock`` is locked (``fcntl.flock``) for the run's life, so a second run on the
  same prefix is refused with the holder's PID; the file stays and records the run id of
  the run that owns the prefix (``--resume latest`` takes only that run's snapshots);
- what a killed run left behind (hidden ``.<name>_....tmp`` files, best-pair folders no
  link points to) is removed;
- a fresh run refuses a prefix that already holds another run's files, unless told to
  overwrite them (which removes them first).

``RunFiles(prefix)`` names every file of a run, in this one place.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import errno
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from .errors import SolverkitError
from .files import LIMITS, file_operation, os_error, read_text

try:
    import fcntl
except ImportError:         # not on POSIX: runs are not locked
    fcntl = None


def new_run_id() -> str:
    """A run id: UTC start time and random hex, e.g. ``20261202T053000Z-3f9a1c``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def lock_path(prefix: str | os.PathLike) -> Path:
    return RunFiles(prefix).lock


def _folder(prefix: str | os.PathLike) -> Path:
    parent = Path(prefix).parent
    return parent if str(parent) else Path(".")


_ITERATION = re.compile(r"_iter_(\d+)\.(model|solverstate)\.npz$")
# Caffe's snapshot files (snapshot_format BINARYPROTO or HDF5) and the side file that
# makes their resume exact
CAFFE_SUFFIXES = (".caffemodel", ".caffemodel.h5", ".solverstate", ".solverstate.h5",
                  ".solverstate.sk.npz", ".solverstate.h5.sk.npz")
NAMED = ("best",)               # snapshots kept under a name instead of an iteration


class RunFiles:
    """Every file a run on ``prefix`` writes, named in one place.

    ``<prefix>_iter_<N>.model.npz`` / ``.solverstate.npz``   periodic snapshots
    ``<prefix>_best.model.npz`` / ``.solverstate.npz``       the best snapshot: links through
        ``<prefix>_best.pair`` (a link switched atomically) into the hidden folder
        ``.<name>_best.<N>`` that holds the pair, so model and state change together
    ``<prefix>_log.csv``, ``<prefix>_debug.csv``             the training and debug logs
    ``<prefix>_tensorboard/``                                TensorBoard event files
    ``<prefix>_labels.txt``                                  class names of the TRAIN data
    ``<prefix>.lock``                                        the run's lock and record
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = str(prefix)
        self.folder = _folder(prefix)
        self.name = Path(prefix).name

    def _path(self, suffix: str) -> Path:
        return Path(f"{self.prefix}{suffix}")

    @property
    def log(self) -> Path:
        return self._path("_log.csv")

    @property
    def debug_log(self) -> Path:
        return self._path("_debug.csv")

    @property
    def tensorboard(self) -> Path:
        return self._path("_tensorboard")

    @property
    def labels(self) -> Path:
        return self._path("_labels.txt")

    @property
    def lock(self) -> Path:
        return self._path(".lock")

    def model(self, iteration: int) -> Path:
        return self._path(f"_iter_{iteration}.model.npz")

    def state(self, iteration: int) -> Path:
        return self._path(f"_iter_{iteration}.solverstate.npz")

    def named_model(self, name: str) -> Path:
        return self._path(f"_{name}.model.npz")

    def named_state(self, name: str) -> Path:
        return self._path(f"_{name}.solverstate.npz")

    def named_pair(self, name: str) -> Path:
        """The link that says which folder holds the named pair (the one atomic switch)."""
        return self._path(f"_{name}.pair")

    def pair_folder(self, name: str, iteration: int) -> Path:
        """A fresh hidden folder for a new named pair written at ``iteration``."""
        return self.folder / f".{self.name}_{name}.{iteration}-{secrets.token_hex(3)}"

    def pair_folders(self, name: str) -> list[Path]:
        return self._hidden(f".{self.name}_{name}.", folders=True)

    def snapshots(self) -> dict[int, dict[str, Path]]:
        """The periodic snapshot files there are: ``{N: {"model": path, "solverstate": path}}``."""
        found: dict[int, dict[str, Path]] = {}
        if not self.folder.is_dir():
            return found
        start = f"{self.name}_iter_"
        for path in self.folder.iterdir():
            match = _ITERATION.search(path.name)
            if match and path.name == f"{start}{match.group(1)}.{match.group(2)}.npz":
                found.setdefault(int(match.group(1)), {})[match.group(2)] = path
        return found

    def caffe_snapshots(self) -> list[Path]:
        """The Caffe-format snapshot files there are (``<prefix>_iter_<N>.caffemodel``,
        ``.solverstate``, their HDF5 forms and the side files)."""
        if not self.folder.is_dir():
            return []
        return sorted(path for path in self.folder.iterdir() if self._is_caffe_snapshot(path.name))

    def _is_caffe_snapshot(self, name: str) -> bool:
        start = f"{self.name}_iter_"
        if not name.startswith(start):
            return False
        number, _, suffix = name[len(start):].partition(".")
        return number.isdigit() and f".{suffix}" in CAFFE_SUFFIXES

    def existing(self) -> list[Path]:
        """The files an earlier run on this prefix left (not the lock): what a fresh run
        refuses to mix with and ``--overwrite`` removes."""
        if not self.folder.is_dir():
            return []
        found = [path for files in self.snapshots().values() for path in files.values()]
        found += self.caffe_snapshots()
        for path in (self.log, self.debug_log, self.labels):
            if path.is_file():
                found.append(path)
        for name in NAMED:
            for path in (self.named_model(name), self.named_state(name), self.named_pair(name)):
                if os.path.lexists(path):
                    found.append(path)
            found += self.pair_folders(name)
        if self.tensorboard.is_dir():       # TensorBoard event files (log: [csv, tensorboard])
            found += [path for path in self.tensorboard.iterdir()
                      if path.name.startswith("events.out.tfevents.") and path.is_file()]
        return sorted(found)

    def temporaries(self) -> list[Path]:
        """What an interrupted write left: hidden ``.<name>_....tmp`` files, and named-pair
        folders no pair link points to."""
        found = [path for path in self._hidden(f".{self.name}_") if path.name.endswith(".tmp")
                 and self._owns(path.name[1:].rsplit(".", 2)[0])]
        for name in NAMED:
            current = self.current_pair(name)
            found += [folder for folder in self.pair_folders(name)
                      if current is None or folder.name != current.name]
        return sorted(found)

    def _owns(self, name: str) -> bool:
        """Whether ``name`` is a file of this run that is written through a temporary file
        (``.<name>.<random>.tmp``): not one of another prefix that starts alike."""
        match = _ITERATION.search(name)
        if match and name == f"{self.name}_iter_{match.group(1)}.{match.group(2)}.npz":
            return True
        if self._is_caffe_snapshot(name):
            return True
        named = [get(n).name for n in NAMED
                 for get in (self.named_model, self.named_state, self.named_pair)]
        return name in (self.labels.name, *named)

    def current_pair(self, name: str) -> Path | None:
        """The folder the named pair link points to, if any."""
        try:
            return self.folder / os.readlink(self.named_pair(name))
        except OSError:
            return None

    def _hidden(self, start: str, folders: bool = False) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(path for path in self.folder.iterdir() if path.name.startswith(start)
                      and (not folders or (path.is_dir() and not path.is_symlink())))

    @staticmethod
    def remove(path: Path) -> None:
        """Remove one file, link or pair folder of a run."""
        with contextlib.suppress(FileNotFoundError), \
                file_operation("remove a file of the earlier run", path):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def run_files(prefix: str | os.PathLike) -> list[Path]:
    """The files a run on ``prefix`` wrote (``RunFiles(prefix).existing()``)."""
    return RunFiles(prefix).existing()


def stale_temporaries(prefix: str | os.PathLike) -> list[Path]:
    """What an interrupted write on ``prefix`` left (``RunFiles(prefix).temporaries()``)."""
    return RunFiles(prefix).temporaries()


def check_prefix_folder(prefix: str | os.PathLike, create: bool) -> Path:
    """The folder of ``prefix``, tested for writing by creating (and removing) a file in it.

    With ``create`` the folder is made first; without (``solverkit check``), the nearest
    existing folder above it is tested, as that is where training would create it.
    """
    folder = _folder(prefix)
    existing = folder
    while not existing.exists():
        if existing.is_symlink() or existing == existing.parent:
            break
        existing = existing.parent
    for part in [existing, *existing.parents]:
        if part.exists() and not part.is_dir():
            raise SolverkitError(f"snapshot_prefix '{prefix}' is under '{part}', which is a "
                                 f"file, not a folder", file=str(part), field="snapshot_prefix")
    target = existing
    if create:
        with file_operation(f"create the snapshot folder for snapshot_prefix '{prefix}'",
                            folder):
            folder.mkdir(parents=True, exist_ok=True)
        target = folder
    try:
        fd, probe = tempfile.mkstemp(prefix=".solverkit-write-test-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise os_error(err, f"write snapshots in '{target}' (snapshot_prefix '{prefix}')",
                       target) from None
    return folder


def read_record(prefix: str | os.PathLike) -> dict:
    """What the lock file records (``run_id``, ``pid``), or ``{}``."""
    try:
        return json.loads(read_text(lock_path(prefix), what="lock file",
                                    limit=LIMITS["record"]) or "{}")
    except (SolverkitError, ValueError):
        return {}


class PrefixClaim:
    """The lock on a snapshot prefix, held until ``release()``."""

    def __init__(self, prefix: str | os.PathLike, fd: int | None):
        self.prefix = str(prefix)
        self._fd = fd

    def record(self, run_id: str | None) -> None:
        """Write the owning run's id (and this PID) into the lock file."""
        if self._fd is None:
            return
        text = json.dumps({"run_id": run_id, "pid": os.getpid()}) + "\n"
        with file_operation("write the lock file", lock_path(self.prefix)):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)      # closing drops the flock
            self._fd = None


def claim_prefix(prefix: str | os.PathLike, *, fresh: str = "refuse", create: bool = True,
                 warn=None) -> PrefixClaim:
    """Claim ``prefix`` for a run: folder writable, the lock taken, stale temporaries removed.

    ``fresh`` says what to do with another run's snapshots and log already there:
    ``"refuse"`` (a SolverkitError listing them), ``"overwrite"`` (remove them first) or
    ``"keep"`` (a resumed run: they are its own history).
    """
    check_prefix_folder(prefix, create=create)
    fd = None
    if fcntl is not None:
        path = lock_path(prefix)
        with file_operation("open the lock file", path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise os_error(err, "lock the snapshot prefix", path) from None
            holder = read_record(prefix).get("pid")
            raise SolverkitError(
                f"snapshot_prefix '{prefix}' is in use by another run"
                f"{f' (PID {holder})' if holder else ''}: wait for it to end, or give this "
                f"run another prefix (--set snapshot_prefix=...)", file=str(path),
                field="snapshot_prefix") from None
    claim = PrefixClaim(prefix, fd)
    try:
        for path in stale_temporaries(prefix):      # safe: no other run holds the prefix
            RunFiles.remove(path)
            if warn is not None:
                warn(f"removed {path}, a temporary file an interrupted run left behind")
        existing = run_files(prefix)
        if existing and fresh == "refuse":
            shown = ", ".join(p.name for p in existing[:4])
            more = f" and {len(existing) - 4} more" if len(existing) > 4 else ""
            raise SolverkitError(
                f"snapshot_prefix '{prefix}' already holds the files of an earlier run "
                f"({shown}{more}): continue it with --resume latest, start over with "
                f"--overwrite (removes them first), or give this run another prefix",
                file=str(_folder(prefix)), field="snapshot_prefix")
        if existing and fresh == "overwrite":
            for path in existing:
                RunFiles.remove(path)
            if warn is not None:
                warn(f"--overwrite: removed {len(existing)} file(s) of the earlier run on "
                     f"'{prefix}'")
    except BaseException:
        claim.release()
        raise
    return claim


def open_log_at(path: Path, iteration: int, header: tuple[str, ...],
                also_at: tuple[str, ...] = ()):
    """Open a run's CSV log for the rows from ``iteration`` on: from iteration 0 a new
    file with ``header``; from a later one (a resumed run) the same file cut in place back
    to its rows before ``iteration`` (``keep_log_rows_before``), then appended to.
    Returns ``(file, csv writer)``; the caller closes the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = iteration > 0 and keep_log_rows_before(path, iteration, ",".join(header), also_at)
    handle = open(path, "a" if kept else "w", newline="")  # noqa: SIM115  (the caller's)
    writer = csv.writer(handle)
    if not kept:
        writer.writerow(header)
    return handle, writer


def keep_log_rows_before(path: str | os.PathLike, iteration: int, header: str,
                         also_at: tuple[str, ...] = ()) -> bool:
    """Cut a CSV log back to its rows before ``iteration`` (a resumed run appends after them).
    ``also_at`` (phases such as ``TEST``) keeps the leading rows at ``iteration`` of those
    phases too (a state written after that iteration's test).

    The rows to keep are never rewritten: the file is truncated at the byte offset of the
    first row at or after ``iteration`` (or of a last row a kill cut short), so however the
    process ends, every earlier row is still in the file. Returns False when there is no
    log whose first line is ``header`` (the caller starts a new one).
    """
    try:
        handle = open(path, "r+b")  # noqa: SIM115  (closed below)
    except FileNotFoundError:
        return False
    with handle:
        first = handle.readline()
        if first.rstrip(b"\r\n") != header.encode():
            return False
        offset = handle.tell()
        for line in iter(handle.readline, b""):
            cell = line.split(b",", 1)[0]
            if not line.endswith(b"\n") or not cell.isdigit() or int(cell) > iteration:
                break
            phase = (line.split(b",", 2) + [b""])[1].decode(errors="replace")
            if int(cell) == iteration and phase not in also_at:
                break
            offset += len(line)
        handle.truncate(offset)
        handle.flush()
        os.fsync(handle.fileno())
    return True
