"""The smallest difference a cross-validation design detects, and the repeats that would help.

# NOTE [Detectable difference]
With ``J = k * R`` paired folds (``k`` folds, ``R`` repeats), ``r = n_test / n_train`` and a
standard deviation ``s`` of the fold differences ``d = B - A``, the corrected test uses
``se = s * sqrt(1/J + r)`` and ``df = J - 1``. Under a true difference ``delta`` its statistic is
modelled as non-central t with non-centrality ``delta / se``, so the two-sided test at level
``alpha`` has power ``P(|T'| > t_{1-alpha/2, df})``. The detectable difference is the ``delta``
at which that power reaches ``1 - beta`` (0.8): ``delta* = lambda*(df) * se`` with ``lambda*`` the
root of the power equation (computed with ``scipy.stats.nct``; close to
``t_{1-alpha/2, df} + t_{1-beta, df}``). Repeats raise ``J`` and so shrink only the ``1/J`` term:
as ``R -> inf`` the detectable difference falls to ``(z_{1-alpha/2} + z_{1-beta}) * s * sqrt(r)``,
so when ``r`` dominates more repeats cannot help and only more data (a larger ``n_train``, and
a smaller ``s``) can. ``s`` is estimated from the run at hand (a pilot); repeats of the same data
do not reduce the spread that comes from the data set itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from numpy.typing import ArrayLike
from scipy import optimize, stats

from calipers._checks import _check_positive_int
from calipers.stats.paired import _level_iv, _pair_iv, _ratio_iv

__all__ = ["PowerAnalysis", "detectable_difference", "power_analysis", "repeats_needed"]

_MAX_REPEATS = 1000


@lru_cache(maxsize=4096)
def _noncentrality(df: float, alpha: float, power: float) -> float:
    """``lambda`` with ``P(|T'_{df, lambda}| > t_{1-alpha/2, df}) = power`` (df = inf: normal)."""
    with warnings.catch_warnings():  # Boost's series warn far out in the tails; handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        return _solve_noncentrality(df, alpha, power)


def _solve_noncentrality(df: float, alpha: float, power: float) -> float:
    if math.isinf(df):
        crit = float(stats.norm.isf(alpha / 2))

        def excess(lam: float) -> float:
            return float(stats.norm.sf(crit - lam) + stats.norm.cdf(-crit - lam)) - power
    else:
        crit = float(stats.t.isf(alpha / 2, df))

        def excess(lam: float) -> float:  # far tails can come back NaN: ~0, or normal approx.
            low, up = float(stats.nct.cdf(-crit, df, lam)), float(stats.nct.sf(crit, df, lam))
            up = float(stats.norm.sf(crit - lam)) if math.isnan(up) else up
            return up + (0.0 if math.isnan(low) else low) - power

    if not 0 < crit < math.inf:  # alpha below what floating point resolves
        return math.inf

    if excess(0.0) >= 0:  # power <= alpha: any difference "detected"
        return 0.0
    hi = 1.0
    while excess(hi) < 0:
        hi *= 2
        if hi > 1e6:
            return math.inf
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-10))


def _detectable(std: float, n_folds: int, n_repeats: float, ratio: float, alpha: float,
                power: float) -> float:
    j = n_folds * n_repeats
    if math.isinf(j):
        return _noncentrality(math.inf, alpha, power) * std * math.sqrt(ratio)
    return _noncentrality(float(j - 1), alpha, power) * std * math.sqrt(1.0 / j + ratio)


def _design_iv(std_diff, n_folds, ratio, alpha, power):
    ok = isinstance(std_diff, (int, float)) and not isinstance(std_diff, bool)
    if not ok or not math.isfinite(std_diff) or std_diff < 0:
        raise ValueError(f"std_diff must be a finite number >= 0 (the sample std of B - A over "
                         f"folds, metric units); got {std_diff!r}.")  # fmt: skip
    n_folds = _check_positive_int(n_folds, name="n_folds", minimum=2,
                                  fix="A comparison needs at least 2 folds per repeat.")
    return (float(std_diff), n_folds, _ratio_iv(ratio), _level_iv(alpha, name="alpha",
            example=0.05), _level_iv(power, name="power", example=0.8))  # fmt: skip


def detectable_difference(
    std_diff: float,
    *,
    n_folds: int,
    n_repeats: int = 1,
    test_train_ratio: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Smallest true difference the corrected t-test detects with the given power.

    See NOTE [Detectable difference].

    Parameters
    ----------
    std_diff : float
        Sample std (ddof = 1) of the fold differences ``B - A``, metric units.
    n_folds : int
        Folds per repeat, ``k >= 2``.
    n_repeats : int, default 1
        Repeats ``R``; ``J = k * R``.
    test_train_ratio : float
        ``n_test / n_train`` of one fold.
    alpha : float, default 0.05
        Two-sided level of the test.
    power : float, default 0.8

    Returns
    -------
    float
        The detectable difference, metric units (>= 0).
    """
    std, k, ratio, alpha, power = _design_iv(std_diff, n_folds, test_train_ratio, alpha, power)
    reps = _check_positive_int(n_repeats, name="n_repeats")
    return _detectable(std, k, reps, ratio, alpha, power)


def _repeats_needed(std, k, ratio, alpha, power, target) -> int | None:
    if _detectable(std, k, 1, ratio, alpha, power) <= target:
        return 1
    if _detectable(std, k, math.inf, ratio, alpha, power) >= target:
        return None  # the n_test / n_train term alone is too large
    lo, hi = 1, 2
    while _detectable(std, k, hi, ratio, alpha, power) > target:
        lo, hi = hi, hi * 2
        if hi > _MAX_REPEATS:
            return None if _detectable(std, k, _MAX_REPEATS, ratio, alpha, power) > target \
                else _bisect(std, k, ratio, alpha, power, target, lo, _MAX_REPEATS)
    return _bisect(std, k, ratio, alpha, power, target, lo, hi)


def _bisect(std, k, ratio, alpha, power, target, lo: int, hi: int) -> int:
    """Smallest R in (lo, hi] with detectable(R) <= target (detectable(lo) > target)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _detectable(std, k, mid, ratio, alpha, power) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def repeats_needed(
    std_diff: float,
    target: float,
    *,
    n_folds: int,
    test_train_ratio: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int | None:
    """Fewest repeats of k-fold CV whose detectable difference is at most ``target``.

    Returns
    -------
    int or None
        ``R >= 1``; None when no number of repeats (up to 1000) gets there, i.e. when the
        ``n_test / n_train`` term alone keeps the detectable difference above ``target``: more
        data is needed, not more repeats.
    """
    std, k, ratio, alpha, power = _design_iv(std_diff, n_folds, test_train_ratio, alpha, power)
    ok = isinstance(target, (int, float)) and not isinstance(target, bool)
    if not ok or not math.isfinite(target) or target <= 0:
        raise ValueError(f"target must be a finite difference > 0 (metric units); got {target!r}.")
    return _repeats_needed(std, k, ratio, alpha, power, float(target))


@dataclass(frozen=True)
class PowerAnalysis:
    """Detectable differences of a design for several repeat counts (metric units)."""

    std_diff: float  # s, sample std of B - A over the pilot's folds
    n_folds: int  # k
    test_train_ratio: float  # r
    alpha: float
    power: float
    repeats: tuple[int, ...]
    detectable: tuple[float, ...]  # one per entry of repeats
    limit: float  # detectable difference as repeats -> infinity
    repeat_share: float  # (1/k) / (1/k + r): share of se^2 one repeat's 1/J term makes up

    def to_dict(self) -> dict[str, Any]:
        """Plain fields; ``rows`` pairs each repeat count with its detectable difference."""
        return {
            "std_diff": self.std_diff, "n_folds": self.n_folds,
            "test_train_ratio": self.test_train_ratio, "alpha": self.alpha, "power": self.power,
            "rows": [{"n_repeats": r, "n_splits": r * self.n_folds, "detectable": d}
                     for r, d in zip(self.repeats, self.detectable, strict=True)],
            "limit": self.limit, "repeat_share": self.repeat_share,
        }  # fmt: skip


def _analysis(std, k, ratio, alpha, power, repeats: Sequence[int]) -> PowerAnalysis:
    det = tuple(_detectable(std, k, r, ratio, alpha, power) for r in repeats)
    limit = _detectable(std, k, math.inf, ratio, alpha, power)
    share = (1.0 / k) / (1.0 / k + ratio)
    return PowerAnalysis(std, k, ratio, alpha, power, tuple(repeats), det, limit, share)


def power_analysis(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    n_folds: int,
    test_train_ratio: float,
    repeats: Sequence[int] = (1, 3, 5, 10),
    alpha: float = 0.05,
    power: float = 0.8,
) -> PowerAnalysis:
    """Detectable difference for 1, 3, 5, 10 repeats, from a finished run used as a pilot.

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,)
        The pilot's paired fold scores (``J >= 2``); only the std of ``B - A`` is used.
    n_folds : int
        Folds per repeat ``k`` of the planned design.
    test_train_ratio : float
        ``n_test / n_train`` of one fold.
    repeats : sequence of int, default (1, 3, 5, 10)
    alpha, power : float
        Two-sided level and target power.

    Returns
    -------
    PowerAnalysis
    """
    a, b = _pair_iv(scores_a, scores_b, ("scores_a", "scores_b"))
    std = float((b - a).std(ddof=1))
    std, k, ratio, alpha, power = _design_iv(std, n_folds, test_train_ratio, alpha, power)
    reps = tuple(_check_positive_int(r, name="repeats[i]") for r in repeats)
    if not reps:
        raise ValueError("repeats must list at least one repeat count, e.g. (1, 3, 5, 10).")
    return _analysis(std, k, ratio, alpha, power, reps)
