"""What the statistics need to know about a metric's scale: its bounds and its equivalence margin.

# NOTE [Margins of practical equivalence]
A margin ``m`` (baycomp's ROPE, "region of practical equivalence") says how small a difference
``B - A`` is too small to matter. It is given in the metric's units, except that rates shown in
percentage points (accuracy, ECE, Dice, AUROC) take it in **points**: ``rope = 1`` means one
percentage point (0.01 as a fraction). Defaults, per metric kind:

=====================================================  ==========================================
metric kind                                            default margin
=====================================================  ==========================================
rates in [0, 1] shown in points (accuracy, ece,         1 point
mean_dice, entropy_auroc)
everything else (nll, brier, rmse, gaussian_nll,        none: the equivalence outcome is off
log_likelihood)                                         until the user gives a margin
=====================================================  ==========================================

A margin of 0 turns the equivalence outcome off explicitly. A metric calipers does not know
(a custom name passed to :func:`calipers.stats.compare`) has no known scale, so a margin on it
is refused rather than guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from calipers.evaluation.metrics import METRICS

__all__ = ["MetricScale", "metric_scale", "resolve_rope"]

_BOUNDS = {"brier": (0.0, 2.0)}  # besides the percent-point rates, which lie in [0, 1]
# Segmentation folds report beside METRICS' entries the Dice of each class (dice_1, dice_2, ...),
# read like mean_dice (points, its margin), and the share of wrong voxels, a fraction in [0, 1].
_FRACTIONS = re.compile(r"voxel_error")
_PER_CLASS_DICE = re.compile(r"dice_\d+")


@dataclass(frozen=True)
class MetricScale:
    """Scale facts of one metric, used for intervals and margins.

    Attributes
    ----------
    metric : str
    known : bool
        False for a metric that is not in :data:`calipers.evaluation.metrics.METRICS`.
    percent : bool
        Values are fractions shown in percentage points; margins are given in points.
    bounds : tuple of float or None
        ``(low, high)`` when the metric is bounded on both sides (intervals respect them).
    default_rope : float or None
        Default margin in the metric's units (fractions for rates); None: no default.
    """

    metric: str
    known: bool
    percent: bool
    bounds: tuple[float, float] | None
    default_rope: float | None


def metric_scale(metric: str) -> MetricScale:
    """Bounds and default margin of ``metric`` (see NOTE [Margins of practical equivalence])."""
    if _PER_CLASS_DICE.fullmatch(metric):  # dice_1, dice_2, ...: read as mean_dice is
        return replace(metric_scale("mean_dice"), metric=metric)
    info = METRICS.get(metric)
    if info is None:
        if _FRACTIONS.fullmatch(metric):
            return MetricScale(metric, True, False, (0.0, 1.0), None)
        return MetricScale(metric, False, False, None, None)
    if info.percent_points:
        return MetricScale(metric, True, True, (0.0, 1.0), 0.01)
    return MetricScale(metric, True, False, _BOUNDS.get(metric), None)


def resolve_rope(metric: str, rope: float | None) -> float:
    """The margin in the metric's units: ``rope`` as given (points for rates) or the default.

    Parameters
    ----------
    metric : str
    rope : float or None
        User margin, ``>= 0``, in the metric's units (percentage points for rates); None takes
        the default of the metric's kind; 0 turns equivalence off.

    Returns
    -------
    float
        Margin in the metric's own units (a fraction for rates); 0.0 when equivalence is off.

    Raises
    ------
    ValueError
        Negative or non-finite ``rope``; a margin on a metric of unknown scale; a margin that
        spans a rate's whole range.
    """
    scale = metric_scale(metric)
    if rope is None:
        return scale.default_rope or 0.0
    ok = isinstance(rope, (int, float)) and not isinstance(rope, bool)
    if not ok or not math.isfinite(rope) or rope < 0:
        raise ValueError(
            f"rope must be a finite number >= 0 in the units of {metric!r}"
            f"{' (percentage points)' if scale.percent else ''}; got {rope!r}. Use e.g. "
            f"rope = 1 for one point of accuracy, or 0 to turn the equivalence outcome off."
        )
    if rope == 0:
        return 0.0
    if not scale.known:
        raise ValueError(
            f"rope = {rope!r} is given for metric {metric!r}, whose scale calipers does not "
            f"know, so the margin cannot be interpreted. Compare on a metric calipers knows "
            f"({', '.join(METRICS)}) or leave rope out (no equivalence outcome)."
        )
    if scale.percent:
        if rope >= 100:
            raise ValueError(
                f"rope = {rope!r} points for {metric!r} spans the whole 0-100 % range; the "
                f"margin is in percentage points, e.g. rope = 1."
            )
        return float(rope) / 100.0
    return float(rope)
