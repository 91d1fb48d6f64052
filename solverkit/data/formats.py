"""Data source formats: the registry of readers, and the one place that picks a reader.

A format is a class deriving from ``SourceFormat`` registered under a name, or — for an
array file format — one function ``read(path, params) -> (data, labels)``, samples first:

    @register_source_format("tsv", suffixes=[".tsv"])     # source: train.tsv
    def read_tsv(path, params):                           # params: the Data layer's fields
        a = np.loadtxt(path, delimiter="\\t", dtype=np.float32, ndmin=2)
        return a[:, :-1], a[:, -1]

Every format has a ``kind``, which says what its ``source`` names:

- ``arrays``: Python arrays (``(x, y)``, a dict), only from the Python API;
- ``name``: a name that is not a path (``builtin:digits/train``);
- ``path``: one file or folder read as a whole source (an LMDB database folder, an image
  list, a folder of class folders);
- ``files``: one or more regular files (a name, a glob, a list of names), each read by
  ``read`` and joined in order (npz, npy, IDX, CIFAR-10, CSV, HDF5, and plugin formats).

``open_source`` tries the kinds in that order; among the ``files`` formats the one named
by ``format:`` wins, else the first, in registration order, whose ``detect`` accepts the
first file (by default: its suffix, a trailing ``.gz`` ignored; a format may look at the
name or the content instead). A format's ``Params`` lists the layer fields it reads, with
its own defaults; a field that only other formats read (``label_source``, ``stream``,
``skip_bad``) is an error naming the formats that do.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import DataError, did_you_mean
from ..registry import _register
from .paths import resolve, resolve_paths
from .samples import Dataset, Samples, check_dataset, concatenate, numeric

KINDS = ("arrays", "name", "path", "files")

_FORMATS: dict[str, type[SourceFormat]] = {}


class SourceFormat:
    """One kind of data source. Subclasses set ``name`` (by registering), ``kind``,
    ``suffixes`` and ``Params``, and implement ``open`` (or, for ``files``, ``read``)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "files"
    suffixes: ClassVar[tuple[str, ...]] = ()
    layer: ClassVar[str] = "Data"       # the layer type whose ``source`` it reads
    title: ClassVar[str] = ""           # its name in messages (default: ``name``)
    what: ClassVar[str] = ""            # "an LMDB database": the message when format: is set
    recognised_by: ClassVar[str] = ""   # for the reference, when not by ``suffixes``

    class Params(BaseModel):
        """The layer fields this format reads (with its own defaults)."""

        model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    def __init__(self, base_dir=None):
        self.base_dir = base_dir        # relative names in the layer's fields start here

    @classmethod
    def detect(cls, target, params) -> bool:
        """Whether ``target`` (a Path, or for ``arrays``/``name`` the source as given) is in
        this format."""
        if not isinstance(target, Path):
            return False
        return target.name.lower().removesuffix(".gz").endswith(cls.suffixes)

    @classmethod
    def own_params(cls, params):
        """This format's ``Params`` from the layer's: the fields the user set, else defaults."""
        given = getattr(params, "model_fields_set", None)
        values = {}
        for field in cls.Params.model_fields:
            if not hasattr(params, field):
                continue
            value = getattr(params, field)
            if (field in given) if given is not None else value is not None:
                values[field] = value
        return cls.Params(**values)

    def open(self, target, params) -> Samples:
        """The samples of ``target`` (see ``detect``); ``params``: the layer's fields."""
        raise NotImplementedError

    @classmethod
    def display(cls) -> str:
        return cls.title or cls.name


class FileFormat(SourceFormat):
    """An array file format: ``read`` gives one file's samples; several files are joined."""

    kind = "files"

    def read(self, path: Path, params) -> Dataset | tuple:
        """One file: a ``Dataset``, or ``(data, labels)`` with samples first (labels may be
        None). ``params``: this format's ``Params``."""
        raise NotImplementedError

    def open(self, paths: list[Path], params) -> Samples:
        own = self.own_params(params)
        return concatenate([as_dataset(self.read(path, own), path) for path in paths])


class FunctionFormat(FileFormat):
    """A format registered as one function ``read(path, params) -> (data, labels)``;
    ``params`` is the layer's own ``Params`` (all its fields)."""

    reader: ClassVar[Any] = None

    def open(self, paths, params):
        return concatenate([as_dataset(type(self).reader(path, params), path) for path in paths])


def as_dataset(result, path: Path) -> Dataset:
    """A reader's result as a Dataset: numeric arrays, samples first."""
    if isinstance(result, Dataset):
        return result
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"a source format's reader must return (data, labels), got "
                        f"{type(result).__name__} for '{path}'")
    data, labels = result
    return Dataset(numeric(data, path, "data"),
                   None if labels is None else numeric(labels, path, "labels"), str(path))


def register_source_format(name: str, suffixes=()):
    """Decorator: ``@register_source_format("tsv", suffixes=[".tsv"])`` makes ``source:
    train.tsv`` (and ``format: tsv``) readable by the Data layer.

    On a function ``read(path, params) -> (data, labels)`` it registers an array file
    format; on a ``SourceFormat`` subclass, that class (``suffixes`` given here or as its
    class attribute). A name that is taken is an error naming both definitions.
    """
    def decorate(obj):
        if isinstance(obj, type) and issubclass(obj, SourceFormat):
            cls = obj
        else:
            cls = type(name, (FunctionFormat,), {"reader": staticmethod(obj),
                                                 "__doc__": obj.__doc__,
                                                 "__module__": obj.__module__})
            cls.__qualname__ = obj.__qualname__
        if cls.kind not in KINDS:
            raise TypeError(f"source format '{name}': kind must be one of {KINDS}")
        _register(_FORMATS, "source format", name, cls)
        cls.name = name
        if suffixes:
            cls.suffixes = tuple(s.lower() for s in suffixes)
        return obj
    return decorate


def source_formats(layer: str | None = None) -> dict[str, type[SourceFormat]]:
    """Every registered format (of ``layer``'s sources, if given), in registration order."""
    return {name: cls for name, cls in _FORMATS.items() if layer is None or cls.layer == layer}


def file_formats(layer: str = "Data") -> list[str]:
    """The names ``format:`` accepts: the ``files`` formats of ``layer``."""
    return [name for name, cls in source_formats(layer).items() if cls.kind == "files"]


def check_format_name(name: str | None, layer: str = "Data") -> str | None:
    """``name`` if it is a registered file format, else a ValueError listing them."""
    known = file_formats(layer)
    if name is not None and name not in known:
        raise ValueError(f"unknown format '{name}'{did_you_mean(name, known)}; formats: "
                         f"{', '.join(known)}")
    return name


# Fields that only some formats read: set for another format they are an error.
_ONLY_FOR = {
    "skip_bad": "skip_bad is for LMDB databases (and ImageData); array files are checked "
                "whole when they are read",
    "label_source": "label_source is for formats that keep labels in their own file "
                    "({formats}), not {format}",
    "stream": "stream: true is for {formats} files (image lists, folders and LMDB always "
              "stream), not {format}",
}


def open_source(params, base_dir=None, *, layer: str = "Data") -> Samples:
    """The samples a ``layer`` with ``params`` (its fields: ``source``, ``format``, ...)
    reads: the one place that decides the kind of source. Relative paths are relative to
    ``base_dir``. Raises ``DataError`` naming the file and the field on any problem."""
    cls, target = choose_format(params, base_dir, layer)
    _check_fields(cls, params, layer)
    samples = cls(base_dir).open(target, params)
    samples.source_format = cls.name
    num_classes = getattr(params, "num_classes", None)
    if num_classes is not None:
        samples.num_classes = num_classes
    check_dataset(samples)
    return samples


def choose_format(params, base_dir, layer: str = "Data") -> tuple[type[SourceFormat], Any]:
    """The format of ``params.source`` and what its ``open`` takes (see the module doc)."""
    source = params.source
    named = getattr(params, "format", None)
    backend = getattr(params, "backend", None)
    if backend == "LEVELDB":
        raise DataError("LevelDB databases are not supported; write an LMDB with "
                        "'solverkit convert-imageset' (or Caffe's, --backend lmdb)",
                        field="backend")
    formats = source_formats(layer).values()
    single = isinstance(source, (str, Path)) and not glob.has_magic(str(source))
    for kind in ("arrays", "name", "path"):
        if kind == "path" and not single:
            continue
        target = resolve(source, base_dir) if kind == "path" else source
        for cls in formats:
            if cls.kind == kind and cls.detect(target, params):
                if kind != "path" and backend == "LMDB":
                    raise DataError("backend: LMDB needs source: the database folder",
                                    field="source")
                if named is not None and kind != "arrays":
                    shown = source if kind == "name" else target
                    raise DataError(f"'{shown}' is {cls.what}; drop format: {named}",
                                    field="format")
                return cls, target
    if backend == "LMDB":
        raise DataError("backend: LMDB needs source: the database folder", field="source")
    paths = resolve_paths(source, base_dir, "source")
    known = {name: cls for name, cls in source_formats(layer).items() if cls.kind == "files"}
    if named is not None:
        if named not in known:
            raise DataError(f"unknown format '{named}'{did_you_mean(named, known)}; formats: "
                            f"{', '.join(known)}", field="format")
        return known[named], paths
    for cls in known.values():
        if cls.detect(paths[0], params):
            return cls, paths
    raise DataError(f"cannot tell the format of '{paths[0]}' from its name; set format: to one "
                    f"of {', '.join(known)}", field="format")


def _check_fields(cls: type[SourceFormat], params, layer: str) -> None:
    for field, message in _ONLY_FOR.items():
        if getattr(params, field, None) in (None, False) or field in cls.Params.model_fields:
            continue
        if field != "skip_bad" and cls.kind != "files":
            continue        # a built-in set, a database or images ignore them, as they always did
        readers = [c.display() for c in source_formats(layer).values()
                   if field in c.Params.model_fields]
        joined = " and ".join(readers) if field == "stream" else ", ".join(readers)
        raise DataError(message.format(formats=joined, format=cls.name), field=field)
