"""Planning from a pilot run: the difference a design with more repeats would detect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calipers.evaluation.folds import Folds
from calipers.experiment.summary import compare_runs
from calipers.runs import read_json
from calipers.stats.power import PowerAnalysis, power_analysis

__all__ = ["PowerPlan", "plan_power"]


@dataclass(frozen=True)
class PowerPlan:
    """A pilot's power analysis for the pair ``b - a`` on ``metric``."""

    a: str
    b: str
    metric: str
    n_repeats: int  # repeats in the pilot
    diff_mean: float  # observed B - A in the pilot, metric units
    analysis: PowerAnalysis

    def to_dict(self) -> dict[str, Any]:
        """Plain fields, the analysis nested."""
        return {"a": self.a, "b": self.b, "metric": self.metric, "n_repeats": self.n_repeats,
                "diff_mean": self.diff_mean, **self.analysis.to_dict()}  # fmt: skip


def plan_power(
    run_dirs: Sequence[str | Path],
    *,
    metric: str | None = None,
    a: str | None = None,
    b: str | None = None,
    alpha: float = 0.05,
    repeats: Sequence[int] = (1, 3, 5, 10),
) -> PowerPlan:
    """Detectable difference (80 % power) of ``b - a`` for 1, 3, 5, 10 repeats of the pilot's
    k-fold design, from finished run(s) (NOTE [Detectable difference] in
    :mod:`calipers.stats.power`).

    Raises
    ------
    ValueError
        Fewer than two networks, or fewer than two folds per repeat.
    """
    summary = compare_runs(run_dirs, metric=metric, a=a, b=b, alpha=alpha)
    if summary.comparison is None:
        name = next(iter(summary.networks))
        raise ValueError(
            f"--power needs two networks to compare, but the run has one ({name}); a power "
            f"analysis is about the difference between two networks."
        )
    pair = summary._pair_dict()
    k = summary.n_splits // max(summary.n_repeats, 1)
    if k < 2:
        raise ValueError(
            f"--power needs at least 2 folds per repeat; the run has {k}. Use [cv] folds >= 2."
        )
    folds = {n: summary.networks[n][summary.metric]["folds"] for n in (pair["a"], pair["b"])}
    ratio = Folds.from_dict(read_json(Path(run_dirs[0]) / "folds.json")).test_train_ratio
    analysis = power_analysis(folds[pair["a"]], folds[pair["b"]], n_folds=k,
                              test_train_ratio=ratio, repeats=repeats, alpha=alpha)
    return PowerPlan(pair["a"], pair["b"], summary.metric, summary.n_repeats, pair["diff_mean"],
                     analysis)  # fmt: skip

