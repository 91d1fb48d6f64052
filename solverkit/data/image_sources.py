"""Image files as a streamed source: a Caffe image list, or a folder of class folders.

A **list** (Caffe's ImageData ``source``) has one ``PATH LABEL`` line per image; PATH
may contain spaces (the label is after the last one) and is relative to ``root_folder``
(else to the list's own folder). A **folder** holds one sub-folder per class, classes
numbered in sorted order of their names (as torchvision's ``ImageFolder``), the image
files of each (by suffix: png, jpg, jpeg, bmp, gif, webp) sorted by name.

Images are decoded when a batch asks for them (see ``images``); nothing but the file
names and labels is held in memory. Every image of a source has the shape of the first
one unless ``new_height``/``new_width`` resize them all.

Bad data: a line without a label or with a label that is not a whole number is an error
naming the list and the line. A missing file, or an image that cannot be decoded, is an
error naming the file (and its list line) — unless ``skip_bad``: then missing files are
dropped when the source is opened (one warning counts them), and an image that fails to
decode is skipped as ``records`` describes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DataError, SolverkitError
from ..files import LIMITS, read_text, write_atomic
from . import images
from .formats import SourceFormat, register_source_format
from .paths import resolve_existing
from .records import RecordSource

logger = logging.getLogger("solverkit")


class ImageFiles(RecordSource):
    """Image files with integer labels, decoded to uint8 (C, H, W) a batch at a time."""

    def __init__(self, paths: list[Path], labels: np.ndarray, name: str, *,
                 is_color: bool = True, new_height: int = 0, new_width: int = 0,
                 skip_bad: bool = False, max_pixels: int = images.MAX_PIXELS,
                 lines: list[int] | None = None, list_path: Path | None = None,
                 class_names: list[str] | None = None, shape: tuple | None = None):
        super().__init__(name, skip_bad=skip_bad)
        self.paths = paths
        self.labels = labels
        self.is_color = is_color
        self.size = (int(new_height), int(new_width))
        self.max_pixels = max_pixels
        self.lines = lines
        self.list_path = list_path
        self.class_names = class_names
        self.num_classes = len(class_names) if class_names else None
        if (self.size[0] > 0) != (self.size[1] > 0):
            raise DataError(f"give new_height and new_width together (got {self.size[0]} x "
                            f"{self.size[1]})", field="new_height")
        if not paths:
            raise DataError(f"{self.title} names no images", field="source")
        channels = 3 if is_color else 1
        if shape is not None:                   # known already (a worker process's copy)
            self._shape = tuple(shape)
        elif self.size[0] > 0:
            self._shape = (channels, *self.size)
        else:                                   # as Caffe: the first image's size
            self._shape = None
            self._shape = tuple(self.first_good()[1].shape)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def sample_shape(self):
        return self._shape

    @property
    def dtype(self):
        return np.dtype(np.uint8)

    def recipe(self):
        settings = {"paths": [str(path) for path in self.paths], "name": self.name,
                    "is_color": self.is_color, "new_height": self.size[0],
                    "new_width": self.size[1], "skip_bad": self.skip_bad,
                    "max_pixels": self.max_pixels, "lines": self.lines,
                    "list_path": None if self.list_path is None else str(self.list_path),
                    "shape": list(self._shape)}
        return __name__, type(self).__name__, settings, {"labels": self.labels}

    @classmethod
    def from_recipe(cls, settings: dict, arrays: dict) -> ImageFiles:
        list_path = settings["list_path"]
        return cls([Path(path) for path in settings["paths"]], arrays["labels"],
                   settings["name"], is_color=settings["is_color"],
                   new_height=settings["new_height"], new_width=settings["new_width"],
                   skip_bad=settings["skip_bad"], max_pixels=settings["max_pixels"],
                   lines=settings["lines"], shape=tuple(settings["shape"]),
                   list_path=None if list_path is None else Path(list_path))

    def where(self, index: int) -> str:
        line = (f" (line {self.lines[index]} of '{self.list_path}')"
                if self.lines is not None else "")
        return f"image '{self.paths[index]}'{line}"

    def read(self, index: int):
        try:
            pixels = images.load_image_u8(self.paths[index], is_color=self.is_color,
                                          max_pixels=self.max_pixels)
        except DataError as err:
            line = (f" (line {self.lines[index]} of '{self.list_path}')"
                    if self.lines is not None else "")
            raise DataError(f"{err.message}{line}", field="source") from None
        if self.size[0] > 0:
            pixels = images.resize_u8(pixels, *self.size)
        return pixels, self.labels[index]

    def shape_error(self, index: int, shape) -> DataError:
        return DataError(f"{self.where(index)} is {shape[2]}x{shape[1]} but the source's "
                         f"images are {self._shape[2]}x{self._shape[1]}; set new_height and "
                         f"new_width to resize them all", field="new_height")


def read_image_list(list_path: Path, root_folder: Path | None, *, skip_bad: bool = False,
                    **options) -> ImageFiles:
    """Caffe's image list: ``PATH LABEL`` per line (see the module docstring)."""
    paths, labels, lines = parse_image_list(list_path, root_folder, skip_bad=skip_bad)
    return ImageFiles(paths, labels, str(list_path), skip_bad=skip_bad, lines=lines,
                      list_path=list_path, **options)


def parse_image_list(list_path: Path, root_folder: Path | None, *, skip_bad: bool = False):
    """(paths, labels int64, line numbers) of an image list; missing files are errors, or
    with ``skip_bad`` dropped (one warning counts them)."""
    try:        # the message names the list; the net file and layer are added by the caller
        text = read_text(list_path, what=f"image list '{list_path}'", limit=LIMITS["list"],
                         error=DataError)
    except DataError as err:
        err.file, err.field = None, "source"
        raise
    root = root_folder if root_folder is not None else list_path.parent
    paths, labels, lines, missing = [], [], [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        name, _, label = line.rpartition(" ")
        if not name or not label:
            raise DataError(f"'{list_path}': line {number}: '{line}' has no label (each line "
                            f"is 'PATH LABEL')", field="source")
        try:
            value = int(label)
        except ValueError:
            raise DataError(f"'{list_path}': line {number}: label '{label}' is not a whole "
                            f"number (each line is 'PATH LABEL'; is the label missing?)",
                            field="source") from None
        if value < 0:
            raise DataError(f"'{list_path}': line {number}: label {value} is negative; class "
                            f"labels are 0, 1, ...", field="source")
        path = root / name.strip()
        if not os.path.isfile(path):
            if not skip_bad:
                raise DataError(f"image file '{path}' (line {number} of '{list_path}') does not "
                                f"exist; set skip_bad: true to skip bad images", field="source")
            missing.append((number, path))
            continue
        paths.append(path)
        labels.append(value)
        lines.append(number)
    if missing:
        number, path = missing[0]
        logger.warning("'%s': skipping %d missing image file(s) (the first: '%s', line %d)",
                       list_path, len(missing), path, number)
    return paths, np.asarray(labels, dtype=np.int64), lines


def class_folders(folder: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names sorted, image paths, labels) of a folder of class folders."""
    try:
        classes = sorted(entry.name for entry in os.scandir(folder)
                         if entry.is_dir() and not entry.name.startswith("."))
    except OSError as err:
        raise DataError(f"cannot list folder '{folder}': {err.strerror or err}",
                        field="source") from None
    if not classes:
        raise DataError(f"folder '{folder}' has no class sub-folders (one folder of images "
                        f"per class)", field="source")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(path for path in (folder / name).rglob("*")
                       if images.is_image_file(path) and path.is_file())
        if not files:
            raise DataError(f"class folder '{folder / name}' holds no image files "
                            f"({', '.join(images.IMAGE_SUFFIXES)})", field="source")
        paths.extend(files)
        labels.extend([label] * len(files))
    return classes, paths, np.asarray(labels, dtype=np.int64)


def read_class_folders(folder: Path, **options) -> ImageFiles:
    classes, paths, labels = class_folders(folder)
    return ImageFiles(paths, labels, str(folder), class_names=classes, **options)


def open_image_source(source: Path, root_folder: Path | None, **options) -> ImageFiles:
    """A folder of class folders, or an image list file."""
    if source.is_dir():
        if root_folder is not None:
            raise DataError(f"root_folder is for image lists; '{source}' is a folder of class "
                            f"folders", field="root_folder")
        return read_class_folders(source, **options)
    return read_image_list(source, root_folder, **options)


class _Images(SourceFormat):
    """ImageData's sources: the image files are decoded a batch at a time."""

    kind = "path"
    layer = "ImageData"

    class Params(SourceFormat.Params):
        root_folder: str = ""
        is_color: bool = True
        new_height: int = 0
        new_width: int = 0
        skip_bad: bool = False
        max_pixels: int = images.MAX_PIXELS

    def open(self, path: Path, params) -> ImageFiles:
        own = self.own_params(params)
        if not path.exists():
            raise DataError(f"'{path}' does not exist", field="source")
        root = (resolve_existing(own.root_folder, self.base_dir, "root_folder")
                if own.root_folder else None)
        return open_image_source(path, root, is_color=own.is_color, new_height=own.new_height,
                                 new_width=own.new_width, skip_bad=own.skip_bad,
                                 max_pixels=own.max_pixels)


@register_source_format("image_folder")
class ImageFolder(_Images):
    """A folder with one sub-folder of images per class (classes in sorted order)."""

    what = "a folder of class folders"
    recognised_by = "a folder"

    @classmethod
    def detect(cls, target, params) -> bool:
        return target.is_dir()


@register_source_format("image_list")
class ImageList(_Images):
    """Caffe's image list: a text file of ``PATH LABEL`` lines (any name)."""

    what = "an image list"
    recognised_by = "a file (any name)"

    @classmethod
    def detect(cls, target, params) -> bool:
        return not target.is_dir()


def write_class_names(path: Path, names: list[str]) -> bool:
    """Write ``names``, one per line (line k: class k), unless the file already says so."""
    text = "".join(f"{name}\n" for name in names)
    try:
        if read_text(path, what="labels file", limit=LIMITS["list"]) == text:
            return False
    except SolverkitError:
        pass        # absent or unreadable: written anew
    write_atomic(path, text, operation="write the labels file")
    return True
