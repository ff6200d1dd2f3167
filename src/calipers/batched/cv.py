"""Cross-validation of MLP networks with every split trained at once.

:func:`calipers.evaluation.cv.cross_validate` trains one fold after another. For a small fully
connected regression network that leaves the hardware idle, so :func:`cross_validate_batched`
trains all splits of a network (and, with a grid search, all splits × grid points, then the
refits) as one stacked model (:mod:`~calipers.batched.engine`). :func:`run_experiment` uses it
automatically for every network it fits (:func:`batched_reason` says why not otherwise); ``[train]
batched = false`` trains the same members one by one, with the same numbers.

Each split j of network ``name`` is the member seeded ``child_seed(seed, "batched", name, j)``
(with a search: ``child_seed(seed, "search", name)`` for
:func:`calipers.batched.search.search_regression`),
so results do not depend on which other networks or splits are trained with it, and a resumed
run gives the same numbers. Classification MLPs are batched too (cross-entropy; MC dropout gives
mean probabilities, entropy and mutual information), without ``[search]``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calipers._seeds import child_seed
from calipers.batched.engine import (
    MCTask,
    Member,
    MemberFit,
    MemberMC,
    MemberProba,
    MLPArch,
    fit_members,
    mc_members,
)
from calipers.batched.search import SearchOptions, search_regression
from calipers.data import Dataset
from calipers.evaluation.cv import (
    CVProgress,
    CVResult,
    FoldResult,
    FoldSpec,
    NetworkSpec,
    _load_fold,
    _save_fold,
    _standardize,
)
from calipers.evaluation.folds import Folds
from calipers.evaluation.metrics import score_classification, score_regression
from calipers.evaluation.train import ProgressFn, TrainOptions
from calipers.models.loading import resolve_callable
from calipers.runs import fold_done

__all__ = ["SearchSettings", "batched_reason", "cross_validate_batched"]

_MLP_ARGS = ("hidden", "dropout", "input_dropout")


@dataclass(frozen=True)
class SearchSettings:
    """The ``[search]`` table: grid values, inner split, criterion, validation MC passes
    (``None``: the test passes), length-scale of the weight-decay prior. ``inner_shuffle``
    permutes each training split before its tail is cut off for validation; ``False`` keeps the
    given order (predefined splits, as the paper's files)."""

    dropout: tuple[float, ...]
    tau: tuple[float, ...]
    inner_fraction: float = 0.8
    criterion: str = "ll"
    mc_samples: int | None = None
    lengthscale: float = 1e-2
    inner_shuffle: bool = True


def _mlp():
    from calipers.models import MLP

    return MLP


def batched_reason(spec: NetworkSpec, data: Dataset) -> str | None:
    """Why ``spec`` cannot be trained by the batched engine on ``data``; ``None`` when it can.

    The engine trains ``calipers.models:MLP`` (args ``hidden``, ``dropout``, ``input_dropout``)
    for classification, or for regression with one target.
    """
    if data.task not in ("classification", "regression"):
        return f"task is {data.task!r} (the engine trains classification and regression MLPs)"
    try:
        fn = resolve_callable(spec.model)
    except Exception:  # the fold-by-fold path reports the real error
        return "its model could not be resolved"
    if fn is not _mlp():
        return f"{spec.describe()} is not calipers.models:MLP"
    extra = sorted(set(spec.args) - set(_MLP_ARGS))
    if extra:
        return f"args {extra} are not MLP arguments the engine knows"
    if data.task == "regression" and (data.n_outputs != 1 or np.asarray(data.y).ndim != 1):
        return "the regression data have more than one target"
    return None


def _arch(spec: NetworkSpec, data: Dataset) -> tuple[MLPArch, float]:
    defaults = {k: v.default for k, v in inspect.signature(_mlp()).parameters.items()}
    args = {k: spec.args.get(k, defaults[k]) for k in _MLP_ARGS}
    arch = MLPArch(int(np.prod(data.X.shape[1:])), tuple(int(h) for h in args["hidden"]),
                   data.n_outputs, bool(args["input_dropout"]),
                   "cross_entropy" if data.task == "classification" else "mse")
    return arch, float(args["dropout"])


def _inputs(data: Dataset, tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened inputs; a 2-D table is standardised with the training rows (as
    :func:`calipers.evaluation.cv.run_fold` does), images are left as they are."""
    X = data.X.reshape(len(data.X), -1)
    X_tr, X_te = (X[tr], X[te]) if data.X.ndim != 2 else _standardize(X[tr], X[te])
    return X_tr.astype(np.float32), X_te.astype(np.float32)


def _state_dict(fit: MemberFit, input_dropout: bool) -> dict[str, torch.Tensor]:
    """The member's weights under the parameter names of ``calipers.models.MLP``."""
    state, idx = {}, 2 if input_dropout else 1  # Flatten, [Dropout], then Linear, ReLU, Dropout
    for w, b in fit.weights:
        state[f"{idx}.weight"] = torch.as_tensor(w).T.contiguous()
        state[f"{idx}.bias"] = torch.as_tensor(b)
        idx += 3
    return state


def _fold_result(name: str, j: int, test: np.ndarray, y_te: np.ndarray, fit: MemberFit,
                 mc: MemberMC | MemberProba, arch: MLPArch,
                 chosen: Mapping[str, float]) -> FoldResult:
    state = _state_dict(fit, arch.input_dropout)
    if isinstance(mc, MemberProba):  # the keys of calipers.evaluation.cv.run_fold
        metrics = score_classification(y_te, mc.proba)
        metrics["entropy"] = float(np.mean(mc.entropy))
        metrics["mutual_info"] = float(np.mean(mc.mutual_info))
        pred = {"index": test, "y_true": y_te, "proba": mc.proba, "entropy": mc.entropy,
                "expected_entropy": mc.expected_entropy, "mutual_info": mc.mutual_info}
        return FoldResult(name, j, metrics, pred, fit.losses, fit.seconds, False, state)
    mean, var = mc.mean.reshape(len(y_te), -1), mc.var.reshape(len(y_te), -1)
    metrics = score_regression(y_te.reshape(len(y_te), -1), mean,
                               var if np.all(var > 0) else None)
    if mc.log_likelihood is not None:
        metrics["log_likelihood"] = mc.log_likelihood
    metrics["rmse_weight_scaling"] = float(mc.rmse)
    metrics.update({f"chosen_{k}": float(v) for k, v in chosen.items()})
    pred = {"index": test, "y_true": y_te, "mean": mean, "var": var}
    return FoldResult(name, j, metrics, pred, fit.losses, fit.seconds, False, state)


def _plain(name: str, spec: NetworkSpec, data: Dataset, folds: Folds, options: TrainOptions,
           n_mc: int, tau: float | None, seed: int, batched: bool,
           progress: ProgressFn | None) -> list[FoldResult]:
    arch, p = _arch(spec, data)
    classify = arch.loss == "cross_entropy"
    members, tasks = [], []
    for j, (tr, te) in enumerate(folds):
        X_tr, X_te = _inputs(data, tr, te)
        s = child_seed(seed, "batched", name, j)
        if classify:
            y_tr, ym, ys, y_te, t = data.y[tr], 0.0, 1.0, None, None
        else:
            ym, ys = float(data.y[tr].mean()), float(data.y[tr].std()) or 1.0
            y_tr, y_te, t = ((data.y[tr] - ym) / ys).astype(np.float32), data.y[te], tau
        members.append(Member(X_tr, y_tr, dropout=p, weight_decay=options.weight_decay, seed=s,
                              decay_biases=True))
        tasks.append(MCTask(None, X_te, y_te, tau=t, y_mean=ym, y_std=ys,  # type: ignore[arg-type]
                            seed=s))
    fits = fit_members(members, arch, options=options, batched=batched, progress=progress)
    done = [MCTask(f, t.X, t.y, t.tau, t.y_mean, t.y_std, t.seed)
            for f, t in zip(fits, tasks, strict=True)]
    mcs = mc_members(done, arch, n_mc=n_mc, batched=batched, device=options.device)
    return [_fold_result(name, j, te, data.y[te], f, m, arch, {"dropout": p})
            for j, ((_, te), f, m) in enumerate(zip(folds, fits, mcs, strict=True))]


def _searched(name: str, spec: NetworkSpec, data: Dataset, folds: Folds, options: TrainOptions,
              n_mc: int, search: SearchSettings, seed: int, batched: bool,
              phase: Callable[[str], ProgressFn | None] | None) -> list[FoldResult]:
    arch, _ = _arch(spec, data)
    opts = SearchOptions(
        grid={"dropout": tuple(search.dropout), "tau": tuple(search.tau)}, hidden=arch.hidden,
        epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
        lengthscale=search.lengthscale, inner_fraction=search.inner_fraction,
        criterion=search.criterion, n_mc=n_mc, n_mc_select=search.mc_samples,
        input_dropout=arch.input_dropout, device=options.device, batched=batched,
        seed=child_seed(seed, "search", name), inner_shuffle=search.inner_shuffle)
    res = search_regression(data.X.reshape(len(data.X), -1), data.y, folds, options=opts,
                            progress=phase)
    return [_fold_result(name, j, te, data.y[te], f, m, arch, chosen)
            for j, ((_, te), f, m, chosen) in enumerate(zip(folds, res.refits, res.test,
                                                            res.chosen, strict=True))]


def cross_validate_batched(
    data: Dataset,
    networks: Mapping[str, NetworkSpec],
    folds: Folds,
    *,
    options: TrainOptions | None = None,
    n_mc: int = 30,
    tau: float | None = None,
    seed: int = 0,
    search: SearchSettings | None = None,
    batched: bool = True,
    run_dir: str | Path | None = None,
    progress: CVProgress | None = None,
) -> CVResult:
    """Cross-validate MLP networks, all splits of a network trained at once.

    Same contract as :func:`calipers.evaluation.cv.cross_validate` (identical folds,
    out-of-fold MC-dropout predictions in original units, resume from ``run_dir``), restricted to
    networks for which :func:`batched_reason` is ``None``. Inputs and targets are standardised with
    each split's training rows; ``options.weight_decay`` is Adam's coupled decay on all parameters.

    With ``search``, dropout and tau are chosen per split on an inner split
    (:func:`calipers.batched.search.search_regression`); weight decay then follows from tau
    (NOTE [Weight decay from tau]) and each fold's metrics record ``chosen_dropout`` and
    ``chosen_tau``. Metrics: ``rmse`` (of the MC mean), ``gaussian_nll`` (when every predictive
    variance is positive), ``log_likelihood`` (the paper's MC estimate; needs tau and
    ``n_mc >= 1``), ``rmse_weight_scaling`` (dropout off).

    A network is resumed as a whole: if any of its splits is missing from ``run_dir``, all of
    them are trained again (the same numbers, to float tolerance) and the missing ones saved;
    the result holds the saved folds as they are on disk.
    """
    options = options or TrainOptions()
    for name, spec in networks.items():
        why = batched_reason(spec, data)
        if why is not None:
            raise ValueError(f"network {name!r} cannot be trained batched: {why}. "
                             "Cross-validate it with calipers.evaluation.cv.cross_validate.")
    if folds.n_samples != data.n_samples:
        raise ValueError(f"folds index {folds.n_samples} samples; the data set has "
                         f"{data.n_samples}.")
    run_path = Path(run_dir) if run_dir is not None else None
    t0 = time.perf_counter()
    results: dict[str, tuple[FoldResult, ...]] = {}
    for name, spec in networks.items():
        done = [run_path is not None and fold_done(run_path, name, j) for j in range(len(folds))]
        fresh = None if all(done) else _train_network(name, spec, data, folds, options, n_mc,
                                                      tau, seed, search, batched, progress)
        kept = []
        for j in range(len(folds)):
            if done[j]:  # saved folds win: the run folder stays the single truth
                kept.append(_load_fold(run_path, name, j))  # type: ignore[arg-type]
                continue
            res = fresh[j]  # type: ignore[index]
            if run_path is not None:
                _save_fold(run_path, res, FoldSpec(name, spec, j, folds.train[j], folds.test[j],
                                                   seed, options, n_mc, tau))
            kept.append(res)
        results[name] = tuple(kept)
        if progress is not None:
            for res in results[name]:
                progress.fold_end(res)
    return CVResult(folds, data.task, results, time.perf_counter() - t0)


def _train_network(name, spec, data, folds, options, n_mc, tau, seed, search, batched,
                   progress) -> list[FoldResult]:
    def phase(label: str) -> ProgressFn | None:
        if progress is None:
            return None
        start = getattr(progress, "phase", None)
        what = f"{name}: {len(folds)} splits{' × grid' if label == 'search' else ''}, {label}"
        if start is not None:
            start(what, options.epochs)
        else:
            progress.fold_start(what, 0, 1, options.epochs)
        return progress.epoch

    if search is None:
        return _plain(name, spec, data, folds, options, n_mc, tau, seed, batched,
                      phase("batched"))
    return _searched(name, spec, data, folds, options, n_mc, search, seed, batched, phase)
