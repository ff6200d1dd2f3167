"""The verdict's statistics: correlated-t posterior, TOST, power, repeats, margins, intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from calipers.config import parse_config
from calipers.exceptions import ConfigError
from calipers.stats import (
    compare,
    correlated_posterior,
    describe_scores,
    detectable_difference,
    equivalence_test,
    headline,
    power_analysis,
    repeats_needed,
    resolve_rope,
)

# Hand example (as in test_compare.py): 5-fold CV, r = 1/4, d = B - A = [.03, .02, .02, .01, .04]
#   mean = .024, var(d) = 130e-6, se = sqrt((1/5 + 1/4) * 130e-6) = 0.0076485293, df = 4
A5 = np.array([0.80, 0.82, 0.78, 0.85, 0.80])
B5 = np.array([0.83, 0.84, 0.80, 0.86, 0.84])
SE5 = 0.0076485293


def test_posterior_hand_example():
    # m = 0.01: P(mu > m) = t4.sf((.01 - .024)/se) = t4.sf(-1.8304173); P(mu < -m) = t4.cdf(-4.4452991)
    post = correlated_posterior(A5, B5, test_train_ratio=0.25, rope=0.01)
    assert (post.loc, post.df) == (pytest.approx(0.024), 4)
    assert post.scale == pytest.approx(SE5, rel=1e-8)
    p_b, p_a = stats.t.sf(-1.8304173, 4), stats.t.cdf(-4.4452991, 4)
    assert_allclose([post.p_b_better, post.p_a_better], [p_b, p_a], rtol=1e-6)
    assert post.p_equivalent == pytest.approx(1 - p_b - p_a)
    # a loss: "B better" is the lower tail
    loss = correlated_posterior(A5, B5, test_train_ratio=0.25, rope=0.01, higher_is_better=False)
    assert (loss.p_b_better, loss.p_a_better) == (post.p_a_better, post.p_b_better)
    # no margin: P(equivalent) = 0 and P(B better) = P(mu > 0)
    zero = correlated_posterior(A5, B5, test_train_ratio=0.25)
    assert zero.p_equivalent == 0 and zero.p_b_better == pytest.approx(stats.t.sf(-0.024 / SE5, 4))


@pytest.mark.parametrize(("k", "runs", "rope"), [(10, 1, 0.01), (5, 3, 0.02), (10, 10, 0.005),
                                                 (3, 1, 0.0)])  # fmt: skip
def test_posterior_against_baycomp(rng, k, runs, rope):
    baycomp = pytest.importorskip("baycomp")
    a = rng.normal(0.85, 0.02, size=k * runs)
    b = a + rng.normal(0.01, 0.015, size=k * runs)
    post = correlated_posterior(a, b, test_train_ratio=1 / (k - 1), rope=rope)
    ref = baycomp.CorrelatedTTest.probs(a, b, rope=rope, runs=runs)
    if rope:
        assert_allclose([post.p_a_better, post.p_equivalent, post.p_b_better], ref, rtol=1e-9)
    else:
        assert_allclose([post.p_a_better, post.p_b_better], ref, rtol=1e-9)


@pytest.mark.parametrize("rope", [0.005, 0.01, 0.03])
def test_tost_uncorrected_equals_two_scipy_one_sided_tests(rng, rope):
    a = rng.normal(0.9, 0.01, size=12)
    b = a + rng.normal(0.002, 0.006, size=12)
    res = equivalence_test(a, b, test_train_ratio=0.0, rope=rope)
    lower = stats.ttest_1samp(b - a, -rope, alternative="greater").pvalue
    upper = stats.ttest_1samp(b - a, rope, alternative="less").pvalue
    assert_allclose([res.p_lower, res.p_upper, res.pvalue], [lower, upper, max(lower, upper)],
                    rtol=1e-10)  # fmt: skip


def test_tost_corrected_hand_example_and_posterior_agree():
    # m = 0.03: p_lower = t4.sf((.024 + .03)/se) = t4.sf(7.06018), p_upper = t4.cdf(-0.784465)
    res = equivalence_test(A5, B5, test_train_ratio=0.25, rope=0.03)
    assert_allclose([res.p_lower, res.p_upper], [stats.t.sf(7.0601807, 4),
                                                 stats.t.cdf(-0.7844645, 4)], rtol=1e-6)
    post = correlated_posterior(A5, B5, test_train_ratio=0.25, rope=0.03)
    assert_allclose([res.p_lower, res.p_upper], [post.p_a_better, post.p_b_better], rtol=1e-12)
    assert equivalence_test(A5, B5, test_train_ratio=0.25, rope=0.0).pvalue == 1.0


def test_detectable_difference_gives_80_percent_power_by_simulation():
    # Exact model of the corrected test: d_j = delta + u + e_j with a shared u (correlation
    # rho = r / (1 + r)); then t = mean(d) / sqrt((1/J + r) s^2) is non-central t.
    rng = np.random.default_rng(7)
    J, r, sigma_e, n_sim = 10, 1 / 9, 0.02, 40000
    delta = detectable_difference(sigma_e, n_folds=J, test_train_ratio=r)
    u = rng.normal(0, sigma_e * math.sqrt(r), size=(n_sim, 1))
    d = delta + u + rng.normal(0, sigma_e, size=(n_sim, J))
    t = d.mean(axis=1) / np.sqrt((1 / J + r) * d.var(axis=1, ddof=1))
    power = np.mean(np.abs(t) > stats.t.isf(0.025, J - 1))
    assert power == pytest.approx(0.8, abs=0.01)  # MC s.e. 0.002
    # and the textbook approximation (t_{1-a/2} + t_{1-b}) * se is close to the exact root
    approx = (stats.t.isf(0.025, 9) + stats.t.isf(0.2, 9)) * sigma_e * math.sqrt(1 / J + r)
    assert delta == pytest.approx(approx, rel=0.05)


def test_detectable_difference_direct_nct():
    delta = detectable_difference(0.03, n_folds=5, n_repeats=2, test_train_ratio=0.25,
                                  alpha=0.1, power=0.9)  # fmt: skip
    lam = delta / (0.03 * math.sqrt(1 / 10 + 0.25))
    crit = stats.t.isf(0.05, 9)
    assert stats.nct.sf(crit, 9, lam) + stats.nct.cdf(-crit, 9, lam) == pytest.approx(0.9)


def test_repeats_needed_constructed_cases():
    kw = {"n_folds": 10, "test_train_ratio": 1 / 9}
    limit = (stats.norm.isf(0.025) + stats.norm.isf(0.2)) * 0.02 * math.sqrt(1 / 9)
    an = power_analysis([0.0, 0.0, 0.0], [0.02, -0.02, 0.0], n_folds=10,
                        test_train_ratio=1 / 9, repeats=(1, 1000))  # std of d = 0.02
    assert an.limit == pytest.approx(limit, rel=1e-5)  # + the far tail's ~1e-6 and an.detectable[1] > an.limit
    assert repeats_needed(0.02, limit * 0.99, **kw) is None  # the n_test/n_train term dominates
    target = (an.detectable[0] + an.limit) / 2
    got = repeats_needed(0.02, target, **kw)
    brute = next(r for r in range(1, 200) if detectable_difference(0.02, n_repeats=r, **kw)
                 <= target)  # fmt: skip
    assert got == brute and got > 1
    assert repeats_needed(0.02, an.detectable[0], **kw) == 1
    # 2-fold CV has r = 1: repeats can hardly help; 20-fold: one repeat's 1/J dominates
    assert power_analysis([0, 0, 0, 0], [1, -1, 0, 0], n_folds=2, test_train_ratio=1.0
                          ).repeat_share == pytest.approx(1 / 3)  # fmt: skip


def test_power_errors():
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2; got 1"):
        detectable_difference(0.1, n_folds=1, test_train_ratio=0.1)
    with pytest.raises(ValueError, match="std_diff must be a finite number >= 0"):
        detectable_difference(-0.1, n_folds=5, test_train_ratio=0.1)
    with pytest.raises(ValueError, match="target must be a finite difference > 0"):
        repeats_needed(0.1, 0, n_folds=5, test_train_ratio=0.1)


def test_resolve_rope_units_and_errors():
    assert resolve_rope("accuracy", None) == 0.01  # default: 1 point
    assert resolve_rope("accuracy", 2.5) == 0.025  # points for rates
    assert resolve_rope("nll", None) == 0.0 and resolve_rope("nll", 0.05) == 0.05
    assert resolve_rope("mydice", 0) == 0.0
    with pytest.raises(ValueError, match="whose scale calipers does not know"):
        resolve_rope("mydice", 0.01)
    for bad in (-0.5, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="rope must be a finite number >= 0"):
            resolve_rope("accuracy", bad)


def test_config_rope():
    """The margin is checked against the metric's units before any training (the runner's
    check; config.py, the lowest layer, cannot know the metrics' scales)."""
    from calipers.experiment.runner import _check_compare_metric

    net = {"A": {"model": "calipers.models:MLP"}}
    cfg = parse_config({"networks": net, "compare": {"rope": 2}})
    assert cfg.compare.rope == 2
    _check_compare_metric(cfg, {"A": None})
    with pytest.raises(ConfigError, match="compare.rope"):
        parse_config({"networks": net, "compare": {"rope": -1}})
    cfg = parse_config({"networks": net, "compare": {"rope": 150}})
    with pytest.raises(ConfigError, match="compare.rope: rope = 150.0 points .* spans the whole"):
        _check_compare_metric(cfg, {"A": None})


def test_compare_equivalent_case_sentence_and_headline():
    a = 0.90 + np.random.default_rng(3).normal(0, 0.004, size=20)
    b = a + 0.0002 + 0.002 * np.resize([1.0, -1.0], 20)  # 10-fold x 2: mean d = 0.02 points
    pair = compare({"A": a, "B": b}, test_train_ratio=1 / 9, n_repeats=2, rope=1,
                   alpha=0.01).pairs[0]  # fmt: skip
    tost = equivalence_test(a, b, test_train_ratio=1 / 9, rope=0.01)
    assert pair.p_holm >= 0.01 and tost.pvalue < 0.01
    assert pair.outcome == "equivalent" and pair.verdict == "equivalent within ±1.0 points"
    half = stats.t.isf(0.01, 19) * tost.se
    assert_allclose(pair.equivalence_ci, [tost.diff_mean - half, tost.diff_mean + half])
    assert pair.sentence.startswith("A and B are equivalent on accuracy within ±1.0 points: ")
    assert "the 98% CI" in pair.sentence and f"TOST p {'< 0.001'}" in pair.sentence
    assert pair.headline == headline(pair.to_dict())
    assert pair.headline.startswith(f"Use {pair.chosen}. A and B are equivalent on accuracy "
                                    "within ±1.0 points (B − A = 0.0 points, 98% CI ")  # fmt: skip


def test_compare_inconclusive_repeats_advice():
    # 20-fold CV (r = 1/19), std(d) = 1 point, mean(d) = 0.655 points: t = 2.04 (p = 0.055);
    # the limit (z_.975 + z_.8) * 1 * sqrt(1/19) = 0.643 points lies below the observed 0.655
    z = np.random.default_rng(11).normal(size=20)
    a = 0.8 + np.random.default_rng(12).normal(0, 0.03, size=20)
    b = a + 0.00655 + 0.01 * (z - z.mean()) / z.std(ddof=1)
    pair = compare({"A": a, "B": b}, test_train_ratio=1 / 19, rope=0).pairs[0]
    std = float((b - a).std(ddof=1))
    assert pair.outcome == "inconclusive"
    want = repeats_needed(std, abs(pair.diff_mean), n_folds=20, test_train_ratio=1 / 19)
    assert pair.repeats_for_observed == want and want is not None
    assert (f"{want} repeats of 20-fold CV would bring it down to the observed difference"
            in pair.sentence)  # fmt: skip
    assert "no margin of equivalence is set" in pair.sentence and "P(equivalent" not in \
        pair.sentence


def test_bounded_interval_stays_in_range_and_matches_hand_logit():
    # a small run whose naive t interval leaves [0, 1]: accuracy near 0 with a wide spread
    s = np.array([0.0, 0.02, 0.21])
    naive = describe_scores(s, test_train_ratio=0.0)
    assert naive.ci_low < 0
    res = describe_scores(s, test_train_ratio=0.5, bounds=(0, 1), n_test=50)
    assert 0 <= res.ci_low < res.mean < res.ci_high <= 1
    x = (s * 50 + 0.5) / 51
    z = np.log(x / (1 - x))
    half = stats.t.isf(0.025, 2) * math.sqrt((1 / 3 + 0.5) * z.var(ddof=1))
    expit = stats.logistic.cdf
    back = (expit([z.mean() - half, z.mean() + half]) * 51 - 0.5) / 50  # undo the shift
    assert_allclose([res.ci_low, res.ci_high], np.clip(back, 0, 1))
    assert res.method == "corrected t on the logit scale"
    assert_allclose(res.ci_naive, [naive.ci_low, naive.ci_high])
    top = describe_scores([1.0, 1.0, 0.96, 0.99], test_train_ratio=1 / 3, bounds=(0, 1))
    assert top.ci_high <= 1 and 0 < top.ci_low < top.mean
    same = describe_scores([1.0, 1.0, 1.0], test_train_ratio=0.5, bounds=(0, 1))
    assert (same.ci_low, same.ci_high) == (1.0, 1.0)


def test_bounded_interval_holds_the_mean_with_few_test_samples():
    """Six test volumes per fold (ISBI): the empirical-logit shift must not move the limits.
    Before the fix the mean Dice 0.940 got the interval [0.867, 0.887]."""
    dice = [0.9376192366287981, 0.9457285043274609, 0.944387281805838, 0.9420787372076601,
            0.9308179738217062]
    res = describe_scores(dice, test_train_ratio=0.25, bounds=(0, 1), n_test=6)
    plain = describe_scores(dice, test_train_ratio=0.25)
    assert res.ci_low < res.mean < res.ci_high
    assert res.ci_low == pytest.approx(plain.ci_low, abs=0.002)  # far from the bounds: ~ the t
    assert res.ci_high == pytest.approx(plain.ci_high, abs=0.002)


def test_per_class_dice_and_voxel_error_intervals_stay_in_range():
    """Segmentation folds report dice_1, dice_2, ... and voxel_error beside METRICS' entries;
    their intervals must respect [0, 1] too (a 2-fold run gave dice_1 0.3 [-1.6, 2.2])."""
    from calipers.stats.scales import metric_scale

    for name in ("dice_1", "dice_12", "voxel_error"):
        assert metric_scale(name).bounds == (0.0, 1.0)
    # per-class Dice reads like mean_dice (percent points, its margin); voxel_error a fraction
    d2, md = metric_scale("dice_2"), metric_scale("mean_dice")
    assert (d2.metric, d2.percent, d2.bounds, d2.default_rope) == \
        ("dice_2", md.percent, md.bounds, md.default_rope) and d2.percent
    assert not metric_scale("voxel_error").percent
    from calipers.report.html import _fmt

    assert _fmt(0.8731, "dice_1") == _fmt(0.8731, "mean_dice") != _fmt(0.8731, "voxel_error")
    assert metric_scale("dice_x").bounds is None and not metric_scale("dice_x").known
    res = describe_scores([0.2, 0.4], test_train_ratio=1.0, bounds=metric_scale("dice_1").bounds,
                          n_test=3)
    assert 0 <= res.ci_low < res.mean < res.ci_high <= 1


def test_corrected_interval_is_wider_by_the_nadeau_bengio_factor(rng):
    s = rng.normal(0.3, 0.05, size=10)
    naive = describe_scores(s, test_train_ratio=0.0)
    cor = describe_scores(s, test_train_ratio=1 / 9)
    factor = math.sqrt((1 / 10 + 1 / 9) / (1 / 10))
    assert (cor.ci_high - cor.ci_low) == pytest.approx(factor * (naive.ci_high - naive.ci_low))
    with pytest.raises(ValueError, match=r"scores must lie within bounds \(0, 1\)"):
        describe_scores([0.5, 1.2], test_train_ratio=0.1, bounds=(0, 1))


def test_report_block_shows_probabilities_and_detectable_difference():
    from types import SimpleNamespace

    from calipers.report.html import _verdict_numbers

    pair = compare({"A": A5, "B": B5}, test_train_ratio=0.25).pairs[0].to_dict()
    html = _verdict_numbers(SimpleNamespace(summary={"metric": "accuracy", "comparison": pair}))
    cells = [c.split("<")[0] for c in html.split("<td>")[1:]]
    from calipers._format import fmt_probability

    assert cells[:3] == [fmt_probability(pair[k])  # the one number rule: probabilities in %
                         for k in ("p_b_better", "p_equivalent", "p_a_better")]
    assert cells[3].endswith(" pp") and float(cells[3][:-3]) == pytest.approx(
        100 * pair["detectable_diff"], rel=0.05)
    assert cells[4] == "5 of 5"
    assert "<th>P(equivalent within ±1 pp)</th>" in html or "P(equivalent within ±1" in html
    assert "<th>P(B better)</th>" in html and "<th>P(B better)</th>" in html
    assert _verdict_numbers(SimpleNamespace(summary={"metric": "accuracy"})) == ""
