"""One held-out split: intervals from the test samples, paired tests of networks, the verdict.

With a single train/test split there is one score per network, so the fold-based statistics
of :mod:`calipers.stats.paired` (which need J >= 2 fold scores) do not apply. What varies is the
test set: its samples (or, in segmentation, its volumes) are the units of resampling. A metric
is written as a :class:`PerSample` — per-unit arrays and a reduction such that the metric on the
whole test set is ``reduce(arrays)`` — and every interval is a **percentile bootstrap over the
test units** (``scipy.stats.bootstrap``, ``method="percentile"``). Differences are ``B - A``.

# NOTE [Held-out verdict]
The rule of design §4, with the test set in place of the folds: a pair's difference is real when
its paired test rejects at ``alpha`` (Holm-adjusted over all pairs); the better network is then
chosen. Otherwise the one with lower uncertainty is chosen, saying so: the smaller bootstrap
standard error of its score on this test set (the held-out counterpart of the fold std), then
lower mean predictive entropy, then lower ECE, then the better score, then the one listed first.
The paired test is McNemar's for accuracy (per-sample correctness, [1]_), Wilcoxon's signed-rank
test on per-volume values for segmentation metrics ([2]_; voxels of one volume are not
independent), and otherwise a paired bootstrap over test samples, whose two-sided p-value is
``min(1, 2 · min((1 + #{d* <= 0}) / (B + 1), (1 + #{d* >= 0}) / (B + 1)))`` for the B
bootstrap differences d*.

# NOTE [Common bootstrap draws, held out]
Every network's interval and every pair's difference use the same ``seed``, hence the same
resampled test indices: a network's interval does not depend on which others are compared.

References
----------
.. [1] McNemar, Q. "Note on the sampling error of the difference between correlated proportions
   or percentages", Psychometrika 12, 153-157, 1947.
.. [2] Wilcoxon, F. "Individual comparisons by ranking methods", Biometrics Bulletin 1, 80-83,
   1945.
.. [3] Efron, B. and Tibshirani, R. J. "An Introduction to the Bootstrap", Chapman & Hall, 1993
   (percentile intervals, ch. 13).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from calipers.evaluation.metrics import METRICS
from calipers.stats.compare import choose_overall
from calipers.stats.paired import holm, mcnemar_test

__all__ = [
    "HoldoutComparison",
    "HoldoutEstimate",
    "HoldoutPair",
    "PairedDifference",
    "PerSample",
    "compare_holdout",
    "holdout_estimate",
    "paired_difference",
]

_REDUCTIONS = ("mean", "root_mean", "ratio", "binned_gap")
_TESTS = ("auto", "mcnemar", "wilcoxon", "bootstrap")
_TIE = 1e-12
_N_RESAMPLES = 9999


# --------------------------------------------------------------------------------------------
# A metric as a function of per-sample values
# --------------------------------------------------------------------------------------------


def _reduce(kind: str, arrays: tuple[np.ndarray, ...], n_bins: int, axis: int = -1):
    """The metric of (possibly resampled) per-unit arrays along ``axis`` (vectorised)."""
    if kind == "mean":
        return np.mean(arrays[0], axis=axis)
    if kind == "root_mean":
        return np.sqrt(np.mean(arrays[0], axis=axis))
    if kind == "ratio":
        return np.sum(arrays[0], axis=axis) / np.sum(arrays[1], axis=axis)
    gap, bins = arrays  # binned_gap: sum_b |sum_{i in b} gap_i| / n (ECE with gap = conf - right)
    n = gap.shape[axis]
    total = sum(np.abs(np.sum(np.where(bins == b, gap, 0.0), axis=axis)) for b in range(n_bins))
    return total / n


@dataclass(frozen=True, eq=False)
class PerSample:
    """A metric written through per-unit values, so the test units can be resampled.

    Build one with the class methods: :meth:`mean` (accuracy from correctness, NLL, Brier,
    per-volume Dice, entropy), :meth:`root_mean` (RMSE from squared errors), :meth:`ratio`
    (a pooled fraction such as the voxel error) and :meth:`binned_gap` (ECE).

    Attributes
    ----------
    kind : {"mean", "root_mean", "ratio", "binned_gap"}
    arrays : tuple of ndarray, each of shape (n,)
        Per-unit values; entry i of every array belongs to test unit i.
    unit : {"sample", "volume"}
        What a unit is, for the text of the results.
    n_bins : int
        Bins of :meth:`binned_gap` (unused otherwise).
    """

    kind: str
    arrays: tuple[np.ndarray, ...] = field(repr=False)
    unit: str = "sample"
    n_bins: int = 15

    def __post_init__(self) -> None:
        if self.kind not in _REDUCTIONS:
            raise ValueError(f"kind must be one of {', '.join(_REDUCTIONS)}; got {self.kind!r}.")
        sizes = {a.shape for a in self.arrays}
        if len(sizes) != 1 or self.arrays[0].ndim != 1:
            raise ValueError(f"per-unit arrays must all have shape (n,); got {sorted(sizes)}.")
        if self.arrays[0].size < 2:
            raise ValueError(f"a held-out interval needs at least 2 test {self.unit}s; got "
                             f"{self.arrays[0].size}. Put more {self.unit}s in the test set.")
        if not all(np.isfinite(a).all() for a in self.arrays):
            raise ValueError("per-unit values must be finite (no NaN or infinity).")

    @classmethod
    def mean(cls, values: ArrayLike, *, unit: str = "sample") -> PerSample:
        """Metric = mean of ``values`` (shape (n,))."""
        return cls("mean", (np.asarray(values, dtype=np.float64),), unit)

    @classmethod
    def root_mean(cls, values: ArrayLike, *, unit: str = "sample") -> PerSample:
        """Metric = sqrt(mean of ``values``): RMSE from per-sample mean squared errors."""
        return cls("root_mean", (np.asarray(values, dtype=np.float64),), unit)

    @classmethod
    def ratio(cls, numerator: ArrayLike, denominator: ArrayLike, *,
              unit: str = "sample") -> PerSample:
        """Metric = sum(numerator) / sum(denominator), e.g. wrong voxels over voxels."""
        return cls("ratio", (np.asarray(numerator, dtype=np.float64),
                             np.asarray(denominator, dtype=np.float64)), unit)

    @classmethod
    def binned_gap(cls, gap: ArrayLike, bins: ArrayLike, *, n_bins: int,
                   unit: str = "sample") -> PerSample:
        """Metric = sum over bins b of |sum of ``gap`` in b| / n: ECE when ``gap`` is
        confidence − correctness and ``bins`` the confidence bin of each sample."""
        return cls("binned_gap", (np.asarray(gap, dtype=np.float64),
                                  np.asarray(bins, dtype=np.float64)), unit, int(n_bins))

    @property
    def n(self) -> int:
        """Number of test units."""
        return int(self.arrays[0].size)

    @property
    def value(self) -> float:
        """The metric on the whole test set."""
        return float(_reduce(self.kind, self.arrays, self.n_bins))

    def values(self) -> np.ndarray | None:
        """Per-unit values whose mean is the metric (``mean`` kind only), else None."""
        return self.arrays[0] if self.kind == "mean" else None


# --------------------------------------------------------------------------------------------
# One network
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldoutEstimate:
    """A metric on one held-out test set with its percentile-bootstrap interval."""

    estimate: float  # the metric on the whole test set
    standard_error: float  # std of the bootstrap distribution
    ci_low: float
    ci_high: float
    n: int  # test units
    unit: str  # "sample" or "volume"
    n_resamples: int
    confidence_level: float

    @property
    def method(self) -> str:
        return (f"{self.confidence_level * 100:g}% percentile bootstrap over {self.n} test "
                f"{self.unit}s ({self.n_resamples} resamples)")

    def to_dict(self) -> dict[str, Any]:
        """The keys of a fold summary (``mean``, ``std`` = None, ``ci_low``, ``ci_high``,
        ``folds`` = [estimate]) plus ``se``, ``n_test``, ``unit`` and ``interval``."""
        return {"mean": self.estimate, "std": None, "ci_low": _plain(self.ci_low),
                "ci_high": _plain(self.ci_high), "folds": [self.estimate],
                "se": _plain(self.standard_error), "n_test": self.n, "unit": self.unit,
                "interval": self.method}


def _plain(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _level_iv(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}.")
    return float(value)


def _bootstrap(arrays, statistic, *, n_resamples: int, level: float, seed: int):
    n = arrays[0].size  # resamples per batch: memory O(2**22) values per array
    return stats.bootstrap(arrays, statistic, paired=True, vectorized=True, axis=-1,
                           method="percentile", n_resamples=n_resamples,
                           batch=max(1, 2**22 // n),
                           confidence_level=level, rng=np.random.default_rng(seed))


def holdout_estimate(
    sample: PerSample,
    *,
    confidence_level: float = 0.95,
    n_resamples: int = _N_RESAMPLES,
    seed: int = 0,
) -> HoldoutEstimate:
    """The metric on the test set and its percentile-bootstrap CI over test units [3]_.

    Parameters
    ----------
    sample : PerSample
        The metric's per-unit values (n >= 2).
    confidence_level : float, default 0.95
    n_resamples : int, default 9999
        Bootstrap resamples of the n test units (with replacement).
    seed : int, default 0
        Seeds ``np.random.default_rng``; the same seed resamples the same units for every
        network (NOTE [Common bootstrap draws, held out]).

    Returns
    -------
    HoldoutEstimate
        ``estimate`` is the metric on all units; ``standard_error`` the bootstrap std.
    """
    level = _level_iv(confidence_level, "confidence_level")

    def statistic(*arrays, axis=-1):
        return _reduce(sample.kind, arrays, sample.n_bins, axis)

    if _constant(sample.arrays):  # one value everywhere: the interval is that value
        v = sample.value
        return HoldoutEstimate(v, 0.0, v, v, sample.n, sample.unit, n_resamples, level)
    res = _bootstrap(sample.arrays, statistic, n_resamples=n_resamples, level=level, seed=seed)
    ci = res.confidence_interval
    return HoldoutEstimate(sample.value, float(res.standard_error), float(ci.low),
                           float(ci.high), sample.n, sample.unit, n_resamples, level)


def _constant(arrays: tuple[np.ndarray, ...]) -> bool:
    return all(np.ptp(a) == 0 for a in arrays)


# --------------------------------------------------------------------------------------------
# Two networks on the same test set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDifference:
    """Paired bootstrap of ``metric(B) - metric(A)`` over the same test units."""

    diff: float
    ci_low: float
    ci_high: float
    pvalue: float  # two-sided bootstrap p (NOTE [Held-out verdict])
    n: int
    n_resamples: int


def paired_difference(
    a: PerSample,
    b: PerSample,
    *,
    confidence_level: float = 0.95,
    n_resamples: int = _N_RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """Paired percentile bootstrap of ``metric(B) - metric(A)``: units resampled jointly.

    Returns the observed difference, its CI and the two-sided bootstrap p-value of
    NOTE [Held-out verdict].
    """
    if a.kind != b.kind or a.n != b.n:
        raise ValueError(f"A and B must be the same metric on the same test units; got "
                         f"{a.kind} on {a.n} and {b.kind} on {b.n} units.")
    level = _level_iv(confidence_level, "confidence_level")
    k = len(a.arrays)

    def statistic(*arrays, axis=-1):
        return (_reduce(b.kind, arrays[k:], b.n_bins, axis)
                - _reduce(a.kind, arrays[:k], a.n_bins, axis))

    diff = b.value - a.value
    if _constant(a.arrays + b.arrays) or all(
            np.array_equal(x, y) for x, y in zip(a.arrays, b.arrays, strict=True)):
        return PairedDifference(diff, diff, diff, 1.0 if diff == 0 else 0.0, a.n, n_resamples)
    res = _bootstrap(a.arrays + b.arrays, statistic, n_resamples=n_resamples, level=level,
                     seed=seed)
    d = np.asarray(res.bootstrap_distribution)
    B = d.size
    p = 2.0 * min((1 + np.sum(d <= 0)) / (B + 1), (1 + np.sum(d >= 0)) / (B + 1))
    ci = res.confidence_interval
    return PairedDifference(diff, float(ci.low), float(ci.high), float(min(1.0, p)), a.n,
                            n_resamples)


@dataclass(frozen=True)
class HoldoutPair:
    """Networks ``a`` and ``b`` compared on one metric over the same test units (``b - a``)."""

    a: str
    b: str
    metric: str
    diff_mean: float  # metric(B) - metric(A) on the test set
    diff_ci: tuple[float, float]  # paired percentile bootstrap
    test: str  # "mcnemar", "wilcoxon" or "bootstrap"
    statistic: float | None  # McNemar statistic, Wilcoxon W, None for the bootstrap
    pvalue: float
    p_holm: float
    verdict: str
    chosen: str
    criterion: str
    sentence: str
    n_test: int
    unit: str

    def to_dict(self) -> dict[str, Any]:
        """Plain types; ``p_mcnemar`` / ``p_wilcoxon`` / ``p_bootstrap`` name the test used, and
        the fold-only keys ``p_corrected_t`` and ``p_b_better`` are None."""
        out = {k: getattr(self, k) for k in ("a", "b", "metric", "diff_mean", "test", "pvalue",
                                              "p_holm", "verdict", "chosen", "criterion",
                                              "sentence", "n_test", "unit")}
        out.update(diff_ci=[_plain(v) for v in self.diff_ci],
                   statistic=None if self.statistic is None else _plain(self.statistic),
                   p_corrected_t=None, p_b_better=None, p_b_better_ci=None,
                   p_mcnemar=self.pvalue if self.test == "mcnemar" else None,
                   p_wilcoxon=self.pvalue if self.test == "wilcoxon" else None,
                   p_bootstrap=self.pvalue if self.test == "bootstrap" else None)
        return out


@dataclass(frozen=True)
class HoldoutComparison:
    """All pairs of networks on one held-out test set, and the one chosen overall."""

    metric: str
    higher_is_better: bool
    estimates: dict[str, HoldoutEstimate]
    pairs: tuple[HoldoutPair, ...]
    best: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        """Plain types, shaped like :meth:`calipers.stats.compare.Comparison.to_dict`."""
        return {"metric": self.metric, "higher_is_better": self.higher_is_better,
                "networks": {n: e.to_dict() for n, e in self.estimates.items()},
                "pairs": [p.to_dict() for p in self.pairs],
                "comparison": self.pairs[0].to_dict(), "best": self.best,
                "sentence": self.sentence}


def _paired_test(test: str, a: PerSample, b: PerSample, correct_a, correct_b):
    """(test, statistic, p) of one pair."""
    if test == "mcnemar":
        res = mcnemar_test(correct_a, correct_b)
        return "mcnemar", float(res.statistic), float(res.pvalue), f"McNemar p {_p(res.pvalue)} " \
            f"(A right/B wrong {res.b}, A wrong/B right {res.c})"
    if test == "wilcoxon":
        d = b.values() - a.values()
        if not np.any(d):
            return "wilcoxon", 0.0, 1.0, "Wilcoxon signed-rank p = 1 (no differences)"
        res = stats.wilcoxon(b.values(), a.values())
        return "wilcoxon", float(res.statistic), float(res.pvalue), \
            f"Wilcoxon signed-rank p {_p(float(res.pvalue))}"
    return "bootstrap", None, None, ""


def compare_holdout(
    samples: Mapping[str, PerSample],
    *,
    metric: str,
    higher_is_better: bool | None = None,
    test: str = "auto",
    correct: Mapping[str, ArrayLike] | None = None,
    uncertainty: Mapping[str, Mapping[str, float]] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    confidence_level: float = 0.95,
    n_resamples: int = _N_RESAMPLES,
) -> HoldoutComparison:
    """Compare networks on one held-out test set and choose one (NOTE [Held-out verdict]).

    Parameters
    ----------
    samples : mapping of str to PerSample
        The metric of each network on the same test units (same order), at least 2 networks.
    metric : str
        Its name; names in :data:`~calipers.evaluation.metrics.METRICS` give the direction.
    higher_is_better : bool, optional
        Needed for metrics outside ``METRICS``.
    test : {"auto", "mcnemar", "wilcoxon", "bootstrap"}, default "auto"
        "auto": McNemar when ``correct`` is given and the metric is accuracy, Wilcoxon when the
        units are volumes and the metric a per-volume mean, else the paired bootstrap.
    correct : mapping of str to bool array of shape (n,), optional
        Per-sample correctness (McNemar).
    uncertainty : mapping of str to {"entropy": float, "ece": float}, optional
        Tie-breakers of the verdict.
    alpha : float, default 0.05
        Family-wise level (Holm over all pairs).
    seed, confidence_level, n_resamples
        Of every bootstrap (the same draws for all networks).

    Returns
    -------
    HoldoutComparison
    """
    names = list(samples)
    if len(names) < 2:
        raise ValueError(f"samples must map at least 2 network names to their test values; "
                         f"got {len(names)}.")
    info = METRICS.get(metric)
    if higher_is_better is None:
        if info is None:
            raise ValueError(f"metric {metric!r} is not in METRICS; pass higher_is_better.")
        higher_is_better = info.higher_is_better
    percent = bool(info is not None and info.percent_points)
    if test not in _TESTS:
        raise ValueError(f"test must be one of {', '.join(_TESTS)}; got {test!r}.")
    alpha = _level_iv(alpha, "alpha")
    level = _level_iv(confidence_level, "confidence_level")
    first = samples[names[0]]
    for n in names[1:]:
        if samples[n].n != first.n or samples[n].kind != first.kind:
            raise ValueError(f"network {n!r} is scored on {samples[n].n} test units but "
                             f"{names[0]!r} on {first.n}; compare them on the same test set.")
    if test == "auto":
        if correct is not None and metric == "accuracy":
            test = "mcnemar"
        elif first.unit == "volume" and first.kind == "mean":
            test = "wilcoxon"
        else:
            test = "bootstrap"
    if test == "mcnemar" and correct is None:
        raise ValueError("test='mcnemar' needs correct (per-sample correctness per network).")
    if test == "wilcoxon" and first.kind != "mean":
        raise ValueError(f"test='wilcoxon' needs a per-unit mean metric; {metric} is "
                         f"{first.kind}.")
    est = {n: holdout_estimate(samples[n], confidence_level=level, n_resamples=n_resamples,
                               seed=seed) for n in names}
    raw = []
    for a, b in combinations(names, 2):
        diff = paired_difference(samples[a], samples[b], confidence_level=level,
                                 n_resamples=n_resamples, seed=seed)
        kind, stat, p, text = _paired_test(test, samples[a], samples[b],
                                           None if correct is None else correct.get(a),
                                           None if correct is None else correct.get(b))
        if kind == "bootstrap":
            p, text = diff.pvalue, f"paired bootstrap p {_p(diff.pvalue)}"
        raw.append((a, b, diff, kind, stat, p, text))
    adjusted = holm([r[5] for r in raw])
    unc = {n: dict(v) for n, v in (uncertainty or {}).items()}
    pairs = tuple(
        _pair(a, b, d, kind, stat, p, float(ph), text, est, unc, metric, higher_is_better,
              percent, alpha, level, len(names) > 2)
        for (a, b, d, kind, stat, p, text), ph in zip(raw, adjusted, strict=True))
    if len(names) == 2:
        best, sentence = pairs[0].chosen, pairs[0].sentence
    else:
        best, n_wins, n_est = choose_overall(names, pairs,
                                             {n: est[n].estimate for n in names},
                                             higher=bool(higher_is_better),
                                             established=lambda pr: pr.p_holm < alpha)
        e = est[best]
        how = (f"better in all {n_wins}" if n_est == n_wins and n_wins > 0 else
               f"better in {n_est} of them; the other {n_wins - n_est} not established, "
               "decided by the tie-breaks")
        sentence = (f"{best} is chosen on {metric}: preferred in {n_wins} of "
                    f"{len(names) - 1} pairwise comparisons on one held-out test set ({how}; "
                    f"Holm-adjusted, α = {alpha:g}); {_fmt(e.estimate, percent)} ({e.method}: "
                    f"{_fmt(e.ci_low, percent)} to {_fmt(e.ci_high, percent)}).")
    return HoldoutComparison(metric, bool(higher_is_better), est, pairs, best, sentence)


def _pair(a, b, d: PairedDifference, kind, stat, p, p_holm, text, est, unc, metric, higher,
          percent, alpha, level, many) -> HoldoutPair:
    unit = est[a].unit
    if p_holm < alpha:
        chosen, other = (b, a) if (d.diff > 0) == higher else (a, b)
        verdict, criterion, reason = f"{chosen} is better than {other}", \
            "significant difference", ""
    else:
        verdict = "difference not established"
        chosen, criterion, reason = _tie_break(a, b, est, unc, metric, higher, percent)
    diff = f"{b} − {a} = {_fmt(d.diff, percent, signed=True)}{' points' if percent else ''}"
    ci = (f"{level * 100:g}% paired bootstrap CI {_fmt(d.ci_low, percent, signed=True)} to "
          f"{_fmt(d.ci_high, percent, signed=True)} over {d.n} test {unit}s")
    tests = text + (f", Holm p {_p(p_holm)}" if many else "")
    if criterion == "significant difference":
        sentence = f"{verdict} on {metric} (one held-out test set): {diff} ({ci}; {tests})."
    else:
        sentence = (f"The difference in {metric} between {a} and {b} on the held-out test set "
                    f"is not established ({diff}, {ci}; {tests}); choosing {chosen}, {reason}.")
    return HoldoutPair(a, b, metric, d.diff, (d.ci_low, d.ci_high), kind, stat, p, p_holm,
                       verdict, chosen, criterion, sentence, d.n, unit)


def _tie_break(a, b, est, unc, metric, higher, percent) -> tuple[str, str, str]:
    sign = -1.0 if higher else 1.0
    rules = [
        ("lower bootstrap standard error", est[a].standard_error, est[b].standard_error,
         percent),
        ("lower predictive entropy", unc.get(a, {}).get("entropy"),
         unc.get(b, {}).get("entropy"), False),
        ("lower ECE", unc.get(a, {}).get("ece"), unc.get(b, {}).get("ece"), True),
        (f"{'higher' if higher else 'lower'} {metric}", sign * est[a].estimate,
         sign * est[b].estimate, percent),
    ]
    for criterion, va, vb, points in rules:
        if va is None or vb is None or abs(va - vb) <= _TIE:
            continue
        chosen, vc, vo = (a, va, vb) if va < vb else (b, vb, va)
        if criterion.endswith(metric):
            vc, vo = sign * vc, sign * vo
        values = f"{_fmt(vc, points)} vs {_fmt(vo, points)}{' points' if points else ''}"
        return chosen, criterion, f"which has the {criterion} ({values})"
    return a, "first listed", "listed first (all criteria tie)"


def _fmt(x: float, percent: bool, *, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "—"
    sign = "+" if signed else ""
    s = format(x * 100, f"{sign}.1f") if percent else format(x, f"{sign}.3g")
    return s.replace("-", "−")


def _p(p: float) -> str:
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"
