"""Paired tests of two networks scored on the same folds: corrected t, McNemar, P(B > A), Holm.

Scores come per fold: ``J = n_folds * n_repeats`` values per network, where value ``j`` of every
network was measured on the same test fold ``j``. Differences are always ``B - A`` (the second
network minus the first), in the metric's units. :mod:`calipers.stats.compare` builds the verdict on
these tests.

# NOTE [Corrected resampled t]
Cross-validation folds share most of their training data, so fold scores are correlated and the
plain paired t-test is anti-conservative. Nadeau & Bengio [1]_ inflate the variance of the mean
difference from ``var(d)/J`` to ``(1/J + n_test/n_train) * var(d)``; calipers reports only this
corrected test (``test_train_ratio = 0`` gives the plain paired t, for checking).

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
from scipy import stats

from calipers._checks import _check_finite, _check_positive_int, _look_up_option
from calipers.exceptions import FoldMismatchError

__all__ = [
    "Interval",
    "McNemarResult",
    "PairedResult",
    "ProbabilityResult",
    "ScoreSummary",
    "corrected_ttest",
    "describe_scores",
    "holm",
    "mcnemar_test",
    "prob_b_better",
]

_ALTERNATIVES = ("two-sided", "less", "greater")
_EXACT_BELOW = 25  # McNemar: exact binomial test when b + c < 25


class Interval(NamedTuple):
    """A confidence interval ``(low, high)``; unpacks like a tuple."""

    low: float
    high: float


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
    """Mean, spread and t confidence interval of one network's fold scores (metric units)."""

    mean: float
    std: float  # sample std, ddof = 1
    ci_low: float  # mean - t_{J-1} * std / sqrt(J)
    ci_high: float
    n: int  # J, the number of fold scores
    folds: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """``{mean, std, ci_low, ci_high, folds}`` as plain floats (design §3)."""
        out = {k: getattr(self, k) for k in ("mean", "std", "ci_low", "ci_high")}
        return {**out, "folds": list(self.folds)}


def describe_scores(scores: ArrayLike, *, confidence_level: float = 0.95) -> ScoreSummary:
    """Summarise fold scores: mean, std (ddof=1) and ``mean ± t_{J-1} · std / √J``.

    Parameters
    ----------
    scores : array-like of float, shape (J,)
        One score per fold (``J >= 2``).
    confidence_level : float, default 0.95

    Returns
    -------
    ScoreSummary
    """
    s = _scores_iv(scores, name="scores")
    return _describe(s, _level_iv(confidence_level))


def _describe(s: np.ndarray, level: float) -> ScoreSummary:
    mean, std, n = float(s.mean()), float(s.std(ddof=1)), s.size
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return ScoreSummary(mean, std, mean - half, mean + half, n, tuple(float(v) for v in s))


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
    rounding = 1e-12 * float(max(np.abs(a).max(), np.abs(b).max()))
    if se <= rounding:  # constant d: differences of scores agree to rounding (see Notes)
        if abs(mean) <= rounding:
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
class ProbabilityResult:
    """P(B beats A) over paired folds, with a percentile-bootstrap interval."""

    estimate: float  # fraction of folds where B beats A; ties count 1/2
    ci_low: float
    ci_high: float
    n: int  # J
    n_bootstrap: int
    confidence_level: float

    def to_dict(self) -> dict[str, Any]:
        """Plain fields."""
        return asdict(self)


def prob_b_better(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    higher_is_better: bool = True,
    n_bootstrap: int = 10000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> ProbabilityResult:
    """Probability that B beats A on a fold, and its percentile-bootstrap CI over folds.

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,)
    higher_is_better : bool, default True
        Direction of the metric (False for losses such as NLL).
    n_bootstrap : int, default 10000
        Resamples of the J folds (with replacement). Memory O(min(n_bootstrap·J, 2**20)).
    confidence_level : float, default 0.95
    seed : int, default 0
        Seeds ``np.random.default_rng``; same seed, same interval.

    Returns
    -------
    ProbabilityResult
        ``estimate = mean_j w_j``, ``w_j = 1`` if B beats A on fold j, ``1/2`` on a tie
        (``|b - a| <= 1e-12 · max(|a|, |b|)``), else 0.
    """
    a, b = _pair_iv(scores_a, scores_b, ("scores_a", "scores_b"))
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be True or False; got {higher_is_better!r}.")
    n_boot = _check_positive_int(n_bootstrap, name="n_bootstrap", fix="10000 is the default.")
    level = _level_iv(confidence_level)
    seed = _check_positive_int(seed, name="seed", minimum=0)
    return _prob_b_better(a, b, bool(higher_is_better), n_boot, level, seed)


def _prob_b_better(a, b, higher: bool, n_boot: int, level: float, seed: int) -> ProbabilityResult:
    tie = np.abs(b - a) <= 1e-12 * np.maximum(np.abs(a), np.abs(b))
    wins = np.where(tie, 0.5, ((b > a) if higher else (b < a)).astype(np.float64))
    rng = np.random.default_rng(seed)
    n = wins.size
    boot = np.empty(n_boot)
    chunk = max(1, 2**20 // n)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        boot[start : start + k] = wins[rng.integers(0, n, size=(k, n))].mean(axis=1)
    low, high = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2])
    return ProbabilityResult(float(wins.mean()), float(low), float(high), n, n_boot, level)


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
