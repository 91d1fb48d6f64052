"""Blob diffs cleared lazily, and the accumulation helpers that write over a cleared diff."""

import numpy as np

from solverkit.blob import Blob
from solverkit.layers.base import accumulate_matmul, accumulate_sum


def _blob_with_diff(shape, value):
    blob = Blob(shape)
    blob.diff[...] = value
    return blob


def test_cleared_diff_reads_as_zeros_and_reports_no_values():
    blob = _blob_with_diff((3, 4), 7.0)
    assert blob.has_diff
    blob.clear_diff()
    assert not blob.has_diff
    np.testing.assert_array_equal(blob.diff, np.zeros((3, 4), np.float32))
    assert blob.has_diff


def test_accumulate_matmul_overwrites_a_cleared_diff_and_adds_otherwise():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal((5, 4)).astype(np.float32)
    blob = _blob_with_diff((3, 4), 7.0)
    blob.clear_diff()
    accumulate_matmul(blob, a, b)          # stale 7s must not leak in
    np.testing.assert_allclose(blob.diff, a @ b, rtol=1e-6)
    accumulate_matmul(blob, a, b)          # a second pass sums (iter_size, shared weights)
    np.testing.assert_allclose(blob.diff, 2 * (a @ b), rtol=1e-6)


def test_accumulate_matmul_views_a_4d_weight_diff_as_a_matrix():
    a = np.ones((2, 3), np.float32)
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = _blob_with_diff((2, 1, 2, 2), 1.0)        # a convolution weight's shape
    accumulate_matmul(blob, a, b)
    np.testing.assert_allclose(blob.diff.reshape(2, 4), 1.0 + a @ b)


def test_accumulate_sum_overwrites_a_cleared_diff_and_adds_otherwise():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    blob = _blob_with_diff((3,), -5.0)
    blob.clear_diff()
    accumulate_sum(blob, x, axis=0)
    np.testing.assert_array_equal(blob.diff, x.sum(axis=0))
    accumulate_sum(blob, x, axis=0)
    np.testing.assert_array_equal(blob.diff, 2 * x.sum(axis=0))


def test_a_new_diff_after_reshape_is_zero_even_when_cleared_before():
    blob = _blob_with_diff((2, 2), 3.0)
    blob.clear_diff()
    blob.reshape((3, 3))
    np.testing.assert_array_equal(blob.diff, np.zeros((3, 3), np.float32))
