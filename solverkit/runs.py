"""One run, one snapshot prefix: the lock, the run id, and the file-system checks at start.

A training run claims its ``snapshot_prefix`` before any work (``claim_prefix``):

- the prefix's folder must be a folder that can be written (tested by creating a file);
- ``<prefix>.lock`` is locked (``fcntl.flock``) for the run's life, so a second run on the
  same prefix is refused with the holder's PID; the file stays and records the run id of
  the run that owns the prefix (``--resume latest`` takes only that run's snapshots);
- hidden temporary files a killed run left behind (``.<name>_iter_*.tmp``) are removed;
- a fresh run refuses a prefix that already holds another run's snapshots or log, unless
  told to overwrite them (which removes them first).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import secrets
import tempfile
from pathlib import Path

from .errors import SolverkitError
from .files import file_operation, os_error

try:
    import fcntl
except ImportError:         # not on POSIX: runs are not locked
    fcntl = None


def new_run_id() -> str:
    """A run id: UTC start time and random hex, e.g. ``20261202T053000Z-3f9a1c``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def lock_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.lock")


def _folder(prefix: str | os.PathLike) -> Path:
    parent = Path(prefix).parent
    return parent if str(parent) else Path(".")


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


def run_files(prefix: str | os.PathLike) -> list[Path]:
    """The files a run on ``prefix`` writes: snapshots, the best snapshot, the CSV log, the
    debug log and TensorBoard event files (not the lock)."""
    prefix = Path(prefix)
    folder = _folder(prefix)
    if not folder.is_dir():
        return []
    name = prefix.name
    found = []
    for path in folder.iterdir():
        other = path.name
        if other in (f"{name}_log.csv", f"{name}_debug.csv", f"{name}_best.model.npz",
                     f"{name}_best.solverstate.npz") or (
                other.startswith(f"{name}_iter_") and other.endswith(
                    (".model.npz", ".solverstate.npz"))
                and other[len(name) + 6:].split(".", 1)[0].isdigit()):
            found.append(path)
    events = folder / f"{name}_tensorboard"
    if events.is_dir():             # TensorBoard event files (log: [csv, tensorboard])
        found += [path for path in events.iterdir()
                  if path.name.startswith("events.out.tfevents.") and path.is_file()]
    return sorted(found)


def stale_temporaries(prefix: str | os.PathLike) -> list[Path]:
    """Hidden ``.<name>_iter_<N>....tmp`` files of ``prefix`` that an interrupted write left."""
    prefix = Path(prefix)
    folder = _folder(prefix)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir()
                  if path.name.startswith(f".{prefix.name}_") and path.name.endswith(".tmp"))


def read_record(prefix: str | os.PathLike) -> dict:
    """What the lock file records (``run_id``, ``pid``), or ``{}``."""
    try:
        return json.loads(lock_path(prefix).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
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
            with contextlib.suppress(FileNotFoundError), \
                    file_operation("remove a stale temporary file", path):
                path.unlink()
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
                with contextlib.suppress(FileNotFoundError), \
                        file_operation("remove a file of the earlier run", path):
                    path.unlink()
            if warn is not None:
                warn(f"--overwrite: removed {len(existing)} file(s) of the earlier run on "
                     f"'{prefix}'")
    except BaseException:
        claim.release()
        raise
    return claim


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
