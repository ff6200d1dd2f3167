"""Paired tests of two networks scored on the same folds: corrected t, McNemar, fold win rate, Holm.

Scores come per fold: ``J = n_folds * n_repeats`` values per network, where value ``j`` of every
network was measured on the same test fold ``j``. Differences are always ``B - A`` (the second
network minus the first), in the metric's units. :mod:`calipers.stats.compare` builds the verdict on
these tests.

# NOTE [Corrected resampled t]
Cross-validation folds share most of their training data, so fold scores are correlated and the
plain paired t-test is anti-conservative. Nadeau & Bengio [1]_ inflate the variance of the mean
difference from ``var(d)/J`` to ``(1/J + n_test/n_train) * var(d)``; calipers reports only this
corrected test (``test_train_ratio = 0`` gives the plain paired t, for checking). The same
factor widens the interval of one network's mean (:func:`describe_scores`).

# NOTE [Bounded intervals]
Scores bounded on both sides (accuracy, ECE, Dice in [0, 1]; Brier in [0, 2]) get their interval
on the logit scale, so it lies inside the bounds by construction instead of being clipped:
``x = (s - low) / (high - low)`` is moved off the bounds by the empirical-logit shift
``x' = (x * n + 1/2) / (n + 1)`` (n = test samples per fold, 10 000 when unknown), ``z = logit x'``,
the corrected t interval ``mean(z) ± t_{J-1} sqrt((1/J + r) var(z))`` is computed and mapped back
through the logistic function and the inverse shift ``x = (x' (n + 1) - 1/2) / n`` (clipped to
[0, 1]); without undoing the shift, a few test volumes per fold (n = 6) would pull the limits
towards 1/2, below a mean Dice of 0.94.
The interval is then asymmetric about the mean where the scores crowd a bound (a mean accuracy
of 99 % cannot have an upper limit above 100 %); the reported mean stays the plain mean of the
scores. Scores that are all equal give the interval ``[mean, mean]``.

# NOTE [Relative ties]
Two values are tied when ``|x - y| <= 1e-12 * max(|x|, |y|)`` (scaled to the scores compared),
so the verdict's ties, the win rate's ties and the constant-difference case of the t-test all
use one relative tolerance, whatever the metric's units.

References
----------
.. [1] Nadeau, C. and Bengio, Y. "Inference for the generalization error", Machine Learning 52,
   239-281, 2003.
.. [2] McNemar, Q. "Note on the sampling error of the difference between correlated proportions
   or percentages", Psychometrika 12, 153-157, 1947.
.. [3] Holm, S. "A simple sequentially rejective multiple test procedure", Scandinavian Journal
   of Statistics 6, 65-70, 1979.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

from calipers._checks import _check_finite, _check_positive_int, _look_up_option
from calipers.exceptions import FoldMismatchError

__all__ = [
    "Interval",
    "McNemarResult",
    "PairedResult",
    "ScoreSummary",
    "WinRate",
    "corrected_ttest",
    "describe_scores",
    "fold_win_rate",
    "holm",
    "mcnemar_test",
]

_ALTERNATIVES = ("two-sided", "less", "greater")
_EXACT_BELOW = 25  # McNemar: exact binomial test when b + c < 25
_RTOL = 1e-12  # NOTE [Relative ties]
_UNKNOWN_N_TEST = 10_000  # NOTE [Bounded intervals]


class Interval(NamedTuple):
    """A confidence interval ``(low, high)``; unpacks like a tuple."""

    low: float
    high: float


def _tied(x: float, y: float) -> bool:
    """Equal up to rounding (NOTE [Relative ties])."""
    return abs(x - y) <= _RTOL * max(abs(x), abs(y))


def _is_zero(value: float, *arrays: np.ndarray) -> bool:
    """``|value|`` is rounding noise relative to the largest ``|score|`` (NOTE [Relative ties])."""
    return abs(value) <= _RTOL * max(float(np.abs(x).max()) for x in arrays)


def _plain(x: float | None) -> float | None:
    """Float for JSON; NaN and infinities become ``None`` so the output is strict JSON."""
    return None if x is None or not math.isfinite(x) else float(x)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _scores_iv(scores: ArrayLike, *, name: str) -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 1-D array of numbers, one per fold.") from None
    if s.ndim != 1:
        raise ValueError(
            f"{name} must have shape (n_folds * n_repeats,); got shape {s.shape}. "
            f"Flatten (n_repeats, n_folds) scores with np.ravel, the same way for every network."
        )
    if s.size < 2:
        raise ValueError(
            f"{name} must hold at least 2 fold scores; got {s.size}. Use n_folds >= 2."
        )
    _check_finite(s, name=name)
    return s


def _pair_iv(scores_a: ArrayLike, scores_b: ArrayLike, names: tuple[str, str]):
    a = _scores_iv(scores_a, name=names[0])
    b = _scores_iv(scores_b, name=names[1])
    if a.shape != b.shape:
        raise FoldMismatchError(
            f"{names[0]} has {a.size} fold scores but {names[1]} has {b.size}; paired tests need "
            f"one score per fold for both, measured on the same folds."
        )
    return a, b


def _level_iv(value: float, *, name: str = "confidence_level", example: float = 0.95) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), e.g. {example}; got {value!r}.")
    return float(value)


def _ratio_iv(value: float) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"test_train_ratio must be a finite number >= 0 (n_test / n_train); got {value!r}. "
            f"For k-fold CV pass 1 / (k - 1), e.g. 1/9 for 10 folds."
        )
    return float(value)


# --------------------------------------------------------------------------------------------
# One network
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreSummary:
    """Mean, spread and corrected confidence interval of one network's fold scores.

    ``ci_low``/``ci_high`` account for overlapping training sets (NOTE [Corrected resampled t])
    and, for bounded metrics, respect the bounds (NOTE [Bounded intervals]); ``ci_naive`` is
    the textbook ``mean ± t_{J-1} std / sqrt(J)``, kept only for reference: it treats the folds
    as independent and is too narrow.
    """

    mean: float
    std: float  # sample std, ddof = 1
    ci_low: float
    ci_high: float
    n: int  # J, the number of fold scores
    folds: tuple[float, ...]
    ci_naive: tuple[float, float] = (math.nan, math.nan)
    method: str = "t"  # "corrected t", "corrected t on the logit scale", or "t" (ratio 0)

    def to_dict(self) -> dict[str, Any]:
        """``{mean, std, ci_low, ci_high, folds, ci_method, ci_naive}`` as plain floats."""
        out = {k: getattr(self, k) for k in ("mean", "std", "ci_low", "ci_high")}
        return {**out, "folds": list(self.folds), "ci_method": self.method,
                "ci_naive": [_plain(v) for v in self.ci_naive]}


def describe_scores(
    scores: ArrayLike,
    *,
    test_train_ratio: float,
    bounds: tuple[float, float] | None = None,
    n_test: int | None = None,
    confidence_level: float = 0.95,
) -> ScoreSummary:
    """Summarise fold scores: mean, std (ddof=1) and a corrected confidence interval.

    The interval is ``mean ± t_{J-1} · sqrt((1/J + n_test/n_train) · std²)``, the variance the
    corrected paired test uses (NOTE [Corrected resampled t]); with ``bounds`` it is computed
    on the logit scale and stays inside them (NOTE [Bounded intervals]).

    Parameters
    ----------
    scores : array-like of float, shape (J,)
        One score per fold (``J >= 2``).
    test_train_ratio : float
        ``n_test / n_train`` of one fold, ``1/(k-1)`` for k-fold CV; 0 gives the naive t interval.
    bounds : (float, float) or None, default None
        ``(low, high)`` of a metric bounded on both sides, e.g. ``(0, 1)`` for accuracy.
    n_test : int or None, default None
        Test samples per fold, for the empirical-logit shift off the bounds (10 000 if None).
    confidence_level : float, default 0.95

    Returns
    -------
    ScoreSummary
    """
    s = _scores_iv(scores, name="scores")
    ratio = _ratio_iv(test_train_ratio)
    if bounds is not None:
        lo, hi = (float(v) for v in bounds)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be (low, high) with low < high; got {bounds!r}.")
        slack = 1e-9 * (hi - lo)  # rounding of a score computed at a bound
        if s.min() < lo - slack or s.max() > hi + slack:
            raise ValueError(f"scores must lie within bounds {bounds}; got values from "
                             f"{s.min():.6g} to {s.max():.6g}.")  # fmt: skip
        s, bounds = np.clip(s, lo, hi), (lo, hi)
    if n_test is not None:
        n_test = _check_positive_int(n_test, name="n_test")
    return _describe(s, _level_iv(confidence_level), ratio, bounds, n_test)


def _t_interval(x: np.ndarray, level: float, ratio: float) -> tuple[float, float]:
    n = x.size
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * math.sqrt(
        (1.0 / n + ratio) * float(x.var(ddof=1)))
    return float(x.mean()) - half, float(x.mean()) + half


def _describe(s: np.ndarray, level: float, ratio: float = 0.0,
              bounds: tuple[float, float] | None = None, n_test: int | None = None
              ) -> ScoreSummary:  # fmt: skip
    mean, std, n = float(s.mean()), float(s.std(ddof=1)), s.size
    naive = _t_interval(s, level, 0.0)
    method = "corrected t" if ratio > 0 else "t"
    if _is_zero(std, s):  # all scores equal (to rounding)
        low, high = mean, mean
    elif bounds is None:
        low, high = _t_interval(s, level, ratio)
    else:  # NOTE [Bounded intervals]
        lo, hi = bounds
        m = n_test or _UNKNOWN_N_TEST
        x = ((s - lo) / (hi - lo) * m + 0.5) / (m + 1)
        zl, zh = _t_interval(np.log(x / (1 - x)), level, ratio)
        # back through the logit and the shift (x' -> x), so the shift moves no limit
        back = (np.clip((special.expit(v) * (m + 1) - 0.5) / m, 0.0, 1.0) for v in (zl, zh))
        low, high = (lo + (hi - lo) * float(v) for v in back)
        method += " on the logit scale"
    folds = tuple(float(v) for v in s)
    return ScoreSummary(mean, std, low, high, n, folds, naive, method)


# --------------------------------------------------------------------------------------------
# Tests on a pair
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedResult:
    """Corrected resampled t-test on ``d = B - A`` (see NOTE [Corrected resampled t])."""

    diff_mean: float  # mean of d = s(B) - s(A), metric units
    statistic: float  # corrected t; positive when B scores higher; ±inf or NaN if var(d) = 0
    pvalue: float
    df: int  # J - 1
    alternative: str
    _se: float = field(repr=False)  # sqrt((1/J + n_test/n_train) * var(d))

    def confidence_interval(self, confidence_level: float = 0.95) -> Interval:
        """CI of the mean difference with the corrected standard error (one-sided if the test is).

        ``diff_mean ± t_{df, q} · se``; for ``alternative="greater"`` the interval is
        ``[low, inf)``, for ``"less"`` ``(-inf, high]``, as in ``scipy.stats.ttest_rel``.
        """
        level = _level_iv(confidence_level)
        q = 0.5 + level / 2 if self.alternative == "two-sided" else level
        half = float(stats.t.ppf(q, self.df)) * self._se
        low = -math.inf if self.alternative == "less" else self.diff_mean - half
        high = math.inf if self.alternative == "greater" else self.diff_mean + half
        return Interval(low, high)

    def to_dict(self) -> dict[str, Any]:
        """Plain fields plus the 95% CI; non-finite numbers become ``None``."""
        return {
            "diff_mean": self.diff_mean,
            "statistic": _plain(self.statistic),
            "pvalue": self.pvalue,
            "df": self.df,
            "alternative": self.alternative,
            "se": self._se,
            "confidence_interval": [_plain(v) for v in self.confidence_interval()],
        }


def corrected_ttest(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    test_train_ratio: float,
    alternative: str = "two-sided",
) -> PairedResult:
    """Nadeau–Bengio corrected resampled t-test [1]_ of ``B - A`` over paired folds.

    ``t = mean(d) / sqrt((1/J + n_test/n_train) · var(d))`` with ``d = scores_b - scores_a``,
    ``var`` with ddof = 1, and ``df = J - 1``.

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,)
        Fold scores of networks A and B; entry j of both comes from fold j.
    test_train_ratio : float
        ``n_test / n_train`` of one fold: ``1/(k-1)`` for k-fold CV. 0 gives the uncorrected
        paired t-test (``scipy.stats.ttest_rel(scores_b, scores_a)``).
    alternative : {"two-sided", "less", "greater"}, default "two-sided"
        "greater": the mean of ``B - A`` is above 0 (B scores higher).

    Returns
    -------
    PairedResult

    Notes
    -----
    If all ``d_j`` are equal (corrected SE within ``1e-12 · max|score|`` of 0, i.e. equal up to
    rounding), ``var(d)`` is taken as 0: when the ``d_j`` are all 0 the statistic is NaN and the
    p-value 1; otherwise the statistic is ``±inf`` and the p-value follows from it (0 for
    "two-sided", 0 or 1 for one-sided alternatives). The CI then collapses to ``diff_mean``.
    """
    a, b = _pair_iv(scores_a, scores_b, ("scores_a", "scores_b"))
    ratio = _ratio_iv(test_train_ratio)
    alternative = _look_up_option(alternative, _ALTERNATIVES, what="alternative")
    return _corrected_t(a, b, ratio, alternative)


def _corrected_t(a: np.ndarray, b: np.ndarray, ratio: float, alternative: str) -> PairedResult:
    d = b - a
    n, df = d.size, d.size - 1
    mean = float(d.mean())
    se = math.sqrt((1.0 / n + ratio) * float(d.var(ddof=1)))
    if _is_zero(se, a, b):  # constant d: differences of scores agree to rounding (see Notes)
        if _is_zero(mean, a, b):
            return PairedResult(0.0, math.nan, 1.0, df, alternative, 0.0)
        se, t = 0.0, math.copysign(math.inf, mean)
    else:
        t = mean / se
    if alternative == "two-sided":
        p = 2.0 * float(stats.t.sf(abs(t), df))
    elif alternative == "greater":
        p = float(stats.t.sf(t, df))
    else:
        p = float(stats.t.cdf(t, df))
    return PairedResult(mean, t, min(p, 1.0), df, alternative, se)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test [2]_ on pooled out-of-fold correctness of A and B."""

    b: int  # samples A got right and B wrong
    c: int  # samples A got wrong and B right
    statistic: float  # exact: min(b, c); chi2: (|b - c| - 1)^2 / (b + c)
    pvalue: float
    method: str  # "exact" (b + c < 25) or "chi2"

    def to_dict(self) -> dict[str, Any]:
        """Plain fields."""
        return asdict(self)


def _correct_iv(x: ArrayLike, *, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != bool:
        numeric = np.issubdtype(arr.dtype, np.number)
        if not numeric or not np.all(np.isin(arr, (0, 1))):
            raise ValueError(
                f"{name} must be a boolean array (True where the prediction is right); got "
                f"dtype {arr.dtype}. Pass y_pred == y_true."
            )
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must have shape (n_samples,) with n_samples >= 1; got "
                         f"shape {arr.shape}.")  # fmt: skip
    return arr.astype(bool)


def mcnemar_test(correct_a: ArrayLike, correct_b: ArrayLike) -> McNemarResult:
    """McNemar's test of equal error rates on the same samples.

    Parameters
    ----------
    correct_a, correct_b : array-like of bool, shape (N,)
        Whether A (B) classified each pooled out-of-fold sample correctly; sample i is the
        same in both.

    Returns
    -------
    McNemarResult
        With ``b`` = A right & B wrong, ``c`` = A wrong & B right: exact two-sided binomial test
        of ``b ~ Binomial(b + c, 1/2)`` when ``b + c < 25``, else the continuity-corrected
        ``χ² = (|b − c| − 1)² / (b + c)`` with 1 df. ``b = c = 0`` gives p = 1.
    """
    ca = _correct_iv(correct_a, name="correct_a")
    cb = _correct_iv(correct_b, name="correct_b")
    if ca.shape != cb.shape:
        raise ValueError(
            f"correct_a has shape {ca.shape} but correct_b has shape {cb.shape}; both must "
            f"cover the same pooled out-of-fold samples."
        )
    return _mcnemar(ca, cb)


def _mcnemar(ca: np.ndarray, cb: np.ndarray) -> McNemarResult:
    b, c = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    if b + c == 0:
        return McNemarResult(0, 0, 0.0, 1.0, "exact")
    if b + c < _EXACT_BELOW:
        p = stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
        return McNemarResult(b, c, float(min(b, c)), float(p), "exact")
    chi2 = (abs(b - c) - 1.0) ** 2 / (b + c)
    return McNemarResult(b, c, chi2, float(stats.chi2.sf(chi2, 1)), "chi2")


@dataclass(frozen=True)
class WinRate:
    """Share of folds on which B scored better than A: a description of the folds, not a
    probability that B is the better network (that is :func:`~calipers.stats.posterior.
    correlated_posterior`'s ``p_b_better``)."""

    wins: float  # folds B won; a tie counts 1/2 (NOTE [Relative ties])
    n: int  # J
    rate: float  # wins / n

    def to_dict(self) -> dict[str, Any]:
        """Plain fields."""
        return asdict(self)


def fold_win_rate(
    scores_a: ArrayLike, scores_b: ArrayLike, *, higher_is_better: bool = True
) -> WinRate:
    """How many of the J paired folds B won ("B won 7 of 10 folds").

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,)
    higher_is_better : bool, default True
        Direction of the metric (False for losses such as NLL).

    Returns
    -------
    WinRate
        ``wins = sum_j w_j``, ``w_j = 1`` if B beats A on fold j, ``1/2`` on a tie
        (``|b - a| <= 1e-12 · max(|a|, |b|)``), else 0. Folds overlap, so the rate is not an
        independent-trials proportion; it is reported without an interval.
    """
    a, b = _pair_iv(scores_a, scores_b, ("scores_a", "scores_b"))
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be True or False; got {higher_is_better!r}.")
    return _win_rate(a, b, bool(higher_is_better))


def _win_rate(a: np.ndarray, b: np.ndarray, higher: bool) -> WinRate:
    tie = np.abs(b - a) <= _RTOL * np.maximum(np.abs(a), np.abs(b))
    wins = np.where(tie, 0.5, ((b > a) if higher else (b < a)).astype(np.float64))
    return WinRate(float(wins.sum()), wins.size, float(wins.mean()))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values [3]_ (family-wise error control).

    ``p~_(i) = max_{j <= i} min(1, (m - j + 1) · p_(j))`` over the ascending p-values, returned
    in the input order.

    Parameters
    ----------
    pvalues : array-like of float in [0, 1], shape (m,)

    Returns
    -------
    ndarray of shape (m,)
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must have shape (m,); got shape {p.shape}.")
    _check_finite(p, name="pvalues")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"pvalues must lie in [0, 1]; got values from {p.min():.4g} to {p.max():.4g}."
        )
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out
