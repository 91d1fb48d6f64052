"""TensorBoard event files, written without TensorBoard: scalars and histograms.

An event file is a sequence of records, each ``length`` (uint64, little-endian),
the masked CRC-32C of those 8 bytes (uint32), the data, and the masked CRC-32C of the
data. Each record's data is an ``Event`` protobuf message: ``wall_time`` (1, double),
``step`` (2, int64), ``file_version`` (3, string; the first record says
``brain.Event:2``) or ``summary`` (5): a ``Summary`` with repeated ``value`` (1), each
``tag`` (1), ``simple_value`` (2, float) or ``histo`` (5, ``HistogramProto``: min 1,
max 2, num 3, sum 4, sum_squares 5, packed ``bucket_limit`` 6 and ``bucket`` 7, doubles).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np

from .protobuf import Writer

_CRC_TABLE = None
_WRITERS = itertools.count()        # one file per writer, also within one process and second


def _table() -> list[int]:
    global _CRC_TABLE
    if _CRC_TABLE is None:
        table = []
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1   # Castagnoli, reflected
            table.append(crc)
        _CRC_TABLE = table
    return _CRC_TABLE


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    table = _table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The record format's masked CRC: rotate right by 15 bits, add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One framed record (TFRecord framing)."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _event(step: int, summary: bytes | None = None, file_version: str | None = None) -> bytes:
    event = Writer().fixed64(1, time.time(), "<f8")
    if step:
        event.varint(2, step)
    if file_version is not None:
        event.string(3, file_version)
    if summary is not None:
        event.message(5, summary)
    return event.getvalue()


def _histogram(values: np.ndarray, bins: int = 30) -> bytes:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        values = np.zeros(1)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1e-12 if low == 0 else low + abs(low) * 1e-6
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    histo = (Writer().fixed64(1, low).fixed64(2, float(values.max()))
             .fixed64(3, float(values.size)).fixed64(4, float(values.sum()))
             .fixed64(5, float(np.dot(values, values)))
             .packed(6, edges[1:], "double").packed(7, counts.astype(np.float64), "double"))
    return histo.getvalue()


class EventWriter:
    """Writes events to ``<folder>/events.out.tfevents.<seconds>.<host>.<pid>.<n>`` (a new
    file per writer, as TensorBoard expects); every write is flushed."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_WRITERS)}")
        self.path = folder / name
        self._file = open(self.path, "ab")  # noqa: SIM115  (closed by close())
        self._write(_event(0, file_version="brain.Event:2"))

    def _write(self, data: bytes) -> None:
        self._file.write(record(data))
        self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event at ``step`` with a scalar per tag."""
        summary = Writer()
        for tag, value in values.items():
            summary.message(1, Writer().string(1, tag).fixed32(2, float(value), "<f4"))
        self._write(_event(step, summary.getvalue()))

    def histogram(self, step: int, tag: str, values) -> None:
        """One event at ``step`` with a histogram of ``values`` (30 equal bins)."""
        value = Writer().string(1, tag).message(5, _histogram(values))
        self._write(_event(step, Writer().message(1, value).getvalue()))

    def close(self) -> None:
        self._file.close()
