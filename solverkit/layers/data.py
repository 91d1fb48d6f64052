"""The Data layer: batches of a data source, transformed, shuffled, prefetched.

    - name: data
      type: Data
      top: [data, label]
      source: builtin:digits/train        # or a file, a glob, a list of files; (x, y) from Python
      batch_size: 64
      shuffle: true
      transform: {scale: 0.0625}          # crop_size, mirror, mean_value, mean_file too

Tops: ``data`` (batch_size, *sample shape after crop) and optionally ``label``
(batch_size,), both in the net's dtype. The source is read when the net is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, field_serializer, field_validator

from ..data import BatchFeeder, Transform, check_labels, load_mean_file, load_source, resolve_paths
from ..errors import DataError
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
        format: Literal["npz", "npy", "idx", "cifar10", "csv", "hdf5"] | None = Field(
            None, description="overrides detection from the file name")
        x_key: str | None = Field(None, description="data array: 'x' in npz/dict, 'data' in HDF5")
        y_key: str | None = Field(None, description="labels: 'y' in npz/dict, 'label' in HDF5")
        label_source: str | list[str] | None = Field(
            None, description="the labels file(s) of npy data or of IDX images")
        label_column: int | None = Field(-1, description="csv: the label column; null: none")
        label_type: Literal["class", "value"] = Field(
            "class", description="class: integers >= 0; value: regression targets")
        num_classes: int | None = Field(None, gt=0, description="class labels must be below it")
        prefetch: int | None = Field(
            None, ge=0, description="batches prepared ahead on a thread; 0: none (made in "
            "the step); default: 4 when a core is spare beyond the compute threads, else 0")

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

    def setup(self, bottom, top):
        p = self.params
        dataset = load_source(p.source, format=p.format, base_dir=self.base_dir, x_key=p.x_key,
                              y_key=p.y_key, label_source=p.label_source,
                              label_column=p.label_column, num_classes=p.num_classes)
        check_labels(dataset, p.label_type)
        if len(top) == 2 and dataset.labels is None:
            raise DataError(f"{dataset.title} has no labels for top '{top[1].name}' (set y_key "
                            f"for npz, HDF5 and arrays, label_source for npy, label_column for "
                            f"csv), or give only the data top", field="top")
        self.transform = self._transform(dataset)
        self.feeder = BatchFeeder(dataset, p.batch_size, self.transform,
                                  shuffle=p.shuffle, rng=self.rng.spawn(1)[0],
                                  label_dtype=self.dtype, prefetch=p.prefetch, name=self.name)

    def _transform(self, dataset) -> Transform:
        t = self.params.transform
        mean = None
        if t.mean_file is not None:
            if t.mean_value:
                raise DataError("give mean_file or mean_value, not both",
                                field="transform.mean_value")
            path = resolve_paths(t.mean_file, self.base_dir, "transform.mean_file")[0]
            mean = load_mean_file(path)
        return Transform(sample_shape=dataset.data.shape[1:], dtype=self.dtype,
                         train=self.phase == "TRAIN", scale=t.scale, mean_value=t.mean_value,
                         mean=mean, crop_size=t.crop_size, mirror=t.mirror)

    def reshape(self, bottom, top):
        batch = self.params.batch_size
        top[0].reshape((batch, *self.transform.output_shape))
        if len(top) == 2:
            top[1].reshape((batch,))

    def forward(self, bottom, top):
        data, labels = self.feeder.next()
        np.copyto(top[0].data, data)
        if len(top) == 2:
            np.copyto(top[1].data, labels)

    # ----- the DataLayer contract: size, position, shard
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
