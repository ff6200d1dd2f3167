"""calipers.stats.compare against SciPy, statsmodels and hand-derived values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from calipers.exceptions import FoldMismatchError
from calipers.stats import detectable_difference
from calipers.stats.compare import (
    compare,
    corrected_ttest,
    describe_scores,
    fold_win_rate,
    holm,
    mcnemar_test,
)

DESIGN_KEYS = {"a", "b", "metric", "diff_mean", "diff_ci", "p_corrected_t", "p_mcnemar",
               "p_b_better", "verdict", "chosen"}  # fmt: skip

# Hand example, 5-fold CV (n_test / n_train = 1/4):
#   d = B - A = [.03, .02, .02, .01, .04];  mean = .12 / 5 = .024
#   deviations [.006, -.004, -.004, -.014, .016]; squares sum = 520e-6; var(d) = 130e-6
#   se = sqrt((1/5 + 1/4) * 130e-6) = sqrt(58.5e-6) = 0.0076485293;  t = .024 / se = 3.1378582
#   95% CI: .024 ± t_{4,.975} · se = .024 ± 2.7764451 · 0.0076485293 = .024 ± 0.0212357217
#          = [0.0027642783, 0.0452357217]
A5 = np.array([0.80, 0.82, 0.78, 0.85, 0.80])
B5 = np.array([0.83, 0.84, 0.80, 0.86, 0.84])


def test_describe_scores_against_scipy(rng):
    s = rng.normal(0.9, 0.02, size=10)
    res = describe_scores(s, test_train_ratio=0.0, confidence_level=0.9)
    lo, hi = stats.t.interval(0.9, 9, loc=s.mean(), scale=stats.sem(s))
    assert_allclose([res.mean, res.std, res.ci_low, res.ci_high], [s.mean(), s.std(ddof=1), lo, hi])
    assert_allclose(res.ci_naive, [lo, hi])
    assert res.n == 10 and res.folds == tuple(s) and res.method == "t"
    assert set(res.to_dict()) == {"mean", "std", "ci_low", "ci_high", "folds", "ci_method",
                                  "ci_naive"}  # fmt: skip


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_no_correction_equals_ttest_rel(rng, alternative):
    a, b = rng.normal(size=(2, 12))
    b += 0.3
    res = corrected_ttest(a, b, test_train_ratio=0.0, alternative=alternative)
    ref = stats.ttest_rel(b, a, alternative=alternative)
    assert_allclose([res.statistic, res.pvalue, res.df], [ref.statistic, ref.pvalue, ref.df],
                    rtol=1e-10)  # fmt: skip
    for level in (0.95, 0.8):
        assert_allclose(res.confidence_interval(level), ref.confidence_interval(level), rtol=1e-10)


def test_corrected_t_hand_example():
    res = corrected_ttest(A5, B5, test_train_ratio=1 / 4)
    assert res.diff_mean == pytest.approx(0.024)
    assert res.statistic == pytest.approx(3.1378582, rel=1e-7)
    assert res.df == 4
    assert res.pvalue == pytest.approx(2 * stats.t.sf(3.1378582, 4), rel=1e-6)
    assert_allclose(res.confidence_interval(), [0.0027642783, 0.0452357217], atol=1e-10)
    # The correction only widens: same t without it is larger.
    assert corrected_ttest(A5, B5, test_train_ratio=0).statistic > res.statistic


def test_corrected_t_zero_variance():
    a = np.array([0.8, 0.7, 0.9])
    same = corrected_ttest(a, a, test_train_ratio=0.5)
    assert math.isnan(same.statistic) and same.pvalue == 1.0 and same.diff_mean == 0.0
    up = corrected_ttest(a, a + 0.1, test_train_ratio=0.5)  # d equal up to rounding
    assert up.statistic == math.inf and up.pvalue == 0.0
    assert_allclose(up.confidence_interval(), [0.1, 0.1])
    less = corrected_ttest(a, a + 0.1, test_train_ratio=0.5, alternative="less")
    assert less.pvalue == 1.0
    json.dumps(up.to_dict(), allow_nan=False)
    assert up.to_dict()["statistic"] is None


def _paired_bool(rng, n, b, c):
    """Correctness arrays with exactly b (A right, B wrong) and c (A wrong, B right)."""
    both = rng.random(n - b - c) < 0.7
    ca = np.concatenate([np.ones(b, bool), np.zeros(c, bool), both])
    cb = np.concatenate([np.zeros(b, bool), np.ones(c, bool), both])
    perm = rng.permutation(n)
    return ca[perm], cb[perm]


@pytest.mark.parametrize(("b", "c"), [(3, 9), (0, 5), (7, 7), (12, 12), (10, 30), (20, 5),
                                      (13, 12)])  # fmt: skip
def test_mcnemar_against_statsmodels(rng, b, c):
    ca, cb = _paired_bool(rng, 200, b, c)
    res = mcnemar_test(ca, cb)
    table = [[np.sum(ca & cb), b], [c, np.sum(~ca & ~cb)]]
    exact = b + c < 25
    ref = sm_mcnemar(table, exact=exact, correction=True)
    assert (res.b, res.c, res.method) == (b, c, "exact" if exact else "chi2")
    assert_allclose([res.statistic, res.pvalue], [ref.statistic, ref.pvalue], rtol=1e-10)


def test_mcnemar_no_discordant_pairs():
    res = mcnemar_test([True, False], [True, False])
    assert (res.b, res.c, res.pvalue, res.method) == (0, 0, 1.0, "exact")
    assert res.to_dict() == {"b": 0, "c": 0, "statistic": 0.0, "pvalue": 1.0, "method": "exact"}


def test_fold_win_rate_with_ties():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 5.0]  # wins 1, ½, 0, 1
    assert fold_win_rate(a, b).to_dict() == {"wins": 2.5, "n": 4, "rate": 0.625}
    assert fold_win_rate(a, b, higher_is_better=False).rate == pytest.approx(0.375)
    # relative tie: equal up to rounding at any scale
    big = np.array([1e6, 2e6])
    assert fold_win_rate(big, big * (1 + 1e-14)).wins == 1.0


def test_holm_against_statsmodels(rng):
    p = np.concatenate([rng.uniform(0, 0.1, 6), [0.02, 0.02, 0.5, 1.0, 0.0]])
    assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    assert holm([]).shape == (0,)


def _scores(rng, means, sd=0.01, n=10):
    base = rng.normal(0, sd, size=n)
    return {k: m + base + rng.normal(0, sd / 2, size=n) for k, m in means.items()}


def test_compare_significant_chooses_better_and_sentence(rng):
    scores = {"A": A5, "B": B5}
    ca, cb = _paired_bool(rng, 500, 5, 20)
    res = compare(scores, test_train_ratio=1 / 4, correct={"A": ca, "B": cb})
    pair = res.pairs[0]
    ref = corrected_ttest(A5, B5, test_train_ratio=1 / 4)
    assert (pair.a, pair.b, pair.chosen, res.best) == ("A", "B", "B", "B")
    assert pair.criterion == "significant difference" and pair.verdict == "B is better than A"
    assert pair.p_corrected_t == pytest.approx(ref.pvalue) and pair.p_holm == pair.p_corrected_t
    assert pair.p_mcnemar == pytest.approx(mcnemar_test(ca, cb).pvalue)
    # correlated-t posterior with the default 1-point margin, by hand from scipy.stats.t
    se = 0.0076485293
    p_b, p_a = stats.t.sf((0.01 - 0.024) / se, 4), stats.t.cdf((-0.01 - 0.024) / se, 4)
    assert_allclose([pair.p_b_better, pair.p_equivalent, pair.p_a_better],
                    [p_b, 1 - p_b - p_a, p_a], rtol=1e-6)  # fmt: skip
    assert pair.outcome == "better" and pair.fold_wins == 5
    assert_allclose(pair.diff_ci, ref.confidence_interval())
    mc = f"{mcnemar_test(ca, cb).pvalue:.3f}"
    assert pair.sentence == (
        "B is better than A on accuracy: B − A = +2.4 points (95% CI +0.3 to +4.5), corrected "
        f"t(4) = 3.14, p = 0.035; McNemar p = {mc}; P(B better) = {p_b:.2f}, P(equivalent "
        f"within ±1.0 points) = {1 - p_b - p_a:.2f}, P(A better) = {p_a:.2f}; B won 5 of 5 folds."
    )
    assert pair.headline == ("Use B. B is better than A on accuracy by 2.4 points (95% CI +0.3 "
                             "to +4.5 for B − A; p = 0.035).")  # fmt: skip
    assert res.sentence == pair.sentence


def test_compare_lower_is_better_metric():
    res = compare({"A": B5, "B": A5}, metric="nll", test_train_ratio=1 / 4)
    assert res.pairs[0].chosen == "B" and not res.higher_is_better  # B has the lower loss
    assert res.pairs[0].sentence.startswith("B is better than A on nll: B − A = −0.0240 (95% CI")
    p_b = stats.t.cdf(0, 4, loc=-0.024, scale=0.0076485293)  # lower is better: P(mu < 0)
    assert f"P(B better) = {p_b:.2f}, P(A better) = {1 - p_b:.2f}" in res.pairs[0].sentence
    assert "equivalent" not in res.pairs[0].sentence  # no default margin for a loss
    custom = compare({"A": A5, "B": B5}, metric="dice", higher_is_better=False,
                     test_train_ratio=1 / 4)  # fmt: skip
    assert custom.best == "A" and "B − A = +0.0240" in custom.sentence


def test_compare_not_established_lower_std(rng):
    a = np.array([0.90, 0.91, 0.89, 0.90, 0.92, 0.88])
    b = np.array([0.93, 0.86, 0.92, 0.88, 0.95, 0.87])
    res = compare({"A": a, "B": b}, test_train_ratio=1 / 5)
    pair = res.pairs[0]
    t = corrected_ttest(a, b, test_train_ratio=1 / 5)
    lo, hi = t.confidence_interval()
    assert pair.p_corrected_t > 0.05 and pair.verdict == "inconclusive"
    assert (pair.chosen, pair.criterion, pair.outcome) == ("A", "lower fold std", "inconclusive")
    sa, sb = a.std(ddof=1) * 100, b.std(ddof=1) * 100
    det = detectable_difference(float((b - a).std(ddof=1)), n_folds=6, test_train_ratio=1 / 5)
    assert pair.detectable_diff == pytest.approx(det)
    def pts(x):
        return f"{x * 100:+.1f}".replace("-", "−")

    assert pair.sentence.startswith(
        f"Inconclusive on accuracy: B − A = {pts(t.diff_mean)} points (95% CI "
        f"{pts(lo)} to {pts(hi)}), corrected t(5) = {t.statistic:.2f}, p = "
        f"{t.pvalue:.2f}; P(B better) = {pair.p_b_better:.2f}, P(equivalent within ±1.0 points) "
        f"= {pair.p_equivalent:.2f}, P(A better) = {pair.p_a_better:.2f}; B won 3 of 6 folds. "
        f"This design (6-fold CV) detects a difference of {det * 100:.1f} points with 80% power."
    )
    assert pair.sentence.endswith(
        f"Choosing A, which has the lower fold std ({sa:.1f} vs {sb:.1f} points), as a "
        f"tie-break: the two are not shown to be equivalent.")
    assert pair.headline == (
        f"Use A. The accuracy difference is not established (B − A = {pts(t.diff_mean)} "
        f"points, 95% CI {pts(lo)} to {pts(hi)}; this design detects "
        f"{det * 100:.1f} points); A has the lower fold-to-fold spread.")


@pytest.mark.parametrize(
    ("uncertainty", "chosen", "criterion", "text"),
    [
        ({"A": {"entropy": 0.3, "ece": 0.01}, "B": {"entropy": 0.2, "ece": 0.05}}, "B",
         "lower predictive entropy", "(0.2 vs 0.3)"),
        ({"A": {"entropy": 0.3, "ece": 0.05}, "B": {"entropy": 0.3, "ece": 0.02}}, "B",
         "lower ECE", "(2.0 vs 5.0 points)"),
        ({"A": {"ece": 0.01}, "B": {"entropy": 0.1, "ece": 0.02}}, "A", "lower ECE",
         "(1.0 vs 2.0 points)"),
        (None, "B", "higher mean accuracy", "(85.5 vs 85.0 points)"),
    ],
)  # fmt: skip
def test_compare_equal_std_tie_breaks(uncertainty, chosen, criterion, text):
    a = np.array([0.84, 0.86, 0.85, 0.85])
    res = compare({"A": a, "B": a + 0.005 * np.array([1, 1, 1, 1.0000001])},
                  test_train_ratio=1 / 3, alpha=1e-300, uncertainty=uncertainty)  # fmt: skip
    pair = res.pairs[0]
    assert (pair.chosen, pair.criterion) == (chosen, criterion)
    assert f"Choosing {chosen}, which has the {criterion} {text}, as a tie-break" in pair.sentence


def test_compare_all_tie_chooses_first():
    a = [0.8, 0.9, 0.85]
    pair = compare({"A": a, "B": a}, test_train_ratio=0.5).pairs[0]
    assert (pair.chosen, pair.criterion, pair.p_corrected_t) == ("A", "first listed", 1.0)


def test_compare_three_networks_holm_best_and_json(rng):
    scores = _scores(rng, {"A": 0.80, "B": 0.90, "C": 0.905})
    res = compare(scores, test_train_ratio=1 / 9)
    assert [(p.a, p.b) for p in res.pairs] == [("A", "B"), ("A", "C"), ("B", "C")]
    raw = [corrected_ttest(scores[a], scores[b], test_train_ratio=1 / 9).pvalue
           for a, b in [("A", "B"), ("A", "C"), ("B", "C")]]  # fmt: skip
    assert_allclose([p.p_holm for p in res.pairs], holm(raw))
    assert all("Holm p" in p.sentence for p in res.pairs)
    # A loses both pairs; B and C both win once against A, and B vs C decides.
    wins = {n: sum(p.chosen == n for p in res.pairs) for n in "ABC"}
    assert wins["A"] == 0 and res.best == max("ABC", key=lambda n: (wins[n], res.summaries[n].mean))
    assert res.sentence.startswith(f"{res.best} is chosen on accuracy: preferred in "
                                   f"{wins[res.best]} of 2 pairwise comparisons")  # fmt: skip
    # the sentence says how many of those wins are established differences
    est = sum(p.chosen == res.best and p.outcome == "better" for p in res.pairs)
    assert (f"better in all {est}" if est == wins[res.best] else
            f"better in {est} of them; the other {wins[res.best] - est} not established") \
        in res.sentence
    d = res.to_dict()
    assert set(d) >= {"metric", "higher_is_better", "networks", "pairs", "best", "sentence"}
    assert set(d["comparison"]) >= DESIGN_KEYS and d["comparison"] == d["pairs"][0]
    assert d["networks"]["B"] == res.summaries["B"].to_dict()
    json.dumps(d, allow_nan=False)


def test_compare_best_ties_broken_by_mean():
    a = np.array([0.80, 0.82, 0.81, 0.83])
    # every difference is within noise: each pair picks by std; make a cycle impossible to break
    res = compare({"A": a, "B": a[::-1].copy(), "C": a[[1, 0, 3, 2]] + 1e-4},
                  test_train_ratio=1 / 3)  # fmt: skip
    # all stds equal -> each pair chosen by higher mean: C beats A and B; A vs B tie -> A
    assert [p.criterion for p in res.pairs] == ["first listed", "higher mean accuracy",
                                                "higher mean accuracy"]  # fmt: skip
    assert res.best == "C"


def test_pair_to_dict_has_design_keys():
    d = compare({"A": A5, "B": B5}, test_train_ratio=1 / 4).pairs[0].to_dict()
    assert set(d) >= DESIGN_KEYS
    assert set(d) - DESIGN_KEYS == {
        "criterion", "p_holm", "statistic", "df", "sentence", "headline", "outcome",
        "confidence_level", "rope", "alpha", "p_tost", "p_tost_holm", "equivalence_ci",
        "p_equivalent", "p_a_better", "fold_wins", "fold_win_rate", "n_splits", "n_folds",
        "detectable_diff", "detectable_limit", "repeats_for_observed", "repeats_for_rope"}
    assert d["p_mcnemar"] is None and d["diff_ci"] == pytest.approx([0.0027642783, 0.0452357217])
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scores": {"A": A5}}, ValueError, r"scores must map at least 2 network names to their "
         r"fold scores; got 1 \(A\)"),
        ({"scores": {"A": A5, "B": B5[:4]}}, FoldMismatchError, r"scores\['A'\] has 5 fold "
         r"scores but scores\['B'\] has 4"),
        ({"scores": {"A": [0.9], "B": [0.8]}}, ValueError, r"scores\['A'\] must hold at least 2 "
         "fold scores; got 1"),
        ({"scores": {"A": A5, "B": [0.8, np.nan, 0.8, 0.8, 0.8]}}, ValueError,
         r"scores\['B'\] holds 1 NaN or infinite value\(s\) \(first at index \(1,\)\)"),
        ({"scores": {"A": A5, "B": np.ones((5, 2))}}, ValueError, r"scores\['B'\] must have "
         r"shape \(n_folds \* n_repeats,\); got shape \(5, 2\)"),
        ({"alpha": 0.0}, ValueError, r"alpha must be a number in \(0, 1\), e.g. 0.05; got 0.0"),
        ({"alpha": 1.5}, ValueError, "alpha must be a number in"),
        ({"confidence_level": 95}, ValueError, "confidence_level must be a number in"),
        ({"test_train_ratio": -1}, ValueError, r"test_train_ratio must be a finite number >= 0 "
         r"\(n_test / n_train\); got -1. For k-fold CV pass 1 / \(k - 1\)"),
        ({"metric": "acuracy"}, ValueError, "unknown metric 'acuracy'; did you mean 'accuracy'"
         r"\? .* For a custom metric pass higher_is_better"),
        ({"metric": "nll", "higher_is_better": True}, ValueError, "higher_is_better=True "
         "contradicts metric 'nll', for which lower is better"),
        ({"correct": {"A": [True, False]}}, ValueError, r"correct has no entry for network\(s\) "
         "'B'"),
        ({"correct": {"A": [1, 0], "Bx": [1, 1]}}, ValueError, "unknown network in correct "
         "'Bx'; did you mean 'B'"),
        ({"correct": {"A": [1, 0], "B": [1, 1, 0]}}, ValueError, "correct arrays differ in "
         "length"),
        ({"correct": {"A": [0.5, 0], "B": [1, 1]}}, ValueError, r"correct\['A'\] must be a "
         "boolean array"),
        ({"uncertainty": {"A": {"entropi": 0.1}}}, ValueError, "unknown uncertainty measure "
         "'entropi'; did you mean 'entropy'"),
        ({"uncertainty": {"A": {"ece": np.nan}}}, ValueError, r"uncertainty\['A'\]\['ece'\] "
         "must be a finite number"),
        ({"uncertainty": {"C": {"ece": 0.1}}}, ValueError, "unknown network in uncertainty 'C'"),
        ({"rope": -1.0}, ValueError, "rope must be a finite number >= 0 in the units of "
         r"'accuracy' \(percentage points\); got -1.0"),
        ({"rope": math.inf}, ValueError, "rope must be a finite number >= 0"),
        ({"rope": 150}, ValueError, "spans the whole 0-100 % range"),
        ({"metric": "dice", "higher_is_better": True, "rope": 0.01}, ValueError,
         "metric 'dice', whose scale calipers does not know"),
        ({"metric": "nll", "correct": {"A": [1, 0], "B": [1, 1]}}, ValueError,
         "McNemar's test compares error rates and applies to metric 'accuracy' only"),
        ({"n_repeats": 2}, ValueError, "n_repeats = 2 does not fit 5 fold scores"),
    ],
)  # fmt: skip
def test_compare_errors(kwargs, error, match):
    args = {"scores": {"A": A5, "B": B5}, "test_train_ratio": 0.25, **kwargs}
    with pytest.raises(error, match=match):
        compare(args.pop("scores"), **args)


def test_function_errors():
    with pytest.raises(ValueError, match="unknown alternative 'greatr'; did you mean 'greater'"):
        corrected_ttest(A5, B5, test_train_ratio=0.25, alternative="greatr")
    with pytest.raises(FoldMismatchError, match="scores_a has 5 fold scores but scores_b has 4"):
        corrected_ttest(A5, B5[:4], test_train_ratio=0.25)
    with pytest.raises(ValueError, match="scores must hold at least 2 fold scores; got 1"):
        describe_scores([0.9], test_train_ratio=0.0)
    with pytest.raises(ValueError, match=r"correct_a has shape \(2,\) but correct_b has shape"):
        mcnemar_test([True, False], [True])
    with pytest.raises(ValueError, match=r"correct_b must have shape \(n_samples,\)"):
        mcnemar_test([True], [[True]])
    with pytest.raises(TypeError, match="higher_is_better must be True or False; got 'yes'"):
        fold_win_rate(A5, B5, higher_is_better="yes")
    with pytest.raises(ValueError, match=r"pvalues must lie in \[0, 1\]; got values from"):
        holm([0.5, 1.2])
    with pytest.raises(ValueError, match=r"pvalues must have shape \(m,\)"):
        holm([[0.5]])
