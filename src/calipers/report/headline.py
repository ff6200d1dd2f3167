"""The sentence a report (and ``calipers cv``'s table) opens with: one a reader can act on.

``summary.json``'s ``comparison["headline"]`` is used when present; otherwise it is derived
from the comparison's fields. It says "chosen" unless the comparison says the difference is
established. Light: no matplotlib, so the command line can use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from calipers._format import estimate

__all__ = ["chosen_label", "summary_headline"]

_CRITERIA = {"lower fold std": "the lower fold-to-fold spread"}


def _established(pair: Mapping[str, Any]) -> bool:
    """Whether the comparison says the difference is established (significant)."""
    if pair.get("criterion") == "significant difference":
        return True
    verdict = pair.get("verdict")
    return isinstance(verdict, str) and "better than" in verdict


def _percent(metric: str) -> bool:
    from calipers.stats.scales import metric_scale

    return metric_scale(str(metric)).percent


def _pair(x: Any) -> tuple[Any, Any]:
    if isinstance(x, Sequence) and not isinstance(x, str) and len(x) == 2:
        return x[0], x[1]
    return math.nan, math.nan


def chosen_label(summary: Mapping[str, Any]) -> str:
    """" (best)" for the run's ``best`` network when its difference is established, else
    " (chosen)"; "" when the run has no comparison."""
    cmp = summary.get("comparison")
    if not isinstance(cmp, Mapping):
        return ""
    pairs = [p for p in summary.get("pairs") or [cmp] if isinstance(p, Mapping)]
    best = summary.get("best")
    mine = [p for p in pairs if best in (p.get("a"), p.get("b"))] or [cmp]
    return " (best)" if all(_established(p) and p.get("chosen") == best for p in mine) \
        else " (chosen)"


def summary_headline(summary: Mapping[str, Any], *, incomplete: bool = False) -> str:
    """One sentence a reader can act on, from a ``summary.json`` mapping.

    Examples
    --------
    >>> summary_headline({"metric": "accuracy", "networks": {"A": {}, "B": {}}, "comparison": {
    ...     "a": "A", "b": "B", "chosen": "B", "metric": "accuracy", "diff_mean": -0.0017,
    ...     "diff_ci": [-0.041, 0.0377], "criterion": "lower fold std",
    ...     "verdict": "difference not established"}})
    'Use B. The accuracy difference is not established (B − A = −0.2 pp, 95% CI [−4.1, +3.8]); B has the lower fold-to-fold spread.'
    """  # noqa: E501
    cmp = summary.get("comparison")
    if isinstance(cmp, Mapping) and isinstance(cmp.get("headline"), str):
        return cmp["headline"]
    if incomplete:
        return ("This run is incomplete: the numbers below come from the folds that finished, "
                "and no comparison is made until every fold is done.")
    metric = summary.get("metric", "")
    nets = summary.get("networks") or {}
    if isinstance(cmp, Mapping) and all(isinstance(cmp.get(k), str) for k in ("a", "b", "chosen")):
        a, b, chosen = cmp["a"], cmp["b"], cmp["chosen"]
        metric = cmp.get("metric", metric)
        est = estimate(cmp.get("diff_mean"), *_pair(cmp.get("diff_ci")),
                       percent=_percent(metric), diff=True)
        diff = f"{b} − {a} = {est.value()}, 95% CI {est.ci()}"
        if _established(cmp):
            return (f"Use {chosen}: its {metric} is better, and the difference is established "
                    f"({diff}).")
        crit = cmp.get("criterion")
        why = "" if not isinstance(crit, str) or crit == "first listed" else (
            f"; {chosen} has {_CRITERIA.get(crit, 'the ' + crit)}")
        return f"Use {chosen}. The {metric} difference is not established ({diff}){why}."
    if len(nets) == 1:
        net, per = next(iter(nets.items()))
        m = per.get(metric) if isinstance(per, Mapping) else None
        if isinstance(m, Mapping):
            est = estimate(m.get("mean"), m.get("ci_low"), m.get("ci_high"),
                           percent=_percent(metric))
            return f"{net}: {metric} {est.value()} (95% CI {est.ci()})."
    return f"{len(nets)} networks measured on {metric}; no comparison in this run."
