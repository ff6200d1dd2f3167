"""Scores of predictions: classification (accuracy, NLL, Brier, ECE) and regression (RMSE, NLL).

Every function takes arrays and returns a float or a result object; nothing is printed or
written. Inputs are checked once, at the boundary (``_classification_iv``, ``_regression_iv``):
classification takes integer labels ``y_true`` of shape ``(N,)`` and *probabilities* ``proba`` of
shape ``(N, C)`` (rows sum to 1 -- pass ``softmax(logits)``, not logits); regression takes
``y_true`` and predictions of the same shape, ``(N,)`` or ``(N, D)``.

The registry :data:`METRICS` says, for every metric, which task it belongs to and whether higher
is better, so that :func:`calipers.stats.compare.compare` can pick the better network without being
told.

References
----------
.. [1] Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. "On calibration of modern neural
   networks", ICML 2017 (ECE with equal-width confidence bins; reliability diagrams).
.. [2] Brier, G. W. "Verification of forecasts expressed in terms of probability", Monthly
   Weather Review 78, 1950.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from calipers._checks import _check_finite, _check_positive_int, _look_up_option
from calipers._options import Task

__all__ = [
    "METRICS",
    "MetricInfo",
    "ReliabilityCurve",
    "accuracy",
    "brier",
    "dice_per_class",
    "ece",
    "gaussian_nll",
    "get_metric",
    "nll",
    "reliability_curve",
    "rmse",
    "score_classification",
    "score_regression",
    "uncertainty_auroc",
]

_PROBA_CLIP = 1e-12  # smallest probability used inside log() in nll()
_ROW_SUM_TOL = 1e-4  # |sum_k proba[i, k] - 1| allowed per row
_TASKS = Task


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures and which direction is better.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"accuracy"``.
    task : {"classification", "regression"}
        The kind of prediction the metric scores.
    higher_is_better : bool
        True for accuracy; False for losses and calibration errors.
    unit : str
        Unit of the value, e.g. ``"fraction (0-1)"`` or ``"nats"``.
    description : str
        One line saying what is computed.
    percent_points : bool
        True when values lie in [0, 1] and read best as percentages, so differences are shown
        in percentage points (accuracy, ECE).
    """

    name: str
    task: str
    higher_is_better: bool
    unit: str
    description: str
    percent_points: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable fields."""
        return {
            "name": self.name,
            "task": self.task,
            "higher_is_better": self.higher_is_better,
            "unit": self.unit,
            "description": self.description,
            "percent_points": self.percent_points,
        }


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("accuracy", "classification", True, "fraction (0-1)",
                   "fraction of samples whose most probable class is the true one", True),
        MetricInfo("nll", "classification", False, "nats",
                   "mean negative log-probability of the true class", False),
        MetricInfo("brier", "classification", False, "squared probability (0-2)",
                   "mean over samples of sum_k (p_k - onehot_k)^2", False),
        MetricInfo("ece", "classification", False, "fraction (0-1)",
                   "expected calibration error, 15 equal-width bins of max probability", True),
        MetricInfo("rmse", "regression", False, "units of y",
                   "root mean squared error over samples and outputs", False),
        MetricInfo("gaussian_nll", "regression", False, "nats",
                   "mean Gaussian negative log-likelihood with predicted mean and variance",
                   False),
        MetricInfo("log_likelihood", "regression", True, "nats",
                   "mean MC-dropout test log likelihood, log of the mean over passes of "
                   "N(y; y_t, 1/tau) (Gal & Ghahramani)", False),
        MetricInfo("mean_dice", "segmentation", True, "fraction (0-1)",
                   "Dice per foreground class, averaged over classes and volumes", True),
        MetricInfo("entropy_auroc", "segmentation", True, "fraction (0-1)",
                   "AUROC of voxel predictive entropy for telling wrong voxels from right", True),
    )
}  # fmt: skip


def get_metric(name: str, *, task: str | None = None) -> MetricInfo:
    """Look up a metric in :data:`METRICS`, optionally checking that it fits ``task``.

    Parameters
    ----------
    name : str
        Metric name, e.g. ``"accuracy"``.
    task : {"classification", "regression"} or None, default None
        When given, the metric must belong to this task.

    Returns
    -------
    MetricInfo

    Raises
    ------
    ValueError
        Unknown name (with the closest spelling), unknown task, or a metric of another task.

    Examples
    --------
    >>> get_metric("nll").higher_is_better
    False
    """
    info = METRICS[_look_up_option(name, METRICS, what="metric")]
    if task is not None:
        task = _look_up_option(task, _TASKS, what="task")
        if info.task != task:
            fitting = ", ".join(m.name for m in METRICS.values() if m.task == task)
            raise ValueError(
                f"metric {name!r} scores {info.task}, but task is {task!r}; "
                f"choose a {task} metric: {fitting}."
            )
    return info


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _as_float(x: ArrayLike, *, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a numeric array; got {type(x).__name__} that NumPy cannot convert "
            f"to float ({err})."
        ) from None
    _check_finite(arr, name=name)
    return arr


def _as_labels(y_true: ArrayLike) -> np.ndarray:
    y = np.asarray(y_true)
    if y.dtype == bool or not (
        np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    ):
        raise TypeError(
            f"y_true must hold integer class labels 0..C-1; got dtype {y.dtype}. "
            f"Convert with np.asarray(y_true, dtype=int)."
        )
    if y.ndim != 1:
        hint = " If it is one-hot, pass y_true.argmax(axis=1)." if y.ndim == 2 else ""
        raise ValueError(f"y_true must have shape (n_samples,); got shape {y.shape}.{hint}")
    _check_finite(y, name="y_true")
    if np.issubdtype(y.dtype, np.floating):
        frac = np.flatnonzero(y != np.round(y))
        if frac.size:
            i = int(frac[0])
            raise ValueError(
                f"y_true must hold integer class labels; got {float(y[i]):g} at index {i}. "
                f"Pass class indices 0..C-1, not probabilities or regression targets."
            )
    return y.astype(np.int64)


def _classification_iv(y_true: ArrayLike, proba: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check labels ``(N,)`` against probabilities ``(N, C)``; return int64 and float64 arrays."""
    y = _as_labels(y_true)
    p = _as_float(proba, name="proba")
    if p.ndim != 2:
        hint = " For a binary task pass np.column_stack([1 - p, p])." if p.ndim == 1 else ""
        raise ValueError(
            f"proba must have shape (n_samples, n_classes); got shape {p.shape}.{hint}"
        )
    if p.shape[0] != y.shape[0]:
        raise ValueError(
            f"y_true has shape {y.shape} but proba has shape {p.shape}; they must hold the same "
            f"number of samples (proba row i scores y_true[i])."
        )
    if p.shape[0] == 0:
        raise ValueError("y_true and proba hold 0 samples; pass at least one.")
    if p.min() < 0.0 or p.max() > 1.0 + _ROW_SUM_TOL:
        raise ValueError(
            f"proba must hold probabilities in [0, 1]; got values from {p.min():.4g} to "
            f"{p.max():.4g}. Pass softmax(logits), not logits."
        )
    sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if off.size:
        i = int(off[0])
        raise ValueError(
            f"proba rows must sum to 1 (within {_ROW_SUM_TOL:g}); row {i} sums to "
            f"{sums[i]:.6g} ({off.size} row(s) off). Pass softmax(logits), not logits."
        )
    bad = np.flatnonzero((y < 0) | (y >= p.shape[1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"y_true holds label {int(y[i])} at index {i}, outside 0..{p.shape[1] - 1} for proba "
            f"with {p.shape[1]} columns; labels must index proba's columns."
        )
    return y, p


def _regression_iv(
    y_true: ArrayLike, y_pred: ArrayLike, *, pred_name: str = "y_pred"
) -> tuple[np.ndarray, np.ndarray]:
    """Check targets and predictions: same shape, ``(N,)`` or ``(N, D)``, finite, N >= 1."""
    y = _as_float(y_true, name="y_true")
    m = _as_float(y_pred, name=pred_name)
    if y.ndim not in (1, 2):
        raise ValueError(
            f"y_true must have shape (n_samples,) or (n_samples, n_outputs); got shape {y.shape}."
        )
    if m.shape != y.shape:
        raise ValueError(
            f"y_true has shape {y.shape} but {pred_name} has shape {m.shape}; they must be equal "
            f"(reshape with {pred_name}.reshape(y_true.shape) if only a unit axis differs)."
        )
    if y.shape[0] == 0:
        raise ValueError(f"y_true and {pred_name} hold 0 samples; pass at least one.")
    return y, m


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def accuracy(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Fraction of samples whose most probable class is the true label.

    Parameters
    ----------
    y_true : array-like of int, shape (N,)
        Class labels 0..C-1.
    proba : array-like of float, shape (N, C)
        Predicted class probabilities; rows sum to 1.

    Returns
    -------
    float
        In [0, 1]; higher is better. Ties in ``proba`` go to the lowest class index
        (``argmax``).
    """
    y, p = _classification_iv(y_true, proba)
    return _accuracy(y, p)


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == y))


def nll(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Mean negative log-likelihood of the true class, in nats.

    ``-mean_i log(max(p_i[y_i], 1e-12))``; the clip keeps a confidently wrong sample finite
    (at most ``-log 1e-12 ≈ 27.6`` nats). Lower is better.

    Parameters
    ----------
    y_true : array-like of int, shape (N,)
    proba : array-like of float, shape (N, C)

    Returns
    -------
    float
        ``>= 0``, in nats (natural log).
    """
    y, p = _classification_iv(y_true, proba)
    return _nll(y, p)


def _nll(y: np.ndarray, p: np.ndarray) -> float:
    p_true = np.clip(p[np.arange(y.size), y], _PROBA_CLIP, 1.0)
    return float(-np.mean(np.log(p_true)))


def brier(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Multi-class Brier score [2]_: ``mean_i sum_k (p_ik - [y_i = k])^2``.

    Parameters
    ----------
    y_true : array-like of int, shape (N,)
    proba : array-like of float, shape (N, C)

    Returns
    -------
    float
        In [0, 2]; lower is better. (Some libraries divide by C; this one does not.)
    """
    y, p = _classification_iv(y_true, proba)
    return _brier(y, p)


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Calibration per confidence bin (a reliability diagram's data).

    Attributes
    ----------
    bin_edges : ndarray, shape (n_bins + 1,)
        Equal-width edges from 0 to 1; bin b holds confidences in ``(edge_b, edge_{b+1}]``
        (the first bin also holds 0).
    confidence : ndarray, shape (n_bins,)
        Mean max-probability of the samples in each bin; NaN for empty bins.
    accuracy : ndarray, shape (n_bins,)
        Fraction correct in each bin; NaN for empty bins.
    counts : ndarray of int, shape (n_bins,)
        Samples per bin.
    """

    bin_edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    def ece(self) -> float:
        """Expected calibration error: ``sum_b counts_b / N * |accuracy_b - confidence_b|``."""
        keep = self.counts > 0
        gap = np.abs(self.accuracy[keep] - self.confidence[keep])
        return float(np.sum(self.counts[keep] * gap) / np.sum(self.counts))

    def to_dict(self) -> dict[str, Any]:
        """Plain lists; empty bins become ``None`` so the result is strict JSON."""

        def _plain(a: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in a]

        return {
            "bin_edges": [float(v) for v in self.bin_edges],
            "confidence": _plain(self.confidence),
            "accuracy": _plain(self.accuracy),
            "counts": [int(v) for v in self.counts],
        }


def reliability_curve(y_true: ArrayLike, proba: ArrayLike, *, n_bins: int = 15) -> ReliabilityCurve:
    """Bin samples by confidence (max probability) and compare confidence with accuracy.

    Parameters
    ----------
    y_true : array-like of int, shape (N,)
    proba : array-like of float, shape (N, C)
    n_bins : int, default 15
        Number of equal-width bins over [0, 1].

    Returns
    -------
    ReliabilityCurve
    """
    y, p = _classification_iv(y_true, proba)
    n_bins = _check_positive_int(n_bins, name="n_bins", fix="15 is the usual choice.")
    return _reliability(y, p, n_bins)


def _reliability(y: np.ndarray, p: np.ndarray, n_bins: int) -> ReliabilityCurve:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # side="left": conf == edge_b goes to bin b-1, i.e. bins are (lo, hi] as in Guo et al.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / counts
    return ReliabilityCurve(edges, mean_conf, mean_acc, counts)


def ece(y_true: ArrayLike, proba: ArrayLike, *, n_bins: int = 15) -> float:
    """Expected calibration error [1]_ over equal-width bins of max probability.

    ``ECE = sum_b (n_b / N) * |acc_b - conf_b|``, with bins ``(b/n_bins, (b+1)/n_bins]``.

    Parameters
    ----------
    y_true : array-like of int, shape (N,)
    proba : array-like of float, shape (N, C)
    n_bins : int, default 15

    Returns
    -------
    float
        In [0, 1]; lower is better.
    """
    y, p = _classification_iv(y_true, proba)
    n_bins = _check_positive_int(n_bins, name="n_bins", fix="15 is the usual choice.")
    return _reliability(y, p, n_bins).ece()


def score_classification(y_true: ArrayLike, proba: ArrayLike) -> dict[str, float]:
    """All classification metrics of :data:`METRICS` at once.

    Returns
    -------
    dict
        ``{"accuracy", "nll", "brier", "ece"}`` -> float (ECE with 15 bins).
    """
    y, p = _classification_iv(y_true, proba)
    return {
        "accuracy": _accuracy(y, p),
        "nll": _nll(y, p),
        "brier": _brier(y, p),
        "ece": _reliability(y, p, 15).ece(),
    }


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error over all samples and outputs, in the units of ``y``.

    Parameters
    ----------
    y_true, y_pred : array-like of float, shape (N,) or (N, D)

    Returns
    -------
    float
        ``sqrt(mean((y_true - y_pred)^2))``; lower is better.
    """
    y, m = _regression_iv(y_true, y_pred)
    return _rmse(y, m)


def _rmse(y: np.ndarray, m: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - m) ** 2)))


def _gaussian_nll(y: np.ndarray, m: np.ndarray, v: np.ndarray) -> float:
    return float(np.mean(0.5 * np.log(2.0 * np.pi * v) + (y - m) ** 2 / (2.0 * v)))


def _gaussian_var_iv(var: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    v = _as_float(var, name="var")
    if v.shape != shape:
        raise ValueError(
            f"var has shape {v.shape} but mean has shape {shape}; pass one predictive variance "
            f"per predicted value."
        )
    if v.min() <= 0.0:
        i = int(np.argmin(v.reshape(-1)))
        raise ValueError(
            f"var must be > 0 everywhere; got {v.reshape(-1)[i]:.4g} at flat index {i}. "
            f"Pass variances (std**2), with the noise term 1/tau added for MC dropout."
        )
    return v


def gaussian_nll(y_true: ArrayLike, mean: ArrayLike, var: ArrayLike) -> float:
    """Mean Gaussian negative log-likelihood, in nats per value.

    ``mean over samples and outputs of 0.5*log(2*pi*var) + (y - mean)^2 / (2*var)``.
    Lower is better; it is the negative of the "test log-likelihood" of the MC dropout paper.

    Parameters
    ----------
    y_true, mean, var : array-like of float, shape (N,) or (N, D)
        Targets, predictive means and predictive variances (> 0).

    Returns
    -------
    float
    """
    y, m = _regression_iv(y_true, mean, pred_name="mean")
    v = _gaussian_var_iv(var, m.shape)
    return _gaussian_nll(y, m, v)


def score_regression(
    y_true: ArrayLike, mean: ArrayLike, var: ArrayLike | None = None
) -> dict[str, float]:
    """Regression metrics: ``{"rmse"}``, plus ``"gaussian_nll"`` when ``var`` is given.

    Parameters
    ----------
    y_true, mean : array-like of float, shape (N,) or (N, D)
    var : array-like of float, same shape, optional
        Predictive variances (> 0).
    """
    y, m = _regression_iv(y_true, mean, pred_name="mean")
    out = {"rmse": _rmse(y, m)}
    if var is not None:
        out["gaussian_nll"] = _gaussian_nll(y, m, _gaussian_var_iv(var, m.shape))
    return out


def dice_per_class(y_true: ArrayLike, y_pred: ArrayLike, *, n_classes: int) -> np.ndarray:
    """Dice ``2|T∩P| / (|T| + |P|)`` of each foreground class 1 .. n_classes-1 in one volume.

    Parameters
    ----------
    y_true, y_pred : integer arrays of the same shape (*S)
        Class index per voxel (0 = background).
    n_classes : int >= 2

    Returns
    -------
    ndarray of shape (n_classes - 1,)
        In [0, 1]; 1.0 for a class absent from both (nothing to miss).
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape; got {t.shape} and "
                         f"{p.shape}. Crop both to the volume's own grid.")
    n_classes = _check_positive_int(n_classes, name="n_classes", minimum=2)
    out = np.ones(n_classes - 1)
    for c in range(1, n_classes):
        in_t, in_p = t == c, p == c
        total = int(in_t.sum()) + int(in_p.sum())
        if total:
            out[c - 1] = 2.0 * int(np.logical_and(in_t, in_p).sum()) / total
    return out


def uncertainty_auroc(wrong: ArrayLike, score: ArrayLike) -> float:
    """AUROC of ``score`` for detecting ``wrong`` items (voxels), ties counted half.

    Equals the probability that a random wrong voxel has a higher score than a random right
    one (Mann-Whitney U / (n_wrong · n_right)); 0.5 is chance. NaN when all voxels are right or
    all are wrong.
    """
    from scipy.stats import rankdata

    w = np.asarray(wrong, dtype=bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if w.shape != s.shape:
        raise ValueError(f"wrong and score must have the same size; got {w.size} and {s.size}.")
    n_w = int(w.sum())
    n_r = w.size - n_w
    if n_w == 0 or n_r == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[w].sum() - n_w * (n_w + 1) / 2) / (n_w * n_r))
