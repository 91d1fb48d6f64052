"""Shared memory for the blobs between a net's inputs and outputs, in a net built for
inference with ``outputs_only=True`` (what onnxruntime and OpenCV do with intermediate
tensors).

A forward writes each blob once (or in place again) and reads it until its last reader
has run; after that its memory is free. The plan gives every such blob an interval of
layer positions, ``[first writer, last reader or writer]``, and puts blobs whose intervals
do not overlap into the same buffer (a *slab*, as large as the largest blob it holds),
first fit in the order the blobs are written. A blob's data is then a view of its slab:
nothing moves at run time. ResNet-50's deploy forward at batch 16 holds some 1 GB of
activations in blobs of their own, a few of its largest blobs with the plan.

Only blobs every layer that touches them is known to treat plainly are shared: the layer
writes all of its top (never reading what the top held before) and keeps no view of a
bottom or top between calls (``PLAIN_LAYERS``). A ``Split`` top is its bottom (one
interval); any other layer (a Python layer, a data layer that swaps batch arrays, a layer
whose shapes follow its data) keeps the blobs it touches to themselves. Inputs, outputs
and loss tops always keep theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .blob import aligned_zeros

# layer types whose forward writes every element of its tops and keeps no view of a blob
PLAIN_LAYERS = frozenset({
    "AbsVal", "BNLL", "BatchNorm", "Bias", "Clip", "Concat", "Convolution",
    "DepthwiseConvolution", "Dropout", "ELU", "Eltwise", "Exp", "Flatten", "InnerProduct",
    "LRN", "Log", "Power", "PReLU", "Pooling", "ReLU", "Reshape", "Scale", "Sigmoid",
    "Softmax", "Swish", "TanH", "Threshold",
})
# layer types whose tops are their bottom's data
ALIASING_LAYERS = frozenset({"Split"})


@dataclass
class Slab:
    """One buffer and the blobs (roots) that take turns in it."""
    free_after: int                     # the last position at which its latest blob is used
    size: int                           # bytes: the largest blob it holds
    blobs: list = field(default_factory=list)
    buffer: np.ndarray | None = None


def root(blob):
    """The blob that owns ``blob``'s data (a reader of a fanned-out blob shares its source's)."""
    while blob._source is not None:
        blob = blob._source
    return blob


def plan(layer_types, bottoms, tops, pinned) -> list[Slab]:
    """Slabs for the blobs of a net: ``layer_types``, ``bottoms`` and ``tops`` per position,
    ``pinned`` the blobs that keep memory of their own (inputs, outputs, loss tops)."""
    owner: dict[int, object] = {}           # id(root) -> the root all its aliases share
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    kept = {id(root(blob)) for blob in pinned}

    def group(blob):
        owned_by = root(blob)
        return owner.setdefault(id(owned_by), owned_by)

    for position, kind in enumerate(layer_types):
        if kind in ALIASING_LAYERS:         # tops are the bottom: one root for all of them
            source = group(bottoms[position][0])
            for top in tops[position]:
                owner[id(root(top))] = source
        plain = kind in PLAIN_LAYERS or kind in ALIASING_LAYERS
        for blob in [*bottoms[position], *tops[position]]:
            key = id(group(blob))
            first.setdefault(key, position)
            last[key] = position
            if not plain:
                kept.add(key)
    roots = {id(blob): blob for blob in owner.values()}
    shared = sorted((key for key in roots if key not in kept), key=lambda key: first[key])
    slabs: list[Slab] = []
    for key in shared:
        blob = roots[key]
        size = blob.data.nbytes
        if size == 0:
            continue
        free = [slab for slab in slabs if slab.free_after < first[key]]
        fitting = [slab for slab in free if slab.size >= size]
        if fitting:
            slab = min(fitting, key=lambda s: s.size)
        elif free:
            slab = max(free, key=lambda s: s.size)
            slab.size = size
        else:
            slab = Slab(free_after=-1, size=size)
            slabs.append(slab)
        slab.free_after = last[key]
        slab.blobs.append(blob)
    return slabs


def apply(slabs: list[Slab]) -> None:
    """Allocate every slab and make its blobs' data views of it."""
    for slab in slabs:
        slab.buffer = aligned_zeros((slab.size,), np.uint8)
        for blob in slab.blobs:
            blob.use_memory(slab.buffer)


def shared_bytes(slabs: list[Slab]) -> tuple[int, int]:
    """(bytes the shared blobs would take on their own, bytes of the slabs)."""
    alone = sum(blob.data.nbytes for slab in slabs for blob in slab.blobs)
    return alone, sum(slab.size for slab in slabs)
