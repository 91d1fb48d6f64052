"""Caffe's data tools: ``convert_imageset`` (image list -> LMDB of Datum records) and
``compute_image_mean`` (LMDB or image list -> mean image as a BlobProto).

The database is Caffe's own layout, so Caffe reads it too: keys ``%08d_PATH`` (the line's
position after shuffling, then the list's path), values ``Datum`` records with uint8
pixels C x H x W in BGR order (or gray), or with ``encoded`` the bytes of a PNG/JPEG file.
As Caffe's tool, an encoded record of an image that is not resized and whose file is
already of the asked type is the file's own bytes. The database is written to a
temporary folder beside the target and renamed when complete, and an existing target
is never replaced.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import images
from ..data.image_sources import open_image_source, parse_image_list
from ..data.lmdb_source import LmdbSource, open_environment
from ..errors import DataError
from ..files import LIMITS, check_output, read_bytes, write_atomic
from .messages import encode_blobproto, encode_datum

logger = logging.getLogger("solverkit")

COMMIT_EVERY = 1000                 # records per write transaction (Caffe's)
MAP_SIZE = 1 << 40                  # address space reserved for the map (Caffe's 1 TB)

_SUFFIX_ENCODINGS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".bmp": "bmp",
                     ".webp": "webp"}


def _progress(total: int, description: str, show: bool | None):
    from tqdm import tqdm
    return tqdm(total=total, desc=description, unit="img", dynamic_ncols=True, leave=False,
                disable=None if show is None else not show)


def convert_imageset(root, list_file, db, *, resize_height: int = 0, resize_width: int = 0,
                     gray: bool = False, shuffle: bool = False, encoded: bool = False,
                     encode_type: str = "", seed: int = 0, skip_bad: bool = False,
                     progress: bool | None = None) -> int:
    """Write the images of ``list_file`` (``PATH LABEL`` lines, paths under ``root``) as an
    LMDB at ``db``; returns the number of records written.

    ``shuffle`` permutes the lines with ``numpy.random.default_rng(seed)`` first;
    ``encoded`` stores PNG/JPEG bytes (``encode_type`` png or jpg; default: the file's
    own type) instead of raw pixels. A missing or undecodable image is an error naming
    it and its line, unless ``skip_bad`` (then it is skipped and counted in a warning).
    """
    root, list_file, db = Path(root), Path(list_file), Path(db)
    if encode_type and encode_type not in ("png", "jpg"):
        raise DataError(f"unknown encode type '{encode_type}'; use png or jpg",
                        field="--encode-type")
    if encode_type and not encoded:
        raise DataError("--encode-type needs --encoded", field="--encode-type")
    if (resize_height > 0) != (resize_width > 0):
        raise DataError("give --resize-height and --resize-width together",
                        field="--resize-height")
    if db.exists():
        raise DataError(f"'{db}' already exists; remove it or choose another name",
                        field="DB")
    if not root.is_dir():
        raise DataError(f"root folder '{root}' does not exist", field="ROOT")
    paths, labels, lines = parse_image_list(list_file, root, skip_bad=skip_bad)
    listing = _Listing(paths, labels, lines, list_file, not gray, (resize_height, resize_width))
    order = np.arange(len(paths))
    if shuffle:
        order = np.random.default_rng(seed).permutation(order)
    skipped = 0

    def records():
        nonlocal skipped
        for position, index in enumerate(order.tolist()):
            relative = _relative(paths[index], root)
            try:
                value = _record(listing, index, encoded, encode_type, relative)
            except DataError as err:
                if not skip_bad:
                    raise
                if not skipped:
                    logger.warning("convert-imageset: skipping %s (further bad images "
                                   "are skipped and counted)", err.message)
                skipped += 1
                bar.update(1)
                continue
            yield f"{position:08d}_{relative}".encode(), value
            bar.update(1)

    try:
        with _progress(len(order), f"convert-imageset {db.name}", progress) as bar:
            return write_lmdb(db, records(), empty=DataError(
                f"'{list_file}': no image could be read", field="LIST"))
    finally:
        if skipped:
            logger.warning("convert-imageset: %d bad image(s) skipped", skipped)


def write_lmdb(db, records, *, empty: DataError | None = None) -> int:
    """Write ``(key, value)`` byte pairs as a new LMDB at ``db`` (which must not exist):
    built in a temporary folder beside it, committed every ``COMMIT_EVERY`` records, and
    renamed into place when complete; returns the number of records. With ``empty``, no
    record at all raises it and leaves nothing behind."""
    db = Path(db)
    if db.exists():
        raise DataError(f"'{db}' already exists; remove it or choose another name", field="DB")
    db.parent.mkdir(parents=True, exist_ok=True)
    partial = db.with_name(f".{db.name}.partial-{os.getpid()}")
    written = 0
    env = open_environment(partial, write=True, map_size=MAP_SIZE)
    try:
        txn = env.begin(write=True)
        for key, value in records:
            txn.put(key, value)
            written += 1
            if written % COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.commit()
    except BaseException:
        env.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    env.close()
    if written == 0 and empty is not None:
        shutil.rmtree(partial, ignore_errors=True)
        raise empty
    os.replace(partial, db)
    return written


@dataclass
class _Listing:
    """The parsed list and how each image is to be read."""

    paths: list[Path]
    labels: np.ndarray
    lines: list[int]
    list_path: Path
    is_color: bool
    size: tuple[int, int]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _record(listing, index: int, encoded: bool, encode_type: str, relative: str) -> bytes:
    path, label = listing.paths[index], int(listing.labels[index])
    line = f" (line {listing.lines[index]} of '{listing.list_path}')"
    resize = listing.size[0] > 0
    if encoded and not resize:
        own = _SUFFIX_ENCODINGS.get(path.suffix.lower())
        if own is not None and encode_type in ("", own):
            try:
                raw = read_bytes(path, what=f"image file '{path}'", limit=LIMITS["image"],
                                 error=DataError)
            except DataError as err:
                raise DataError(f"{err.message}{line}", field="LIST") from None
            try:        # the file must decode, or Caffe would fail on it later
                images.decode_image_u8(raw, name=f"'{path}'{line}", is_color=None)
            except DataError as err:
                raise DataError(err.message, field="LIST") from None
            return encode_datum(raw, label, encoded=True)
    try:
        pixels = images.load_image_u8(path, is_color=listing.is_color)
    except DataError as err:
        raise DataError(f"{err.message}{line}", field="LIST") from None
    if resize:
        pixels = images.resize_u8(pixels, *listing.size)
    if encoded:
        kind = encode_type or _SUFFIX_ENCODINGS.get(path.suffix.lower(), "png")
        return encode_datum(images.encode_image(pixels, kind), label, encoded=True)
    return encode_datum(pixels, label)


def compute_image_mean(source, output, *, root=None, gray: bool = False,
                       resize_height: int = 0, resize_width: int = 0, force: bool = False,
                       batch: int = 256, progress: bool | None = None) -> np.ndarray:
    """The mean image (C, H, W) of an LMDB database, an image list or a folder of class
    folders, written to ``output`` as Caffe's ``mean.binaryproto`` (a 1 x C x H x W
    BlobProto); returns the mean. The sum is float64, read ``batch`` samples at a time."""
    source, output = Path(source), Path(output)
    check_output(output, inputs=(source, root), force=force, error=DataError)
    if not source.exists():
        raise DataError(f"'{source}' does not exist", field="SOURCE")
    if (source / "data.mdb").is_file():
        samples = LmdbSource(source)
    else:
        samples = open_image_source(source, Path(root) if root else None,
                                    is_color=not gray, new_height=resize_height,
                                    new_width=resize_width)
    try:
        total = np.zeros(samples.sample_shape, dtype=np.float64)
        count = len(samples)
        with _progress(count, f"compute-image-mean {source.name}", progress) as bar:
            for start in range(0, count, batch):
                data, _ = samples.take(np.arange(start, min(start + batch, count)))
                total += data.sum(axis=0, dtype=np.float64)
                bar.update(len(data))
    finally:
        samples.close()
    mean = (total / count).astype(np.float32)
    write_atomic(output, encode_blobproto(mean[None], legacy=True),
                 operation="write the mean file")
    return mean
