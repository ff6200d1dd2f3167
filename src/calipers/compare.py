"""Paired comparison of networks scored on the same folds, and the verdict.

Scores come per fold: ``J = n_folds * n_repeats`` values per network, where value ``j`` of every
network was measured on the same test fold ``j``. Differences are always ``B - A`` (the second
network minus the first), in the metric's units.

# NOTE [Corrected resampled t]
Cross-validation folds share most of their training data, so fold scores are correlated and the
plain paired t-test is anti-conservative. Nadeau & Bengio [1]_ inflate the variance of the mean
difference from ``var(d)/J`` to ``(1/J + n_test/n_train) * var(d)``; calipers reports only this
corrected test (``test_train_ratio = 0`` gives the plain paired t, for checking).

# NOTE [Common bootstrap draws]
:func:`compare` runs every pair's P(B > A) bootstrap with the same ``seed``. All networks share
the folds, so every pair resamples the same fold indices (common random numbers): the result of
a pair does not depend on which other networks are compared, and swapping A and B gives
``1 - P`` with a mirrored interval.

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from itertools import combinations
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from calipers._checks import _check_finite, _check_positive_int, _look_up_option
from calipers.exceptions import FoldMismatchError
from calipers.metrics import METRICS

__all__ = [
    "Comparison",
    "Interval",
    "McNemarResult",
    "PairComparison",
    "PairedResult",
    "ProbabilityResult",
    "ScoreSummary",
    "compare",
    "corrected_ttest",
    "describe_scores",
    "holm",
    "mcnemar_test",
    "prob_b_better",
]

_ALTERNATIVES = ("two-sided", "less", "greater")
_UNCERTAINTY_KEYS = ("entropy", "ece")
_TIE = 1e-12  # stds / entropies / ECEs closer than this are equal for the verdict
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


# --------------------------------------------------------------------------------------------
# Many networks: compare() and the verdict
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairComparison:
    """Networks ``a`` and ``b`` compared on one metric; differences are ``b - a``."""

    a: str
    b: str
    metric: str
    diff_mean: float
    diff_ci: Interval  # corrected-t CI of the mean difference
    statistic: float  # corrected t
    df: int
    p_corrected_t: float  # two-sided
    p_holm: float  # Holm-adjusted over all pairs of the comparison
    p_mcnemar: float | None  # None without per-sample correctness
    p_b_better: float
    p_b_better_ci: Interval
    verdict: str  # "<x> is better than <y>" or "difference not established"
    chosen: str
    criterion: str  # "significant difference", "lower fold std", ...
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        """Design §3 comparison keys plus criterion, p_holm, statistic, df and sentence.

        Intervals become lists; non-finite numbers (an infinite t) become ``None``.
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["diff_ci"] = [_plain(v) for v in self.diff_ci]
        out["p_b_better_ci"] = list(self.p_b_better_ci)
        out["statistic"] = _plain(self.statistic)
        return out


@dataclass(frozen=True)
class Comparison:
    """All pairwise comparisons of several networks, and the one chosen overall."""

    metric: str
    higher_is_better: bool
    summaries: dict[str, ScoreSummary]
    pairs: tuple[PairComparison, ...]  # (a, b) in insertion order, a listed before b
    best: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        """Plain types for ``summary.json``; ``"comparison"`` repeats the first pair."""
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "networks": {name: s.to_dict() for name, s in self.summaries.items()},
            "pairs": [p.to_dict() for p in self.pairs],
            "comparison": self.pairs[0].to_dict(),
            "best": self.best,
            "sentence": self.sentence,
        }


@dataclass(frozen=True)
class _Context:
    """Validated inputs of :func:`compare`."""

    data: dict[str, np.ndarray]
    metric: str
    higher: bool
    percent: bool  # show values in percentage points
    ratio: float
    correct: dict[str, np.ndarray] | None
    uncertainty: dict[str, dict[str, float]]
    alpha: float
    seed: int
    level: float


def compare(
    scores: Mapping[str, ArrayLike],
    *,
    metric: str = "accuracy",
    higher_is_better: bool | None = None,
    test_train_ratio: float,
    correct: Mapping[str, ArrayLike] | None = None,
    uncertainty: Mapping[str, Mapping[str, float]] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> Comparison:
    """Compare networks pairwise on the same folds and choose one, saying why.

    For every pair (a, b), a listed before b: corrected resampled t-test on ``b - a``
    (NOTE [Corrected resampled t]), Holm adjustment over all pairs, McNemar's test when
    ``correct`` is given, and P(B > A) with a bootstrap CI (NOTE [Common bootstrap draws]).

    Verdict: if the Holm-adjusted p < ``alpha``, the better network is chosen ("significant
    difference"). Otherwise the difference is not established and the network with lower
    uncertainty is chosen: smaller fold std; if the stds tie (within 1e-12), lower mean
    predictive entropy; then lower ECE; then the better mean score; then the one listed first.
    ``criterion`` names the rule that decided. With more than two networks, ``best`` is the one
    chosen in the most pairs (ties: better mean score, then listing order).

    Parameters
    ----------
    scores : mapping of str to array-like of float, shape (J,)
        Fold scores per network, ``J = n_folds * n_repeats >= 2``, the same folds in the same
        order for every network.
    metric : str, default "accuracy"
        Name of the metric the scores measure. Names in :data:`calipers.metrics.METRICS` set
        the direction and the display (accuracy and ECE in percentage points).
    higher_is_better : bool or None, default None
        Direction of the metric; None takes it from ``METRICS`` (required for other metrics;
        a value contradicting ``METRICS`` raises).
    test_train_ratio : float
        ``n_test / n_train`` of one fold, ``1 / (k - 1)`` for k-fold CV.
    correct : mapping of str to bool array of shape (N,), optional
        Pooled out-of-fold correctness per network (same samples, same order), for McNemar.
    uncertainty : mapping of str to mapping, optional
        Per network, ``{"entropy": mean predictive entropy, "ece": ECE}`` (either or both),
        used only to break ties of fold std.
    alpha : float, default 0.05
        Family-wise significance level (Holm over all pairs).
    seed : int, default 0
        Seed of the P(B > A) bootstrap.
    confidence_level : float, default 0.95
        Level of every interval.

    Returns
    -------
    Comparison

    Examples
    --------
    >>> res = compare({"A": [.90, .92, .91, .89, .93], "B": [.94, .95, .93, .94, .96]},
    ...               test_train_ratio=1 / 4)
    >>> res.best, res.pairs[0].criterion
    ('B', 'significant difference')
    """
    ctx = _compare_iv(
        scores, metric, higher_is_better, test_train_ratio, correct, uncertainty,
        alpha, seed, confidence_level,
    )  # fmt: skip
    summaries = {name: _describe(s, ctx.level) for name, s in ctx.data.items()}
    names = list(ctx.data)
    pair_names = list(combinations(names, 2))
    tests = [_corrected_t(ctx.data[a], ctx.data[b], ctx.ratio, "two-sided") for a, b in pair_names]
    adjusted = holm([t.pvalue for t in tests])
    pairs = tuple(
        _compare_pair(a, b, t, float(ph), summaries, ctx)
        for (a, b), t, ph in zip(pair_names, tests, adjusted, strict=True)
    )
    if len(names) == 2:
        best, sentence = pairs[0].chosen, pairs[0].sentence
    else:
        best, sentence = _overall(names, pairs, summaries, ctx)
    return Comparison(ctx.metric, ctx.higher, summaries, pairs, best, sentence)


def _compare_iv(scores, metric, higher, ratio, correct, uncertainty, alpha, seed, level):
    if not isinstance(scores, Mapping) or len(scores) < 2:
        got = type(scores).__name__
        if isinstance(scores, Mapping):
            got = f"{len(scores)} ({', '.join(map(str, scores))})"
        raise ValueError(
            f"scores must map at least 2 network names to their fold scores; got {got}. "
            f'Pass e.g. {{"A": scores_a, "B": scores_b}}.'
        )
    data: dict[str, np.ndarray] = {}
    for name, s in scores.items():
        if not isinstance(name, str):
            raise TypeError(f"network names must be strings; got {name!r}.")
        data[name] = _scores_iv(s, name=f"scores[{name!r}]")
    first = next(iter(data))
    for name, s in data.items():
        if s.size != data[first].size:
            raise FoldMismatchError(
                f"scores[{first!r}] has {data[first].size} fold scores but scores[{name!r}] has "
                f"{s.size}; every network must be scored on the same folds."
            )
    higher_b, percent = _direction_iv(metric, higher)
    return _Context(
        data, metric, higher_b, percent, _ratio_iv(ratio),
        _correct_map_iv(correct, list(data)), _uncertainty_iv(uncertainty, list(data)),
        _level_iv(alpha, name="alpha", example=0.05),
        _check_positive_int(seed, name="seed", minimum=0), _level_iv(level),
    )  # fmt: skip


def _direction_iv(metric: str, higher: bool | None) -> tuple[bool, bool]:
    if higher is not None and not isinstance(higher, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be True, False or None; got {higher!r}.")
    info = METRICS.get(metric)
    if info is None:
        if higher is None:
            try:
                _look_up_option(metric, METRICS, what="metric")
            except ValueError as err:
                raise ValueError(
                    f"{err} For a custom metric pass higher_is_better=True or False."
                ) from None
        return bool(higher), False
    if higher is not None and bool(higher) != info.higher_is_better:
        raise ValueError(
            f"higher_is_better={higher} contradicts metric {metric!r}, for which "
            f"{'higher' if info.higher_is_better else 'lower'} is better; leave "
            f"higher_is_better out (None) to take it from the metric."
        )
    return info.higher_is_better, info.percent_points


def _correct_map_iv(correct, names: list[str]) -> dict[str, np.ndarray] | None:
    if correct is None:
        return None
    for key in correct:
        _look_up_option(key, names, what="network in correct")
    missing = [n for n in names if n not in correct]
    if missing:
        raise ValueError(
            f"correct has no entry for network(s) {', '.join(map(repr, missing))}; give one "
            f"boolean array per network in scores, or pass correct=None."
        )
    out = {n: _correct_iv(correct[n], name=f"correct[{n!r}]") for n in names}
    sizes = {n: c.size for n, c in out.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"correct arrays differ in length ({sizes}); each must cover the same pooled "
            f"out-of-fold samples."
        )
    return out


def _uncertainty_iv(uncertainty, names: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, measures in (uncertainty or {}).items():
        _look_up_option(name, names, what="network in uncertainty")
        out[name] = {}
        for key, value in measures.items():
            _look_up_option(key, _UNCERTAINTY_KEYS, what="uncertainty measure")
            ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value):
                raise ValueError(
                    f"uncertainty[{name!r}][{key!r}] must be a finite number; got {value!r}."
                )
            out[name][key] = float(value)
    return out


def _compare_pair(a, b, test, p_holm, summaries, ctx: _Context) -> PairComparison:
    mc = _mcnemar(ctx.correct[a], ctx.correct[b]) if ctx.correct is not None else None
    pb = _prob_b_better(ctx.data[a], ctx.data[b], ctx.higher, 10000, ctx.level, ctx.seed)
    verdict, chosen, criterion, reason = _decide(a, b, test.diff_mean, p_holm, summaries, ctx)
    ci = test.confidence_interval(ctx.level)
    places = 1 if ctx.percent else _decimals(test.diff_mean, *ci)
    diff = f"{b} − {a} = {_signed(test.diff_mean, ctx.percent, places)}"
    lo, hi = (_signed(v, ctx.percent, places, unit=False) for v in ci)
    cis = f"{ctx.level * 100:g}% CI {lo} to {hi}"
    tests = f"corrected t({test.df}) = {_num(test.statistic, '.2f')}, p {_p(test.pvalue)}"
    if len(ctx.data) > 2:
        tests += f", Holm p {_p(p_holm)}"
    if mc is not None:
        tests += f"; McNemar p {_p(mc.pvalue)}"
    tests += f"; P({b}>{a}) = {pb.estimate:.2f} [{pb.ci_low:.2f}, {pb.ci_high:.2f}]"
    if criterion == "significant difference":
        sentence = f"{verdict} on {ctx.metric}: {diff} ({cis}), {tests}."
    else:
        sentence = (
            f"The difference in {ctx.metric} between {a} and {b} is not established "
            f"({diff}, {cis}, {tests}); choosing {chosen}, {reason}."
        )
    return PairComparison(
        a, b, ctx.metric, test.diff_mean, ci, test.statistic, test.df, test.pvalue, p_holm,
        None if mc is None else mc.pvalue, pb.estimate, Interval(pb.ci_low, pb.ci_high),
        verdict, chosen, criterion, sentence,
    )  # fmt: skip


def _decide(a, b, diff, p_holm, summaries, ctx: _Context) -> tuple[str, str, str, str]:
    """(verdict, chosen, criterion, reason) for one pair; see :func:`compare`."""
    if p_holm < ctx.alpha:
        chosen, other = (b, a) if (diff > 0) == ctx.higher else (a, b)
        return f"{chosen} is better than {other}", chosen, "significant difference", ""
    unc = ctx.uncertainty
    sign = -1.0 if ctx.higher else 1.0  # smaller sign * mean is better
    rules = [  # (criterion, value of a, value of b, shown in points)
        ("lower fold std", summaries[a].std, summaries[b].std, ctx.percent),
        ("lower predictive entropy", unc.get(a, {}).get("entropy"),
         unc.get(b, {}).get("entropy"), False),
        ("lower ECE", unc.get(a, {}).get("ece"), unc.get(b, {}).get("ece"), True),
        (f"{'higher' if ctx.higher else 'lower'} mean {ctx.metric}",
         sign * summaries[a].mean, sign * summaries[b].mean, ctx.percent),
    ]  # fmt: skip
    for criterion, va, vb, points in rules:
        if va is None or vb is None or abs(va - vb) <= _TIE:
            continue
        chosen, vc, vo = (a, va, vb) if va < vb else (b, vb, va)
        if criterion.endswith(ctx.metric):
            vc, vo = sign * vc, sign * vo
        unit = " points" if points else ""
        values = f"{_unsigned(vc, points)} vs {_unsigned(vo, points)}{unit}"
        reason = f"which has the {criterion} ({values})"
        return "difference not established", chosen, criterion, reason
    return "difference not established", a, "first listed", "listed first (all criteria tie)"


def _overall(names, pairs, summaries, ctx: _Context) -> tuple[str, str]:
    wins = dict.fromkeys(names, 0)
    for p in pairs:
        wins[p.chosen] += 1
    sign = 1.0 if ctx.higher else -1.0
    best = max(names, key=lambda n: (wins[n], sign * summaries[n].mean))  # first on ties
    s = summaries[best]
    unit = "%" if ctx.percent else ""
    sentence = (
        f"{best} is chosen on {ctx.metric}: preferred in {wins[best]} of {len(names) - 1} "
        f"pairwise comparisons (corrected t-tests, Holm-adjusted, α = {ctx.alpha:g}); mean "
        f"{_unsigned(s.mean, ctx.percent)}{unit} ({ctx.level * 100:g}% CI "
        f"{_unsigned(s.ci_low, ctx.percent)} to {_unsigned(s.ci_high, ctx.percent)}{unit})."
    )
    return best, sentence


# Text: percentage points for metrics in [0, 1] (accuracy, ECE), else the metric's units.


def _num(x: float, fmt: str) -> str:
    return format(x, fmt).replace("-", "−")  # typographic minus


def _decimals(*values: float) -> int:
    """Decimal places that show the largest finite ``|value|`` with 3 significant digits."""
    big = float(f"{max((abs(v) for v in values if math.isfinite(v)), default=0.0):.3g}")
    return 3 if big == 0 else min(12, max(0, 2 - math.floor(math.log10(big))))


def _signed(x: float, points: bool, places: int, unit: bool = True) -> str:
    if points:
        return _num(x * 100, f"+.{places}f") + (" points" if unit else "")
    return _num(x, f"+.{places}f")


def _unsigned(x: float, points: bool) -> str:
    return _num(x * 100, ".1f") if points else _num(x, ".3g")


def _p(p: float) -> str:
    """``"= 0.59"``, ``"= 0.004"`` or ``"< 0.001"``."""
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"
