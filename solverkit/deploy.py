"""Deploy nets: the inference form of a train/test net, as Caffe users write it by hand.

``deploy_net(spec)`` takes the TEST phase of a net and

- replaces every data layer (a layer type that reads its own data: no bottoms, a
  ``DataLayer`` or any other source layer such as ``Data`` or ``ImageData``) by an
  ``Input`` layer of the same name whose one top is the data layer's first top, shaped
  as its TEST batch (so every layer builds as before); the batch dimension is free (``Net.forward`` and the ONNX
  export take any batch). The data layer's other tops (labels) are gone;
- removes the losses and metrics (``LossLayer`` types such as ``Accuracy``) and every
  layer that reads a blob no longer there (a label);
- replaces ``SoftmaxWithLoss`` by a ``Softmax`` layer named ``prob`` on its scores
  (bottom 0), whose top is ``prob`` as in Caffe's deploy files (``prob_2`` ... if the
  name is taken; a SoftmaxWithLoss with a second top, its probabilities, becomes a
  Softmax of its own name making that top), and ``SigmoidCrossEntropyLoss`` likewise by
  a ``Sigmoid``.

A net that has no data layer and no loss or metric in its TEST phase is already a deploy
net and is returned as it is. ``derive_deployment`` also keeps what each data layer knew
about its samples (the TEST transform: scale, mean, centre crop; the sample shape before
the crop; the largest stored value), so that ``solverkit predict`` can turn an image file
into the same numbers the net was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .blob import Blob
from .data import Transform
from .errors import SolverkitError
from .layers.base import DataLayer, LossLayer
from .registry import layer_class
from .spec.net import LayerSpec, NetSpec, load_net_spec

# loss type -> the layer that turns its first bottom into the deploy net's output
OUTPUT_OF_LOSS = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}
OUTPUT_NAME = "prob"


@dataclass
class InputSource:
    """What the data layer that an Input replaced knew about one sample.

    ``transform`` is its TEST transform (None for a net written for deployment);
    ``pixel_max`` the largest value stored in its data (16 for the built-in digits, 255
    for 8-bit images), onto which an image's 0..255 is mapped before the transform;
    ``channel_order`` that of its colour samples: ``RGB`` for CIFAR-10 binary batches
    (stored R, G, B), else ``BGR`` (Caffe's, as image lists and LMDBs hold them).
    """

    shape: tuple[int, ...]
    batch: int = 1
    transform: Transform | None = None
    pixel_max: float | None = None
    channel_order: str = "BGR"


@dataclass
class Deployment:
    """A deploy net spec, its inputs, and whether it was derived from a train/test net."""

    spec: NetSpec
    inputs: dict[str, InputSource] = field(default_factory=dict)
    derived: bool = False


class _DerivedNetSpec(NetSpec):
    """A NetSpec built here: it keeps the source file's name and folder for messages and
    relative paths, but its layers are not at the file's lines any more."""

    def line_of(self, layer_index=None, field=None):
        return None


def is_data_layer(cls) -> bool:
    """A layer type that reads its own data: a ``DataLayer`` the user does not feed (not
    ``Input``), or any other type that takes no bottoms and makes tops."""
    if cls.type == "Input" or getattr(cls, "fed_by_user", False):
        return False
    if issubclass(cls, DataLayer):
        return True
    return cls.max_bottoms == 0 and cls.min_tops is not None and cls.min_tops >= 1


def is_loss_or_metric(cls) -> bool:
    return bool(cls.is_loss) or issubclass(cls, LossLayer)


def deploy_net(spec, level: int = 0, stages=()) -> NetSpec:
    """The deploy form of ``spec`` (a path, text, dict or NetSpec); see the module doc."""
    return derive_deployment(spec, level=level, stages=stages).spec


def derive_deployment(spec, level: int = 0, stages=()) -> Deployment:
    """``deploy_net`` plus what each Input's data layer knew (see ``InputSource``)."""
    spec = load_net_spec(spec)
    stages = tuple([stages] if isinstance(stages, str) else stages)
    selected = [(index, layer) for index, layer in enumerate(spec.layers)
                if layer.included("TEST", level, stages)]
    classes = [layer_class(layer.type) for _, layer in selected]
    if not any(is_data_layer(cls) or is_loss_or_metric(cls) for cls in classes):
        inputs = {}
        for (_, layer), cls in zip(selected, classes):
            if layer.type == "Input":
                shapes = layer.params.shape
                for j, top in enumerate(layer.top):
                    shape = shapes[j if len(shapes) > 1 else 0]
                    inputs[top] = InputSource(tuple(shape[1:]), int(shape[0]))
        return Deployment(spec, inputs, derived=False)

    taken = {top for _, layer in selected for top in layer.top}
    layers: list[LayerSpec] = []
    inputs: dict[str, InputSource] = {}
    gone: set[str] = set()          # blobs the deploy net no longer has
    outputs_made: dict[str, str] = {}   # scores blob -> its output blob
    for (index, layer), cls in zip(selected, classes):
        if is_data_layer(cls):
            source = _data_input(spec, index, layer, cls)
            inputs[layer.top[0]] = source
            layers.append(_layer("Input", layer.name, [], [layer.top[0]],
                                 shape=[[source.batch, *source.shape]]))
            gone.update(layer.top[1:])
            continue
        if layer.type in OUTPUT_OF_LOSS and layer.bottom[0] not in gone:
            scores = layer.bottom[0]
            extra = {"axis": layer.params.axis} if layer.type == "SoftmaxWithLoss" else {}
            if len(layer.top) > 1:
                # its second top already holds the probabilities: a Softmax makes that blob
                layers.append(_layer(OUTPUT_OF_LOSS[layer.type], layer.name, [scores],
                                     [layer.top[1]], **extra))
                outputs_made.setdefault(scores, layer.top[1])
            elif scores not in outputs_made:
                name = _unique(OUTPUT_NAME, taken | {ly.name for _, ly in selected})
                taken.add(name)
                outputs_made[scores] = name
                layers.append(_layer(OUTPUT_OF_LOSS[layer.type], name, [scores], [name],
                                     **extra))
            gone.update(layer.top[:1])
            continue
        if is_loss_or_metric(cls) or any(name in gone for name in layer.bottom):
            gone.update(layer.top)
            continue
        layers.append(layer.model_copy(update={"include": [], "exclude": [],
                                               "loss_weight": None, "propagate_down": None}))
    derived = _DerivedNetSpec.model_construct(
        name=spec.name, dtype=spec.dtype, plugins=list(spec.plugins), force_backward=False,
        layers=layers)
    derived._source = spec._source
    return Deployment(derived, inputs, derived=True)


def _layer(type_name: str, name: str, bottom, top, **fields) -> LayerSpec:
    params = layer_class(type_name).Params.model_validate(fields)
    return LayerSpec(name=name, type=type_name, bottom=bottom, top=top, params=params)


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    k = 2
    while f"{name}_{k}" in taken:
        k += 1
    return f"{name}_{k}"


def _data_input(spec: NetSpec, index: int, layer_spec: LayerSpec, cls) -> InputSource:
    """Build the TEST data layer alone (its source is read) for its sample shape and transform."""
    layer = cls(layer_spec, phase="TEST", dtype=np.dtype(spec.dtype),
                rng=np.random.default_rng(0), base_dir=spec.base_dir)
    tops = [Blob((), np.dtype(spec.dtype), name=name) for name in layer_spec.top]
    try:
        layer.setup([], tops)
        layer.reshape([], tops)
    except SolverkitError as err:
        raise spec.locate(err, index) from None
    finally:
        layer.close()
    transform = getattr(layer, "transform", None)
    pixel_max = None
    dataset = getattr(layer, "dataset", None)
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray) and data.size and data.dtype.kind in "biuf":
        pixel_max = float(np.max(data)) or None
    elif transform is not None:
        pixel_max = 255.0
    fmt = getattr(layer_spec.params, "format", None)
    cifar = fmt == "cifar10" or (fmt is None and str(getattr(dataset, "name", ""))
                                 .lower().endswith(".bin"))
    return InputSource(tuple(tops[0].shape[1:]), int(tops[0].shape[0]),
                       transform if isinstance(transform, Transform) else None, pixel_max,
                       "RGB" if cifar else "BGR")
