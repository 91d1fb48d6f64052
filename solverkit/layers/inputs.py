"""Blobs with no data source: Input (the caller fills them) and DummyData (fillers fill them:
a constant once, a random filler every forward)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..fillers import fill
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from .base import DataLayer, Layer


@register_layer("Input")
class Input(DataLayer):
    """Blobs the user fills: ``net.forward(data=x)``. ``shape`` gives one shape per top."""

    class Params(LayerParams):
        shape: list[list[int]] = Field(min_length=1)

    min_tops = 1
    fed_by_user = True
    tops_need_backward = True   # gradient checks and saliency read the inputs' diffs

    def setup(self, bottom, top):
        shapes = self.params.shape
        if len(shapes) not in (1, len(top)):
            raise self.error(f"shape has {len(shapes)} entries for {len(top)} tops "
                             f"(give one, or one per top)", field="shape")
        for shape in shapes:
            if any(d <= 0 for d in shape):
                raise self.error(f"every dimension must be positive, got {shape}", field="shape")
        for j, blob in enumerate(top):
            blob.reshape(shapes[j if len(shapes) > 1 else 0])

    def reshape(self, bottom, top):
        """Input blobs keep the shape they were given (``net.forward`` may change it)."""

    def forward(self, bottom, top):
        """The data is already in the top blobs."""


@register_layer("DummyData")
class DummyData(Layer):
    """Tops filled by fillers (Caffe's DummyData): constant once, random ones every forward.

    ``shape`` gives one shape, or one per top; ``data_filler`` none (zeros), one for every
    top, or one per top. Random fillers draw from the layer's generator.
    """

    class Params(LayerParams):
        shape: list[list[int]] = Field(min_length=1)
        data_filler: list[FillerSpec] = Field(default_factory=list)

        @field_validator("data_filler", mode="before")
        @classmethod
        def _one_or_many(cls, value):
            return [value] if isinstance(value, dict) else value

    min_tops = 1
    has_backward = False

    def setup(self, bottom, top):
        p = self.params
        if len(p.shape) not in (1, len(top)):
            raise self.error(f"shape has {len(p.shape)} entries for {len(top)} tops "
                             f"(give one, or one per top)", field="shape")
        if len(p.data_filler) not in (0, 1, len(top)):
            raise self.error(f"data_filler has {len(p.data_filler)} entries for {len(top)} "
                             f"tops (give none, one, or one per top)", field="data_filler")
        for shape in p.shape:
            if any(d <= 0 for d in shape):
                raise self.error(f"every dimension must be positive, got {shape}", field="shape")
        self.fillers = [p.data_filler[j if len(p.data_filler) > 1 else 0] if p.data_filler
                        else FillerSpec() for j in range(len(top))]
        for j, blob in enumerate(top):
            blob.reshape(p.shape[j if len(p.shape) > 1 else 0])
            blob.data[...] = fill(self.fillers[j], blob.shape, self.dtype, self.rng)

    def reshape(self, bottom, top):
        """The tops keep their shapes."""

    def forward(self, bottom, top):
        for filler, blob in zip(self.fillers, top):
            if filler.type != "constant":
                blob.data[...] = fill(filler, blob.shape, self.dtype, self.rng)
