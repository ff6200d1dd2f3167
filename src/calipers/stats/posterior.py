"""Bayesian correlated t-test and the frequentist equivalence test (TOST) on paired fold scores.

Differences are ``d = B - A`` over the ``J`` paired folds, in the metric's units; ``r`` is
``n_test / n_train`` of one fold and ``m >= 0`` the margin of practical equivalence
(NOTE [Margins of practical equivalence] in :mod:`calipers.stats.scales`).

# NOTE [Correlated t posterior]
Benavoli, Corani, Demšar and Zaffalon [1]_ model the fold differences with the correlation that
overlapping training sets induce and, under a non-informative prior, obtain for the mean
difference ``mu`` a Student-t posterior with ``df = J - 1``, location ``mean(d)`` and scale
``sqrt((1/J + r) * var(d))`` — the same standard error as the corrected resampled t-test
(NOTE [Corrected resampled t] in :mod:`calipers.stats.paired`). The three probabilities are
``P(mu > m)``, ``P(|mu| <= m)`` and ``P(mu < -m)``; which of the two tails means "B is better"
follows from the metric's direction (for a loss, ``mu < -m``). These are baycomp's
``(p_left, p_rope, p_right)`` of ``CorrelatedTTest(a, b, rope, runs)`` for a higher-is-better
metric. With ``var(d) = 0`` the posterior is a point mass at ``mean(d)``.

# NOTE [TOST and the posterior]
The two one-sided corrected t-tests of ``H0: mu <= -m`` and ``H0: mu >= m`` have p-values
``p1 = t.sf((mean + m) / se)`` and ``p2 = t.cdf((mean - m) / se)`` with ``df = J - 1``: exactly the
posterior tail masses ``P(mu < -m)`` and ``P(mu > m)``. So "equivalent at level alpha" (both
rejected, ``max(p1, p2) < alpha``) holds exactly when both tails of the posterior are below
alpha — the frequentist verdict and the three probabilities cannot disagree.

References
----------
.. [1] Benavoli, A., Corani, G., Demšar, J. and Zaffalon, M. "Time for a change: a tutorial for
   comparing multiple classifiers through Bayesian analysis", JMLR 18(77), 1-36, 2017.
.. [2] Schuirmann, D. J. "A comparison of the two one-sided tests procedure and the power
   approach for assessing the equivalence of average bioavailability", Journal of
   Pharmacokinetics and Biopharmaceutics 15, 657-680, 1987.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from calipers.stats.paired import _is_zero, _pair_iv, _ratio_iv

__all__ = ["EquivalenceResult", "Posterior", "correlated_posterior", "equivalence_test"]


def _margin_iv(rope: float) -> float:
    ok = isinstance(rope, (int, float, np.floating)) and not isinstance(rope, bool)
    if not ok or not math.isfinite(rope) or rope < 0:
        raise ValueError(
            f"rope must be a finite number >= 0 in the metric's units; got {rope!r}."
        )
    return float(rope)


def _moments(a: np.ndarray, b: np.ndarray, ratio: float) -> tuple[float, float, int]:
    """``(mean(d), corrected se, df)``; se is 0 when the ``d_j`` agree to rounding."""
    d = b - a
    n = d.size
    se = math.sqrt((1.0 / n + ratio) * float(d.var(ddof=1)))
    if _is_zero(se, a, b):
        se = 0.0
    return float(d.mean()), se, n - 1


@dataclass(frozen=True)
class Posterior:
    """Correlated-t posterior of the mean difference ``mu`` of ``B - A`` (metric units)."""

    loc: float  # mean(d)
    scale: float  # sqrt((1/J + r) var(d)); 0: point mass
    df: int  # J - 1
    rope: float  # margin m, metric units; 0: no equivalence region
    higher_is_better: bool
    p_b_better: float  # P(mu > m) (higher is better) or P(mu < -m) (lower is better)
    p_equivalent: float  # P(|mu| <= m); 0 when m = 0
    p_a_better: float

    def to_dict(self) -> dict[str, Any]:
        """Plain fields."""
        return asdict(self)


def _tails(loc: float, scale: float, df: int, m: float) -> tuple[float, float]:
    """``(P(mu > m), P(mu < -m))`` of the posterior (point mass when scale = 0)."""
    if scale == 0:
        if m == 0 and loc == 0:
            return 0.5, 0.5  # baycomp: a tie splits the mass
        return float(loc > m), float(loc < -m)
    return float(stats.t.sf((m - loc) / scale, df)), float(stats.t.cdf((-m - loc) / scale, df))


def _posterior(a, b, ratio: float, m: float, higher: bool) -> Posterior:
    loc, se, df = _moments(a, b, ratio)
    up, down = _tails(loc, se, df, m)
    p_b, p_a = (up, down) if higher else (down, up)
    p_eq = max(0.0, 1.0 - up - down) if m > 0 else 0.0
    return Posterior(loc, se, df, m, higher, p_b, p_eq, p_a)


def correlated_posterior(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    test_train_ratio: float,
    rope: float = 0.0,
    higher_is_better: bool = True,
) -> Posterior:
    """Bayesian correlated t-test [1]_: P(B better), P(equivalent), P(A better).

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,)
        Fold scores of A and B on the same folds.
    test_train_ratio : float
        ``n_test / n_train`` of one fold (``1/(k-1)`` for k-fold CV).
    rope : float, default 0
        Margin ``m >= 0`` in the metric's units (fractions for rates).
    higher_is_better : bool, default True
        Direction of the metric; for losses "B better" means ``mu < -m``.

    Returns
    -------
    Posterior
        See NOTE [Correlated t posterior]. The probabilities sum to 1.
    """
    a, b = _pair_iv(scores_a, scores_b, ("scores_a", "scores_b"))
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be True or False; got {higher_is_better!r}.")
    return _posterior(a, b, _ratio_iv(test_train_ratio), _margin_iv(rope), bool(higher_is_better))


@dataclass(frozen=True)
class EquivalenceResult:
    """Two one-sided corrected t-tests [2]_ of ``|mu| < m`` (see NOTE [TOST and the posterior])."""

    rope: float  # m, metric units
    diff_mean: float
    se: float  # corrected standard error
    df: int
    p_lower: float  # H0: mu <= -m
    p_upper: float  # H0: mu >= m
    pvalue: float  # max(p_lower, p_upper); 1 when m = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain fields."""
        return asdict(self)


def _tost(a, b, ratio: float, m: float) -> EquivalenceResult:
    loc, se, df = _moments(a, b, ratio)
    if m == 0:
        return EquivalenceResult(0.0, loc, se, df, 1.0, 1.0, 1.0)
    up, down = _tails(loc, se, df, m)  # p_upper = P(mu > m), p_lower = P(mu < -m)
    return EquivalenceResult(m, loc, se, df, down, up, max(down, up))


def equivalence_test(
    scores_a: ArrayLike, scores_b: ArrayLike, *, test_train_ratio: float, rope: float
) -> EquivalenceResult:
    """TOST of equivalence of A and B within ``±rope`` with the corrected standard error.

    ``p_lower = P(T_{J-1} > (mean(d) + m)/se)``, ``p_upper = P(T_{J-1} < (mean(d) - m)/se)``,
    ``se = sqrt((1/J + r) var(d))``; equivalent at level alpha when ``pvalue < alpha``.

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,)
    test_train_ratio : float
        ``n_test / n_train`` of one fold.
    rope : float
        Margin ``m >= 0`` in the metric's units; 0 gives ``pvalue = 1`` (never equivalent).

    Returns
    -------
    EquivalenceResult
    """
    a, b = _pair_iv(scores_a, scores_b, ("scores_a", "scores_b"))
    return _tost(a, b, _ratio_iv(test_train_ratio), _margin_iv(rope))
