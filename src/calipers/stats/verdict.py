"""The verdict in words: one sentence per pair (one of three cases) and a one-line headline.

# NOTE [Three verdicts]
For a pair (A, B) with corrected resampled t-test p-value ``p`` (Holm-adjusted over all pairs),
TOST p-value ``p_eq`` (Holm-adjusted likewise) and margin ``m``:

1. **better** — ``p < alpha``: the network with the better mean is chosen.
2. **equivalent** — otherwise, ``m > 0`` and ``p_eq < alpha``: the ``1 - 2 alpha`` interval of
   ``B - A`` lies inside ``±m``. The lower-uncertainty rule picks one of the two.
3. **inconclusive** — neither: the sentence states the smallest difference this design detects
   with 80 % power and how many repeats would bring it down to the observed difference or to
   the margin, or that no number of repeats can (NOTE [Detectable difference]). The
   lower-uncertainty rule picks one, and the sentence says it is a tie-break, not a finding.

Text conventions: rates in percentage points, typographic minus signs, ``P(B better)`` whatever
the metric's direction (for losses "better" is lower).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from calipers.evaluation.metrics import METRICS

__all__ = ["headline"]

OUTCOMES = ("better", "equivalent", "inconclusive")


def _num(x: float, fmt: str) -> str:
    return format(x, fmt).replace("-", "−")  # typographic minus


def _decimals(*values: float) -> int:
    """Decimal places that show the largest finite ``|value|`` with 3 significant digits."""
    big = float(f"{max((abs(v) for v in values if math.isfinite(v)), default=0.0):.3g}")
    return 3 if big == 0 else min(12, max(0, 2 - math.floor(math.log10(big))))


def _signed(x: float, points: bool, places: int, unit: bool = True) -> str:
    """``+2.4 points``, ``−0.0123``; a value that rounds to zero shows no sign (``0.0``)."""
    v = x * 100 if points else x
    text = _num(v, f"+.{places}f")
    if float(text[1:]) == 0:
        text = text[1:]
    return text + (" points" if points and unit else "")


def _unsigned(x: float, points: bool, places: int | None = None) -> str:
    if points:
        return _num(x * 100, f".{1 if places is None else places}f")
    return _num(x, ".3g" if places is None else f".{places}f")


def _amount(x: float, points: bool, places: int | None = None) -> str:
    """An unsigned size with its unit: "2.4 points", "0.0123"."""
    return _unsigned(x, points, places) + (" points" if points else "")


def _p(p: float) -> str:
    """``"= 0.59"``, ``"= 0.004"`` or ``"< 0.001"``."""
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


def _prob(p: float) -> str:
    """``"= 0.35"``, ``"< 0.01"`` or ``"> 0.99"``: never rounded to a certainty it is not."""
    if 0 < p < 0.005:
        return "< 0.01"
    if 0.995 < p < 1:
        return "> 0.99"
    return f"= {p:.2f}"


_REASONS = {  # criterion -> headline clause about the chosen network
    "lower fold std": "{c} has the lower fold-to-fold spread",
    "lower predictive entropy": "{c} has the lower predictive entropy",
    "lower ECE": "{c} is better calibrated (lower ECE)",
    "first listed": "{c} is listed first (all criteria tie)",
}


def _get(pair: Mapping[str, Any], key: str, default: float = math.nan) -> float:
    v = pair.get(key)
    return default if v is None else float(v)


def headline(pair: Mapping[str, Any]) -> str:
    """One sentence a reader can act on, from a comparison (``summary.json["comparison"]``).

    Parameters
    ----------
    pair : mapping
        A pair's ``to_dict()`` (keys ``a, b, metric, outcome, chosen, criterion, diff_mean,
        diff_ci, p_holm, rope, equivalence_ci, alpha, detectable_diff``).

    Returns
    -------
    str
        E.g. "Use A. The accuracy difference is not established (B − A = −0.4 points, 95% CI
        −2.1 to +1.3; this design detects 5.2 points); A has the lower fold-to-fold spread."
    """
    a, b, metric = pair["a"], pair["b"], pair["metric"]
    chosen, outcome = pair["chosen"], pair.get("outcome", "inconclusive")
    info = METRICS.get(metric)
    pts = bool(info is not None and info.percent_points)
    diff = _get(pair, "diff_mean")
    ci = [(math.nan if v is None else float(v)) for v in pair.get("diff_ci") or (None, None)]
    places = 1 if pts else _decimals(diff, *ci)
    crit = str(pair.get("criterion", ""))
    reason = _REASONS.get(crit, "{c} has the " + crit).format(c=chosen)
    if outcome == "better":
        other = a if chosen == b else b
        return (f"Use {chosen}. {chosen} is better than {other} on {metric} by "
                f"{_amount(abs(diff), pts, places)} (95% CI {_signed(ci[0], pts, places, False)} "
                f"to {_signed(ci[1], pts, places, False)} for {b} − {a}; "
                f"p {_p(_get(pair, 'p_holm'))}).")  # fmt: skip
    shown = f"{b} − {a} = {_signed(diff, pts, places)}"
    if outcome == "equivalent":
        lo, hi = pair["equivalence_ci"]
        level = 100 * (1 - 2 * _get(pair, "alpha", 0.05))
        return (f"Use {chosen}. {a} and {b} are equivalent on {metric} within "
                f"±{_amount(_get(pair, 'rope'), pts)} ({shown}, {level:g}% CI "
                f"{_signed(lo, pts, places, False)} to {_signed(hi, pts, places, False)}); "
                f"{reason}.")  # fmt: skip
    det = _get(pair, "detectable_diff")
    return (f"Use {chosen}. The {metric} difference is not established ({shown}, 95% CI "
            f"{_signed(ci[0], pts, places, False)} to {_signed(ci[1], pts, places, False)}; this "
            f"design detects {_amount(det, pts, places)}); {reason}.")  # fmt: skip


def _repeats_clause(pair: Mapping[str, Any], pts: bool, places: int) -> str:
    """How many repeats would settle it, or that repeats cannot (NOTE [Three verdicts])."""
    k = pair["n_folds"]
    parts, stuck = [], []
    targets = [("the observed difference", abs(_get(pair, "diff_mean")),
                pair.get("repeats_for_observed"))]
    if _get(pair, "rope", 0.0) > 0:
        targets.append(("the margin", _get(pair, "rope"), pair.get("repeats_for_rope")))
    det = _get(pair, "detectable_diff")
    for what, value, reps in targets:
        if not value > 0 or value >= det:
            continue
        amount = _amount(value, pts, places)
        if reps is None:
            stuck.append(f"{what} ({amount})")
        else:
            parts.append(f"{reps} repeats of {k}-fold CV would bring it down to {what} "
                         f"({amount})")  # fmt: skip
    text = ("; ".join(parts) + ".") if parts else ""
    if stuck:
        limit = _amount(_get(pair, "detectable_limit"), pts, places + 1)  # beside the targets
        text += (f" No number of repeats brings it below {limit}, so not down to "
                 f"{' or '.join(stuck)}: the n_test/n_train term of the variance dominates; "
                 f"more data is needed, not more repeats.")  # fmt: skip
    return text.strip()


def pair_sentence(pair: Mapping[str, Any], *, reason: str, n_networks: int) -> str:
    """The verdict sentence of one pair (NOTE [Three verdicts]); ``reason`` explains ``chosen``."""
    a, b, metric, outcome = pair["a"], pair["b"], pair["metric"], pair["outcome"]
    info = METRICS.get(metric)
    pts = bool(info is not None and info.percent_points)
    diff, ci, level = pair["diff_mean"], pair["diff_ci"], pair["confidence_level"]
    places = 1 if pts else _decimals(diff, *ci)
    shown = (f"{b} − {a} = {_signed(diff, pts, places)} ({level * 100:g}% CI "
             f"{_signed(ci[0], pts, places, False)} to {_signed(ci[1], pts, places, False)})")
    stat = "—" if pair["statistic"] is None else _num(pair["statistic"], ".2f")
    tests = f"corrected t({pair['df']}) = {stat}, p {_p(pair['p_corrected_t'])}"
    if n_networks > 2:
        tests += f", Holm p {_p(pair['p_holm'])}"
    if pair.get("p_mcnemar") is not None:
        tests += f"; McNemar p {_p(pair['p_mcnemar'])}"
    rope = pair["rope"]
    eq = f"P(equivalent within ±{_amount(rope, pts)}) {_prob(pair['p_equivalent'])}, " \
        if rope > 0 else ""
    probs = (f"P({b} better) {_prob(pair['p_b_better'])}, {eq}"
             f"P({a} better) {_prob(pair['p_a_better'])}")
    wins = f"{b} won {pair['fold_wins']:g} of {pair['n_splits']} folds"
    if outcome == "better":
        small = ""
        if rope > 0 and pair["p_tost_holm"] < pair["alpha"]:
            small = (f" The difference is real but lies within the ±{_amount(rope, pts)} margin "
                     f"(TOST p {_p(pair['p_tost'])}): of no practical importance.")
        return f"{pair['verdict']} on {metric}: {shown}, {tests}; {probs}; {wins}.{small}"
    if outcome == "equivalent":
        lo, hi = pair["equivalence_ci"]
        return (f"{a} and {b} are equivalent on {metric} within ±{_amount(rope, pts)}: {shown}; "
                f"the {100 * (1 - 2 * pair['alpha']):g}% CI {_signed(lo, pts, places, False)} to "
                f"{_signed(hi, pts, places, False)} lies inside the margin (TOST p "
                f"{_p(pair['p_tost'])}); {probs}; {wins}. Choosing {pair['chosen']}, {reason}, "
                f"as both are equivalent.")  # fmt: skip
    det = _amount(pair["detectable_diff"], pts, places)
    margin = "" if rope > 0 else " (no margin of equivalence is set, so equivalence is not tested)"
    design = f"{pair['n_splits'] // pair['n_folds']}×{pair['n_folds']}-fold CV" \
        if pair["n_splits"] > pair["n_folds"] else f"{pair['n_folds']}-fold CV"
    text = (f"Inconclusive on {metric}: {shown}, {tests}; {probs}; {wins}. This design "
            f"({design}) detects a difference of {det} with 80% power{margin}.")
    repeats = _repeats_clause(pair, pts, places)
    return (text + (f" {repeats}" if repeats else "")
            + f" Choosing {pair['chosen']}, {reason}, as a tie-break: the two are not shown to "
              f"be equivalent.")  # fmt: skip
