"""Folding BatchNorm and Scale into the Convolution before them, in nets built for inference.

A Convolution ``y = W ∗ x + b``, then in place on its top a BatchNorm with global statistics
``y ↦ (y − μ)·r`` (``r = 1/sqrt(σ² + eps)``, μ and σ² as ``BatchNorm.global_statistics``
gives them) and optionally an in-place Scale ``y ↦ γ·y (+ β)``, is one convolution with

    W'[o] = W[o] · r[o]·γ[o]        b'[o] = (b[o] − μ[o]) · r[o]·γ[o] + β[o]

(b = 0 without a bias term, γ = 1 and β = 0 without the Scale or its bias; o the output
channel, also with groups). In place, no layer can read what the convolution or the
BatchNorm wrote before the next one overwrote it, so the outputs are those of the three
layers run one after the other (to float rounding), the chain costs one pass over the
activations instead of three, and an in-place ReLU after it still fuses into the
convolution.

W' and b' are computed on the first forward and kept. The weights of a net built for
inference are read-only arrays (``Net.freeze``): W' is computed again when the array is
replaced (``Net.load`` puts in new ones), and while the weights are a writable array (a user
put in their own) the chain runs unfolded. The other parameters (the bias, the statistics,
γ and β: a few numbers per channel) stay writable, as in any net: every forward compares
them with the values folded and folds again when one changed. The folded weights are never
stale.
"""

from __future__ import annotations

import numpy as np

from .blob import Blob, aligned_zeros, freeze_array, is_frozen
from .layers.base import Layer


class ConvolutionFold:
    """One Convolution → BatchNorm (→ Scale) chain at ``position`` (the convolution's) in
    the net's layer list; ``last`` is the position of the last layer folded, ``relu`` the
    negative slope of an in-place ReLU right after it (or None)."""

    def __init__(self, position: int, convolution: Layer, batch_norm: Layer,
                 scale: Layer | None, relu: float | None):
        self.position = position
        self.convolution, self.batch_norm, self.scale = convolution, batch_norm, scale
        self.last = position + (1 if scale is None else 2)
        self.relu = relu
        self._weight: np.ndarray | None = None     # the weights W' was computed from
        self._values: list[bytes] = []              # and the other parameters' values
        self._folded: tuple[np.ndarray, np.ndarray] | None = None

    def _small_parameters(self) -> list[np.ndarray]:
        """The parameters besides the weights: the bias, μ, σ², the factor, γ, β."""
        small = [blob.data for blob in self.convolution.blobs[1:]]
        small += [blob.data for blob in self.batch_norm.blobs]
        if self.scale is not None:
            small += [blob.data for blob in self.scale.blobs]
        return small

    def folded(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(W', b') as read-only arrays, or None while the weights may change in place (a
        writable array, or a view of someone else's)."""
        weight = self.convolution.blobs[0].data
        if not is_frozen(weight):
            return None
        values = [a.tobytes() for a in self._small_parameters()]    # a microsecond or so
        if weight is not self._weight or values != self._values:
            self._folded = self._fold()
            self._weight, self._values = weight, values    # held: no other array takes its id
        return self._folded

    def _fold(self) -> tuple[np.ndarray, np.ndarray]:
        conv, batch_norm, scale = self.convolution, self.batch_norm, self.scale
        weight = conv.blobs[0].data
        bias = (conv.blobs[1].data.astype(np.float64) if conv.params.bias_term
                else np.zeros(weight.shape[0]))
        mean, variance = (s.astype(np.float64) for s in batch_norm.global_statistics())
        rate = 1.0 / np.sqrt(variance + batch_norm.params.eps)
        shift = np.zeros_like(rate)
        if scale is not None:
            rate *= scale.blobs[0].data
            if scale.bias_index is not None:
                shift = scale.blobs[scale.bias_index].data.astype(np.float64)
        # aligned: where oneDNN's layout of W' is the plain one it reads W' itself (no copy)
        folded_weight = aligned_zeros(weight.shape, weight.dtype)
        np.multiply(weight, rate.reshape(-1, *([1] * (weight.ndim - 1))), out=folded_weight)
        folded_bias = ((bias - mean) * rate + shift).astype(weight.dtype)
        for array in (folded_weight, folded_bias):
            freeze_array(array)             # constant: oneDNN's layout of W' is made once
        return folded_weight, folded_bias

    def forward(self, bottom: list[Blob], top: list[Blob], with_relu: bool) -> int | None:
        """Run the chain as the convolution with (W', b') (and the ReLU, ``with_relu``,
        where the convolution fuses it); the position of the next layer to run, or None
        (nothing done) when the chain must run unfolded."""
        folded = self.folded()
        if folded is None:
            return None
        fused = self.convolution.forward_folded(bottom, top, *folded,
                                                self.relu if with_relu else None)
        return self.last + (2 if fused else 1)


def find_folds(layers: list[Layer], bottoms: list[list[Blob]],
               tops: list[list[Blob]]) -> dict[int, ConvolutionFold]:
    """The foldable chains of a net's layers, by the convolution's position: a Convolution,
    right after it a BatchNorm with global statistics in place on its top, optionally right
    after that a Scale in place on the same blob whose γ (a parameter, one per channel)
    spans the channels, and optionally an in-place ReLU after the chain. A chain that writes
    into another blob, reads another layer's blob or scales along another axis is not
    folded (its layers run as they are)."""
    def in_place(position: int, blob: Blob, kind: str) -> bool:
        return (position < len(layers) and layers[position].type == kind
                and len(bottoms[position]) == 1 and bottoms[position][0] is blob
                and len(tops[position]) == 1 and tops[position][0] is blob)

    folds = {}
    for position, conv in enumerate(layers):
        if conv.type != "Convolution" or not in_place(position + 1, tops[position][0],
                                                      "BatchNorm"):
            continue
        blob, batch_norm = tops[position][0], layers[position + 1]
        if not batch_norm.use_global_stats:
            continue
        after = position + 2
        scale = layers[after] if in_place(after, blob, "Scale") else None
        if scale is not None and (scale.params.axis not in (1, -3)
                                  or scale.blobs[0].shape != (conv.params.num_output,)):
            scale = None
        if scale is not None:
            after += 1
        relu = (float(layers[after].params.negative_slope) if in_place(after, blob, "ReLU")
                else None)
        folds[position] = ConvolutionFold(position, conv, batch_norm, scale, relu)
    return folds
