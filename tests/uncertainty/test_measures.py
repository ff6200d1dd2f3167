"""The one implementation of each uncertainty measure against independent reference formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from numpy.testing import assert_allclose

from calipers.uncertainty import (
    StreamingLogSumExp,
    gaussian_log_kernel,
    mc_log_likelihood,
    mutual_information,
    predictive_entropy,
    predictive_variance,
    regression_log_likelihood,
    torch_entropy,
    torch_mutual_info,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _dirichlet(rng, shape, n_classes, alpha=0.5):
    p = rng.dirichlet(np.full(n_classes, alpha), size=shape)
    p[..., 0][p[..., 0] < 0.05] = 0.0  # exact zeros: 0 log 0 = 0
    return p / p.sum(-1, keepdims=True)


@pytest.mark.parametrize("n_classes", [2, 5, 10])
def test_entropy_equals_scipy(rng, n_classes):
    p = _dirichlet(rng, (40,), n_classes)
    ref = scipy.stats.entropy(p, axis=-1)  # natural log
    assert_allclose(predictive_entropy(p), ref, rtol=1e-12, atol=1e-15)
    # classes on axis 1 of (N, C, H, W), as for segmentation logits
    q = np.moveaxis(_dirichlet(rng, (3, 4, 6), n_classes), -1, 1)
    assert_allclose(predictive_entropy(q, axis=1), scipy.stats.entropy(q, axis=1), rtol=1e-12)
    assert_allclose(torch_entropy(torch.from_numpy(q), dim=1).numpy(),
                    scipy.stats.entropy(q, axis=1), rtol=1e-12, atol=1e-15)


def test_entropy_known_values():
    assert predictive_entropy([1.0, 0.0, 0.0]) == 0.0
    assert predictive_entropy(np.full(7, 1 / 7)) == pytest.approx(math.log(7), rel=1e-14)
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\].*softmax"):
        predictive_entropy([2.0, -1.0])


def test_mutual_information_equals_hand_computation(rng):
    T, N, C = 9, 30, 4
    s = _dirichlet(rng, (T, N), C)
    hand = np.empty(N)
    for i in range(N):  # H[mean_t p_t] − mean_t H[p_t], one sample at a time, with SciPy
        total = scipy.stats.entropy(s[:, i].mean(axis=0))
        expected = np.mean([scipy.stats.entropy(s[t, i]) for t in range(T)])
        hand[i] = total - expected
    assert (hand > 0).all()  # Jensen: the passes disagree
    assert_allclose(mutual_information(s), hand, rtol=1e-10, atol=1e-14)
    h_mean = torch_entropy(torch.from_numpy(s.mean(0)), dim=-1)
    h_exp = torch_entropy(torch.from_numpy(s), dim=-1).mean(0)
    assert_allclose(torch_mutual_info(h_mean, h_exp).numpy(), hand, rtol=1e-10, atol=1e-14)


def test_mutual_information_zero_when_passes_agree(rng):
    p = _dirichlet(rng, (6,), 3)
    s = np.broadcast_to(p, (5, 6, 3))
    assert_allclose(mutual_information(s), 0.0, atol=1e-15)
    # rounding may make H[p̄] − mean H slightly negative: the kernel clips at 0
    assert torch_mutual_info(torch.tensor([1.0]), torch.tensor([1.0 + 1e-15])).item() == 0.0


def _ll_reference(samples, y, tau):
    """Direct NumPy: logsumexp by hand (max trick), per sample."""
    T = samples.shape[0]
    d = int(np.prod(y.shape[1:]))
    a = -0.5 * tau * ((y[None] - samples) ** 2).reshape(T, len(y), -1).sum(-1)
    m = a.max(axis=0)
    lse = m + np.log(np.exp(a - m).sum(axis=0))
    return lse - np.log(T) - 0.5 * d * np.log(2 * np.pi) + 0.5 * d * np.log(tau)


@pytest.mark.parametrize("out_shape", [(), (1,), (3,)])
def test_regression_log_likelihood_equals_direct_numpy(rng, out_shape):
    T, N, tau = 50, 20, 3.5
    y = rng.normal(size=(N, *out_shape))
    s = y[None] + rng.normal(scale=0.7, size=(T, N, *out_shape))
    ref = _ll_reference(s, y, tau)
    assert_allclose(regression_log_likelihood(s, y, tau), ref, rtol=1e-12)
    # T = 1 is one Gaussian: the log density of N(ŷ, I/τ)
    one = scipy.stats.norm.logpdf(y, s[0], 1 / math.sqrt(tau)).reshape(N, -1).sum(-1)
    assert_allclose(regression_log_likelihood(s[:1], y, tau), one, rtol=1e-12)


def test_streamed_log_likelihood_equals_one_shot(rng):
    """The engines' path: kernel per chunk, streaming logsumexp, then the constants."""
    T, N, D, tau = 37, 15, 2, 0.8
    y = rng.normal(size=(N, D))
    s = y[None] + rng.normal(scale=2.0, size=(T, N, D))
    acc = StreamingLogSumExp()
    for lo in range(0, T, 8):
        acc.add(gaussian_log_kernel(torch.from_numpy(y), torch.from_numpy(s[lo:lo + 8]), tau))
    assert acc.n == T
    ll = mc_log_likelihood(acc.value, n_mc=T, tau=tau, n_outputs=D).numpy()
    assert_allclose(ll, _ll_reference(s, y, tau), rtol=1e-12)


def test_gaussian_log_kernel_event_dims(rng):
    y = rng.normal(size=(4, 2, 3))
    s = rng.normal(size=(5, 4, 2, 3))
    k = gaussian_log_kernel(y[None], s, 2.0, event_dims=2)
    assert k.shape == (5, 4)
    assert_allclose(k, -1.0 * ((y[None] - s) ** 2).sum(axis=(2, 3)), rtol=1e-14)
    assert_allclose(gaussian_log_kernel(y[None], s, 2.0, event_dims=0), -((y[None] - s) ** 2))


def test_predictive_variance():
    v = np.array([0.5, 2.0])
    assert_allclose(predictive_variance(v, 4.0), v + 0.25)
    assert predictive_variance(v, None) is v
    t = torch.tensor([0.5, 2.0])
    tau = torch.tensor([2.0, 4.0])
    assert_allclose(predictive_variance(t, tau).numpy(), [1.0, 2.25])
