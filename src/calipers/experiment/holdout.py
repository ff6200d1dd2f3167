"""One held-out split in a run: per-sample (per-volume) metrics read from the split's saved
predictions, their intervals and the comparison of :mod:`calipers.stats.holdout`, and the
checks that refuse, before any training, a configuration whose results could not be summarised.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calipers._checks import _look_up_option
from calipers.evaluation.cv import CVResult, FoldResult
from calipers.evaluation.folds import Folds
from calipers.evaluation.metrics import METRICS
from calipers.exceptions import ConfigError
from calipers.stats.holdout import (
    HoldoutComparison,
    PerSample,
    compare_holdout,
    holdout_estimate,
)

__all__ = ["check_summarizable", "per_sample", "summarize_holdout"]

DEFAULT_METRIC = {"classification": "accuracy", "regression": "rmse",
                  "segmentation": "mean_dice"}
# Metrics with no per-sample form: reported as a point estimate on a held-out split.
_NO_INTERVAL = {
    "entropy_auroc": "a voxel AUROC pooled over all test volumes",
    "log_likelihood": "a log of a mean over MC passes, pooled over samples",
    "rmse_weight_scaling": "computed inside the batched engine without per-sample errors",
}
_PROBA_CLIP = 1e-12  # as calipers.evaluation.metrics.nll
_ECE_BINS = 15


def check_summarizable(folds: Folds, *, task: str, metric: str | None) -> None:
    """Refuse, before training, what :func:`calipers.experiment.summary.summarize` could not
    summarise: a comparison metric of another task, and on one held-out split an empty or
    one-sample test set, a test set that overlaps training, or a metric without per-sample
    form."""
    metric = metric or DEFAULT_METRIC[task]
    try:
        _look_up_option(metric, [m for m, i in METRICS.items() if i.task == task],
                        what=f"{task} metric")
    except ValueError as err:
        raise ConfigError(f"compare.metric: {err}") from None
    if len(folds) != 1:
        return
    tr, te = folds.train[0], folds.test[0]
    unit = "volume" if task == "segmentation" else "sample"
    if te.size == 0 or tr.size == 0:
        raise ConfigError(f"cv.splits: the single split has {tr.size} training and {te.size} "
                          f"test {unit}s; both must be non-empty.")
    shared = np.intersect1d(tr, te)
    if shared.size:
        raise ConfigError(f"cv.splits: the test set overlaps training in {shared.size} "
                          f"{unit}s (e.g. index {int(shared[0])}); a held-out test set must "
                          "be disjoint from training.")
    if te.size < 2:
        raise ConfigError(f"cv.splits: the held-out test set has {te.size} {unit}; intervals "
                          f"from test {unit}s need at least 2 (more than 30 for useful ones).")
    if metric in _NO_INTERVAL:
        raise ConfigError(f"compare.metric = {metric!r} cannot be compared on one held-out "
                          f"split: it is {_NO_INTERVAL[metric]}, with no per-{unit} values to "
                          f"resample. Compare on {DEFAULT_METRIC[task]!r}.")


def per_sample(result: FoldResult, task: str, metric: str) -> PerSample | None:
    """``metric`` of one split's test set as per-sample (per-volume) values; None when the
    metric has no per-sample form (see ``_NO_INTERVAL``) or its predictions are missing."""
    p = result.predictions
    if metric in _NO_INTERVAL:
        return None
    if task == "segmentation":
        return _per_volume(p, metric)
    if task == "classification":
        if "proba" not in p:
            return None
        y = np.asarray(p["y_true"]).astype(np.int64).reshape(-1)
        proba = np.asarray(p["proba"], dtype=np.float64)
        right = proba.argmax(axis=1) == y
        if metric == "accuracy":
            return PerSample.mean(right)
        if metric == "nll":
            return PerSample.mean(-np.log(np.clip(proba[np.arange(y.size), y], _PROBA_CLIP,
                                                  None)))
        if metric == "brier":
            onehot = np.eye(proba.shape[1])[y]
            return PerSample.mean(np.sum((proba - onehot) ** 2, axis=1))
        if metric == "ece":  # bins (lo, hi] as calipers.evaluation.metrics._reliability
            conf = proba.max(axis=1)
            edges = np.linspace(0.0, 1.0, _ECE_BINS + 1)
            bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, _ECE_BINS - 1)
            return PerSample.binned_gap(conf - right, bins, n_bins=_ECE_BINS)
    elif task == "regression" and "mean" in p:
        n = len(p["y_true"])
        y = np.asarray(p["y_true"], dtype=np.float64).reshape(n, -1)
        m = np.asarray(p["mean"], dtype=np.float64).reshape(n, -1)
        if metric == "rmse":
            return PerSample.root_mean(np.mean((y - m) ** 2, axis=1))
        if metric == "gaussian_nll" and "var" in p:
            v = np.asarray(p["var"], dtype=np.float64).reshape(n, -1)
            if np.all(v > 0):
                return PerSample.mean(np.mean(0.5 * np.log(2 * np.pi * v)
                                              + (y - m) ** 2 / (2 * v), axis=1))
    if metric in ("entropy", "mutual_info") and metric in p:
        return PerSample.mean(np.asarray(p[metric], dtype=np.float64).reshape(-1))
    return None


def _per_volume(p: dict[str, np.ndarray], metric: str) -> PerSample | None:
    dice = np.asarray(p["dice"], dtype=np.float64)
    if metric == "mean_dice":
        return PerSample.mean(dice.mean(axis=1), unit="volume")
    if metric.startswith("dice_") and metric[5:].isdigit() and 1 <= int(metric[5:]) <= \
            dice.shape[1]:
        return PerSample.mean(dice[:, int(metric[5:]) - 1], unit="volume")
    if metric in ("entropy", "mutual_info", "fg_entropy"):
        return PerSample.mean(np.asarray(p[metric], dtype=np.float64), unit="volume")
    if metric == "voxel_error":
        wrong, size = [], []
        for lab, truth, shape in zip(p["labels"], p["y_true"], p["shape"], strict=True):
            own = tuple(slice(0, int(k)) for k in shape)  # the volume's own voxels
            wrong.append(int(np.sum(lab[own] != truth[own])))
            size.append(int(np.prod(shape)))
        return PerSample.ratio(wrong, size, unit="volume")
    return None


def _point(value: float, n: int, unit: str, metric: str) -> dict[str, Any]:
    why = _NO_INTERVAL.get(metric, "no per-sample form")
    return {"mean": float(value), "std": None, "ci_low": None, "ci_high": None,
            "folds": [float(value)], "se": None, "n_test": n, "unit": unit,
            "interval": f"none: point estimate on the test set ({why})"}


def summarize_holdout(
    cv: CVResult,
    names: list[str],
    metric_names: list[str],
    *,
    metric: str,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[dict[str, dict[str, dict[str, Any]]], HoldoutComparison | None]:
    """Per network and metric, the test-set value with its percentile-bootstrap interval over
    test samples (volumes); with two or more networks, their comparison on ``metric``."""
    unit = "volume" if cv.task == "segmentation" else "sample"
    n = len(cv.folds.test[0])
    networks: dict[str, dict[str, dict[str, Any]]] = {}
    samples: dict[str, PerSample] = {}
    for name in names:
        result = cv.results[name][0]
        networks[name] = {}
        for m in metric_names:
            s = per_sample(result, cv.task, m)
            if s is None:
                networks[name][m] = _point(result.metrics[m], n, unit, m)
                continue
            networks[name][m] = holdout_estimate(s, seed=seed).to_dict()
            if m == metric:
                samples[name] = s
    if len(names) < 2:
        return networks, None
    if len(samples) < len(names):
        raise ValueError(f"metric {metric!r} has no per-{unit} values on the held-out split; "
                         f"compare on {DEFAULT_METRIC[cv.task]!r}.")
    correct = uncertainty = None
    if cv.task == "classification":
        correct = {n_: np.asarray(cv.results[n_][0].predictions["proba"]).argmax(axis=1)
                   == np.asarray(cv.results[n_][0].predictions["y_true"]).reshape(-1)
                   for n_ in names}
        uncertainty = {n_: {k: float(cv.results[n_][0].metrics[k]) for k in ("entropy", "ece")
                            if k in cv.results[n_][0].metrics} for n_ in names}
    elif cv.task == "segmentation":
        uncertainty = {n_: {"entropy": float(cv.results[n_][0].metrics["entropy"])}
                       for n_ in names}
    comparison = compare_holdout(samples, metric=metric, correct=correct,
                                 uncertainty=uncertainty, alpha=alpha, seed=seed)
    return networks, comparison
