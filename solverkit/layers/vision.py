"""Vision layers: Convolution, Deconvolution and Pooling on NCHW blobs (Caffe's semantics).

Convolution is im2col + matrix products:

    col = im2col(x)       (C·kh·kw, N·OH·OW): rows (c, i, j), columns (n, oh, ow)
    y   = W · col + b     W viewed as (num_output, C/group·kh·kw), one product per group

and its backward is ``dW += dy · colᵀ``, ``dx = col2im(Wᵀ · dy)``. How the products are
laid out is chosen per layer from its shapes (``Convolution.method``): per sample for
short columns, kernel row by kernel row (KernelRows, 1/kh of the column matrix) where
the vertical stride is 1, else over whole blocks of samples. Deconvolution is the same
machinery run the other way round (its forward is Convolution's backward-data pass).
Pooling splits the padded input into its stride phases (PoolingWindows), after which every
kernel offset is one contiguous slice.

Every large temporary (padded image, column matrix, transposed rows) lives in a buffer
that is reused while the bottom shape stays the same, so a training step allocates no
big arrays. The copies and element-wise passes run on the intra-op threads (threads.py).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import blas, threads
from ..registry import register_layer
from ..spec.net import FillerSpec, LayerParams
from ..threads import parallel_for, split
from .base import Layer, spatial_pair

IntPair = int | list[int] | None

# Pooling works on blocks of samples of about this many input bytes (they stay in cache).
CACHE_BLOCK_BYTES = 1 << 20
# Convolution's column matrix covers the whole batch (one product per group) up to this
# many bytes; beyond it, blocks of samples bound the memory a layer keeps. (Smaller blocks
# measured no faster over a whole LeNet or cifar10_quick step.)
CONV_BLOCK_BYTES = 128 << 20
# Convolution multiplies sample by sample (no transposing copies) when a group's columns
# have at most this many rows, C·kh·kw: faster for few input channels (measured on LeNet's
# and cifar10_quick's first layers), slower for many.
PER_SAMPLE_MAX_ROWS = 100
# Convolutions with vertical stride 1 and one group unroll only the kernel's columns
# (KernelRows) when the padded height is at most this many times the output height (its
# backward products run over every padded row: cifar10_quick's conv2, 20 rows for 16,
# gains; its conv3, 12 for 8, loses).
KERNEL_ROWS_MAX_OVERHEAD = 1.25


class _Buffers:
    """Named scratch arrays, reallocated only when the requested shape or dtype changes."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape, dtype, fill=None) -> np.ndarray:
        """The buffer ``name``; ``fill`` initialises it only when it is (re)allocated."""
        shape = tuple(int(s) for s in shape)
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
            self._arrays[name] = array
        return array


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Caffe's convolution output size: ``floor((in + 2p − (d(k−1)+1)) / s) + 1``."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def deconv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Caffe's deconvolution output size: ``s(in − 1) + d(k − 1) + 1 − 2p``."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


class Im2col:
    """Caffe's im2col / col2im for a batch of images of one shape (N, C, H, W).

    ``im2col(x)`` returns the column matrix (C·kh·kw, n·OH·OW): row (c, i, j) holds, for
    every output pixel (n, oh, ow), the input ``x[n, c, oh·s − p + i·d, ow·s − p + j·d]``
    (zero in the padding). ``col2im(col, out)`` is its adjoint: every column entry is
    added back to the pixel it was read from. Both work on a whole block of n ≤ N images
    at once: the column matrix is one copy out of a strided view of the padded images, and
    col2im is one strided add per kernel offset (kh·kw of them).
    """

    def __init__(self, shape, kernel, stride, pad, dilation, dtype):
        self.n, self.channels, self.height, self.width = (int(s) for s in shape)
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        self.dtype = np.dtype(dtype)
        self.out_h = conv_output_size(self.height, kernel[0], stride[0], pad[0], dilation[0])
        self.out_w = conv_output_size(self.width, kernel[1], stride[1], pad[1], dilation[1])
        assert self.out_h > 0 and self.out_w > 0, "callers check the output size first"
        self.rows = self.channels * kernel[0] * kernel[1]
        self.columns = self.n * self.out_h * self.out_w
        self._buffers = _Buffers()

    @property
    def padded_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.channels, self.height + 2 * self.pad[0], self.width + 2 * self.pad[1])

    def col_buffer(self, n: int | None = None) -> np.ndarray:
        """The reusable (C·kh·kw, n·OH·OW) array that ``im2col`` fills (n ≤ N images)."""
        n = self.n if n is None else n
        flat = self._buffers.get("col", (self.rows * self.columns,), self.dtype)
        return flat[:self.rows * n * self.out_h * self.out_w].reshape(self.rows, -1)

    def im2col(self, x: np.ndarray) -> np.ndarray:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel, self.stride, self.pad,
                                                  self.dilation)
        n = x.shape[0]
        assert n <= self.n, (n, self.n)
        # the border is zeroed once, at allocation; only the interior is rewritten
        padded = (self._buffers.get("padded", self.padded_shape, self.dtype, fill=0)[:n]
                  if ph or pw else None)
        col = self.col_buffer(n)
        taps = col.reshape(self.channels, kh, kw, n, self.out_h, self.out_w)

        def fill(block):
            # a block of samples small enough that its image stays in cache for kh·kw reads
            if padded is None:
                source = x[block]
            else:
                source = padded[block]
                source[:, :, ph:ph + self.height, pw:pw + self.width] = x[block]
            s_n, s_c, s_h, s_w = source.strides
            windows = as_strided(source, (self.channels, kh, kw, source.shape[0], self.out_h,
                                          self.out_w),
                                 (s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w),
                                 writeable=False)
            np.copyto(taps[:, :, :, block], windows)

        per_sample = self.channels * (self.height + 2 * ph) * (self.width + 2 * pw)
        parallel_for(fill, threads.blocks(n, per_sample * self.dtype.itemsize, CACHE_BLOCK_BYTES),
                     elements=col.size)
        return col

    def col2im(self, col: np.ndarray, out: np.ndarray) -> None:
        """``out`` (n, C, H, W) = col2im(col): overwritten with the sums of the taps."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel, self.stride, self.pad,
                                                  self.dilation)
        n = out.shape[0]
        target = (self._buffers.get("dpadded", self.padded_shape, self.dtype)[:n] if ph or pw
                  else out)
        target.fill(0)
        taps = col.reshape(self.channels, kh, kw, n, self.out_h, self.out_w)
        by_channel = target.transpose(1, 0, 2, 3)          # (C, N, Hp, Wp), matches the taps
        span_h, span_w = sh * (self.out_h - 1) + 1, sw * (self.out_w - 1) + 1
        for i in range(kh):
            for j in range(kw):
                window = by_channel[:, :, i * dh:i * dh + span_h:sh, j * dw:j * dw + span_w:sw]
                window += taps[:, i, j]
        if ph or pw:
            out[...] = target[:, :, ph:ph + self.height, pw:pw + self.width]

    def col2im_batch_last(self, col: np.ndarray, out: np.ndarray) -> None:
        """``col2im`` for a column matrix whose columns run (oh, ow, n), the batch innermost.

        Each kernel offset then adds runs of OW·n contiguous values (ow and n together)
        instead of rows of OW pixels, which makes the scatter several times faster; the
        sums are built batch-last, (C, Hp, Wp, n), and transposed into ``out`` once.
        """
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel, self.stride, self.pad,
                                                  self.dilation)
        n = out.shape[0]
        height, width = self.height + 2 * ph, self.width + 2 * pw
        flat = self._buffers.get("dpadded_batch_last",
                                 (self.channels * height * width * self.n,), self.dtype)
        target = flat[:self.channels * height * width * n].reshape(self.channels, height,
                                                                    width, n)
        taps = col.reshape(self.channels, kh, kw, self.out_h, self.out_w, n)
        span_h, span_w = sh * (self.out_h - 1) + 1, sw * (self.out_w - 1) + 1

        def scatter(channels):
            # a run of channels whose sums stay in cache while kh·kw taps are added to them
            sums = target[channels]
            sums.fill(0)
            for i in range(kh):
                for j in range(kw):
                    window = sums[:, i * dh:i * dh + span_h:sh, j * dw:j * dw + span_w:sw]
                    window += taps[channels, i, j]
            np.copyto(out[:, channels],
                      sums[:, ph:ph + self.height, pw:pw + self.width].transpose(3, 0, 1, 2))

        parallel_for(scatter, threads.blocks(self.channels, height * width * n * self.dtype.itemsize,
                                             CACHE_BLOCK_BYTES),
                     elements=col.size)


class KernelRows:
    """The columns of a convolution with vertical stride 1, one kernel row at a time.

    im2col repeats every pixel kh·kw times; here only the kw horizontal taps are unrolled:

        B[(c, j), (r, n, ow)] = x_pad[n, c, r, ow·sw + j·dw]      (C·kw, Hp·N·OW)

    with every padded row r, the batch in the middle. Kernel row i of the output rows
    oh = 0..OH−1 reads the padded rows oh + i·dh, which is the contiguous column range
    ``rows(i)``, so the forward pass is kh products ``W_i · B[:, rows(i)]`` summed, with
    ``W_i[o, (c, j)] = W[o, c, i, j]``. Backward stacks dy shifted down by i·dh rows for
    every i, ``DY[(i, o), (r, n, ow)] = dy[n, o, r − i·dh, ow]`` (zero elsewhere), so that
    ``dWᵀ = B · DYᵀ`` and ``dB = W'ᵀ · DY`` are one product each (W' stacks the W_i).
    B is 1/kh of im2col's column matrix, and it is read from cache kh times instead of
    streaming a matrix kh times its size from memory once.
    """

    def __init__(self, shape, kernel, stride, pad, dilation, dtype):
        self.n, self.channels, self.height, self.width = (int(s) for s in shape)
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        assert stride[0] == 1, "vertical stride 1 only"
        self.dtype = np.dtype(dtype)
        self.padded_h, self.padded_w = self.height + 2 * pad[0], self.width + 2 * pad[1]
        self.out_h = conv_output_size(self.height, kernel[0], 1, pad[0], dilation[0])
        self.out_w = conv_output_size(self.width, kernel[1], stride[1], pad[1], dilation[1])
        self.rows = self.channels * kernel[1]
        self.columns = self.padded_h * self.n * self.out_w
        self._buffers = _Buffers()

    def row_columns(self, i: int) -> slice:
        """The columns kernel row i reads: padded rows i·dh .. i·dh + OH − 1, all samples."""
        run = self.n * self.out_w
        start = i * self.dilation[0] * run
        return slice(start, start + self.out_h * run)

    def buffer(self, name: str = "columns") -> np.ndarray:
        """The (C·kw, Hp·N·OW) matrix B (or dB, which reuses it)."""
        return self._buffers.get(name, (self.rows, self.columns), self.dtype)

    def build(self, x: np.ndarray) -> np.ndarray:
        """B from images ``x`` (N, C, H, W), split over channels across the threads."""
        (ph, pw), kw, (sw, dw) = self.pad, self.kernel[1], (self.stride[1], self.dilation[1])
        columns = self.buffer().reshape(self.channels, kw, self.padded_h, self.n, self.out_w)
        padded = (self._buffers.get("padded", (self.n, self.channels, self.padded_h,
                                               self.padded_w), self.dtype, fill=0)
                  if ph or pw else x)

        def fill(channels):
            source = padded[:, channels]
            if ph or pw:
                source[:, :, ph:ph + self.height, pw:pw + self.width] = x[:, channels]
            s_n, s_c, s_h, s_w = source.strides
            taps = as_strided(source, (source.shape[1], kw, self.padded_h, self.n, self.out_w),
                              (s_c, dw * s_w, s_h, s_n, sw * s_w), writeable=False)
            np.copyto(columns[channels], taps)

        parallel_for(fill, split(self.channels), elements=self.rows * self.columns)
        return self.buffer()

    def shifted_top_diff(self, dy: np.ndarray, kh: int) -> np.ndarray:
        """DY (kh, O, Hp·N·OW) from dy (N, O, OH, OW); rows no kernel row reaches stay 0."""
        outputs = dy.shape[1]
        stacked = self._buffers.get("shifted", (kh, outputs, self.padded_h, self.n, self.out_w),
                                    self.dtype, fill=0)
        by_row = dy.transpose(1, 2, 0, 3)                          # (O, OH, N, OW)
        for i in range(kh):
            start = i * self.dilation[0]
            threads.copyto(stacked[i, :, start:start + self.out_h], by_row)
        return stacked.reshape(kh, outputs, -1)

    def scatter(self, grad_columns: np.ndarray, dx: np.ndarray) -> None:
        """dx (N, C, H, W) = the adjoint of ``build`` applied to dB (C·kw, Hp·N·OW)."""
        (ph, pw), kw, (sw, dw) = self.pad, self.kernel[1], (self.stride[1], self.dilation[1])
        taps = grad_columns.reshape(self.channels, kw, self.padded_h, self.n, self.out_w)
        sums = self._buffers.get("sums", (self.channels, self.padded_h, self.n, self.padded_w),
                                 self.dtype)
        span = sw * (self.out_w - 1) + 1

        def add(channels):
            target = sums[channels]
            target.fill(0)
            for j in range(kw):
                window = target[..., j * dw:j * dw + span:sw]
                window += taps[channels, j]
            np.copyto(dx[:, channels], target[:, ph:ph + self.height, :, pw:pw + self.width]
                      .transpose(2, 0, 1, 3))

        parallel_for(add, split(self.channels), elements=grad_columns.size)


class WindowParams(LayerParams):
    """The sliding-window fields Convolution and Pooling share (Caffe's names, flat):
    ``kernel_size`` or ``kernel_h``/``kernel_w``, and likewise ``stride`` and ``pad``."""

    kernel_size: IntPair = None
    kernel_h: int | None = None
    kernel_w: int | None = None
    stride: IntPair = None
    stride_h: int | None = None
    stride_w: int | None = None
    pad: IntPair = None
    pad_h: int | None = None
    pad_w: int | None = None


class ConvolutionParams(WindowParams):
    """Caffe's ConvolutionParameter (flat), shared by Convolution and Deconvolution."""

    num_output: int
    dilation: IntPair = None
    group: int = 1
    bias_term: bool = True
    weight_filler: FillerSpec | None = None
    bias_filler: FillerSpec | None = None
    axis: int = 1


def _field(params, name: str, field_h: str) -> str:
    """The field a user wrote for a (h, w) pair (``kernel_size`` or ``kernel_h``), for messages."""
    return field_h if getattr(params, field_h, None) is not None else name


class _ConvolutionBase(Layer):
    """Reads and checks the shared parameters; makes the weights; keeps the Im2col."""

    Params = ConvolutionParams
    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def setup(self, bottom, top):
        p = self.params
        self.kernel = spatial_pair(p, "kernel_size", field_h="kernel_h", field_w="kernel_w")
        self.stride = spatial_pair(p, "stride", default=1)
        self.pad = spatial_pair(p, "pad", default=0)
        self.dilation = spatial_pair(p, "dilation", default=1)
        for name, field_h, pair, least in (("kernel_size", "kernel_h", self.kernel, 1),
                                           ("stride", "stride_h", self.stride, 1),
                                           ("pad", "pad_h", self.pad, 0),
                                           ("dilation", "dilation", self.dilation, 1)):
            if min(pair) < least:
                raise self.error(f"{name} must be {'positive' if least else 'non-negative'}, "
                                 f"got {pair[0]}×{pair[1]} (h×w)", field=_field(p, name, field_h))
        if p.num_output <= 0:
            raise self.error(f"num_output must be positive, got {p.num_output}", field="num_output")
        if p.group <= 0:
            raise self.error(f"group must be positive, got {p.group}", field="group")
        if p.axis not in (1, -3):
            raise self.error(f"only axis 1 (channels of NCHW) is supported, got {p.axis}",
                             field="axis")
        self.channels = self._check_bottom(bottom[0].shape)[1]
        if self.channels % p.group:
            raise self.error(f"group {p.group} does not divide the {self.channels} input "
                             f"channels of bottom '{bottom[0].name}'", field="group")
        if p.num_output % p.group:
            raise self.error(f"group {p.group} does not divide num_output {p.num_output}",
                             field="group")
        self.make_param(self.weight_shape(), p.weight_filler)
        if p.bias_term:
            self.make_param((p.num_output,), p.bias_filler)
        self.im2col: Im2col | None = None
        self.kernel_rows: KernelRows | None = None
        self._buffers = _Buffers()

    def _check_bottom(self, shape):
        if len(shape) != 4:
            raise self.error(f"bottom must be 4-d (N, C, H, W), got shape {shape}", field="bottom")
        return shape

    def _bottom_shape(self, bottom):
        """(N, C, H, W) of the bottom, whose channels must be those the weights were made for."""
        n, c, h, w = self._check_bottom(bottom[0].shape)
        if c != self.channels:
            raise self.error(f"bottom '{bottom[0].name}' has {c} channels but the weights were "
                             f"made for {self.channels}", field="bottom")
        return n, c, h, w

    def weight_shape(self) -> tuple[int, int, int, int]:
        raise NotImplementedError(f"Weight layout is per type; {type(self).__name__} must define it")

    def _im2col_for(self, image_shape, dtype) -> Im2col:
        """The Im2col for images of ``image_shape``, kept while that shape stays."""
        if (self.im2col is None or self.im2col.dtype != dtype or
                (self.im2col.n, self.im2col.channels, self.im2col.height, self.im2col.width)
                != tuple(image_shape)):
            self.im2col = Im2col(image_shape, self.kernel, self.stride, self.pad, self.dilation,
                                 dtype)
        return self.im2col

    def _kernel_error(self, height, width):
        p = self.params
        extent = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel)]
        return self.error(
            f"kernel {self.kernel[0]}×{self.kernel[1]} (dilated extent {extent[0]}×{extent[1]}) "
            f"is larger than the padded input {height + 2 * self.pad[0]}×"
            f"{width + 2 * self.pad[1]}", field=_field(p, "kernel_size", "kernel_h"))

    def _group_rows(self, rows: int):
        size = rows // self.params.group
        return [slice(g * size, (g + 1) * size) for g in range(self.params.group)]


@register_layer("Convolution")
class Convolution(_ConvolutionBase):
    """2-d convolution (cross-correlation, as Caffe), with stride, pad, dilation and groups.

    x: (N, C, H, W); W: (num_output, C/group, kh, kw); b: (num_output,);
    y: (N, num_output, OH, OW), ``OH = floor((H + 2p − (d(k−1)+1)) / s) + 1``;
    ``y[n, o, oh, ow] = b[o] + Σ_{c in o's group, i, j} W[o, c, i, j] ·
    x[n, c, oh·s − p + i·d, ow·s − p + j·d]`` (zero outside the image).
    """

    def weight_shape(self):
        p = self.params
        return (p.num_output, self.channels // p.group, *self.kernel)

    def reshape(self, bottom, top):
        n, c, h, w = self._bottom_shape(bottom)
        out_h, out_w = (conv_output_size(size, *args) for size, args in
                        zip((h, w), zip(self.kernel, self.stride, self.pad, self.dilation)))
        if out_h <= 0 or out_w <= 0:
            raise self._kernel_error(h, w)
        dtype = bottom[0].data.dtype
        col_bytes = c * self.kernel[0] * self.kernel[1] * out_h * out_w * dtype.itemsize
        block = max(1, min(n, CONV_BLOCK_BYTES // col_bytes))
        self._im2col_for((block, c, h, w), dtype)
        self.blocks = [slice(start, min(start + block, n)) for start in range(0, n, block)]
        self.pixels = out_h * out_w
        top[0].reshape((n, self.params.num_output, out_h, out_w))
        self._col_valid = False

    def _rows(self, n):
        """(num_output, N·OH·OW): the product before it is transposed to NCHW (y, then dy)."""
        return self._buffers.get("rows", (self.params.num_output, n * self.pixels),
                                 self.im2col.dtype)

    @property
    def groups(self) -> list[tuple[slice, slice]]:
        """(weight rows, column rows) of each group's product."""
        return list(zip(self._group_rows(self.params.num_output),
                        self._group_rows(self.im2col.rows)))

    @property
    def method(self) -> str:
        """How the products are laid out, chosen per layer by the shapes:

        - ``per_sample``: products per sample, straight between NCHW and im2col's columns,
          when the columns are short (few input channels): a whole-batch product then
          costs less than the transposing copies around it;
        - ``kernel_rows``: KernelRows (vertical stride 1, one group, few padded rows beyond
          the output's, matrices within CONV_BLOCK_BYTES): 1/kh of the column matrix;
        - ``columns``: im2col and one product per group over blocks of samples.
        """
        p, geometry = self.params, self.im2col
        if geometry.rows // p.group <= PER_SAMPLE_MAX_ROWS:
            return "per_sample"
        padded_h = geometry.height + 2 * self.pad[0]
        if (self.stride[0] == 1 and p.group == 1 and
                padded_h <= KERNEL_ROWS_MAX_OVERHEAD * geometry.out_h):
            n = self.blocks[-1].stop
            run = padded_h * n * geometry.out_w * geometry.dtype.itemsize
            if max(self.kernel[1] * self.channels, self.kernel[0] * p.num_output) * run \
                    <= CONV_BLOCK_BYTES:
                return "kernel_rows"
        return "columns"

    @property
    def per_sample(self) -> bool:
        return self.method == "per_sample"

    def _kernel_rows_for(self, n, dtype) -> KernelRows:
        """The KernelRows for the whole batch, kept while its shape stays."""
        shape = (n, self.channels, self.im2col.height, self.im2col.width)
        rows = self.kernel_rows
        if rows is None or rows.dtype != dtype or \
                (rows.n, rows.channels, rows.height, rows.width) != shape:
            rows = self.kernel_rows = KernelRows(shape, self.kernel, self.stride, self.pad,
                                                 self.dilation, dtype)
        return rows

    def _stacked_weight(self) -> np.ndarray:
        """(kh, num_output, C·kw): kernel row i of every filter, as KernelRows multiplies it."""
        p = self.params
        stacked = self._buffers.get("stacked_weight", (self.kernel[0], p.num_output,
                                                       self.channels * self.kernel[1]),
                                    self.blobs[0].data.dtype)
        np.copyto(stacked.reshape(self.kernel[0], p.num_output, self.channels, self.kernel[1]),
                  self.blobs[0].data.transpose(2, 0, 1, 3))
        return stacked

    def _forward_kernel_rows(self, x, y, bias):
        """``bias``: (1, num_output, 1, 1), or 0 without a bias term."""
        geometry = self._kernel_rows_for(x.shape[0], x.dtype)
        columns = geometry.build(x)
        stacked = self._stacked_weight()
        total = self._rows(x.shape[0])
        part = self._buffers.get("rows_part", total.shape, total.dtype)
        for i in range(self.kernel[0]):
            blas.matmul(stacked[i], columns[:, geometry.row_columns(i)], out=part if i else total)
            if i:
                np.add(total, part, out=total)
        by_sample = total.reshape(self.params.num_output, geometry.out_h, x.shape[0],
                                  geometry.out_w).transpose(2, 0, 1, 3)
        y = y.reshape(by_sample.shape)
        # the transposing copy into NCHW adds the bias on the way
        parallel_for(lambda n: np.add(by_sample[n], bias, out=y[n]), split(x.shape[0]),
                     elements=y.size)

    def _backward_kernel_rows(self, x, dy, dx, need_weight, need_bottom):
        p, kh = self.params, self.kernel[0]
        geometry = self._kernel_rows_for(x.shape[0], x.dtype)
        stacked_dy = geometry.shifted_top_diff(
            dy.reshape(x.shape[0], p.num_output, geometry.out_h, geometry.out_w), kh)
        stacked_dy = stacked_dy.reshape(kh * p.num_output, -1)
        if need_weight:
            columns = geometry.buffer() if self._col_valid else geometry.build(x)
            grad_t = self._buffers.get("weight_grad_t", (geometry.rows, kh * p.num_output),
                                       x.dtype)
            blas.matmul(columns, stacked_dy.T, out=grad_t)           # rows (c, j), columns (i, o)
            self.blobs[0].diff[...] += grad_t.reshape(self.channels, self.kernel[1], kh,
                                                      p.num_output).transpose(3, 0, 2, 1)
        if need_bottom:
            grad_columns = geometry.buffer()      # B is free once dW is done
            self._col_valid = False
            blas.matmul(self._stacked_weight().reshape(kh * p.num_output, -1).T, stacked_dy,
                        out=grad_columns)
            geometry.scatter(grad_columns, dx)

    def _by_sample(self, col, block):
        """The column matrix of a block as a stack of per-sample matrices (n, C·kh·kw, OH·OW)."""
        return col.reshape(col.shape[0], block.stop - block.start, self.pixels).transpose(1, 0, 2)

    def forward(self, bottom, top):
        p, geometry = self.params, self.im2col
        x = bottom[0].data
        n = x.shape[0]
        weight = self.blobs[0].data.reshape(p.num_output, -1)
        y = top[0].data.reshape(n, p.num_output, -1)
        bias = self.blobs[1].data.reshape(1, -1, 1) if p.bias_term else 0
        method = self.method
        if method == "kernel_rows":
            self._forward_kernel_rows(x, y, self.blobs[1].data.reshape(1, -1, 1, 1)
                                      if p.bias_term else 0)
        elif method == "per_sample":
            for block in self.blocks:
                by_sample = self._by_sample(geometry.im2col(x[block]), block)
                for g_out, g_in in self.groups:
                    blas.matmul(weight[g_out], by_sample[:, g_in], out=y[block, g_out])
            if p.bias_term:
                parallel_for(lambda part: np.add(y[part], bias, out=y[part]), split(n),
                             elements=y.size)
        else:
            rows = self._rows(n)
            for block in self.blocks:
                col = geometry.im2col(x[block])
                columns = slice(block.start * self.pixels, block.stop * self.pixels)
                for g_out, g_in in self.groups:
                    blas.matmul(weight[g_out], col[g_in], out=rows[g_out, columns])
            by_sample = rows.reshape(p.num_output, n, -1).transpose(1, 0, 2)
            parallel_for(lambda part: np.add(by_sample[part], bias, out=y[part]), split(n),
                         elements=y.size)
        # with one block the columns are still there for backward's weight gradient
        self._col_valid = method == "kernel_rows" or len(self.blocks) == 1

    def backward(self, top, propagate_down, bottom):
        p, geometry = self.params, self.im2col
        x = bottom[0].data
        n = x.shape[0]
        dy = top[0].diff.reshape(n, p.num_output, -1)
        method = self.method
        if method == "columns":
            rows = self._rows(n)
            threads.copyto(rows.reshape(p.num_output, n, -1).transpose(1, 0, 2), dy)
        if p.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += rows.sum(axis=1) if method == "columns" else dy.sum(axis=(0, 2))
        need_weight, need_bottom = self.param_propagate_down[0], propagate_down[0]
        if not (need_weight or need_bottom):
            return
        if method == "kernel_rows":
            self._backward_kernel_rows(x, dy, bottom[0].diff, need_weight, need_bottom)
            return
        weight = self.blobs[0].data.reshape(p.num_output, -1)
        weight_diff = self.blobs[0].diff.reshape(p.num_output, -1)
        group_in, group_out = geometry.rows // p.group, p.num_output // p.group
        for block in self.blocks:
            size = block.stop - block.start
            if need_weight:
                col = (geometry.col_buffer(size) if self._col_valid
                       else geometry.im2col(x[block]))
                if self.per_sample:
                    # dWᵀ = Σ_n col_n · dy_nᵀ: per-sample products, then their sum
                    by_sample = self._by_sample(col, block)
                    grad_t = self._buffers.get("weight_grad_by_sample", (
                        self.blocks[0].stop, group_in, group_out), geometry.dtype)[:size]
                    for g_out, g_in in self.groups:
                        blas.matmul(by_sample[:, g_in], dy[block, g_out].transpose(0, 2, 1),
                                    out=grad_t)
                        weight_diff[g_out] += grad_t.sum(axis=0).T
                else:
                    # dWᵀ = col · dyᵀ, per group: OpenBLAS runs this long-inner-dimension
                    # product 20–40% faster than dy · colᵀ; the result is only a weight's size
                    grad_t = self._buffers.get("weight_grad_t", (group_in, group_out),
                                               geometry.dtype)
                    columns = slice(block.start * self.pixels, block.stop * self.pixels)
                    for g_out, g_in in self.groups:
                        blas.matmul(col[g_in], rows[g_out, columns].T, out=grad_t)
                        weight_diff[g_out] += grad_t.T
            if need_bottom:
                # dy of the block with the batch innermost, (num_output, OH·OW·n), so that
                # dcol comes out batch-last too and col2im adds long contiguous runs
                flat = self._buffers.get("rows_batch_last", (dy.size,), geometry.dtype)
                batch_last = flat[:p.num_output * size * self.pixels].reshape(p.num_output, -1)
                threads.copyto(batch_last.reshape(p.num_output, self.pixels, size),
                               dy[block].transpose(1, 2, 0))
                # the column buffer is free once dW is done: dcol overwrites it
                dcol = geometry.col_buffer(size)
                self._col_valid = False
                for g_out, g_in in self.groups:
                    blas.matmul(weight[g_out].T, batch_last[g_out], out=dcol[g_in])
                geometry.col2im_batch_last(dcol, bottom[0].diff[block])


@register_layer("Deconvolution")
class Deconvolution(_ConvolutionBase):
    """Transposed convolution: the adjoint of Convolution with the same parameters.

    x: (N, C, H, W); W: (C, num_output/group, kh, kw) (Caffe's layout); b: (num_output,);
    y: (N, num_output, OH, OW), ``OH = s(H − 1) + d(k − 1) + 1 − 2p``;
    ``y = col2im(Wᵀ · x) + b``, so ``⟨conv_W(z), x⟩ = ⟨z, deconv_W(x)⟩`` for a Convolution
    from num_output to C channels with the same kernel, stride, pad, dilation and group.
    """

    def weight_shape(self):
        p = self.params
        return (self.channels, p.num_output // p.group, *self.kernel)

    def reshape(self, bottom, top):
        n, _, h, w = self._bottom_shape(bottom)
        out_h, out_w = (deconv_output_size(size, *args) for size, args in
                        zip((h, w), zip(self.kernel, self.stride, self.pad, self.dilation)))
        if out_h <= 0 or out_w <= 0:
            raise self.error(f"output size {out_h}×{out_w} is not positive: pad {self.pad[0]}×"
                             f"{self.pad[1]} is too large for input {h}×{w} and kernel "
                             f"{self.kernel[0]}×{self.kernel[1]}",
                             field=_field(self.params, "pad", "pad_h"))
        geometry = self._im2col_for((n, self.params.num_output, out_h, out_w),
                                    bottom[0].data.dtype)
        assert (geometry.out_h, geometry.out_w) == (h, w)
        top[0].reshape((n, self.params.num_output, out_h, out_w))

    def _bottom_rows(self, bottom):
        """The bottom as (C, N·H·W), the layout the product needs."""
        geometry = self.im2col
        rows = self._buffers.get("bottom_rows", (self.channels, geometry.columns),
                                 geometry.dtype)
        np.copyto(rows.reshape(self.channels, geometry.n, -1),
                  bottom[0].data.reshape(geometry.n, self.channels, -1).transpose(1, 0, 2))
        return rows

    def forward(self, bottom, top):
        p, geometry = self.params, self.im2col
        x = self._bottom_rows(bottom)
        weight = self.blobs[0].data.reshape(self.channels, -1)
        dcol = geometry.col_buffer()
        for g_in, g_col in zip(self._group_rows(self.channels), self._group_rows(geometry.rows)):
            blas.matmul(weight[g_in].T, x[g_in], out=dcol[g_col])
        geometry.col2im(dcol, top[0].data)
        if p.bias_term:
            top[0].data += self.blobs[1].data.reshape(1, -1, 1, 1)

    def backward(self, top, propagate_down, bottom):
        p, geometry = self.params, self.im2col
        dy = top[0].diff
        if p.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3))
        if not (self.param_propagate_down[0] or propagate_down[0]):
            return
        col = geometry.im2col(dy)
        groups = list(zip(self._group_rows(self.channels), self._group_rows(geometry.rows)))
        if self.param_propagate_down[0]:
            x = self._bottom_rows(bottom)
            grad = self._buffers.get("weight_grad", (self.channels, geometry.rows // p.group),
                                     geometry.dtype)
            for g_in, g_col in groups:
                blas.matmul(x[g_in], col[g_col].T, out=grad[g_in])
            self.blobs[0].diff.reshape(self.channels, -1)[...] += grad
        if propagate_down[0]:
            weight = self.blobs[0].data.reshape(self.channels, -1)
            dx = self._buffers.get("bottom_diff_rows", (self.channels, geometry.columns),
                                   geometry.dtype)
            for g_in, g_col in groups:
                blas.matmul(weight[g_in], col[g_col], out=dx[g_in])
            np.copyto(bottom[0].diff.reshape(geometry.n, self.channels, -1),
                      dx.reshape(self.channels, geometry.n, -1).transpose(1, 0, 2))


def pool_output_size(size: int, kernel: int, stride: int, pad: int, ceil: bool,
                     clip: bool) -> int:
    """Caffe's pooling output size.

    ``ceil((in + 2p − k) / s) + 1`` (``floor`` with round_mode FLOOR); then, when the layer
    has any padding (``clip``), one less if the last window would start at or beyond
    ``in + p``, so that every window starts inside the image or its leading padding.
    """
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _phase_range(size: int, cells: int, phase: int, stride: int, pad: int):
    """Which cells q of stride phase ``phase`` hold image pixels (padded row q·s + phase).

    Returns (cell slice, image slice), or None when the phase holds no pixel.
    """
    first = max(0, -((phase - pad) // stride))                  # ceil((p − phase) / s)
    last = min(cells - 1, (size - 1 + pad - phase) // stride)
    if last < first:
        return None
    start = first * stride + phase - pad
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


class PoolingWindows:
    """A pooling layer's input laid out so that every kernel offset is one contiguous run.

    The padded image P of each channel of each sample (an "image" m below; padding and the
    ceil overhang hold ``fill``) is split into its sh·sw stride phases,

        phases[a, b, m, q, r] = P[m, q·sh + a, r·sw + b]      (Hq × Wq cells each)

    with Hq = OH + (kh − 1)//sh and Wq = OW + (kw − 1)//sw. Window (oh, ow) reads its offset
    (i, j) at phases[i % sh, j % sw, m, oh + i//sh, ow + j//sw], so over a flattened phase
    output (m, oh, ow) sits at ``m·Hq·Wq + oh·Wq + ow`` and its tap at that index plus
    ``(i//sh)·Wq + j//sw``: each kernel offset is one shifted slice of a phase. Outputs are
    computed on the "wide" Hq × Wq grid (the extra rows and columns are never read), with
    element-wise passes over long contiguous runs instead of strided windows.
    """

    def __init__(self, images, height, width, kernel, stride, pad, out_h, out_w, fill, dtype):
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
        self.images, self.height, self.width = images, height, width
        self.out_h, self.out_w = out_h, out_w
        self.cells_h, self.cells_w = out_h + (kh - 1) // sh, out_w + (kw - 1) // sw
        self.cells = self.cells_h * self.cells_w
        self.stride = stride
        # (k, phase a, phase b, offset) per kernel offset, k = i·kw + j in row-major order
        self.taps = [(i * kw + j, i % sh, j % sw, (i // sh) * self.cells_w + j // sw)
                     for i in range(kh) for j in range(kw)]
        # a block's last cells lie beyond every valid output's taps: they are not computed
        self.tail = max(offset for *_, offset in self.taps)
        self.phase_slices = []
        for a in range(sh):
            rows = _phase_range(height, self.cells_h, a, sh, ph)
            for b in range(sw):
                cols = _phase_range(width, self.cells_w, b, sw, pw)
                if rows is not None and cols is not None:
                    self.phase_slices.append((a, b, (..., rows[0], cols[0]),
                                              (..., rows[1], cols[1])))
        # pixels no window reads (FLOOR mode, kernel < stride) are in no phase
        self.covers_input = self._covered() == height * width
        self._buffers = _Buffers()
        self.fill, self.dtype = fill, dtype

    def _covered(self) -> int:
        return sum(len(range(rows.start, rows.stop, rows.step or 1)) *
                   len(range(cols.start, cols.stop, cols.step or 1))
                   for _, _, _, (_, rows, cols) in self.phase_slices)

    def phases(self, name: str, fill=None) -> np.ndarray:
        """A (sh, sw, images, Hq, Wq) buffer; ``fill`` is written at allocation only."""
        return self._buffers.get(name, (*self.stride, self.images, self.cells_h, self.cells_w),
                                 self.dtype, fill=fill)

    def wide(self, name: str, dtype, fill=None) -> np.ndarray:
        """An (images, Hq, Wq) buffer on the wide output grid."""
        return self._buffers.get(name, (self.images, self.cells_h, self.cells_w), dtype, fill)

    def run_length(self, block: slice) -> int:
        """How many wide cells of a block of images are computed (all but the tail)."""
        return (block.stop - block.start) * self.cells - self.tail

    def load(self, x: np.ndarray, block: slice) -> np.ndarray:
        """Copy images ``x`` (m, H, W) into their phases; the border keeps the fill."""
        phases = self.phases("input", fill=self.fill)[:, :, block]
        for a, b, cells, pixels in self.phase_slices:
            phases[a, b][cells] = x[pixels]
        return phases

    def store(self, phases: np.ndarray, dx: np.ndarray) -> None:
        """``dx`` (m, H, W) = the image pixels of ``phases``; pixels in no phase get 0."""
        if not self.covers_input:
            dx.fill(0)
        for a, b, cells, pixels in self.phase_slices:
            dx[pixels] = phases[a, b][cells]


@register_layer("Pooling")
class Pooling(Layer):
    """MAX or AVE pooling over kh×kw windows (Caffe's PoolingLayer).

    x: (N, C, H, W) -> y: (N, C, OH, OW), OH from ``pool_output_size`` (ceil by default).
    MAX: ``y = max`` over the window's pixels inside the image (padding never wins; ties go
    to the first pixel in row-major order, as Caffe). AVE: the sum over the window's
    pixels inside the image divided by Caffe's ``pool_size = (min(h0 + kh, H + ph) − h0) ·
    (min(w0 + kw, W + pw) − w0)``, ``h0 = oh·s − ph``: padding counts, the ceil overhang
    beyond the padding does not. ``global_pooling`` pools each whole channel to 1×1.
    A second top (MAX only) receives Caffe's mask: the flat index ``h·W + w`` of each max.
    """

    class Params(WindowParams):
        pool: Literal["MAX", "AVE", "STOCHASTIC"] = "MAX"
        global_pooling: bool = False
        round_mode: Literal["CEIL", "FLOOR"] = "CEIL"

    min_bottoms = max_bottoms = 1
    min_tops = 1
    max_tops = 2

    def setup(self, bottom, top):
        p = self.params
        if p.pool == "STOCHASTIC":
            # Caffe itself has STOCHASTIC pooling only on the GPU (its CPU path is
            # NOT_IMPLEMENTED), so a CPU framework offers MAX and AVE.
            raise self.error("STOCHASTIC pooling is not available (Caffe implements it on the "
                             "GPU only); use MAX or AVE", field="pool")
        if len(top) == 2 and p.pool != "MAX":
            raise self.error("a second top (the argmax mask) exists only for pool: MAX",
                             field="top")
        self.stride = spatial_pair(p, "stride", default=1)
        self.pad = spatial_pair(p, "pad", default=0)
        if p.global_pooling:
            given = [f for f in ("kernel_size", "kernel_h", "kernel_w")
                     if getattr(p, f) is not None]
            if given:
                raise self.error("global_pooling takes the whole image as the kernel; do not "
                                 "give a kernel size", field=given[0])
            if self.stride != (1, 1) or self.pad != (0, 0):
                raise self.error("global_pooling needs stride 1 and pad 0",
                                 field="stride" if self.stride != (1, 1) else "pad")
        else:
            self.kernel = spatial_pair(p, "kernel_size", field_h="kernel_h", field_w="kernel_w")
            if min(self.kernel) <= 0:
                raise self.error(f"kernel_size must be positive, got {self.kernel}",
                                 field=_field(p, "kernel_size", "kernel_h"))
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                raise self.error(f"pad {self.pad[0]}×{self.pad[1]} must be smaller than the "
                                 f"kernel {self.kernel[0]}×{self.kernel[1]} (Caffe's rule)",
                                 field=_field(p, "pad", "pad_h"))
        if min(self.stride) <= 0:
            raise self.error(f"stride must be positive, got {self.stride}",
                             field=_field(p, "stride", "stride_h"))
        if min(self.pad) < 0:
            raise self.error(f"pad must be non-negative, got {self.pad}",
                             field=_field(p, "pad", "pad_h"))
        self._buffers = _Buffers()
        self._shape = None

    def reshape(self, bottom, top):
        p = self.params
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"bottom must be 4-d (N, C, H, W), got shape {shape}", field="bottom")
        n, c, h, w = shape
        if p.global_pooling:
            self.kernel = (h, w)
        if h + 2 * self.pad[0] < self.kernel[0] or w + 2 * self.pad[1] < self.kernel[1]:
            raise self.error(f"kernel {self.kernel[0]}×{self.kernel[1]} is larger than the padded "
                             f"input {h + 2 * self.pad[0]}×{w + 2 * self.pad[1]}",
                             field=_field(p, "kernel_size", "kernel_h"))
        clip = self.pad != (0, 0)
        ceil = p.round_mode == "CEIL"
        out_h = pool_output_size(h, self.kernel[0], self.stride[0], self.pad[0], ceil, clip)
        out_w = pool_output_size(w, self.kernel[1], self.stride[1], self.pad[1], ceil, clip)
        for blob in top:
            blob.reshape((n, c, out_h, out_w))
        if self._shape != (shape, out_h, out_w) and not p.global_pooling:
            self._shape = (shape, out_h, out_w)
            self._plan(n * c, h, w, out_h, out_w, bottom[0].data.dtype)

    def _plan(self, images, h, w, out_h, out_w, dtype):
        """The phase layout, the blocks of images, AVE's divisors and the empty windows."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        # padding never wins a MAX (Caffe compares image pixels only) and adds 0 to an AVE
        fill = -np.inf if self.params.pool == "MAX" else 0
        self.windows = PoolingWindows(images, h, w, self.kernel, self.stride, self.pad,
                                      out_h, out_w, fill, dtype)
        self._image_bytes = sh * sw * self.windows.cells * np.dtype(dtype).itemsize
        start_h = np.arange(out_h) * sh - ph
        start_w = np.arange(out_w) * sw - pw
        size_h = np.minimum(start_h + kh, h + ph) - start_h
        size_w = np.minimum(start_w + kw, w + pw) - start_w
        pool_size = np.outer(size_h, size_w)
        # AVE's 1 / pool_size on the wide grid (0 on the extra cells and on windows wholly
        # beyond the image, which average to 0 as in Caffe)
        inverse = np.zeros((self.windows.cells_h, self.windows.cells_w), dtype)
        inverse[:out_h, :out_w] = np.where(pool_size > 0, 1.0 / np.maximum(pool_size, 1), 0)
        self.inv_pool_size = inverse
        self.uniform_size = bool(np.all(pool_size == pool_size.flat[0]))
        # windows with no pixel in the image (kernel < stride): Caffe's -FLT_MAX and mask -1
        inside_h = (start_h + kh > 0) & (start_h < h)
        inside_w = (start_w + kw > 0) & (start_w < w)
        covered = np.outer(inside_h, inside_w)
        self.empty_windows = None if covered.all() else ~covered
        self.window_start = (start_h, start_w)

    @property
    def blocks(self) -> list[slice]:
        """Blocks of images whose phases fit in the cache, processed in parallel."""
        return threads.blocks(self.windows.images, self._image_bytes, CACHE_BLOCK_BYTES)

    # ----- forward -----
    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.params.global_pooling:
            self._forward_global(x, y)
        else:
            windows = self.windows
            images = x.reshape(-1, windows.height, windows.width)
            outputs = y.reshape(-1, windows.out_h, windows.out_w)
            if self.params.pool == "MAX":
                self.argmax = windows.wide("argmax", self._index_type())
                run = self._forward_max
            else:
                run = self._forward_ave
            parallel_for(lambda block: run(images[block], outputs[block], block), self.blocks,
                         elements=x.size)
        if len(top) == 2:
            self._write_mask(x.shape, top[1].data)

    def _forward_global(self, x, y):
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if self.params.pool == "MAX":
            self.argmax = flat.argmax(axis=2)
            y.reshape(self.argmax.shape)[...] = np.take_along_axis(
                flat, self.argmax[..., None], axis=2)[..., 0]
        else:
            np.mean(flat, axis=2, out=y.reshape(flat.shape[:2]))

    def _runs(self, block, *names_and_types):
        """Flat views of the first ``run_length`` wide cells of ``block`` in named buffers."""
        windows = self.windows
        length = windows.run_length(block)
        return [windows.wide(name, dtype)[block].reshape(-1)[:length]
                for name, dtype in names_and_types]

    def _forward_max(self, x, y, block):
        windows = self.windows
        phases = windows.load(x, block)
        index_type = self.argmax.dtype
        best, greater, chosen = self._runs(block, ("best", y.dtype), ("greater", np.bool_),
                                           ("chosen", index_type))
        argmax = self.argmax[block].reshape(-1)[:best.size]
        # Branch-free updates (masked copies are slow on random data): offsets come in
        # increasing k, so where a window value is strictly greater (the first maximum in
        # row-major order keeps the place, as Caffe), k is also the largest index so far.
        # Padding holds -inf: it never wins over a pixel.
        (first_k, a, b, offset), *rest = windows.taps
        np.copyto(best, phases[a, b].reshape(-1)[offset:offset + best.size])
        argmax.fill(first_k)
        for k, a, b, offset in rest:
            window = phases[a, b].reshape(-1)[offset:offset + best.size]
            np.greater(window, best, out=greater)
            np.maximum(best, window, out=best)
            np.multiply(greater, index_type.type(k), out=chosen)
            np.maximum(argmax, chosen, out=argmax)
        np.copyto(y, windows.wide("best", y.dtype)[block, :windows.out_h, :windows.out_w])
        if self.empty_windows is not None:
            y[:, self.empty_windows] = np.finfo(y.dtype).min

    def _index_type(self):
        return np.dtype(np.uint8 if self.kernel[0] * self.kernel[1] <= 256 else np.int32)

    def _forward_ave(self, x, y, block):
        windows = self.windows
        phases = windows.load(x, block)
        (total,) = self._runs(block, ("best", y.dtype))
        (_, a, b, offset), *rest = windows.taps
        np.copyto(total, phases[a, b].reshape(-1)[offset:offset + total.size])
        for _, a, b, offset in rest:
            np.add(total, phases[a, b].reshape(-1)[offset:offset + total.size], out=total)
        sums = windows.wide("best", y.dtype)[block, :windows.out_h, :windows.out_w]
        if self.uniform_size:
            np.multiply(sums, self.inv_pool_size[0, 0], out=y)
        else:
            np.multiply(sums, self.inv_pool_size[:windows.out_h, :windows.out_w], out=y)

    def _write_mask(self, shape, mask):
        """Caffe's top_mask: the flat input index ``h·W + w`` of each window's maximum."""
        width = shape[3]
        if self.params.global_pooling:
            mask[...] = self.argmax.reshape(mask.shape)
            return
        windows = self.windows
        argmax = self.argmax[:, :windows.out_h, :windows.out_w].reshape(mask.shape)
        kw = self.kernel[1]
        start_h, start_w = self.window_start
        rows = start_h[:, None] + argmax // kw
        cols = start_w[None, :] + argmax % kw
        np.add(rows * width, cols, out=mask, casting="unsafe")
        if self.empty_windows is not None:
            mask[..., self.empty_windows] = -1                      # Caffe's "no max"

    # ----- backward -----
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.params.global_pooling:
            flat_dx = dx.reshape(dx.shape[0], dx.shape[1], -1)
            flat_dy = dy.reshape(dx.shape[0], dx.shape[1], 1)
            if self.params.pool == "MAX":
                flat_dx.fill(0)
                np.put_along_axis(flat_dx, self.argmax[..., None], flat_dy, axis=2)
            else:
                np.multiply(flat_dy, 1.0 / flat_dx.shape[2], out=flat_dx)
            return
        windows = self.windows
        top_diffs = dy.reshape(-1, windows.out_h, windows.out_w)
        bottom_diffs = dx.reshape(-1, windows.height, windows.width)
        # dy on the wide grid: its extra cells are zeroed once, at allocation, and stay 0
        wide_dy = windows.wide("top_diff", dy.dtype, fill=0)

        def run(block):
            np.copyto(wide_dy[block, :windows.out_h, :windows.out_w], top_diffs[block])
            routed, share, picked = self._runs(block, ("top_diff", dy.dtype),
                                               ("share", dy.dtype), ("greater", np.bool_))
            if self.params.pool == "MAX":
                argmax = self.argmax[block].reshape(-1)[:routed.size]
            else:
                scale = self.inv_pool_size[0, 0] if self.uniform_size else self.inv_pool_size
                np.multiply(wide_dy[block], scale, out=windows.wide("share", dy.dtype)[block])
            phases = windows.phases("bottom_diff")[:, :, block]
            # A phase's first kernel offset is (a, b) itself, at offset 0: it writes the
            # phase's computed run (the tail beyond it is zeroed), later offsets add to it.
            written = np.zeros(phases.shape[:2], bool)
            for k, a, b, offset in windows.taps:
                flat = phases[a, b].reshape(-1)
                target = flat[offset:offset + routed.size]
                first = not written[a, b]
                if first:
                    assert offset == 0, "offsets come in row-major order"
                    flat[routed.size:] = 0
                    written[a, b] = True
                if self.params.pool == "MAX":
                    np.equal(argmax, k, out=picked)
                    np.multiply(routed, picked, out=target if first else share)
                    if not first:
                        np.add(target, share, out=target)
                elif first:
                    np.copyto(target, share)
                else:
                    np.add(target, share, out=target)
            phases[~written] = 0              # phases no window reads (kernel < stride)
            windows.store(phases, bottom_diffs[block])

        parallel_for(run, self.blocks, elements=dx.size)
