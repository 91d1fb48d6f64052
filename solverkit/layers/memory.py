"""Blobs that live in memory rather than in a file: ``MemoryData`` and ``Parameter`` (Caffe's)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..errors import DataError, ShapeError
from ..registry import register_layer
from ..spec.net import LayerParams
from .base import DataLayer, Layer


@register_layer("MemoryData")
class MemoryData(DataLayer):
    """Batches cut from arrays handed over from Python (Caffe's MemoryData).

    ``set_arrays(data, labels)`` takes ``data`` (N, channels, height, width) and ``labels``
    (N,) or (N, 1, 1, 1), N a multiple of ``batch_size``; the arrays are kept, not copied.
    Each forward copies rows ``[pos, pos + batch_size)`` into the tops ``data``
    (batch_size, channels, height, width) and ``label`` (batch_size,), then moves ``pos``
    on by ``batch_size``, wrapping at N.
    """

    class Params(LayerParams):
        batch_size: int = Field(gt=0)
        channels: int = Field(gt=0)
        height: int = Field(gt=0)
        width: int = Field(gt=0)

    min_tops = max_tops = 2

    def setup(self, bottom, top):
        self.data: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.pos = 0

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.params.channels, self.params.height, self.params.width

    def reshape(self, bottom, top):
        top[0].reshape((self.params.batch_size, *self.sample_shape))
        top[1].reshape((self.params.batch_size,))

    def set_arrays(self, data, labels) -> None:
        data, labels = np.asarray(data), np.asarray(labels)
        if data.ndim != 4 or data.shape[1:] != self.sample_shape:
            raise ShapeError(f"data must have shape (N, {', '.join(map(str, self.sample_shape))})"
                             f" (channels, height, width of the layer), got {data.shape}",
                             layer=self.name)
        if labels.shape[1:] not in ((), (1, 1, 1)) or labels.shape[:1] != data.shape[:1]:
            raise ShapeError(f"labels must have shape ({data.shape[0]},) to go with data of "
                             f"shape {data.shape}, got {labels.shape}", layer=self.name)
        if data.shape[0] % self.params.batch_size:
            raise ShapeError(f"the number of samples ({data.shape[0]}) must be a multiple of "
                             f"batch_size ({self.params.batch_size})", layer=self.name)
        self.data, self.labels = data, labels.reshape(-1)
        self.pos = 0

    @property
    def num_samples(self) -> int | None:
        return None if self.data is None else int(self.data.shape[0])

    @property
    def batch_size(self) -> int | None:
        return self.params.batch_size

    @property
    def batches_per_epoch(self) -> int | None:
        return None if self.data is None else self.num_samples // self.params.batch_size

    def forward(self, bottom, top):
        if self.data is None:
            raise DataError("no arrays to read: give them with net.set_input_arrays(data, "
                            "labels) before the first forward", layer=self.name)
        stop = self.pos + self.params.batch_size
        np.copyto(top[0].data, self.data[self.pos:stop], casting="unsafe")
        np.copyto(top[1].data, self.labels[self.pos:stop], casting="unsafe")
        self.pos = stop % self.data.shape[0]

    def get_state(self) -> dict[str, np.ndarray]:
        return {"pos": np.array(self.pos, dtype=np.int64)}

    def set_state(self, state: dict) -> None:
        self.pos = int(state["pos"])


@register_layer("Parameter")
class Parameter(Layer):
    """A learnable blob of ``shape`` as the layer's one top (Caffe's Parameter layer).

    ``y = W``: the top's data is the parameter's array (zeros until trained or loaded), and
    backward adds the top's diff into the parameter's diff, ``dW += dy``.
    """

    class Params(LayerParams):
        shape: list[int] = Field(min_length=0)

    max_bottoms = 0
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        if any(d <= 0 for d in self.params.shape):
            raise self.error(f"every dimension must be positive, got {self.params.shape}",
                             field="shape")
        self.make_param(self.params.shape, None)

    def reshape(self, bottom, top):
        top[0].data = self.blobs[0].data

    def forward(self, bottom, top):
        if top[0].data is not self.blobs[0].data:      # the parameter was given a new array
            top[0].data = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            diff, overwrite = self.blobs[0].diff_for_accumulation()
            if overwrite:
                np.copyto(diff, top[0].diff)
            else:
                diff += top[0].diff
