"""oneDNN's blocked layout kept between the layers of a net built for inference with
``outputs_only=True``: which blobs hold it, and how a layer that cannot read it runs anyway.

oneDNN's fastest convolution and pooling kernels on AVX-512 work on images with sixteen
channels innermost, ``nChw16c``: the value of channel ``c`` at pixel ``(h, w)`` of sample
``n`` is element ``(n, c // 16, h, w, c % 16)`` of an (N, C/16, H, W, 16) array. A layer
that takes and gives NCHW reorders its bottom into that layout and its result back, two
passes over memory around every convolution; onnxruntime and PyTorch keep the blocked
layout from one layer to the next instead, and so does this plan. A blob's array keeps its
(N, C, H, W) shape; only the order of the numbers in its memory changes.

A blob is *blocked* when

- it has four axes and C is a multiple of 16 (its blocked array is then exactly as large as
  the NCHW one, so the memory plan does not change), it is not an input, an output or a
  loss top (what a user reads stays NCHW), and
- every layer that reads or writes it can take that layout:

  - a Convolution or Pooling whose inference forward runs on oneDNN on a kernel of its own
    for it (``blocked_kernels``): each of its bottom and top in either layout;
  - a layer that works element by element on the whole array (ReLU, Eltwise) or passes its
    bottom on (Split): all its bottoms and tops in one layout (``ELEMENTWISE_LAYERS``);
  - a BatchNorm or Scale folded into the Convolution before it (``folding.py``): it runs
    only when the folding cannot (see below);

- and a Convolution or Pooling touches it (elsewhere the layout gains nothing).

A blob of 1×1 pixels (global pooling's result before a classifier) holds the same bytes
in both layouts: any layer may read or write it. Blobs that element-wise layers tie
together (a ReLU's bottom and top, a sum's terms) are blocked all together or not at all.
Everything else reads NCHW, so a reorder happens only where a blocked region meets such a
layer: inside a convolution's or pooling's primitive, as its own source or result.

At run time a layer that touches a blocked blob but cannot take it now (a folded chain that
runs unfolded because its weights became writable, a convolution whose method was changed
after the net was built) runs on the blob converted to NCHW and back
(``LayoutPlan.forward_converted``): slower, never wrong. ``Layer.last_forward`` of a
Convolution or Pooling names the blocked side (``"…, blocked in and out"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .memory_plan import root

BLOCK = 16                 # channels innermost in oneDNN's blocked layout (nChw16c)
# layer types whose forward treats every bottom and top as one flat run of numbers,
# element by element (or, for Split, is its bottom): any layout, if it is the same for all
ELEMENTWISE_LAYERS = frozenset({"ReLU", "Eltwise", "Split"})


def blockable(blob) -> bool:
    """Four axes and a channel count that is a multiple of BLOCK (no padded channels)."""
    shape = blob.data.shape
    return len(shape) == 4 and shape[1] % BLOCK == 0 and blob.data.size > 0


def same_in_both(blob) -> bool:
    """Whether the blob's bytes are the same in both layouts (1×1 pixels, blockable)."""
    return blockable(blob) and blob.data.shape[2] * blob.data.shape[3] == 1


def to_blocked(plain: np.ndarray) -> np.ndarray:
    """A new (N, C, H, W) array whose memory holds ``plain``'s values in the blocked order."""
    n, c, h, w = plain.shape
    blocks = plain.reshape(n, c // BLOCK, BLOCK, h, w).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(blocks).reshape(n, c, h, w)


def to_plain(blocked: np.ndarray) -> np.ndarray:
    """The NCHW array of the values whose memory ``blocked`` holds in the blocked order."""
    n, c, h, w = blocked.shape
    blocks = blocked.reshape(n, c // BLOCK, h, w, BLOCK).transpose(0, 1, 4, 2, 3)
    return np.ascontiguousarray(blocks).reshape(n, c, h, w)


@dataclass
class LayoutPlan:
    """The blocked blobs of a net and the layers that must check, each time they run,
    whether they can take them."""

    blocked: dict[int, object] = field(default_factory=dict)   # id(blob) -> blob
    # position -> the blocked blobs (not 1×1) of a Convolution, Pooling or folded layer
    # there, which it reads or writes blocked only while it can
    guarded: dict[int, list] = field(default_factory=dict)

    def is_blocked(self, blob) -> bool:
        return id(blob) in self.blocked

    def mark(self, layers, bottoms, tops) -> None:
        """Tell every Convolution and Pooling the layouts of its bottom and top."""
        for layer, bottom, top in zip(layers, bottoms, tops):
            if hasattr(layer, "blocked_kernels"):
                layer.blocked = (self.is_blocked(bottom[0]), self.is_blocked(top[0]))

    @staticmethod
    def forward_converted(layer, bottom, top, blobs) -> None:
        """``layer``'s forward on ``blobs`` (the blocked ones it touches) in NCHW: converted
        before it runs and back after it."""
        for blob in blobs:
            np.copyto(blob.data, to_plain(blob.data))
        layer.forward(bottom, top)
        for blob in blobs:
            np.copyto(blob.data, to_blocked(blob.data))


def plan(layers, bottoms, tops, pinned, folded) -> LayoutPlan:
    """The blocked blobs of a net's layers, ``bottoms`` and ``tops`` per position:
    ``pinned`` the blobs that stay NCHW (inputs, outputs, loss tops), ``folded`` the
    positions of layers folded into the convolution before them."""
    group: dict[int, int] = {}              # id(root) -> its group's key (union-find)

    def find(blob) -> int:
        key = id(root(blob))
        group.setdefault(key, key)
        while group[key] != key:
            group[key] = group[group[key]]
            key = group[key]
        return key

    def join(blobs) -> None:
        keys = [find(blob) for blob in blobs]
        for key in keys[1:]:
            group[key] = keys[0]

    pinned_ids = {id(root(blob)) for blob in pinned}

    def candidate(blob) -> bool:
        return blockable(blob) and id(root(blob)) not in pinned_ids

    windows = set()         # positions of the Convolutions and Poolings that take the layout
    for position, layer in enumerate(layers):
        bottom, top = bottoms[position], tops[position]
        if layer.type in ELEMENTWISE_LAYERS or position in folded:
            join([*bottom, *top])
        elif hasattr(layer, "blocked_kernels") and len(top) == 1 and \
                layer.blocked_kernels(candidate(bottom[0]), candidate(top[0])):
            windows.add(position)
    vetoed, touched = set(), set()
    for position, layer in enumerate(layers):
        for blob in [*bottoms[position], *tops[position]]:
            key = find(blob)
            if not candidate(blob):
                vetoed.add(key)
            elif position in windows:
                touched.add(key)
            elif not (layer.type in ELEMENTWISE_LAYERS or position in folded
                      or same_in_both(blob)):
                vetoed.add(key)
    chosen = touched - vetoed
    result = LayoutPlan()
    for position, layer in enumerate(layers):
        guarded = {}
        for blob in [*bottoms[position], *tops[position]]:
            if find(blob) in chosen:
                result.blocked[id(blob)] = blob
                if (position in windows or position in folded) and not same_in_both(blob):
                    guarded.setdefault(id(root(blob)), blob)
        if guarded:
            result.guarded[position] = list(guarded.values())
    return result
