"""NOTE [Streaming moments]: the one streaming mean/variance against NumPy, on chunked data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.special import logsumexp

from calipers.uncertainty import StreamingLogSumExp, StreamingMoments


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _stream(x: np.ndarray, sizes, *, dim: int = 0) -> StreamingMoments:
    acc = StreamingMoments(dim=dim)
    lo = 0
    for k in sizes:
        acc.add(torch.from_numpy(x).narrow(dim, lo, k))
        lo += k
    assert lo == x.shape[dim]
    return acc


def _raw_sums(x: np.ndarray, sizes) -> np.ndarray:
    """The naive streaming formula E[v²] − E[v]² from running Σv and Σv² (what we replaced)."""
    s1 = s2 = 0.0
    lo = 0
    for k in sizes:
        c = x[lo:lo + k]
        s1, s2, lo = s1 + c.sum(0), s2 + (c * c).sum(0), lo + k
    n = x.shape[0]
    return s2 / n - (s1 / n) ** 2


SIZES = [[60], [1] * 60, [7] * 8 + [4], [13, 1, 29, 17]]


@pytest.mark.parametrize("sizes", SIZES)
def test_equals_numpy_on_chunks(rng, sizes):
    x = rng.normal(2.0, 3.0, size=(60, 5, 4))
    acc = _stream(x, sizes)
    assert acc.n == 60
    assert_allclose(acc.mean.numpy(), x.mean(0), rtol=1e-13, atol=1e-14)
    assert_allclose(acc.var.numpy(), x.var(0), rtol=1e-12)
    assert_allclose(acc.std.numpy(), x.std(0), rtol=1e-12)


def test_passes_on_another_axis(rng):
    x = rng.normal(size=(3, 40, 6))  # (members, passes, n): the stacked engine's layout
    acc = _stream(x, [16, 16, 8], dim=1)
    assert_allclose(acc.mean.numpy(), x.mean(1), rtol=1e-13, atol=1e-14)
    assert_allclose(acc.var.numpy(), x.var(1), rtol=1e-12)


@pytest.mark.parametrize("offset", [1e6, 1e8])
def test_large_offset_where_raw_sums_fail(rng, offset):
    """Values 1e6 + noise: Σv² − (Σv)²/n cancels every digit; ours keeps ~full precision."""
    noise = rng.normal(0.0, 1e-2, size=(200, 50))
    x = offset + noise
    # reference: x − offset is exact (Sterbenz), so a two-pass variance of it is accurate
    ref_var = np.var(x - offset, axis=0)
    ref_mean = offset + np.mean(x - offset, axis=0)
    sizes = [16] * 12 + [8]
    naive = _raw_sums(x, sizes)
    assert np.max(np.abs(naive - ref_var) / ref_var) > 1e-2  # the naive formula fails
    acc = _stream(x, sizes)
    assert_allclose(acc.var.numpy(), ref_var, rtol=1e-9)  # ours does not
    assert_allclose(acc.mean.numpy(), ref_mean, rtol=1e-15)


def test_identical_passes_give_exact_zero(rng):
    x = np.broadcast_to(rng.normal(size=(1, 8)) * 1e5, (30, 8)).copy()
    acc = _stream(x, [7, 7, 7, 9])
    assert (acc.var.numpy() == 0).all()
    assert_allclose(acc.mean.numpy(), x[0], rtol=0)


def test_merge_equals_one_stream(rng):
    x = 50.0 + rng.normal(size=(90, 7))
    whole = _stream(x, [90])
    a, b = _stream(x[:35], [10, 25]), _stream(x[35:], [5] * 11)  # different shifts
    a.merge(b)
    assert a.n == 90
    assert_allclose(a.mean.numpy(), whole.mean.numpy(), rtol=1e-14)
    assert_allclose(a.var.numpy(), whole.var.numpy(), rtol=1e-11)
    empty = StreamingMoments()
    empty.merge(a)
    assert_allclose(empty.var.numpy(), a.var.numpy(), rtol=0)


def test_float32_chunks(rng):
    x = rng.uniform(size=(40, 3, 16, 16)).astype(np.float32)  # probabilities, voxel maps
    acc = _stream(x, [3] * 13 + [1])
    assert acc.mean.dtype == torch.float32
    assert_allclose(acc.mean.numpy(), x.astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
    assert_allclose(acc.var.numpy(), x.astype(np.float64).var(0), rtol=1e-5, atol=1e-7)


def test_mean_only_and_empty():
    acc = StreamingMoments(variance=False)
    with pytest.raises(ValueError, match="no passes were added"):
        _ = acc.mean
    acc.add(torch.ones(3, 2))
    assert acc.mean.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="mean only.*variance=True"):
        _ = acc.var


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_streaming_logsumexp(rng, scale):
    a = -scale * rng.uniform(size=(45, 6))  # large magnitudes: exp underflows without care
    acc = StreamingLogSumExp()
    for lo in range(0, 45, 10):
        acc.add(torch.from_numpy(a[lo:lo + 10]))
    assert acc.n == 45
    assert_allclose(acc.value.numpy(), logsumexp(a, axis=0), rtol=1e-13)
    other = StreamingLogSumExp()
    other.add(torch.from_numpy(a))
    half = StreamingLogSumExp()
    half.add(torch.from_numpy(a[:20]))
    rest = StreamingLogSumExp()
    rest.add(torch.from_numpy(a[20:]))
    half.merge(rest)
    assert_allclose(half.value.numpy(), other.value.numpy(), rtol=1e-13)
