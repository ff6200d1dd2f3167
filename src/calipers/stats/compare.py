"""Comparing several networks scored on the same folds, and the verdict.

Scores come per fold: ``J = n_folds * n_repeats`` values per network, where value ``j`` of every
network was measured on the same test fold ``j``. Differences are always ``B - A`` (the second
network minus the first), in the metric's units. The pairwise tests live in
:mod:`calipers.stats.paired` (see NOTE [Corrected resampled t] there) and are re-exported here.

The verdict is one of three cases (NOTE [Three verdicts] in :mod:`calipers.stats.verdict`); the
probabilities come from the correlated-t posterior (NOTE [Correlated t posterior] in
:mod:`calipers.stats.posterior`) and the detectable difference from
NOTE [Detectable difference] in :mod:`calipers.stats.power`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from calipers._checks import _check_positive_int, _look_up_option
from calipers.evaluation.metrics import METRICS
from calipers.exceptions import FoldMismatchError
from calipers.stats.paired import (
    Interval,
    McNemarResult,
    PairedResult,
    ScoreSummary,
    WinRate,
    _correct_iv,
    _corrected_t,
    _describe,
    _level_iv,
    _mcnemar,
    _plain,
    _ratio_iv,
    _scores_iv,
    _tied,
    _win_rate,
    corrected_ttest,
    describe_scores,
    fold_win_rate,
    holm,
    mcnemar_test,
)
from calipers.stats.posterior import _posterior, _tost
from calipers.stats.power import _detectable, _repeats_needed
from calipers.stats.scales import metric_scale, resolve_rope
from calipers.stats.verdict import _amount, _unsigned, headline, pair_sentence

_UNCERTAINTY_KEYS = ("entropy", "ece")
_POWER = 0.8  # target power of the detectable difference

__all__ = [
    "Comparison",
    "Interval",
    "McNemarResult",
    "PairComparison",
    "PairedResult",
    "ScoreSummary",
    "WinRate",
    "choose_overall",
    "compare",
    "corrected_ttest",
    "describe_scores",
    "fold_win_rate",
    "holm",
    "mcnemar_test",
]

# --------------------------------------------------------------------------------------------
# Many networks: compare() and the verdict
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairComparison:
    """Networks ``a`` and ``b`` compared on one metric; differences are ``b - a``.

    All differences, intervals, margins and detectable differences are in the metric's own
    units (fractions for rates). ``outcome`` is one of NOTE [Three verdicts].
    """

    a: str
    b: str
    metric: str
    outcome: str  # "better", "equivalent" or "inconclusive"
    verdict: str  # "<x> is better than <y>", "equivalent within ±m" or "inconclusive"
    chosen: str
    criterion: str  # "significant difference", "lower fold std", ...
    diff_mean: float
    diff_ci: Interval  # corrected-t CI of the mean difference
    confidence_level: float
    statistic: float  # corrected t
    df: int
    p_corrected_t: float  # two-sided
    p_holm: float  # Holm-adjusted over all pairs of the comparison
    p_mcnemar: float | None  # only for accuracy with per-sample correctness
    rope: float  # margin of equivalence m; 0: equivalence not tested
    alpha: float
    p_tost: float  # max of the two one-sided corrected tests; 1 when rope = 0
    p_tost_holm: float
    equivalence_ci: Interval  # 1 - 2 alpha CI: inside ±m exactly when p_tost < alpha
    p_b_better: float  # correlated-t posterior (NOTE [Correlated t posterior])
    p_equivalent: float
    p_a_better: float
    fold_wins: float  # folds B won (ties 1/2); descriptive, not a probability
    n_splits: int  # J
    n_folds: int  # k, folds per repeat
    detectable_diff: float  # smallest difference detected with 80% power by this design
    detectable_limit: float  # ... with infinitely many repeats
    repeats_for_observed: int | None  # repeats making |diff_mean| detectable; None: impossible
    repeats_for_rope: int | None  # repeats making the margin detectable; None: impossible/unset
    sentence: str
    headline: str

    def to_dict(self) -> dict[str, Any]:
        """Plain fields; intervals become lists; non-finite numbers become ``None``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("diff_ci", "equivalence_ci"):
            out[key] = [_plain(v) for v in out[key]]
        out["statistic"] = _plain(self.statistic)
        out["fold_win_rate"] = self.fold_wins / self.n_splits
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
    level: float
    rope: float  # metric units; 0: off
    n_repeats: int
    n_test: int | None


def compare(
    scores: Mapping[str, ArrayLike],
    *,
    metric: str = "accuracy",
    higher_is_better: bool | None = None,
    test_train_ratio: float,
    n_repeats: int = 1,
    rope: float | None = None,
    correct: Mapping[str, ArrayLike] | None = None,
    uncertainty: Mapping[str, Mapping[str, float]] | None = None,
    alpha: float = 0.05,
    confidence_level: float = 0.95,
    n_test: int | None = None,
) -> Comparison:
    """Compare networks pairwise on the same folds and choose one, saying why.

    For every pair (a, b), a listed before b: corrected resampled t-test on ``b - a``
    (NOTE [Corrected resampled t]) and the equivalence test (TOST) within ``±rope``, both
    Holm-adjusted over all pairs; the correlated-t posterior P(B better), P(equivalent),
    P(A better); the detectable difference at 80 % power and the repeats that would lower it;
    McNemar's test for accuracy when ``correct`` is given; the number of folds B won.

    Verdict (NOTE [Three verdicts]): *better* if the Holm-adjusted p < ``alpha``; else
    *equivalent* if the Holm-adjusted TOST p < ``alpha``; else *inconclusive*. In the last two
    cases the network with lower uncertainty is chosen: smaller fold std; if the stds tie
    (NOTE [Relative ties]), lower mean predictive entropy; then lower ECE; then the better mean
    score; then the one listed first. ``criterion`` names the rule that decided. With more than
    two networks, ``best`` is the one chosen in the most pairs (ties: better mean, then order).

    Parameters
    ----------
    scores : mapping of str to array-like of float, shape (J,)
        Fold scores per network, ``J = n_folds * n_repeats >= 2``, the same folds in the same
        order for every network.
    metric : str, default "accuracy"
        Name of the metric. Names in :data:`calipers.evaluation.metrics.METRICS` set the
        direction, the display (rates in percentage points) and the default margin.
    higher_is_better : bool or None, default None
        Direction of the metric; None takes it from ``METRICS`` (required for other metrics;
        a value contradicting ``METRICS`` raises).
    test_train_ratio : float
        ``n_test / n_train`` of one fold, ``1 / (k - 1)`` for k-fold CV.
    n_repeats : int, default 1
        Repeats of k-fold CV in ``scores`` (``k = J / n_repeats``), for the repeats advice.
    rope : float or None, default None
        Margin of practical equivalence in the metric's units, percentage points for rates;
        None: the metric kind's default (NOTE [Margins of practical equivalence]); 0: off.
    correct : mapping of str to bool array of shape (N,), optional
        Pooled out-of-fold correctness per network (same samples, each once), for McNemar's
        test; only with ``metric="accuracy"``.
    uncertainty : mapping of str to mapping, optional
        Per network, ``{"entropy": mean predictive entropy, "ece": ECE}`` (either or both),
        used only to break ties of fold std.
    alpha : float, default 0.05
        Family-wise level (Holm over all pairs) of the difference and equivalence tests.
    confidence_level : float, default 0.95
        Level of the difference and per-network intervals.
    n_test : int or None, default None
        Test samples per fold, for bounded per-network intervals (NOTE [Bounded intervals]).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> res = compare({"A": [.90, .92, .91, .89, .93], "B": [.94, .95, .93, .94, .96]},
    ...               test_train_ratio=1 / 4)
    >>> res.best, res.pairs[0].outcome
    ('B', 'better')
    """
    ctx = _compare_iv(
        scores, metric, higher_is_better, test_train_ratio, correct, uncertainty,
        alpha, confidence_level, rope, n_repeats, n_test,
    )  # fmt: skip
    bounds = metric_scale(ctx.metric).bounds
    summaries = {name: _describe(s, ctx.level, ctx.ratio, bounds, ctx.n_test)
                 for name, s in ctx.data.items()}  # fmt: skip
    names = list(ctx.data)
    pair_names = list(combinations(names, 2))
    tests = [_corrected_t(ctx.data[a], ctx.data[b], ctx.ratio, "two-sided") for a, b in pair_names]
    tosts = [_tost(ctx.data[a], ctx.data[b], ctx.ratio, ctx.rope) for a, b in pair_names]
    adjusted = holm([t.pvalue for t in tests])
    adjusted_eq = holm([t.pvalue for t in tosts])
    pairs = tuple(
        _compare_pair(a, b, t, float(ph), tost, float(pe), summaries, ctx)
        for (a, b), t, ph, tost, pe in zip(pair_names, tests, adjusted, tosts, adjusted_eq,
                                           strict=True)
    )  # fmt: skip
    if len(names) == 2:
        best, sentence = pairs[0].chosen, pairs[0].sentence
    else:
        best, sentence = _overall(names, pairs, summaries, ctx)
    return Comparison(ctx.metric, ctx.higher, summaries, pairs, best, sentence)


def _compare_iv(scores, metric, higher, ratio, correct, uncertainty, alpha, level, rope,
                n_repeats, n_test):  # fmt: skip
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
    reps = _check_positive_int(n_repeats, name="n_repeats")
    if data[first].size % reps or data[first].size // reps < 2:
        raise ValueError(
            f"n_repeats = {reps} does not fit {data[first].size} fold scores: J must be "
            f"n_folds * n_repeats with n_folds >= 2."
        )
    if correct is not None and metric != "accuracy":
        raise ValueError(
            f"correct is given for metric {metric!r}, but McNemar's test compares error rates "
            f"and applies to metric 'accuracy' only; pass correct=None."
        )
    return _Context(
        data, metric, higher_b, percent, _ratio_iv(ratio),
        _correct_map_iv(correct, list(data)), _uncertainty_iv(uncertainty, list(data)),
        _level_iv(alpha, name="alpha", example=0.05), _level_iv(level),
        resolve_rope(metric, rope), reps,
        None if n_test is None else _check_positive_int(n_test, name="n_test"),
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


def _compare_pair(a, b, test, p_holm, tost, p_tost_holm, summaries, ctx: _Context
                  ) -> PairComparison:  # fmt: skip
    mc = _mcnemar(ctx.correct[a], ctx.correct[b]) if ctx.correct is not None else None
    post = _posterior(ctx.data[a], ctx.data[b], ctx.ratio, ctx.rope, ctx.higher)
    wins = _win_rate(ctx.data[a], ctx.data[b], ctx.higher)
    d = ctx.data[b] - ctx.data[a]
    std, k = float(d.std(ddof=1)), d.size // ctx.n_repeats
    power = (std, k, ctx.ratio, ctx.alpha, _POWER)
    obs = abs(test.diff_mean)
    half = float(stats.t.ppf(1 - ctx.alpha, test.df)) * tost.se
    if p_holm < ctx.alpha:
        outcome = "better"
        chosen, other = (b, a) if (test.diff_mean > 0) == ctx.higher else (a, b)
        verdict, criterion, reason = f"{chosen} is better than {other}", "significant difference", \
            ""
    else:
        outcome = "equivalent" if ctx.rope > 0 and p_tost_holm < ctx.alpha else "inconclusive"
        chosen, criterion, reason = _choose(a, b, summaries, ctx)
        verdict = (f"equivalent within ±{_amount(ctx.rope, ctx.percent)}"
                   if outcome == "equivalent" else "inconclusive")  # fmt: skip
    values = dict(
        a=a, b=b, metric=ctx.metric, outcome=outcome, verdict=verdict, chosen=chosen,
        criterion=criterion, diff_mean=test.diff_mean,
        diff_ci=test.confidence_interval(ctx.level), confidence_level=ctx.level,
        statistic=test.statistic, df=test.df, p_corrected_t=test.pvalue, p_holm=p_holm,
        p_mcnemar=None if mc is None else mc.pvalue, rope=ctx.rope, alpha=ctx.alpha,
        p_tost=tost.pvalue, p_tost_holm=p_tost_holm,
        equivalence_ci=Interval(test.diff_mean - half, test.diff_mean + half),
        p_b_better=post.p_b_better, p_equivalent=post.p_equivalent, p_a_better=post.p_a_better,
        fold_wins=wins.wins, n_splits=d.size, n_folds=k,
        detectable_diff=_detectable(std, k, ctx.n_repeats, *power[2:]),
        detectable_limit=_detectable(std, k, math.inf, *power[2:]),
        repeats_for_observed=_repeats_needed(*power, obs) if obs > 0 else None,
        repeats_for_rope=_repeats_needed(*power, ctx.rope) if ctx.rope > 0 else None,
    )  # fmt: skip
    plain = {**values, "statistic": _plain(test.statistic)}
    sentence = pair_sentence(plain, reason=reason, n_networks=len(ctx.data))
    return PairComparison(**values, sentence=sentence, headline=headline(plain))


def _choose(a, b, summaries, ctx: _Context) -> tuple[str, str, str]:
    """(chosen, criterion, reason) by the lower-uncertainty rule; see :func:`compare`."""
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
        if va is None or vb is None or _tied(va, vb):
            continue
        chosen, vc, vo = (a, va, vb) if va < vb else (b, vb, va)
        if criterion.endswith(ctx.metric):
            vc, vo = sign * vc, sign * vo
        unit = " points" if points else ""
        values = f"{_unsigned(vc, points)} vs {_unsigned(vo, points)}{unit}"
        return chosen, criterion, f"which has the {criterion} ({values})"
    return a, "first listed", "listed first (all criteria tie)"


def choose_overall(names: Sequence[str], pairs: Sequence[Any], score: Mapping[str, float], *,
                   higher: bool, established: Callable[[Any], bool]) -> tuple[str, int, int]:
    """The network chosen among several: most pairwise choices (``pair.chosen``), then the
    better ``score``, then the first listed. Returns it, its number of pairwise choices and how
    many of those are ``established`` differences (the rest were decided by the tie-breaks)."""
    wins, better = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    for p in pairs:
        wins[p.chosen] += 1
        better[p.chosen] += bool(established(p))
    sign = 1.0 if higher else -1.0
    best = max(names, key=lambda n: (wins[n], sign * score[n]))  # first on ties
    return best, wins[best], better[best]


def _overall(names, pairs, summaries, ctx: _Context) -> tuple[str, str]:
    best, k, e = choose_overall(names, pairs, {n: summaries[n].mean for n in names},
                                higher=ctx.higher, established=lambda p: p.outcome == "better")
    s = summaries[best]
    unit = "%" if ctx.percent else ""
    how = (f"better in all {k}" if e == k and k > 0 else
           f"better in {e} of them; the other {k - e} not established, decided by lower "
           "uncertainty")
    sentence = (
        f"{best} is chosen on {ctx.metric}: preferred in {k} of {len(names) - 1} pairwise "
        f"comparisons ({how}; corrected t-tests, Holm-adjusted, α = {ctx.alpha:g}); mean "
        f"{_unsigned(s.mean, ctx.percent)}{unit} ({ctx.level * 100:g}% CI, corrected, "
        f"{_unsigned(s.ci_low, ctx.percent)} to {_unsigned(s.ci_high, ctx.percent)}{unit})."
    )
    return best, sentence
