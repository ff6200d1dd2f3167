"""Figures for the run report: each function takes arrays and returns a matplotlib ``Figure``.

The figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, never through
``pyplot``, so they hold no global state, need no display and are freed when dropped. Nothing
here reads or writes files; :mod:`calipers.report.html` renders the figures to PNG.

# NOTE [Figure style]
Figures are drawn for print: the widths are fractions of ``CONTENT_WIDTH`` (6.5 in, the text
width of an A4 or letter page with 2.5 cm margins), the report shows them at that fraction of its
content width, and every font is at least 9 pt, so the printed figure has 9-pt text. Colours
come from the Okabe–Ito palette (Okabe & Ito 2008), which stays distinct under the common forms
of colour blindness; ``C0``, ``C1``, ... name its colours inside the plotting functions.

The reliability diagram uses :func:`calipers.evaluation.metrics.reliability_curve`: confidence
is the largest class probability, bins are ``(b/M, (b+1)/M]`` (Guo et al. 2017) and the ECE is the
count-weighted mean of ``|accuracy - confidence|`` over non-empty bins.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import matplotlib as mpl
import numpy as np
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calipers._format import fmt_sig
from calipers.evaluation.metrics import reliability_curve

__all__ = [
    "CONTENT_WIDTH",
    "OKABE_ITO",
    "plot_entropy_histogram",
    "plot_fold_scores",
    "plot_paired_differences",
    "plot_reliability",
    "plot_residual_histogram",
    "plot_segmentation_examples",
    "plot_std_vs_error",
]

_GREY = "0.55"
CONTENT_WIDTH = 6.5  # inches; NOTE [Figure style]
_HALF = (CONTENT_WIDTH - 0.1) / 2
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")
_STYLE = {
    "axes.prop_cycle": mpl.cycler(color=list(OKABE_ITO)),
    "font.size": 9.0, "axes.titlesize": 10.0, "axes.labelsize": 9.0, "xtick.labelsize": 9.0,
    "ytick.labelsize": 9.0, "legend.fontsize": 9.0, "figure.titlesize": 10.0,
    "svg.fonttype": "none", "svg.hashsalt": "calipers", "pdf.fonttype": 42,
}
_F = TypeVar("_F", bound=Callable[..., Figure])


def _styled(func: _F) -> _F:
    """Draw inside the report style (NOTE [Figure style]): palette and font sizes."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _t_interval(values: np.ndarray, confidence_level: float = 0.95) -> tuple[float, float]:
    """``mean ± t_{J-1} · std / √J`` (design §4); NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return (float("nan"), float("nan"))
    half = scipy.stats.t.ppf(0.5 + confidence_level / 2, values.size - 1) * values.std(
        ddof=1
    ) / np.sqrt(values.size)
    return (float(values.mean() - half), float(values.mean() + half))


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plain(text: str) -> str:
    """Escape ``$`` so matplotlib never reads a user's label as mathtext."""
    return str(text).replace("$", r"\$")


def _offsets(n: int, width: float = 0.3) -> np.ndarray:
    """Evenly spread x offsets for ``n`` points (a deterministic jitter)."""
    return np.linspace(-width / 2, width / 2, n) if n > 1 else np.zeros(n)


def _mean_and_interval(
    ax, pos: float, values: np.ndarray, interval: tuple[float, float], *, vertical: bool
) -> None:
    """Draw the mean of ``values`` at ``pos`` with its interval as an error bar, if valid."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return
    mean = float(finite.mean())
    lo, hi = (float(v) for v in interval)
    err = None
    if np.isfinite([lo, hi]).all() and lo <= mean <= hi:
        err = [[mean - lo], [hi - mean]]
    xy = ([pos], [mean]) if vertical else ([mean], [pos])
    bars = {"yerr": err} if vertical else {"xerr": err}
    ax.errorbar(*xy, **bars, fmt="D", color="k", capsize=4, ms=5, zorder=4)


@_styled
def plot_fold_scores(
    scores: Mapping[str, Sequence[float]],
    *,
    metric: str = "score",
    ci: Mapping[str, tuple[float, float]] | None = None,
    higher_is_better: bool = True,
    percent: bool = False,
) -> Figure:
    """One point per fold per network, with the mean and its confidence interval.

    Parameters
    ----------
    scores : mapping of str to array_like of shape (n_folds,)
        Per-fold scores of each network, in metric units (fractions for accuracy). Folds with
        the same position are the same split, and are joined by faint lines between neighbours.
    metric : str, default "score"
        Metric name for the axis label.
    ci : mapping of str to (low, high), optional
        Confidence interval of each network's mean. Networks not in it (or all, when None)
        get the t-interval ``mean ± t_{J-1,0.975} · std / √J``.
    higher_is_better : bool, default True
        Only changes the axis label.
    percent : bool, default False
        Show scores multiplied by 100, in %.

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = list(scores)
    scale = 100.0 if percent else 1.0
    fig = _new_figure(CONTENT_WIDTH, 3.0)
    ax = fig.add_subplot()
    arrays = [np.asarray(scores[n], dtype=float).reshape(-1) * scale for n in names]
    for i in range(len(names) - 1):
        a, b = arrays[i], arrays[i + 1]
        if a.size == b.size:
            xa, xb = i + _offsets(a.size), i + 1 + _offsets(b.size)
            for j in range(a.size):
                ax.plot([xa[j], xb[j]], [a[j], b[j]], color=_GREY, lw=0.5, alpha=0.5)
    for i, (name, vals) in enumerate(zip(names, arrays, strict=True)):
        ax.scatter(i + _offsets(vals.size), vals, s=14, color=f"C{i}", alpha=0.8, zorder=3)
        lo, hi = (ci or {}).get(name, _t_interval(vals / scale))
        _mean_and_interval(ax, i + 0.32, vals, (lo * scale, hi * scale), vertical=True)
    ax.set_xticks(range(len(names)), [_plain(n) for n in names])
    unit = " (%)" if percent else ""
    better = "higher" if higher_is_better else "lower"
    ax.set_ylabel(f"{_plain(metric)}{unit}, {better} is better")
    ax.set_title("Per-fold scores; black: mean and 95% CI")
    ax.grid(axis="y", alpha=0.3)
    return fig


@_styled
def plot_paired_differences(
    diffs: Mapping[str, Sequence[float]],
    *,
    ci: Mapping[str, tuple[float, float]] | None = None,
    metric: str = "score",
    percent: bool = False,
) -> Figure:
    """Per-fold paired differences ``d_j = s_j(B) − s_j(A)`` with their mean and CI.

    Parameters
    ----------
    diffs : mapping of str to array_like of shape (n_folds,)
        One entry per pair, labelled e.g. ``"B − A"``; positive means B scored higher.
    ci : mapping of str to (low, high), optional
        Confidence interval of each mean difference, e.g. the corrected resampled t interval
        from ``summary.json``. Pairs without one show the mean only: an uncorrected interval
        would be too narrow because the training sets of the folds overlap.
    metric : str, default "score"
        Metric name for the axis label.
    percent : bool, default False
        Show differences multiplied by 100, in percentage points.

    Returns
    -------
    matplotlib.figure.Figure
        One row per pair; the dashed vertical line marks zero difference.
    """
    labels = list(diffs)
    scale = 100.0 if percent else 1.0
    fig = _new_figure(CONTENT_WIDTH, 1.3 + 0.6 * max(len(labels), 1))
    ax = fig.add_subplot()
    ax.axvline(0.0, color="k", ls="--", lw=1)
    for i, label in enumerate(labels):
        d = np.asarray(diffs[label], dtype=float).reshape(-1) * scale
        ax.scatter(d, i + _offsets(d.size, 0.25), s=14, color=f"C{i}", alpha=0.8, zorder=3)
        lo, hi = (ci or {}).get(label, (np.nan, np.nan))
        _mean_and_interval(ax, i - 0.3, d, (lo * scale, hi * scale), vertical=False)
    ax.set_yticks(range(len(labels)), [_plain(lab) for lab in labels])
    ax.set_ylim(-0.7, len(labels) - 0.5)
    ax.invert_yaxis()
    unit = " (percentage points)" if percent else ""
    ax.set_xlabel(f"difference in {_plain(metric)}{unit}")
    ax.set_title("Paired differences per fold; black: mean and 95% CI")
    ax.grid(axis="x", alpha=0.3)
    return fig


@_styled
def plot_reliability(
    y_true: Sequence[int], proba: np.ndarray, *, n_bins: int = 15, title: str = ""
) -> Figure:
    """Reliability diagram of pooled predictions, with the ECE in the title.

    Parameters
    ----------
    y_true : array_like of int, shape (n_samples,)
        True class labels.
    proba : ndarray of shape (n_samples, n_classes)
        Predicted probabilities (e.g. the MC-dropout mean).
    n_bins : int, default 15
        Equal-width confidence bins over [0, 1].
    title : str, default ""
        Prefix of the title, e.g. the network name.

    Returns
    -------
    matplotlib.figure.Figure
        Blue bars: accuracy per bin; red hatched bars: the gap from accuracy to the bin's
        mean confidence (above the blue bar: over-confident); dashed: perfect calibration.
    """
    rel = reliability_curve(y_true, proba, n_bins=n_bins)
    fig = _new_figure(_HALF, 3.0)
    ax = fig.add_subplot()
    filled = rel.counts > 0
    left = rel.bin_edges[:-1]
    width = np.diff(rel.bin_edges)
    acc, conf = rel.accuracy[filled], rel.confidence[filled]
    ax.bar(left[filled], acc, width=width[filled], align="edge", color="C0", edgecolor="k",
           lw=0.5, alpha=0.75, label="accuracy")
    ax.bar(left[filled], conf - acc, bottom=acc, width=width[filled], align="edge",
           facecolor="none", edgecolor="C3", hatch="///", lw=0.8, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "--", color=_GREY, lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    prefix = f"{_plain(title)}: " if title else ""
    ax.set_title(f"{prefix}ECE {fmt_sig(100 * rel.ece(), 3)}% (pooled)")
    fig.legend(loc="outside lower center", ncols=2)  # below the axes: never over the bars
    return fig


@_styled
def plot_entropy_histogram(
    entropy: Sequence[float], correct: Sequence[bool], *, n_classes: int | None = None,
    title: str = "",
) -> Figure:
    """Histograms of predictive entropy for correct and for wrong predictions.

    Parameters
    ----------
    entropy : array_like of shape (n_samples,)
        Predictive entropy ``H[p̄]`` in nats.
    correct : array_like of bool, shape (n_samples,)
        Whether the arg-max prediction was right.
    n_classes : int, optional
        When given, the x axis runs to the maximum entropy ``log(n_classes)``.
    title : str, default ""
        Title, e.g. the network name.

    Returns
    -------
    matplotlib.figure.Figure
        Densities (each group integrates to one), so a small group of errors stays visible.
    """
    entropy = np.asarray(entropy, dtype=float).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    top = max(np.log(n_classes) if n_classes and n_classes > 1 else 0.0,
              float(entropy.max()) if entropy.size else 0.0, 1e-6)
    bins = np.linspace(0.0, top, 26)
    fig = _new_figure(_HALF, 3.0)
    ax = fig.add_subplot()
    for group, label, color in ((correct, "correct", "C2"), (~correct, "wrong", "C3")):
        vals = entropy[group]
        if vals.size:
            ax.hist(vals, bins=bins, density=True, histtype="stepfilled", alpha=0.45,
                    color=color, edgecolor=color,
                    label=f"{label}: n = {vals.size},\nmean {fmt_sig(vals.mean(), 3)} nats")
    ax.set_xlabel("predictive entropy (nats)")
    ax.set_ylabel("density")
    ax.set_title(_plain(title) or "Predictive entropy")
    if entropy.size:
        ax.legend(fontsize=9)
    return fig


@_styled
def plot_std_vs_error(
    std: Sequence[float], abs_error: Sequence[float], *, title: str = ""
) -> Figure:
    """Scatter of predictive standard deviation against absolute error (regression).

    Parameters
    ----------
    std : array_like of shape (n_samples,) or (n_samples, n_outputs)
        Predictive standard deviation, in target units.
    abs_error : array_like, same shape as ``std``
        ``|y − ŷ|`` in target units.
    title : str, default ""
        Prefix of the title; the Spearman rank correlation is appended.

    Returns
    -------
    matplotlib.figure.Figure
        Dashed lines: ``|error| = std`` and ``|error| = 1.96 std``.
    """
    std = np.asarray(std, dtype=float).reshape(-1)
    err = np.asarray(abs_error, dtype=float).reshape(-1)
    varied = std.size > 2 and np.ptp(std) > 0 and np.ptp(err) > 0  # else rho is undefined
    rho = scipy.stats.spearmanr(std, err).statistic if varied else float("nan")
    fig = _new_figure(_HALF, 3.0)
    ax = fig.add_subplot()
    ax.scatter(std, err, s=6, alpha=0.5, color="C0")
    top = float(max(std.max(initial=0.0), 1e-12))
    ax.plot([0, top], [0, top], "--", color=_GREY, lw=1, label="|error| = std")
    ax.plot([0, top], [0, 1.96 * top], ":", color=_GREY, lw=1, label="|error| = 1.96 std")
    ax.set_xlabel("predictive std (target units)")
    ax.set_ylabel("|error| (target units)")
    prefix = f"{_plain(title)}: " if title else ""
    ax.set_title(f"{prefix}Spearman ρ = {fmt_sig(rho, 2)}")
    ax.legend(fontsize=9)
    return fig


@_styled
def plot_residual_histogram(residuals: Sequence[float], *, title: str = "") -> Figure:
    """Histogram of residuals ``y − ŷ`` (regression), with their mean and RMSE in the title.

    Parameters
    ----------
    residuals : array_like of shape (n_samples,) or (n_samples, n_outputs)
        ``y − ŷ`` in target units; positive means the network predicted too low.
    title : str, default ""
        Prefix of the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    res = np.asarray(residuals, dtype=float).reshape(-1)
    fig = _new_figure(_HALF, 3.0)
    ax = fig.add_subplot()
    ax.hist(res, bins=30, color="C1", alpha=0.7, edgecolor="k", lw=0.3)
    ax.axvline(0.0, color="k", ls="--", lw=1)
    rmse = float(np.sqrt(np.mean(res**2))) if res.size else float("nan")
    mean = float(res.mean()) if res.size else float("nan")
    prefix = f"{_plain(title)}: " if title else ""
    ax.set_title(f"{prefix}mean {fmt_sig(mean, 3, signed=True)}, RMSE {fmt_sig(rmse, 3)}")
    ax.set_xlabel("residual y − ŷ (target units)")
    ax.set_ylabel("count")
    return fig


@_styled
def plot_segmentation_examples(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    entropies: Sequence[np.ndarray],
    *,
    titles: Sequence[str] = (),
    n_classes: int = 2,
) -> Figure:
    """One row per example: image slice, ground truth, prediction, predictive entropy.

    Parameters
    ----------
    images, truths, preds, entropies : sequences of 2-D arrays of one shape per row
        Image intensities; integer label maps (0 = background); entropy in nats.
    titles : sequence of str
        Row labels (e.g. volume index), optional.
    n_classes : int
        Colour range of the label maps, and entropy shown on [0, log n_classes].
    """
    n = len(images)
    fig = _new_figure(CONTENT_WIDTH, 1.7 * max(n, 1))
    axes = fig.subplots(max(n, 1), 4, squeeze=False)
    hmax = float(np.log(max(n_classes, 2)))
    heads = ("image", "ground truth", "prediction", "entropy (nats)")
    for r in range(n):
        shown = (images[r], truths[r], preds[r], entropies[r])
        for c, (ax, arr) in enumerate(zip(axes[r], shown, strict=True)):
            if c == 0:
                im = ax.imshow(arr, cmap="gray")
            elif c < 3:
                im = ax.imshow(arr, cmap="viridis", vmin=0, vmax=n_classes - 1,
                               interpolation="nearest")
            else:
                im = ax.imshow(arr, cmap="magma", vmin=0, vmax=hmax)
                fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c])
        if r < len(titles):
            axes[r][0].set_ylabel(_plain(titles[r]))
    return fig
