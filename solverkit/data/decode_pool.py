"""Decoding records in worker processes that write straight into shared memory.

A ``DecodePool`` keeps ``count`` worker processes for one record source, from its first
batch until it is closed. A worker is a fresh interpreter (``python -c``: never a fork
of this process, whose OpenMP, BLAS and oneDNN threads a fork would copy half-alive, and
never a new import of the user's ``__main__``), started with one thread for numpy, BLAS,
OpenMP and solverkit and with ``SOLVERKIT_MPI=off`` (it is no MPI rank). It rebuilds the
source from the source's ``recipe()``: numbers, strings, paths and plain arrays, sent as
JSON and raw bytes over a socket (no pickle either way), then waits for work.

Batch memory is anonymous shared memory (``memfd_create``): the pool maps a block for the
rows of a batch and hands its file descriptor to every worker over the socket, and the
workers write decoded rows into it, so a batch crosses no pipe. Such a block has no name
in ``/dev/shm``: nothing is left to unlink, whatever ends the processes (a normal close,
an error, Ctrl-C, a killed worker or parent); the memory goes when the last mapping does.

A batch (a ``Ticket``) is cut into one run of consecutive rows per worker; every worker
answers its runs in the order it got them, so several batches can be in flight. Workers
ignore SIGINT (Ctrl-C is the parent's to handle) and end when their socket closes, which
also happens when the parent dies. A worker that dies makes the pool raise one
``DataError`` naming the source and how the worker ended; the other workers are stopped.
"""

from __future__ import annotations

import importlib
import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import traceback
import weakref
from collections import deque
from pathlib import Path

import numpy as np

from ..errors import DataError

_LENGTH = struct.Struct("<Q")

# how often a wait for a worker checks that the worker is still alive
POLL_SECONDS = 1.0

# the environment of a worker: one thread for every pool, no MPI rank
WORKER_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                      "MKL_NUM_THREADS": "1", "SOLVERKIT_NUM_THREADS": "1",
                      "SOLVERKIT_MPI": "off"}

# the directory holding the ``solverkit`` package, put first on the workers' sys.path
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)

_BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from solverkit.data.decode_pool import serve; serve(int(sys.argv[2]))")


def available() -> bool:
    """Whether this platform has what the pool needs (``memfd_create`` and passing file
    descriptors over a socket: Linux) and an interpreter to start."""
    return hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and bool(sys.executable)


# ---------------------------------------------------------------- messages
def send(sock: socket.socket, header: dict, arrays: dict | None = None, fds=()) -> None:
    """One message: its length, a JSON header (which lists the arrays), the arrays' bytes;
    ``fds`` ride along with its first byte."""
    arrays = {name: np.ascontiguousarray(value) for name, value in (arrays or {}).items()}
    header = dict(header, arrays=[[name, value.dtype.str, list(value.shape)]
                                  for name, value in arrays.items()])
    text = json.dumps(header).encode("ascii")
    data = b"".join([_LENGTH.pack(len(text)), text, *(value.tobytes()
                                                       for value in arrays.values())])
    sent = socket.send_fds(sock, [data], list(fds)) if fds else 0
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def receive(sock: socket.socket) -> tuple[dict, dict, list[int]]:
    """(header, arrays, file descriptors) of the next message; EOFError when the other end
    has closed."""
    first, fds, _flags, _address = socket.recv_fds(sock, _LENGTH.size, 1)
    if not first:
        raise EOFError
    (length,) = _LENGTH.unpack(first + _exactly(sock, _LENGTH.size - len(first)))
    header = json.loads(_exactly(sock, length))
    arrays = {}
    for name, dtype, shape in header.pop("arrays"):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arrays[name] = np.frombuffer(_exactly(sock, size), dtype=dtype).reshape(shape)
    return header, arrays, list(fds)


def _exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = sock.recv_into(view[done:])
        if not got:
            raise EOFError
        done += got
    return bytes(buffer)


# ---------------------------------------------------------------- shared batch memory
def slot_views(buffer, capacity: int, sample_shape, dtype):
    """The arrays of a batch block of ``capacity`` rows: pixels (capacity, *sample_shape)
    of ``dtype``, labels (capacity,) float64, record indices (capacity,) int64."""
    dtype = np.dtype(dtype)
    per_row = int(np.prod(sample_shape, dtype=np.int64))
    pixel_bytes = capacity * per_row * dtype.itemsize
    start = -(-pixel_bytes // 8) * 8
    pixels = np.frombuffer(buffer, dtype=dtype, count=capacity * per_row)
    labels = np.frombuffer(buffer, dtype=np.float64, count=capacity, offset=start)
    sources = np.frombuffer(buffer, dtype=np.int64, count=capacity, offset=start + 8 * capacity)
    return pixels.reshape(capacity, *sample_shape), labels, sources


def slot_bytes(capacity: int, sample_shape, dtype) -> int:
    per_row = int(np.prod(sample_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return -(-capacity * per_row // 8) * 8 + 16 * capacity


class _Slot:
    """One block of shared memory for the rows of a batch, mapped in this process."""

    def __init__(self, number: int, capacity: int, sample_shape, dtype):
        self.number = number
        self.capacity = capacity
        self.size = slot_bytes(capacity, sample_shape, dtype)
        self.fd = os.memfd_create("solverkit-batch", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self.memory = mmap.mmap(self.fd, self.size)
        except BaseException:
            os.close(self.fd)
            raise
        self.views = slot_views(self.memory, capacity, sample_shape, dtype)

    def close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.close_fd()
        self.views = None
        try:
            self.memory.close()
        except BufferError:     # a caller still holds a view: unmapped when it is dropped
            pass


# ---------------------------------------------------------------- the parent's side
class _Workers:
    """The processes and sockets of a pool, apart from the pool so that a finalizer can
    stop them without keeping the pool alive."""

    def __init__(self):
        self.processes: list[subprocess.Popen] = []
        self.sockets: list[socket.socket] = []

    def stop(self) -> None:
        """Close the sockets (a worker ends when its socket does), then make sure every
        worker has ended (killed after a second) and been waited for."""
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)     # wakes a thread waiting on it
            except OSError:
                pass
            sock.close()
        for process in self.processes:
            try:
                process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes, self.sockets = [], []


class Ticket:
    """A batch being decoded: ``result()`` waits for it, ``release()`` frees its memory."""

    def __init__(self, pool: DecodePool, number: int, slot: _Slot, rows: int,
                 runs: list[tuple[int, int, int]]):
        self.pool = pool
        self.number = number
        self.slot = slot
        self.rows = rows
        self.runs = runs                    # (worker, first row, end row)
        self.replies: dict[int, dict] = {}  # worker -> its answer
        self.released = False

    def result(self):
        """(pixels, labels, record indices) views of the shared block, valid until
        ``release()``, and the answers of the runs in row order (each: ``found``, the
        records found bad as [index, message]; ``error``, a DataError's message and
        field, when the run stopped at a bad record)."""
        self.pool.collect(self)
        pixels, labels, sources = self.slot.views
        answers = [self.replies[worker] for worker, _, _ in self.runs]
        return pixels[:self.rows], labels[:self.rows], sources[:self.rows], answers

    def release(self) -> None:
        """Give the block back (waiting for the workers' answers first, so that no worker
        writes into a block given to another batch)."""
        if self.released:
            return
        self.released = True
        try:
            self.pool.collect(self)
        except DataError:
            pass            # the pool is stopped; the error was or will be raised elsewhere
        finally:
            self.pool.give_back(self.slot)


class DecodePool:
    """``count`` worker processes decoding the records of one source (see the module
    docstring). ``recipe`` is ``(module, class name, settings, arrays)``, from which a
    worker rebuilds the source with ``cls.from_recipe(settings, arrays)``."""

    def __init__(self, recipe, *, count: int, sample_shape, dtype, title: str):
        self.count = max(1, int(count))
        self.sample_shape = tuple(sample_shape)
        self.dtype = np.dtype(dtype)
        self.title = title
        self._workers = _Workers()
        self._finalizer = weakref.finalize(self, self._workers.stop)
        self._pending: list[deque[Ticket]] = []     # per worker: tickets it has to answer
        self._free: list[_Slot] = []
        self._slots = 0
        self._tickets = 0
        self._failure: DataError | None = None
        try:
            self._start(recipe)
        except BaseException:
            self.close()
            raise

    @property
    def failed(self) -> bool:
        """Whether a worker has gone (the pool is stopped and raises that error)."""
        return self._failure is not None

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._workers.processes]

    def _start(self, recipe) -> None:
        module, name, settings, arrays = recipe
        environment = {**os.environ, **WORKER_ENVIRONMENT}
        for _ in range(self.count):
            mine, theirs = socket.socketpair()
            self._workers.sockets.append(mine)
            try:
                process = subprocess.Popen(
                    [sys.executable, "-c", _BOOTSTRAP, _PACKAGE_ROOT, str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], env=environment, stdin=subprocess.DEVNULL)
            finally:
                theirs.close()
            self._workers.processes.append(process)
            self._pending.append(deque())
        setup = {"module": module, "class": name, "settings": settings,
                 "sample_shape": list(self.sample_shape), "dtype": self.dtype.str}
        for worker in range(self.count):        # every worker imports at once
            self._send(worker, setup, arrays)
        for worker in range(self.count):
            reply = self._receive(worker)
            if "crash" in reply:
                raise RuntimeError(f"a decoding worker of {self.title} could not start:\n"
                                   f"{reply['crash']}")

    def submit(self, indices: np.ndarray) -> Ticket:
        """Start decoding records ``indices`` (one per row); returns at once."""
        self._check()
        indices = np.asarray(indices, dtype=np.int64)
        rows = len(indices)
        slot = self._take_slot(rows)
        runs_count = max(1, min(self.count, rows))
        bounds = [rows * part // runs_count for part in range(runs_count + 1)]
        runs = [(worker, bounds[worker], bounds[worker + 1]) for worker in range(runs_count)]
        self._tickets += 1
        ticket = Ticket(self, self._tickets, slot, rows, runs)
        try:
            for worker, start, stop in runs:
                self._send(worker, {"op": "decode", "ticket": ticket.number,
                                    "slot": slot.number, "row": start},
                           {"indices": indices[start:stop]})
                self._pending[worker].append(ticket)
        except BaseException:
            ticket.released = True
            raise
        return ticket

    def collect(self, ticket: Ticket) -> None:
        """Read answers until every run of ``ticket`` has one."""
        for worker, _, _ in ticket.runs:
            while worker not in ticket.replies:
                self._check()
                if not self._workers.sockets:
                    raise DataError(f"the decoding workers of {self.title} were stopped "
                                    f"before the batch was read")
                reply = self._receive(worker)
                answered = self._pending[worker].popleft()
                assert reply.get("ticket") == answered.number, (reply, answered.number)
                if "crash" in reply:
                    raise RuntimeError(f"a decoding worker of {self.title} failed:\n"
                                       f"{reply['crash']}")
                answered.replies[worker] = reply

    def _take_slot(self, rows: int) -> _Slot:
        for k, slot in enumerate(self._free):
            if slot.capacity >= rows:
                return self._free.pop(k)
        self._slots += 1
        slot = _Slot(self._slots, max(rows, 1), self.sample_shape, self.dtype)
        try:
            for worker in range(self.count):
                self._send(worker, {"op": "map", "slot": slot.number,
                                    "capacity": slot.capacity}, fds=[slot.fd])
        except BaseException:
            slot.close()
            raise
        slot.close_fd()         # every worker holds its own descriptor or mapping now
        return slot

    def give_back(self, slot: _Slot) -> None:
        if self._failure is not None or not self._workers.sockets:
            slot.close()
            return
        self._free.append(slot)
        if len(self._free) > 2 * self.count + 2:    # more than are ever in flight: unmap one
            old = self._free.pop(0)
            for worker in range(self.count):
                self._send(worker, {"op": "unmap", "slot": old.number})
            old.close()

    # ------------------------------------------------------------ the sockets
    def _send(self, worker: int, header: dict, arrays: dict | None = None, fds=()) -> None:
        try:
            send(self._workers.sockets[worker], header, arrays, fds)
        except OSError:
            self._fail(worker)

    def _receive(self, worker: int) -> dict:
        sock = self._workers.sockets[worker]
        process = self._workers.processes[worker]
        try:
            while not select.select([sock], [], [], POLL_SECONDS)[0]:
                if process.poll() is not None:
                    break
            header, _arrays, fds = receive(sock)
        except (OSError, EOFError, ValueError):
            self._fail(worker)
        for fd in fds:
            os.close(fd)
        return header

    def _fail(self, worker: int):
        """A worker has gone: stop the pool and raise the one error that says so."""
        process = self._workers.processes[worker]
        try:
            status = process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            status = None
        if status is not None and status < 0:
            try:
                how = f"was killed by signal {signal.Signals(-status).name}"
            except ValueError:
                how = f"was killed by signal {-status}"
        elif status is not None:
            how = f"exited with status {status}"
        else:
            how = "stopped answering"
        self._failure = DataError(
            f"decoding worker process {process.pid} of {self.title} {how} (out of memory, "
            f"or killed?); set worker_type: threads to decode in this process",
            field="worker_type")
        self.close()
        raise self._failure

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """End the workers and unmap the blocks (idempotent)."""
        self._finalizer()
        for slot in self._free:
            slot.close()
        self._free = []


# ---------------------------------------------------------------- the worker's side
def serve(fd: int) -> None:
    """A worker's life: build the source from the setup message, then decode the runs
    asked for into the shared blocks, answering each, until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C is the parent's
    sock = socket.socket(fileno=fd)
    try:
        header, arrays, _ = receive(sock)
        try:
            source = _rebuild(header, arrays)
        except BaseException:       # noqa: BLE001 (reported to the parent)
            send(sock, {"crash": traceback.format_exc()})
            return
        sample_shape, dtype = tuple(header["sample_shape"]), np.dtype(header["dtype"])
        send(sock, {"ready": True})
        slots: dict[int, tuple] = {}
        while True:
            header, arrays, fds = receive(sock)
            op = header["op"]
            if op == "map":
                memory = mmap.mmap(fds[0], slot_bytes(header["capacity"], sample_shape, dtype))
                os.close(fds[0])
                slots[header["slot"]] = (memory, slot_views(memory, header["capacity"],
                                                            sample_shape, dtype))
            elif op == "unmap":
                memory, _views = slots.pop(header["slot"])
                del _views
                memory.close()
            elif op == "decode":
                send(sock, _decode(source, header, arrays["indices"], slots))
    except (EOFError, OSError):
        pass                # the parent closed the socket, or is gone
    finally:
        sock.close()


def _rebuild(header: dict, arrays: dict):
    if not header["module"].startswith("solverkit."):
        raise ValueError(f"not a solverkit module: {header['module']}")
    module = importlib.import_module(header["module"])
    return getattr(module, header["class"]).from_recipe(header["settings"], arrays)


def _decode(source, header: dict, indices: np.ndarray, slots: dict) -> dict:
    """Decode ``indices`` into rows ``row...`` of a block; the answer for the parent."""
    pixels, labels, sources = slots[header["slot"]][1]
    start, stop = header["row"], header["row"] + len(indices)
    found: list = []
    answer: dict = {"ticket": header["ticket"], "found": found}
    try:
        source.decode_rows(indices, pixels[start:stop], labels[start:stop],
                           sources[start:stop], found)
    except DataError as err:
        answer["error"] = {"message": err.message, "field": err.field}
    except Exception:       # noqa: BLE001 (a bug: the parent raises it with this text)
        answer["crash"] = traceback.format_exc()
    answer["found"] = [[int(index), message] for index, message in found]
    return answer
