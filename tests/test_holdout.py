"""One held-out split: statistics against SciPy, per-sample metrics against calipers' own,
the summary of a programmatic single split, and the checks made before training."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from calipers.evaluation.cv import CVResult, FoldResult
from calipers.evaluation.folds import Folds, check_cv
from calipers.evaluation.metrics import score_classification, score_regression
from calipers.exceptions import ConfigError
from calipers.experiment.holdout import check_summarizable, per_sample
from calipers.experiment.summary import summarize
from calipers.stats import mcnemar_test
from calipers.stats.holdout import (
    PerSample,
    compare_holdout,
    holdout_estimate,
    paired_difference,
)


def _proba(rng, n, c, y, skill):
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += skill
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_interval_is_scipy_percentile_bootstrap(rng):
    x = rng.normal(0.8, 0.1, size=40)
    res = holdout_estimate(PerSample.mean(x, unit="volume"), seed=7, n_resamples=2000)
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=2000,
                          rng=np.random.default_rng(7))
    assert res.estimate == pytest.approx(x.mean())
    assert_allclose([res.ci_low, res.ci_high], ref.confidence_interval, rtol=1e-12)
    assert res.standard_error == pytest.approx(ref.standard_error, rel=1e-12)
    assert res.to_dict()["interval"] == ("95% percentile bootstrap over 40 test volumes "
                                         "(2000 resamples)")


def test_paired_difference_is_bootstrap_of_the_differences(rng):
    a = rng.normal(0.80, 0.05, size=30)
    b = a + rng.normal(0.02, 0.02, size=30)
    res = paired_difference(PerSample.mean(a), PerSample.mean(b), seed=3, n_resamples=3000)
    ref = stats.bootstrap((b - a,), np.mean, method="percentile", n_resamples=3000,
                          rng=np.random.default_rng(3))
    assert res.diff == pytest.approx((b - a).mean())
    assert_allclose([res.ci_low, res.ci_high], ref.confidence_interval, rtol=1e-12)
    d = ref.bootstrap_distribution
    p = 2 * min((1 + np.sum(d <= 0)) / 3001, (1 + np.sum(d >= 0)) / 3001)
    assert res.pvalue == pytest.approx(min(p, 1.0))


def test_rmse_interval_resamples_squared_errors(rng):
    sq = rng.exponential(size=25)
    res = holdout_estimate(PerSample.root_mean(sq), seed=1, n_resamples=1000)
    ref = stats.bootstrap((sq,), lambda s, axis: np.sqrt(np.mean(s, axis=axis)),
                          method="percentile", n_resamples=1000, rng=np.random.default_rng(1))
    assert res.estimate == pytest.approx(np.sqrt(sq.mean()))
    assert_allclose([res.ci_low, res.ci_high], ref.confidence_interval, rtol=1e-12)


def _fold(pred, metrics, split=0):
    return FoldResult("N", split, metrics, pred)


def test_per_sample_metrics_equal_the_fold_metrics(rng):
    y = rng.integers(0, 4, size=200)
    p = _proba(rng, 200, 4, y, 1.5)
    m = score_classification(y, p)
    res = _fold({"y_true": y, "proba": p}, m)
    for name in ("accuracy", "nll", "brier", "ece"):
        assert per_sample(res, "classification", name).value == pytest.approx(m[name]), name
    yt = rng.normal(size=(50, 2))
    mean, var = yt + rng.normal(size=(50, 2)), rng.uniform(0.5, 2, size=(50, 2))
    m = score_regression(yt, mean, var)
    res = _fold({"y_true": yt, "mean": mean, "var": var}, m)
    for name in ("rmse", "gaussian_nll"):
        assert per_sample(res, "regression", name).value == pytest.approx(m[name]), name
    assert per_sample(res, "regression", "log_likelihood") is None


def test_mcnemar_for_accuracy_and_verdict(rng):
    y = rng.integers(0, 3, size=300)
    right_a = rng.random(300) < 0.70
    right_b = right_a | (rng.random(300) < 0.5)  # B fixes half of A's errors
    s = {"A": PerSample.mean(right_a), "B": PerSample.mean(right_b)}
    res = compare_holdout(s, metric="accuracy", correct={"A": right_a, "B": right_b}, seed=0,
                          n_resamples=2000)
    pair = res.pairs[0]
    assert pair.test == "mcnemar"
    assert pair.pvalue == pytest.approx(mcnemar_test(right_a, right_b).pvalue)
    assert pair.criterion == "significant difference" and res.best == "B"
    assert pair.to_dict()["p_mcnemar"] == pair.pvalue and "McNemar" in pair.sentence
    del y


def test_wilcoxon_on_volumes_and_tie_break_saying_so(rng):
    a = rng.uniform(0.80, 0.90, size=12)
    b = a + rng.normal(0, 0.001, size=12)  # no real difference
    b[0] += 0.05  # B more spread: larger bootstrap SE
    res = compare_holdout({"A": PerSample.mean(a, unit="volume"),
                           "B": PerSample.mean(b, unit="volume")},
                          metric="mean_dice", seed=0, n_resamples=2000)
    pair = res.pairs[0]
    assert pair.test == "wilcoxon"
    assert pair.pvalue == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert pair.pvalue > 0.05
    assert pair.criterion == "lower bootstrap standard error" and pair.chosen == "A"
    assert "not established" in pair.sentence and "lower bootstrap standard error" in \
        pair.sentence
    assert "12 test volumes" in pair.sentence


def test_wilcoxon_real_difference_picks_better(rng):
    a = rng.uniform(0.70, 0.80, size=20)
    b = a + rng.uniform(0.01, 0.03, size=20)
    res = compare_holdout({"A": PerSample.mean(a, unit="volume"),
                           "B": PerSample.mean(b, unit="volume")}, metric="mean_dice")
    assert res.pairs[0].pvalue == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert res.best == "B" and res.pairs[0].criterion == "significant difference"


def test_three_networks_are_holm_adjusted(rng):
    base = rng.normal(1.0, 0.3, size=40) ** 2
    s = {k: PerSample.mean(base + d + rng.normal(0, 0.01, 40)) for k, d in
         (("A", 0.0), ("B", 0.0), ("C", 0.2))}
    res = compare_holdout(s, metric="nll", seed=0, n_resamples=2000)
    assert [p.test for p in res.pairs] == ["bootstrap"] * 3
    raw = [p.pvalue for p in res.pairs]
    from calipers.stats import holm

    assert_allclose([p.p_holm for p in res.pairs], holm(raw))
    assert res.best in ("A", "B")  # C has the higher NLL in both of its pairs


def test_identical_networks_difference_zero():
    x = np.linspace(0.1, 0.9, 10)
    d = paired_difference(PerSample.mean(x), PerSample.mean(x))
    assert (d.diff, d.ci_low, d.ci_high, d.pvalue) == (0.0, 0.0, 0.0, 1.0)


def test_per_sample_refuses_one_unit():
    with pytest.raises(ValueError, match="at least 2 test volumes"):
        PerSample.mean([0.8], unit="volume")


def _split(train, test, n=10):
    return Folds((np.asarray(train, dtype=np.int64),), (np.asarray(test, dtype=np.int64),),
                 (0,), (0,), n)


@pytest.mark.parametrize(("train", "test", "match"), [
    ([0, 1, 2], [], "both must be non-empty"),
    ([0, 1, 2, 3], [3, 4, 5], "overlaps training in 1 samples"),
    ([0, 1, 2], [5], "has 1 sample; intervals"),
])
def test_bad_single_split_refused(train, test, match):
    with pytest.raises(ConfigError, match=match):
        check_summarizable(_split(train, test), task="classification", metric=None)


def test_metric_without_per_sample_form_refused_on_holdout():
    with pytest.raises(ConfigError, match="entropy_auroc.*cannot be compared on one held-out"):
        check_summarizable(_split([0, 1], [2, 3]), task="segmentation", metric="entropy_auroc")
    with pytest.raises(ConfigError, match="compare.metric: unknown classification metric"):
        check_summarizable(_split([0, 1], [2, 3]), task="classification", metric="rmse")


def test_programmatic_single_split_is_summarised(rng, blobs):
    """check_cv with one (train, test) pair, cross_validate, summarize: a holdout summary."""
    from calipers.data import make_dataset
    from calipers.evaluation.cv import NetworkSpec
    from calipers.evaluation.train import TrainOptions
    from calipers.experiment.engine import cross_validate

    data = make_dataset(*blobs, name="blobs")
    order = rng.permutation(90)
    folds = check_cv([(order[:60], order[60:])], data.y)
    nets = {"A": NetworkSpec("calipers.models:MLP", {"hidden": [8], "dropout": 0.1}),
            "B": NetworkSpec("calipers.models:MLP", {"hidden": [16], "dropout": 0.2})}
    cv = cross_validate(data, nets, folds, options=TrainOptions(epochs=3, batch_size=16,
                        lr=5e-3, device="cpu"), n_mc=5)
    d = summarize(cv).to_dict()
    assert d["protocol"] == "holdout" and d["n_splits"] == 1
    acc = d["networks"]["A"]["accuracy"]
    assert acc["mean"] == pytest.approx(cv.results["A"][0].metrics["accuracy"])
    assert acc["ci_low"] <= acc["mean"] <= acc["ci_high"] and acc["n_test"] == 30
    right = {n: cv.pooled(n, "proba").argmax(1) == cv.pooled(n, "y_true") for n in nets}
    assert d["comparison"]["p_mcnemar"] == pytest.approx(
        mcnemar_test(right["A"], right["B"]).pvalue)


def test_holdout_summary_of_a_hand_made_result(rng):
    y = rng.integers(0, 3, size=120)
    res = {}
    for name, skill in (("A", 0.5), ("B", 3.0)):
        p = _proba(rng, 120, 3, y, skill)
        m = score_classification(y, p)
        m["entropy"], m["mutual_info"] = 0.5, 0.1
        res[name] = (FoldResult(name, 0, m, {"index": np.arange(120), "y_true": y, "proba": p,
                                             "entropy": np.full(120, 0.5),
                                             "mutual_info": np.full(120, 0.1)}),)
    folds = _split(np.arange(120, 200), np.arange(120), n=200)
    d = summarize(CVResult(folds, "classification", res)).to_dict()
    assert d["best"] == "B" and d["comparison"]["criterion"] == "significant difference"
    assert d["networks"]["A"]["ece"]["mean"] == pytest.approx(res["A"][0].metrics["ece"])


def test_overall_sentence_counts_established_wins(rng):
    a = rng.uniform(0.70, 0.80, size=30)
    s = {"A": PerSample.mean(a, unit="volume"),
         "B": PerSample.mean(a + rng.uniform(0.02, 0.04, 30), unit="volume"),  # beats A
         "C": PerSample.mean(a + rng.normal(0, 0.001, 30), unit="volume")}  # ties A
    res = compare_holdout(s, metric="mean_dice", seed=0, n_resamples=2000)
    by = {(p.a, p.b): p for p in res.pairs}
    # B beats A and C (significant); A vs C not established, decided by a tie-break
    assert by[("A", "B")].chosen == "B" and by[("B", "C")].chosen == "B"
    assert by[("A", "C")].criterion != "significant difference"
    assert res.best == "B"
    assert "preferred in 2 of 2 pairwise comparisons" in res.sentence
    assert "better in all 2" in res.sentence
    # drop B: the winner of A vs C wins by a tie-break only, and the sentence says so
    res2 = compare_holdout({k: s[k] for k in ("A", "C")} | {"D": s["C"]}, metric="mean_dice",
                           seed=0, n_resamples=2000)
    assert "not established, decided by the tie-breaks" in res2.sentence
