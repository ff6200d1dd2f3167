"""Per-split hyperparameter search for MC-dropout regression (Gal & Ghahramani's protocol).

For every outer split j: the training indices are cut into an inner fit set (the first
``inner_fraction``, in index order, as the 2018 code does) and a validation set (the rest); one
network per grid point is trained on the fit set and scored on the validation set (MC log
likelihood, or MC RMSE); the best point is refitted on the whole training split and scored on the
test split. Choices are made per split and never shared. The test indices of split j are read
only in the last step. All networks of a phase (splits × grid points, then the refits) are trained
at once by :func:`calipers.batched.engine.fit_members`.

# NOTE [Weight decay from tau]
The paper's Keras model adds ``λ·‖W‖²`` to the loss of every weight matrix (not the biases),
``λ = l²(1 − p) / (2 N τ)`` with length-scale ``l`` (1e-2), dropout ``p``, ``N`` training rows
and precision ``τ``. Its gradient is ``2λ·W``, i.e. Adam's coupled ``weight_decay = 2λ``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from calipers._checks import _check_finite, _check_positive_int, _look_up_option
from calipers._seeds import child_seed
from calipers.batched.engine import (
    MCTask,
    Member,
    MemberFit,
    MemberMC,
    MLPArch,
    fit_members,
    mc_members,
)
from calipers.evaluation.folds import Folds
from calipers.evaluation.train import ProgressFn, TrainOptions

__all__ = ["SearchOptions", "SearchResult", "grid_points", "inner_split", "l2_from_tau",
           "search_regression"]

_GRID_KEYS = ("dropout", "tau")


def l2_from_tau(*, dropout: float, tau: float, lengthscale: float, n: int) -> float:
    """``λ = l²(1 − p) / (2 N τ)`` (NOTE [Weight decay from tau]); Adam's weight_decay is 2λ."""
    return lengthscale**2 * (1.0 - dropout) / (2.0 * n * tau)


def grid_points(grid: Mapping[str, Sequence[float]]) -> tuple[dict[str, float], ...]:
    """All combinations of ``grid``, the first key varying slowest (the paper loops dropout,
    then tau). Keys: ``dropout`` (in [0, 1)) and ``tau`` (> 0); both required."""
    for key in grid:
        _look_up_option(key, _GRID_KEYS, what="grid key")
    missing = [k for k in _GRID_KEYS if k not in grid]
    if missing:
        raise ValueError(f"grid needs values for {missing}; e.g. [search] dropout = [0.005, 0.01, "
                         "0.05, 0.1] and tau = [0.1, 0.15, 0.2].")
    for key, values in grid.items():
        vals = list(values) if isinstance(values, (list, tuple)) else [values]
        ok = (lambda v: 0 <= v < 1) if key == "dropout" else (lambda v: v > 0)
        if not vals or not all(isinstance(v, (int, float)) and math.isfinite(v) and ok(v)
                               for v in vals):
            rule = "in [0, 1)" if key == "dropout" else "> 0"
            raise ValueError(f"grid {key!r} must be a non-empty list of numbers {rule}; got "
                             f"{values!r}.")
    keys = list(grid)
    seqs = [list(grid[k]) if isinstance(grid[k], (list, tuple)) else [grid[k]] for k in keys]
    return tuple(dict(zip(keys, (float(v) for v in combo), strict=True))
                 for combo in itertools.product(*seqs))


def inner_split(train: np.ndarray, *, fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, validation)``: the first ``int(fraction · n)`` training indices and the rest."""
    train = np.asarray(train)
    k = int(fraction * len(train))
    if not 0 < k < len(train):
        raise ValueError(f"inner_fraction={fraction!r} of {len(train)} training rows leaves an "
                         "empty fit or validation set; use a value such as 0.8.")
    return train[:k], train[k:]


@dataclass(frozen=True)
class SearchOptions:
    """Settings of :func:`search_regression` (defaults: the 2018 code, 1 hidden layer).

    ``epochs`` is 40 × the paper's multiplier (4000 for the published grid-search table);
    ``n_mc`` the test passes T, ``n_mc_select`` the validation passes (default ``n_mc``);
    ``criterion`` ``"ll"`` (validation log likelihood, the paper) or ``"rmse"``;
    ``inner_shuffle`` permutes each training split (``child_seed(seed, "inner", j)``) before
    cutting it, for folds whose training indices are sorted (:func:`calipers.make_folds`) rather
    than in a random file order (the paper's split files).
    """

    grid: Mapping[str, Sequence[float]] = field(default_factory=lambda: {
        "dropout": (0.005, 0.01, 0.05, 0.1), "tau": (0.1, 0.15, 0.2)})
    hidden: tuple[int, ...] = (50,)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    lengthscale: float = 1e-2
    inner_fraction: float = 0.8
    criterion: str = "ll"
    n_mc: int = 10_000
    n_mc_select: int | None = None
    input_dropout: bool = True
    device: str = "auto"
    batched: bool = True
    seed: int = 0
    inner_shuffle: bool = False

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["grid"] = {k: list(v) for k, v in self.grid.items()}
        d["hidden"] = list(self.hidden)
        return d


@dataclass(frozen=True)
class SearchResult:
    """Per-split choices and scores. Arrays have one row per outer split j (J rows); the
    validation arrays have one column per grid point. RMSE in target units (lower is better),
    log likelihood in nats per test point (higher is better)."""

    points: tuple[dict[str, float], ...]
    chosen: tuple[dict[str, float], ...]
    validation_ll: np.ndarray = field(repr=False)
    validation_rmse: np.ndarray = field(repr=False)
    test_rmse: np.ndarray = field(repr=False)        # deterministic (weight-scaling) RMSE
    test_mc_rmse: np.ndarray = field(repr=False)
    test_ll: np.ndarray = field(repr=False)
    fit_index: tuple[np.ndarray, ...] = field(repr=False)
    validation_index: tuple[np.ndarray, ...] = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    test: tuple[MemberMC, ...] = field(default=(), repr=False)   # per split: mean, var, ll
    refits: tuple[MemberFit, ...] = field(default=(), repr=False)  # per split: weights

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard error (std with ddof=0 / √J, as the paper) of each test score."""
        out = {}
        for name in ("test_rmse", "test_mc_rmse", "test_ll"):
            v = np.asarray(getattr(self, name), dtype=float)
            out[name] = {"mean": float(v.mean()), "se": float(v.std() / math.sqrt(len(v)))}
        return out

    def to_dict(self) -> dict:
        return {"points": list(self.points), "chosen": list(self.chosen),
                "validation_ll": self.validation_ll.tolist(),
                "validation_rmse": self.validation_rmse.tolist(),
                "test_rmse": self.test_rmse.tolist(), "test_mc_rmse": self.test_mc_rmse.tolist(),
                "test_ll": self.test_ll.tolist(), "summary": self.summary(),
                "seconds": dict(self.seconds)}


def _stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = a.mean(axis=0), a.std(axis=0)
    return mu, np.where(sd == 0, 1.0, sd)


def _prepare(X: np.ndarray, y: np.ndarray, fit_idx: np.ndarray, eval_idx: np.ndarray,
             point: dict[str, float], opts: SearchOptions, seed: int) -> tuple[Member, MCTask]:
    """Member trained on ``fit_idx`` (standardised with its statistics) and its MC task on
    ``eval_idx``; the fit is filled in later."""
    Xf, yf = X[fit_idx], y[fit_idx]
    xm, xs = _stats(Xf)
    ym, ys = float(yf.mean()), float(yf.std()) or 1.0
    lam = l2_from_tau(dropout=point["dropout"], tau=point["tau"], lengthscale=opts.lengthscale,
                      n=len(fit_idx))
    member = Member(((Xf - xm) / xs).astype(np.float32), ((yf - ym) / ys).astype(np.float32),
                    dropout=point["dropout"], weight_decay=2.0 * lam, seed=seed)
    task = MCTask(None, ((X[eval_idx] - xm) / xs).astype(np.float32), y[eval_idx],  # type: ignore[arg-type]
                  tau=point["tau"], y_mean=ym, y_std=ys, seed=seed)
    return member, task


def _run(pairs: list[tuple[Member, MCTask]], arch: MLPArch, opts: SearchOptions,
         n_mc: int, progress: ProgressFn | None) -> tuple[list[MemberFit], list[MemberMC]]:
    train = TrainOptions(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr,
                         device=opts.device)
    fits = fit_members([m for m, _ in pairs], arch, options=train, batched=opts.batched,
                       progress=progress)
    tasks = [MCTask(f, t.X, t.y, t.tau, t.y_mean, t.y_std, t.seed)
             for f, (_, t) in zip(fits, pairs, strict=True)]
    return list(fits), list(mc_members(tasks, arch, n_mc=n_mc, batched=opts.batched,
                                       device=opts.device))


def _search_iv(X, y, folds, options):
    opts = options or SearchOptions()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (len(X),):
        raise ValueError(f"X must be (n, n_features) and y (n,); got X {X.shape} and y {y.shape}.")
    _check_finite(X, name="X")
    _check_finite(y, name="y")
    if not isinstance(folds, Folds) or folds.n_samples != len(X):
        raise ValueError(f"folds must be a Folds over the {len(X)} rows of X; got "
                         f"{type(folds).__name__} over {getattr(folds, 'n_samples', '?')} rows.")
    _look_up_option(opts.criterion, ("ll", "rmse"), what="criterion")
    _check_positive_int(opts.n_mc, name="n_mc", fix="The paper uses 10000.")
    if not 0 < opts.inner_fraction < 1:
        raise ValueError(f"inner_fraction must be in (0, 1); got {opts.inner_fraction!r}. "
                         "The paper uses 0.8.")
    return X, y, opts, grid_points(opts.grid)


def search_regression(X: np.ndarray, y: np.ndarray, folds: Folds, *,
                      options: SearchOptions | None = None,
                      progress: Callable[[str], ProgressFn | None] | None = None) -> SearchResult:
    """Grid search on an inner split of each training split, refit, MC-dropout test scores.

    Parameters
    ----------
    X : array of shape (n, n_features)
        Raw inputs; standardised per network with its own training rows' mean and std.
    y : array of shape (n,)
        Targets in original units (scores are reported in these units).
    folds : Folds
        Outer splits, e.g. from :func:`calipers.evaluation.splits.read_splits` (index order
        matters: the validation set is the tail of each training index list).
    options : SearchOptions
    progress : callable(phase) -> callable(epoch, n_epochs, loss), optional
        Called at the start of each training phase (``"search"``, ``"refit"``); the callable it
        returns, if any, gets every epoch.

    Returns
    -------
    SearchResult
    """
    X, y, opts, points = _search_iv(X, y, folds, options)
    arch = MLPArch(X.shape[1], tuple(opts.hidden), 1, opts.input_dropout)
    inner = [inner_split(np.random.default_rng(child_seed(opts.seed, "inner", j)).permutation(tr)
                         if opts.inner_shuffle else tr, fraction=opts.inner_fraction)
             for j, tr in enumerate(folds.train)]
    t0 = time.perf_counter()
    pairs = [_prepare(X, y, f, v, pt, opts, child_seed(opts.seed, "search", j, g))
             for j, (f, v) in enumerate(inner) for g, pt in enumerate(points)]
    phase = progress or (lambda name: None)
    _, val = _run(pairs, arch, opts, opts.n_mc_select or opts.n_mc, phase("search"))
    J, G = len(folds), len(points)
    v_ll = np.array([r.log_likelihood for r in val]).reshape(J, G)
    v_rmse = np.array([r.mc_rmse for r in val]).reshape(J, G)
    score = v_ll if opts.criterion == "ll" else -v_rmse
    failed = np.flatnonzero(np.isnan(score).all(axis=1))
    if failed.size:
        raise FloatingPointError(f"every grid point diverged (NaN validation scores) on split(s) "
                                 f"{failed.tolist()}; lower [train] lr or check the data.")
    best = np.nanargmax(score, axis=1)  # a diverged point (NaN) is never chosen
    t1 = time.perf_counter()
    # The test indices are read here, and only here, after every choice is made.
    refit = [_prepare(X, y, tr, te, points[best[j]], opts, child_seed(opts.seed, "refit", j))
             for j, (tr, te) in enumerate(folds)]
    fits, test = _run(refit, arch, opts, opts.n_mc, phase("refit"))
    t2 = time.perf_counter()
    return SearchResult(
        points, tuple(points[b] for b in best), v_ll, v_rmse,
        np.array([r.rmse for r in test]), np.array([r.mc_rmse for r in test]),
        np.array([r.log_likelihood for r in test]), tuple(f for f, _ in inner),
        tuple(v for _, v in inner), {"search": t1 - t0, "refit_test": t2 - t1}, tuple(test),
        tuple(fits))
