"""Comparing several networks scored on the same folds, and the verdict.

Scores come per fold: ``J = n_folds * n_repeats`` values per network, where value ``j`` of every
network was measured on the same test fold ``j``. Differences are always ``B - A`` (the second
network minus the first), in the metric's units. The pairwise tests live in
:mod:`calipers.stats.paired` (see NOTE [Corrected resampled t] there) and are re-exported here.

# NOTE [Common bootstrap draws]
:func:`compare` runs every pair's P(B > A) bootstrap with the same ``seed``. All networks share
the folds, so every pair resamples the same fold indices (common random numbers): the result of
a pair does not depend on which other networks are compared, and swapping A and B gives
``1 - P`` with a mirrored interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from calipers._checks import _check_positive_int, _look_up_option
from calipers.evaluation.metrics import METRICS
from calipers.exceptions import FoldMismatchError
from calipers.stats.paired import (
    Interval,
    McNemarResult,
    PairedResult,
    ProbabilityResult,
    ScoreSummary,
    _correct_iv,
    _corrected_t,
    _describe,
    _level_iv,
    _mcnemar,
    _plain,
    _prob_b_better,
    _ratio_iv,
    _scores_iv,
    corrected_ttest,
    describe_scores,
    holm,
    mcnemar_test,
    prob_b_better,
)

_UNCERTAINTY_KEYS = ("entropy", "ece")
_TIE = 1e-12  # stds / entropies / ECEs closer than this are equal for the verdict

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
        Name of the metric the scores measure. Names in
        :data:`calipers.evaluation.metrics.METRICS` set the direction and the display (accuracy and
        ECE in percentage points).
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
