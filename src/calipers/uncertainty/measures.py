"""The uncertainty measures of MC dropout, written once (Gal & Ghahramani 2016; design §4).

Classification, from per-pass probabilities ``p_t``:

* predictive entropy ``H[p̄] = −Σ_c p̄_c log p̄_c`` of the mean ``p̄ = mean_t p_t`` (nats);
* expected entropy ``mean_t H[p_t]``;
* mutual information (BALD) ``H[p̄] − mean_t H[p_t]``, clipped at 0;
* per-class standard deviation of ``p_t`` (ddof = 0).

Regression, from per-pass outputs ``ŷ_t`` and the model precision τ:

* predictive mean ``mean_t ŷ_t`` and variance ``1/τ + var_t ŷ_t``;
* test log likelihood ``logsumexp_t(−τ/2·‖y − ŷ_t‖²) − log T − D/2·log 2π + D/2·log τ``.

The public functions take NumPy arrays and check them; the ``torch_*`` kernels and
:func:`mc_log_likelihood` take tensors (or arrays) the caller has already checked, and are what
``mc_predict``, the stacked engine (``calipers.batched``) and the voxel maps
(``calipers.segmentation.maps``) reduce with. Means and variances over passes come from
:class:`calipers.uncertainty.streaming.StreamingMoments`.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.special import logsumexp, xlogy

from calipers._checks import _check_finite

__all__ = [
    "gaussian_log_kernel", "mc_log_likelihood", "mutual_information", "predictive_entropy",
    "predictive_variance", "regression_log_likelihood", "torch_entropy", "torch_mutual_info",
]

_A = TypeVar("_A", np.ndarray, torch.Tensor)


# --------------------------------------------------------------------------- kernels


def torch_entropy(p: torch.Tensor, *, dim: int) -> torch.Tensor:
    """``−Σ p log p`` over ``dim`` in nats, with ``0 log 0 = 0`` (no checks)."""
    return -torch.special.xlogy(p, p).sum(dim)


def torch_mutual_info(entropy: torch.Tensor, expected_entropy: torch.Tensor) -> torch.Tensor:
    """BALD ``H[p̄] − mean_t H[p_t]`` clipped at 0 (rounding can make it slightly negative)."""
    return (entropy - expected_entropy).clamp_min(0.0)


def predictive_variance(var_mc: _A, tau: float | _A | None) -> _A:
    """Regression predictive variance ``1/τ + var_t ŷ_t``; ``var_mc`` alone when τ is None."""
    return var_mc if tau is None else var_mc + 1.0 / tau


def gaussian_log_kernel(y: _A, samples: _A, tau: float | _A, *, event_dims: int = 1) -> _A:
    """``−τ/2·‖y − ŷ_t‖²``, the squared norm over the last ``event_dims`` axes (0: scalars).

    ``y`` broadcasts against ``samples`` (e.g. ``(N, D)`` against ``(T, N, D)``); the result has
    the broadcast shape without the event axes. NumPy arrays or tensors.
    """
    r = y - samples
    sq = r * r
    return -0.5 * tau * sq.reshape(*sq.shape[:sq.ndim - event_dims], -1).sum(-1)


def mc_log_likelihood(lse: _A, *, n_mc: int, tau: float, n_outputs: int) -> _A:
    """``lse − log T − D/2·log 2π + D/2·log τ``, given ``lse = logsumexp_t(−τ/2·‖y − ŷ_t‖²)``.

    The log density of ``y`` under the mixture of the T Gaussians ``N(ŷ_t, I/τ)`` in ``D =
    n_outputs`` dimensions (Gal & Ghahramani 2016, eq. 8); nats, higher is better.
    """
    d = n_outputs
    return lse - math.log(n_mc) - 0.5 * d * math.log(2 * math.pi) + 0.5 * d * math.log(tau)


# --------------------------------------------------------------------------- public, checked


def _check_proba(p: ArrayLike, *, name: str) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    _check_finite(arr, name=name)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0 + 1e-6):
        raise ValueError(
            f"{name} must hold probabilities in [0, 1]; got values from {arr.min():.4g} to "
            f"{arr.max():.4g}. Pass softmax(logits), not logits."
        )
    return arr


def predictive_entropy(proba: ArrayLike, *, axis: int = -1) -> np.ndarray:
    """Entropy ``H[p] = −Σ_c p_c log p_c`` in nats, with ``0 log 0 = 0``.

    Parameters
    ----------
    proba : array_like of shape (..., C)
        Probabilities, classes on ``axis``.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray of shape ``proba.shape`` without ``axis``, float64
        0 for a one-hot vector, ``log C`` for the uniform distribution.
    """
    p = _check_proba(proba, name="proba")
    return -np.sum(xlogy(p, p), axis=axis)


def mutual_information(samples: ArrayLike, *, axis: int = -1) -> np.ndarray:
    """BALD mutual information ``H[mean_t p_t] − mean_t H[p_t]`` in nats, clipped at 0.

    Parameters
    ----------
    samples : array_like of shape (T, ..., C)
        Per-pass probabilities, passes on axis 0, classes on ``axis``.
    axis : int, default -1
        The class axis of ``samples`` (not 0).

    Returns
    -------
    ndarray of shape ``samples.shape`` without axes 0 and ``axis``
        0 when all passes agree; at most ``log C``.
    """
    s = _check_proba(samples, name="samples")
    if s.ndim < 2:
        raise ValueError(
            f"samples must have shape (T, ..., C) with passes on axis 0; got shape {s.shape}."
        )
    ax = axis + s.ndim if axis < 0 else axis
    if not 0 < ax < s.ndim:
        raise ValueError(
            f"axis must name the class axis of samples (T, ..., C), one of 1..{s.ndim - 1} or "
            f"-{s.ndim - 1}..-1; got {axis} (axis 0 holds the passes)."
        )
    expected = predictive_entropy(s, axis=ax).mean(axis=0)
    total = predictive_entropy(s.mean(axis=0), axis=ax - 1)
    return np.maximum(total - expected, 0.0)


def _check_tau(tau: object, *, allow_none: bool) -> float | None:
    if tau is None and allow_none:
        return None
    ok = isinstance(tau, (int, float, np.integer, np.floating)) and not isinstance(tau, bool)
    if not ok or not math.isfinite(float(tau)) or float(tau) <= 0:
        raise ValueError(
            f"tau must be a positive finite precision (1 / noise variance, in 1/target units²); "
            f"got {tau!r}. Gal & Ghahramani set τ = p·l² / (2·N·λ) or tune it on validation data."
        )
    return float(tau)


def regression_log_likelihood(samples: ArrayLike, y: ArrayLike, tau: float) -> np.ndarray:
    """Per-sample test log likelihood of MC-dropout regression (Gal & Ghahramani 2016, eq. 8).

    ``ll = logsumexp_t(−τ/2·‖y − ŷ_t‖²) − log T − D/2·log 2π + D/2·log τ``: the log density of
    ``y`` under the mixture of T Gaussians ``N(ŷ_t, I/τ)``; ``D`` is the number of outputs.

    Parameters
    ----------
    samples : array_like of shape (T, N) or (T, N, *D)
        Per-pass predictions ``ŷ_t``.
    y : array_like of shape (N,) or (N, *D)
        Targets, same units as ``samples``.
    tau : float
        Model precision τ > 0.

    Returns
    -------
    ndarray of shape (N,)
        Log likelihood per sample, nats; higher is better.
    """
    s = np.asarray(samples, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    tau = _check_tau(tau, allow_none=False)
    if t.ndim < 1 or s.shape[1:] != t.shape or s.shape[0] < 1:
        raise ValueError(
            f"samples must have shape (T, *y.shape) = (T, {', '.join(map(str, t.shape))}) with "
            f"T >= 1; got samples of shape {s.shape} and y of shape {t.shape}."
        )
    _check_finite(s, name="samples")
    _check_finite(t, name="y")
    kernel = gaussian_log_kernel(t[None], s, tau, event_dims=t.ndim - 1)
    d = int(np.prod(t.shape[1:], dtype=np.int64))
    return mc_log_likelihood(logsumexp(kernel, axis=0), n_mc=s.shape[0], tau=tau, n_outputs=d)
