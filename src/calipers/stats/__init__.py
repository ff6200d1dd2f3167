"""Paired statistics for comparing networks: corrected tests, McNemar, comparison, verdict."""

from calipers.stats.compare import Comparison, PairComparison, compare
from calipers.stats.paired import (
    Interval,
    McNemarResult,
    PairedResult,
    ProbabilityResult,
    ScoreSummary,
    corrected_ttest,
    describe_scores,
    holm,
    mcnemar_test,
    prob_b_better,
)

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
