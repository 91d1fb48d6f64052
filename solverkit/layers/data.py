"""The Data and ImageData layers: batches of a data source, transformed, shuffled, prefetched.

    - name: data
      type: Data
      top: [data, label]
      source: builtin:digits/train        # or a file, a glob, a list of files; (x, y) from Python
      batch_size: 64
      shuffle: true
      transform: {scale: 0.0625}          # crop_size, mirror, mean_value, mean_file too

Tops: ``data`` (batch_size, *sample shape after crop) and optionally ``label``
(batch_size,), both in the net's dtype. An array file is read when the net is built
(one of 256 MiB or more, or with ``stream: true``, a batch at a time); a Caffe LMDB
(``backend: LMDB``) and ImageData's image files are read a batch at a time. Which reader
reads a ``source`` is decided by the registered source formats (``data.formats``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, field_serializer, field_validator

from ..data import (
    BatchFeeder,
    Samples,
    Transform,
    check_labels,
    images,
    load_mean_file,
    open_source,
    resolve_paths,
)
from ..data.formats import check_format_name, file_formats
from ..data.records import default_workers
from ..errors import DataError, SolverkitError
from ..registry import register_layer
from ..spec.net import LayerParams, StrictModel
from .base import DataLayer


class TransformSpec(StrictModel):
    """Caffe's TransformationParameter: crop, mirror, then ``(x - mean) * scale``."""

    scale: float = Field(1.0, description="multiplies (x - mean)")
    mean_value: list[float] = Field(default_factory=list,
                                    description="one value, or one per channel")
    mean_file: str | None = Field(None, description="a mean image: .npy, .npz or .binaryproto")
    crop_size: int = Field(0, ge=0, description="random window in TRAIN, centre in TEST; 0: none")
    mirror: bool = Field(False, description="random left-right flips in TRAIN")
    force_color: bool = Field(False, description="decode encoded LMDB records as 3-channel "
                                                 "BGR (Caffe: encoded Datums only)")
    force_gray: bool = Field(False, description="decode encoded LMDB records as 1 gray channel")

    @field_validator("mean_value", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, (int, float)) else value


@register_layer("Data")
class Data(DataLayer):
    """Reads ``source`` and serves one batch per forward; no bottoms, no backward.

    ``batches_per_epoch`` = ceil(num_samples / batch_size) (the solver's default
    ``test_iter``); ``get_state()``/``set_state()`` read and restore the position of the
    next batch (epoch, cursor, order, generator state) for exact resume.
    """

    class Params(LayerParams):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

        source: Any = Field(description="a file, a glob, a list of files, 'builtin:digits/"
                                        "train|test'; from Python also (x, y) or a dict")
        batch_size: int = Field(gt=0)
        shuffle: bool = Field(False, description="a new random order every epoch")
        transform: TransformSpec = Field(default_factory=TransformSpec,
                                         description="crop, mirror, then (x - mean) * scale")
        format: str | None = Field(
            None, description="a registered file format (npz, npy, idx, cifar10, csv, hdf5, or "
            "a plugin's); overrides detection from the file name",
            json_schema_extra=lambda schema: _list_formats(schema))
        x_key: str | None = Field(None, description="data array: 'x' in npz/dict, 'data' in HDF5")
        y_key: str | None = Field(None, description="labels: 'y' in npz/dict, 'label' in HDF5")
        label_source: str | list[str] | None = Field(
            None, description="the labels file(s) of npy data or of IDX images")
        label_column: int | None = Field(-1, description="csv: the label column; null: none")
        label_type: Literal["class", "value"] = Field(
            "class", description="class: integers >= 0; value: regression targets")
        num_classes: int | None = Field(None, gt=0, description="class labels must be below it")
        backend: Literal["LMDB", "LEVELDB"] | None = Field(
            None, description="LMDB: source is a Caffe LMDB database folder (the 'lmdb' "
            "extra); found from a folder's data.mdb too")
        skip_bad: bool = Field(False, description="LMDB: skip records that cannot be decoded "
                                                  "(counted in a warning) instead of stopping")
        stream: bool | None = Field(
            None, description="npy/HDF5: read a batch at a time instead of the whole file; "
            "default: for files of 256 MiB or more")
        prefetch: int | None = Field(
            None, ge=0, description="batches prepared ahead on a thread; 0: none (made in "
            "the step); default: 4 when a core is spare beyond the compute threads, else 0")
        num_workers: int | None = Field(
            None, ge=0, description="LMDB: workers decoding the records of a batch at once "
            "(0 or 1: one); default: one per core, at most 8")
        worker_type: Literal["auto", "threads", "processes"] = Field(
            "auto", description="LMDB: what the workers are; auto: processes for 2 workers "
            "or more, 1,000 records or more of at most 64 KiB each (Linux), else threads")
        rand_skip: int = Field(0, ge=0, description="start at a random record in "
                               "[0, rand_skip) (Caffe's), drawn from the layer's seed")
        force_encoded_color: bool = Field(False, description="decode encoded LMDB records "
                                          "as 3-channel BGR (as transform.force_color)")

        @field_validator("format")
        @classmethod
        def _known_format(cls, value):
            return check_format_name(value)

        @field_validator("source", mode="before")
        @classmethod
        def _source_kind(cls, value):
            if isinstance(value, (str, Path, dict, np.ndarray)):
                return value
            if isinstance(value, (list, tuple)) and value:
                return value
            raise ValueError("source must be a file name, a list of file names, "
                             "'builtin:NAME', or from Python a pair (x, y) or a dict of arrays")

        @field_serializer("source", when_used="json")
        def _describe_source(self, value):
            if isinstance(value, (str, Path)):
                return str(value)
            if isinstance(value, (list, tuple)) and all(isinstance(v, (str, Path)) for v in value):
                return [str(v) for v in value]
            items = value.items() if isinstance(value, dict) else enumerate(value)
            return "<arrays " + ", ".join(f"{k}: {np.shape(v)}" for k, v in items) + ">"

    min_tops, max_tops = 1, 2
    source_layer = "Data"       # whose registered source formats read ``source``

    def setup(self, bottom, top):
        p = self.params
        dataset = self.open_source()
        check_labels(dataset, getattr(p, "label_type", "class"))
        if len(top) == 2 and not dataset.has_labels:
            raise DataError(f"{dataset.title} has no labels for top '{top[1].name}' (set y_key "
                            f"for npz, HDF5 and arrays, label_source for npy, label_column for "
                            f"csv), or give only the data top", field="top")
        self.dataset = dataset          # deploy nets read the stored value range from it
        workers = getattr(p, "num_workers", None)
        dataset.use_workers(default_workers() if workers is None else workers,
                            getattr(p, "worker_type", "auto"))
        self.transform = self._transform(dataset)
        self.feeder = BatchFeeder(dataset, p.batch_size, self.transform,
                                  shuffle=p.shuffle, rng=self.rng.spawn(1)[0],
                                  label_dtype=self.dtype, prefetch=p.prefetch, name=self.name)
        self._skip_start(p.rand_skip)

    def _skip_start(self, rand_skip: int) -> None:
        """Caffe's ``rand_skip``: begin at record ``k``, ``k`` uniform in [0, rand_skip)."""
        if rand_skip <= 0:
            return
        skip = int(self.rng.integers(rand_skip))
        if skip >= self.feeder.num_samples:
            raise DataError(f"rand_skip {rand_skip} may skip past the {self.feeder.num_samples} "
                            f"records of the source", field="rand_skip")
        state = self.feeder.get_state()
        state["cursor"] = np.array(skip, dtype=np.int64)
        self.feeder.set_state(state)

    def open_source(self) -> Samples:
        """The data source this layer reads (read whole, or streamed): ``data.open_source``
        picks the registered format."""
        return open_source(self.params, self.base_dir, layer=self.source_layer)

    @property
    def class_names(self) -> list[str] | None:
        """The names of the classes, when the source has them (a folder of class folders)."""
        return getattr(self.dataset, "class_names", None)

    def _transform(self, dataset) -> Transform:
        t = self.params.transform
        mean = None
        if t.mean_file is not None:
            if t.mean_value:
                raise DataError("give mean_file or mean_value, not both",
                                field="transform.mean_value")
            path = resolve_paths(t.mean_file, self.base_dir, "transform.mean_file")[0]
            mean = load_mean_file(path)
        return Transform(sample_shape=dataset.sample_shape, dtype=self.dtype,
                         train=self.phase == "TRAIN", scale=t.scale, mean_value=t.mean_value,
                         mean=mean, crop_size=t.crop_size, mirror=t.mirror)

    def reshape(self, bottom, top):
        batch = self.params.batch_size
        top[0].reshape((batch, *self.transform.output_shape))
        if len(top) == 2:
            top[1].reshape((batch,))

    def forward(self, bottom, top):
        try:
            data, labels = self.feeder.next()
        except SolverkitError as err:       # bad data found while reading: say which layer
            raise err.located(layer=self.name) from None
        np.copyto(top[0].data, data)
        self.feeder.recycle(data)           # copied: its memory takes a later batch
        if len(top) == 2:
            np.copyto(top[1].data, labels)

    # ----- the DataLayer contract: source, size, position, shard
    @property
    def source_title(self) -> str | None:
        return None if isinstance(self.params.source, (tuple, dict)) else self.dataset.title

    @property
    def num_samples(self) -> int:
        return self.feeder.num_samples

    @property
    def batch_size(self) -> int:
        return self.params.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return self.feeder.batches_per_epoch

    @property
    def epoch(self) -> int:
        return self.feeder.epoch

    def get_state(self) -> dict[str, np.ndarray]:
        """Position of the next batch: ``epoch``, ``cursor``, ``order``, ``rng`` (arrays)."""
        return self.feeder.get_state()

    def set_state(self, state: dict) -> None:
        """Continue exactly from a ``get_state()`` result (batches prepared ahead are dropped)."""
        self.feeder.set_state(state)

    def set_shard(self, rank: int, num_ranks: int) -> None:
        """Serve rank ``rank``'s slice of a ``num_ranks``-times larger global batch."""
        self.feeder.set_shard(rank, num_ranks)

    def close(self) -> None:
        if getattr(self, "feeder", None) is not None:
            self.feeder.close()
        if getattr(self, "dataset", None) is not None:
            self.dataset.close()


@register_layer("ImageData")
class ImageData(Data):
    """Caffe's ImageData: image files listed in ``source`` (``PATH LABEL`` lines), or a
    folder of class folders, decoded a batch at a time (Pillow, the ``image`` extra) by
    ``num_workers`` workers at once, threads or processes (``worker_type``).

    Colour images are BGR (OpenCV's order, as Caffe reads them), values 0..255; resizing
    to ``new_height`` x ``new_width`` is OpenCV's bilinear. ``class_names`` lists the
    classes of a folder source (sorted folder names).
    """

    class Params(LayerParams):
        source: str = Field(description="a list file of 'PATH LABEL' lines, or a folder with "
                                        "one sub-folder of images per class")
        root_folder: str = Field("", description="prefix of the list's paths (default: the "
                                                 "list's folder)")
        batch_size: int = Field(gt=0)
        new_height: int = Field(0, ge=0, description="resize every image to this height")
        new_width: int = Field(0, ge=0, description="resize every image to this width")
        is_color: bool = Field(True, description="3 channels (BGR), or 1 gray channel")
        shuffle: bool = Field(False, description="a new random order every epoch")
        transform: TransformSpec = Field(default_factory=TransformSpec,
                                         description="crop, mirror, then (x - mean) * scale")
        skip_bad: bool = Field(False, description="skip missing or undecodable images (counted "
                                                  "in one warning) instead of stopping")
        max_pixels: int = Field(images.MAX_PIXELS, gt=0,
                                description="refuse images with more pixels than this")
        prefetch: int | None = Field(
            None, ge=0, description="batches read and decoded ahead on a thread; 0: none; "
            "default: 4")
        num_workers: int | None = Field(
            None, ge=0, description="workers decoding the images of a batch at once (0 or "
            "1: one); default: one per core, at most 8")
        worker_type: Literal["auto", "threads", "processes"] = Field(
            "auto", description="what the workers are; auto: processes for 2 workers or "
            "more, 1,000 images or more of at most 64 KiB each decoded (Linux), else threads")
        rand_skip: int = Field(0, ge=0, description="start at a random line in "
                               "[0, rand_skip) (Caffe's), drawn from the layer's seed")

    source_layer = "ImageData"

def _list_formats(schema: dict) -> None:
    """The JSON Schema of ``format``: the registered file formats when the schema is made."""
    schema.pop("anyOf", None)
    schema["enum"] = [*file_formats("Data"), None]
