"""What a data layer reads: ``Samples`` (a sized source of samples and labels), ``Dataset``
(samples held in memory) and the checks every source gets.

Samples stay in the dtype they were stored in (``uint8`` images take a quarter of the
memory of float32); the batch feeder converts one batch at a time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

IN_MEMORY = "the in-memory source"


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
    source_format: str = ""             # the registered format that opened it
    streamed = False
    read_ahead = 1                      # batches a prefetch thread begins (``start_take``)

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

    def start_take(self, indices: np.ndarray) -> PendingTake:
        """Begin ``take(indices)``: a source that decodes in other processes starts them
        on it now, so that a batch is decoded while the one before it is used. Its
        ``result()`` is what ``take`` returns, but may be memory of the source's own
        that is valid only until ``release()``. By default ``take`` runs in ``result()``."""
        return PendingTake(lambda: self.take(indices))

    def use_workers(self, count: int, kind: str = "auto") -> None:
        """Decode a batch with ``count`` workers, threads or processes (``kind``): for
        sources that decode their records one by one (images, LMDB records); the others
        ignore it."""

    def close(self) -> None:
        """Release open files (a closed source may be reopened by the next ``take``)."""

    @property
    def title(self) -> str:
        """The name as messages show it: file names quoted, ``builtin:...`` as is."""
        return describe(self.name)


class PendingTake:
    """A ``take`` begun by ``Samples.start_take``: ``result()`` (once) gives (data, labels);
    ``release()`` (always, after the result is used or to drop it) frees what it held."""

    def __init__(self, take):
        self._take = take

    def result(self):
        return self._take()

    def release(self) -> None:
        """Nothing is held by a plain ``take``."""


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


def reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def numeric(array, where, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{describe(where)}: '{what}' must be numeric, not {array.dtype}",
                        field="source")
    if array.ndim == 0:
        raise DataError(f"{describe(where)}: '{what}' is a single value, not one per sample",
                        field="source")
    return array


def concatenate(parts: list[Dataset]) -> Dataset:
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


def check_dataset(dataset: Samples) -> None:
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
