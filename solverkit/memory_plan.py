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

The diffs of a net a solver trains (``share_diffs=True``) are planned the same way over a
backward, which runs the layers in reverse (``plan_diffs``): a diff lives from the
backward of the blob's last reader, which writes it, to that of its writer, which reads
it; only layers whose backward writes all of each bottom diff it computes
(``GRADIENT_PLAIN_LAYERS``) share.
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
    return _first_fit([(roots[key], first[key], last[key], roots[key].data.nbytes)
                       for key in shared])


def _first_fit(blobs) -> list[Slab]:
    """Slabs for ``(blob, first, last, nbytes)`` in the order the blobs start: each goes
    into the smallest free slab that holds it (a slab is free once its latest blob's
    ``last`` is before the blob's ``first``), else the largest free one grows to it, else
    a new slab."""
    slabs: list[Slab] = []
    for blob, start, end, size in blobs:
        if size == 0:
            continue
        free = [slab for slab in slabs if slab.free_after < start]
        fitting = [slab for slab in free if slab.size >= size]
        if fitting:
            slab = min(fitting, key=lambda s: s.size)
        elif free:
            slab = max(free, key=lambda s: s.size)
            slab.size = size
        else:
            slab = Slab(free_after=-1, size=size)
            slabs.append(slab)
        slab.free_after = end
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


# ---------------------------------------------------------------- diffs of a trained net
# layer types whose backward writes every element of each bottom diff it propagates to
# (never adding to what the diff held before), reads its top diffs only while it runs and
# keeps no view of a diff between calls
GRADIENT_PLAIN_LAYERS = frozenset({
    "AbsVal", "BNLL", "BatchNorm", "Bias", "Clip", "Concat", "Convolution", "Dropout", "ELU",
    "Eltwise", "EuclideanLoss", "Exp", "Flatten", "InnerProduct", "LRN", "Log", "Pooling",
    "Power", "ReLU", "Reshape", "Scale", "Sigmoid", "Softmax", "SoftmaxWithLoss", "Split",
    "Swish", "TanH",
})


def plan_diffs(layer_types, bottoms, tops, fan_outs, propagate_down, pinned) -> list[Slab]:
    """Slabs for the diffs of a net that a solver trains (``Net(share_diffs=True)``).

    A backward runs the layers from the last to the first. The diff of a blob is first
    written by the backward of the latest layer that reads the blob (a reader of a
    fanned-out blob has a diff of its own, which the net then adds into the source's diff
    after the earliest reader ran) and last read by the backward of the layer that wrote
    the blob; in place, every layer in between reads and rewrites the same diff. So a
    diff lives over the positions ``[first, last]`` at which the blob is a bottom or a top
    (a fan-out's blobs until its earliest reader), in backward order from ``last`` down
    to ``first``, and diffs whose intervals do not overlap share a buffer.

    Planned are the diffs some backward writes (a bottom with ``propagate_down``, a
    fan-out's source with such a reader), except the ``pinned`` blobs (inputs, outputs,
    loss tops) and blobs a layer not in ``GRADIENT_PLAIN_LAYERS`` touches: their diffs
    keep arrays of their own. ``fan_outs`` is ``[(source, [reader blobs])]``,
    ``propagate_down`` the net's ``bottom_need_backward``."""
    touched: dict[int, list[int]] = {}
    blobs: dict[int, object] = {}
    written: set[int] = set()
    kept = {id(blob) for blob in pinned}
    for position, kind in enumerate(layer_types):
        for blob in [*bottoms[position], *tops[position]]:
            blobs[id(blob)] = blob
            touched.setdefault(id(blob), []).append(position)
            if kind not in GRADIENT_PLAIN_LAYERS:
                kept.add(id(blob))
        for blob, flag in zip(bottoms[position], propagate_down[position]):
            if flag:
                written.add(id(blob))
    for source, readers in fan_outs:
        positions = [p for reader in readers for p in touched[id(reader)]]
        summed_at = min(positions)          # after the earliest reader's backward
        blobs[id(source)] = source
        touched.setdefault(id(source), []).append(summed_at)
        for reader in readers:
            touched[id(reader)].append(summed_at)
        if any(id(reader) in written for reader in readers):
            written.add(id(source))
    last_position = len(layer_types) - 1
    order = sorted((key for key in written if key not in kept),
                   key=lambda key: -max(touched[key]))
    return _first_fit([(blobs[key], last_position - max(touched[key]),
                        last_position - min(touched[key]), blobs[key].data.nbytes)
                       for key in order])


def apply_diffs(slabs: list[Slab]) -> None:
    """Allocate every slab and make its blobs' diffs views of it."""
    for slab in slabs:
        slab.buffer = aligned_zeros((slab.size,), np.uint8)
        for blob in slab.blobs:
            blob.use_diff_memory(slab.buffer)
