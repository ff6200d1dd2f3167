"""calipers.evaluation.metrics against hand-derived values, scikit-learn and SciPy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats
from sklearn import metrics as skm

from calipers.evaluation import metrics as M

# Three samples, two classes. Hand values:
#   argmax = [0, 1, 0] vs y = [0, 1, 1]            -> accuracy 2/3
#   nll   = -(ln .8 + ln .6 + ln .3) / 3            = 1.9379419794 / 3 = 0.6459806598
#   brier = ((.2²+.2²) + (.4²+.4²) + (.7²+.7²)) / 3 = (0.08 + 0.32 + 0.98) / 3 = 0.46
#   ECE, 5 bins (0,.2],(.2,.4],(.4,.6],(.6,.8],(.8,1]: conf .8 and .7 -> bin 3 (conf .75,
#   acc 1/2), conf .6 -> bin 2 (conf .6, acc 1): 2/3·|.5-.75| + 1/3·|1-.6| = 1/6 + 2/15 = 0.3
Y = np.array([0, 1, 1])
P = np.array([[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])


def _random_proba(rng, n, c):
    logits = rng.normal(size=(n, c)) * 2
    p = np.exp(logits - logits.max(1, keepdims=True))
    return rng.integers(0, c, n), p / p.sum(1, keepdims=True)


def test_hand_values():
    assert M.accuracy(Y, P) == pytest.approx(2 / 3, abs=1e-15)
    assert M.nll(Y, P) == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.3)) / 3)
    assert M.nll(Y, P) == pytest.approx(0.6459806598, abs=1e-10)
    assert M.brier(Y, P) == pytest.approx(0.46, abs=1e-12)
    assert M.ece(Y, P, n_bins=5) == pytest.approx(0.3, abs=1e-12)


def test_reliability_curve_hand_values_and_json():
    curve = M.reliability_curve(Y, P, n_bins=5)
    assert_allclose(curve.bin_edges, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert_array_equal(curve.counts, [0, 0, 1, 2, 0])  # 0.8 is in (0.6, 0.8], right-closed
    assert_allclose(curve.confidence[2:4], [0.6, 0.75])
    assert_allclose(curve.accuracy[2:4], [1.0, 0.5])
    assert np.isnan(curve.confidence[[0, 1, 4]]).all() and np.isnan(curve.accuracy[0])
    assert curve.ece() == pytest.approx(0.3)
    d = curve.to_dict()
    assert d["confidence"][0] is None and d["counts"] == [0, 0, 1, 2, 0]
    json.dumps(d, allow_nan=False)


def test_against_sklearn(rng):
    y, p = _random_proba(rng, 200, 4)
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    assert M.nll(y, p) == pytest.approx(skm.log_loss(y, p, labels=range(4)), rel=1e-10)
    # binary: multi-class Brier (sum over both columns) is twice sklearn's (p1 - y)^2 mean
    yb, pb = _random_proba(rng, 100, 2)
    assert M.brier(yb, pb) == pytest.approx(2 * skm.brier_score_loss(yb, pb[:, 1]), rel=1e-10)


def _ece_loop(y, p, n_bins):
    """Independent ECE: a plain loop over right-closed bins (lo, hi], 0 in the first."""
    conf, pred, total = p.max(1), p.argmax(1), 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            total += inside.sum() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total / len(y)


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_against_loop(rng, n_bins):
    y, p = _random_proba(rng, 300, 3)
    assert M.ece(y, p, n_bins=n_bins) == pytest.approx(_ece_loop(y, p, n_bins), abs=1e-12)


def test_ece_known_answers():
    # Always 50/50 on a balanced binary problem: confidence 0.5, accuracy 0.5 -> ECE 0.
    assert M.ece([0, 1, 0, 1], np.full((4, 2), 0.5)) == pytest.approx(0.0, abs=1e-15)
    # Certain and always right: ECE 0; certain and always wrong: ECE 1.
    assert M.ece([0, 1], np.eye(2)) == 0.0
    assert M.ece([1, 0], np.eye(2)) == 1.0


def test_nll_clips_zero_probability():
    assert M.nll([1], [[1.0, 0.0]]) == pytest.approx(-math.log(1e-12))


def test_score_classification_matches_functions(rng):
    y, p = _random_proba(rng, 50, 3)
    s = M.score_classification(y, p)
    assert list(s) == ["accuracy", "nll", "brier", "ece"]
    assert s == {"accuracy": M.accuracy(y, p), "nll": M.nll(y, p), "brier": M.brier(y, p),
                 "ece": M.ece(y, p)}  # fmt: skip


def test_float_integral_labels_accepted():
    assert M.accuracy(Y.astype(float), P) == pytest.approx(2 / 3)


@pytest.mark.parametrize("shape", [(40,), (40, 3)])
def test_regression_against_scipy(rng, shape):
    y, m = rng.normal(size=(2, *shape))
    v = rng.uniform(0.1, 2.0, size=shape)
    assert M.rmse(y, m) == pytest.approx(math.sqrt(np.mean((y - m) ** 2)))
    ref = -np.mean(stats.norm.logpdf(y, loc=m, scale=np.sqrt(v)))
    assert M.gaussian_nll(y, m, v) == pytest.approx(ref, rel=1e-12)
    assert M.score_regression(y, m) == {"rmse": M.rmse(y, m)}
    assert M.score_regression(y, m, v) == {"rmse": M.rmse(y, m), "gaussian_nll": ref}


def test_regression_hand_values():
    assert M.rmse([0.0, 0.0], [3.0, 4.0]) == pytest.approx(math.sqrt(12.5))
    # y = m, var = 1/(2π): 0.5·log(1) + 0 = 0
    assert M.gaussian_nll([1.0], [1.0], [1 / (2 * math.pi)]) == pytest.approx(0.0, abs=1e-15)


def test_registry():
    assert set(M.METRICS) == {"accuracy", "nll", "brier", "ece", "rmse", "gaussian_nll",
                              "log_likelihood", "mean_dice", "entropy_auroc"}
    higher = {n for n, m in M.METRICS.items() if m.higher_is_better}
    assert higher == {"accuracy", "log_likelihood", "mean_dice", "entropy_auroc"}
    assert {n for n, m in M.METRICS.items() if m.task == "regression"} == {
        "rmse", "gaussian_nll", "log_likelihood"}
    assert {n for n, m in M.METRICS.items() if m.task == "segmentation"} == {
        "mean_dice", "entropy_auroc"}
    assert M.get_metric("ece", task="classification").percent_points
    assert M.get_metric("nll").to_dict()["higher_is_better"] is False
    with pytest.raises(ValueError, match="unknown metric 'acuracy'; did you mean 'accuracy'"):
        M.get_metric("acuracy")
    with pytest.raises(ValueError, match="metric 'rmse' scores regression, but task is "
                       "'classification'; choose a classification metric: accuracy, nll"):
        M.get_metric("rmse", task="classification")
    with pytest.raises(ValueError, match="unknown task 'regresion'; did you mean 'regression'"):
        M.get_metric("rmse", task="regresion")


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        (Y, P[:2], r"y_true has shape \(3,\) but proba has shape \(2, 2\)"),
        (Y, P[:, 1], r"proba must have shape \(n_samples, n_classes\); got shape \(3,\)\. "
                     r"For a binary task"),
        (np.eye(2)[Y], P, r"y_true must have shape \(n_samples,\); got shape \(3, 2\)\. "
                          r"If it is one-hot"),
        (Y, P * 0.5, r"proba rows must sum to 1 \(within 0.0001\); row 0 sums to 0.5 \(3 row"),
        (Y, P - 0.5, r"proba must hold probabilities in \[0, 1\]; got values from -0\.3"),
        (Y, np.where(P == 0.8, np.nan, P), "proba holds 1 NaN or infinite value"),
        ([0, 1, 2], P, r"y_true holds label 2 at index 2, outside 0\.\.1 for proba with 2 col"),
        ([0, 1, -1], P, "y_true holds label -1 at index 2"),
        ([0, 0.5, 1], P, r"y_true must hold integer class labels; got 0\.5 at index 1"),
        (["a", "b", "c"], P, "y_true must hold integer class labels 0..C-1; got dtype <U1"),
        ([], np.empty((0, 2)), "y_true and proba hold 0 samples"),
        (Y, [["x", "y"]] * 3, "proba must be a numeric array"),
    ],
)  # fmt: skip
def test_classification_errors(y, p, match):
    with pytest.raises((ValueError, TypeError), match=match):
        M.accuracy(y, p)


def test_ece_bins_error():
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1; got 0. 15 is the"):
        M.ece(Y, P, n_bins=0)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1; got 2.5"):
        M.reliability_curve(Y, P, n_bins=2.5)


def test_regression_errors():
    with pytest.raises(ValueError, match=r"y_true has shape \(3,\) but y_pred has shape \(3, 1\)"):
        M.rmse([1, 2, 3], [[1], [2], [3]])
    with pytest.raises(ValueError, match=r"y_true must have shape \(n_samples,\) or \(n_samples, "
                       r"n_outputs\); got shape \(1, 1, 1\)"):
        M.rmse([[[1.0]]], [[[1.0]]])
    with pytest.raises(ValueError, match="y_true holds 1 NaN or infinite"):
        M.rmse([np.inf, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="y_true and y_pred hold 0 samples"):
        M.rmse([], [])
    with pytest.raises(ValueError, match=r"var has shape \(1,\) but mean has shape \(2,\)"):
        M.gaussian_nll([1.0, 2.0], [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="var must be > 0 everywhere; got 0 at flat index 1"):
        M.score_regression([1.0, 2.0], [1.0, 2.0], [1.0, 0.0])
