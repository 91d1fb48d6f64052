"""Array kernels of the vision layers: im2col/col2im, kernel rows, pooling phases.

These work on plain arrays of one shape and know nothing of layers or parameters:

- ``Im2col``: Caffe's column matrix of a block of images, and its adjoint (col2im), also
  with the batch innermost (``col2im_batch_last``) for convolution's backward pass;
- ``KernelRows``: the columns of a convolution with vertical stride 1, only the kernel's
  horizontal taps unrolled (1/kh of the column matrix);
- ``PoolingWindows``: a pooling input split into its stride phases, after which every
  kernel offset is one contiguous slice.

Every large temporary lives in a ``Buffers`` entry that is reused while the shape stays,
so a training step allocates no big arrays. The copies and element-wise passes run on the
intra-op threads (threads.py), each block writing only its own outputs.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import threads
from ..threads import parallel_for, split

# Blocks of samples (im2col's copies) and of images (pooling) of about this many input
# bytes: they stay in a core's cache while they are read several times.
CACHE_BLOCK_BYTES = 1 << 20

class Buffers:
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
        self._buffers = Buffers()

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
        self._buffers = Buffers()

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
        self._buffers = Buffers()
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
