"""Paired statistics for comparing networks: corrected tests, equivalence, the correlated-t
posterior, power, McNemar, comparison and verdict."""

from calipers.stats.compare import Comparison, PairComparison, compare
from calipers.stats.paired import (
    Interval,
    McNemarResult,
    PairedResult,
    ScoreSummary,
    WinRate,
    corrected_ttest,
    describe_scores,
    fold_win_rate,
    holm,
    mcnemar_test,
)
from calipers.stats.posterior import (
    EquivalenceResult,
    Posterior,
    correlated_posterior,
    equivalence_test,
)
from calipers.stats.power import (
    PowerAnalysis,
    detectable_difference,
    power_analysis,
    repeats_needed,
)
from calipers.stats.scales import MetricScale, metric_scale, resolve_rope
from calipers.stats.verdict import headline

__all__ = [
    "Comparison",
    "EquivalenceResult",
    "Interval",
    "McNemarResult",
    "MetricScale",
    "PairComparison",
    "PairedResult",
    "Posterior",
    "PowerAnalysis",
    "ScoreSummary",
    "WinRate",
    "compare",
    "corrected_ttest",
    "correlated_posterior",
    "describe_scores",
    "detectable_difference",
    "equivalence_test",
    "fold_win_rate",
    "headline",
    "holm",
    "mcnemar_test",
    "metric_scale",
    "power_analysis",
    "repeats_needed",
    "resolve_rope",
]
