"""How the vision layers compute: one function per layer type decides from the shapes.

``convolution_method`` chooses among

- ``dnnl``: oneDNN's direct convolutions (``solverkit/dnnl.py``), for float32 when the
  ``fast`` extra's library loads;
- ``per_sample``: im2col and products per sample, straight between NCHW and the columns,
  when a group's columns are short (few input channels): a whole-batch product then costs
  less than the transposing copies around it;
- ``kernel_rows``: ``KernelRows`` (vertical stride 1, one group, few padded rows beyond the
  output's, matrices within ``CONV_BLOCK_BYTES``): 1/kh of the column matrix;
- ``columns``: im2col and one product per group over blocks of samples.

``deconvolution_method`` between ``dnnl`` and ``columns`` (im2col's adjoint), and
``pooling_method`` between ``dnnl`` (oneDNN's pooling, where its windows are Caffe's) and
``phases`` (``PoolingWindows``). ``prefer(method)`` makes every layer use ``method`` where
it applies, and a numpy method keeps every layer on numpy (tests run each method on every
case that way); ``prefer(None)`` goes back to the choice by shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dnnl

METHODS = ("dnnl", "per_sample", "kernel_rows", "columns")

# The column matrix covers the whole batch (one product per group) up to this many bytes;
# beyond it, blocks of samples bound the memory a layer keeps. (Smaller blocks measured no
# faster over a whole LeNet or cifar10_quick step.)
CONV_BLOCK_BYTES = 128 << 20
# Products per sample when a group's columns have at most this many rows, C·kh·kw: faster
# for few input channels (LeNet's and cifar10_quick's first layers), slower for many.
PER_SAMPLE_MAX_ROWS = 100
# KernelRows when the padded height is at most this many times the output height (its
# backward products run over every padded row: cifar10_quick's conv2, 20 rows for 16,
# gains; its conv3, 12 for 8, loses).
KERNEL_ROWS_MAX_OVERHEAD = 1.25

_preferred: str | None = None


@dataclass(frozen=True)
class ConvGeometry:
    """What the choice depends on: the batch, the image, the kernel and the layer."""

    n: int
    channels: int
    height: int
    width: int
    out_h: int
    out_w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    group: int
    num_output: int
    dtype: np.dtype

    def block(self) -> int:
        """Samples per block of im2col's column matrix (at most CONV_BLOCK_BYTES)."""
        col_bytes = (self.channels * self.kernel[0] * self.kernel[1] * self.out_h * self.out_w
                     * np.dtype(self.dtype).itemsize)
        return max(1, min(self.n, CONV_BLOCK_BYTES // col_bytes))


def prefer(method: str | None) -> str | None:
    """Use ``method`` wherever it applies from now on (None: choose by shapes); returns
    the preference it replaces."""
    global _preferred
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown convolution method {method!r}; one of {', '.join(METHODS)}")
    previous, _preferred = _preferred, method
    return previous


def applies(method: str, geometry: ConvGeometry) -> bool:
    """Whether ``method`` can compute a convolution of ``geometry``."""
    if method == "dnnl":
        return np.dtype(geometry.dtype) == np.float32 and dnnl.backend() == "dnnl"
    if method == "kernel_rows":
        padded_h = geometry.height + 2 * geometry.pad[0]
        run = padded_h * geometry.n * geometry.out_w * np.dtype(geometry.dtype).itemsize
        return (geometry.stride[0] == 1 and geometry.group == 1 and
                max(geometry.kernel[1] * geometry.channels,
                    geometry.kernel[0] * geometry.num_output) * run <= CONV_BLOCK_BYTES)
    return True


def convolution_method(geometry: ConvGeometry) -> str:
    """The method a Convolution of ``geometry`` uses (see the module's docstring)."""
    if _preferred is not None:
        if applies(_preferred, geometry):
            return _preferred
        if _preferred != "dnnl":
            return "columns"
    if applies("dnnl", geometry):
        return "dnnl"
    if geometry.channels * geometry.kernel[0] * geometry.kernel[1] // geometry.group \
            <= PER_SAMPLE_MAX_ROWS:
        return "per_sample"
    padded_h = geometry.height + 2 * geometry.pad[0]
    if padded_h <= KERNEL_ROWS_MAX_OVERHEAD * geometry.out_h and applies("kernel_rows", geometry):
        return "kernel_rows"
    return "columns"


def deconvolution_method(geometry: ConvGeometry) -> str:
    """``dnnl`` or ``columns`` (im2col's adjoint) for a Deconvolution whose equivalent
    Convolution (from its top to its bottom) is ``geometry``."""
    if _preferred not in (None, "dnnl"):
        return "columns"
    return "dnnl" if applies("dnnl", geometry) else "columns"


def pooling_method(pool: str, x_shape, y_shape, kernel, stride, pad, dtype,
                   mask: bool) -> tuple[str, str | None]:
    """(``dnnl`` or ``phases``, oneDNN's algorithm or None) for a Pooling layer.

    oneDNN's windows are Caffe's when every window holds an image pixel (kernel ≥ stride),
    and its right padding (the ceil overhang) is at most a kernel; its MAX ignores padding
    and keeps the first maximum as Caffe; its averages count padding ("include") or only
    pixels ("exclude"). Caffe's divisor counts the padding but not the overhang beyond it,
    which is "exclude" without padding and "include" where no window reaches beyond the
    padding. Caffe's mask top and global pooling stay with numpy.
    """
    if (_preferred not in (None, "dnnl") or mask or np.dtype(dtype) != np.float32
            or dnnl.backend() != "dnnl"):
        return "phases", None
    overhang = [(out - 1) * s + k - size - p for out, s, k, size, p
                in zip(y_shape[2:], stride, kernel, x_shape[2:], pad)]
    if min(k - s for k, s in zip(kernel, stride)) < 0 or min(overhang) < 0 \
            or max(o - k for o, k in zip(overhang, kernel)) >= 0:
        return "phases", None
    if pool == "MAX":
        return "dnnl", "max"
    if pad == (0, 0):
        return "dnnl", "avg_exclude_padding"
    if all(o <= p for o, p in zip(overhang, pad)):
        return "dnnl", "avg_include_padding"
    return "phases", None
