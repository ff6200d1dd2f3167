"""The stacked task: every split of an MLP network trained at once.

:func:`calipers.evaluation.cv.run_fold` trains one fold after another. For a small fully
connected network that leaves the hardware idle, so :func:`stacked_task` trains all splits of a
network (and, with a grid search, all splits × grid points, then the refits) as one stacked model
(:mod:`~calipers.batched.engine`): one task of the experiment engine
(:func:`calipers.experiment.engine.cross_validate` with ``stack=True``), which
:func:`~calipers.experiment.runner.run_experiment` uses for every network it fits
(:func:`batched_reason` says why not otherwise); ``[train] batched = false`` trains the same
members one by one, with the same numbers.

Each split j of network ``name`` is the member seeded ``child_seed(seed, "batched", name, j)``
(with a search: ``child_seed(seed, "search", name)`` for
:func:`calipers.batched.search.search_regression`),
so results do not depend on which other networks or splits are trained with it, and a resumed
run gives the same numbers. Classification MLPs are batched too (cross-entropy; MC dropout gives
mean probabilities, entropy and mutual information), without ``[search]``.
"""

from __future__ import annotations

import inspect
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
    FoldResult,
    FoldSpec,
    NetworkSpec,
    _standardize,
    save_fold,
)
from calipers.evaluation.folds import Folds
from calipers.evaluation.metrics import score_classification, score_regression
from calipers.evaluation.preprocess import fold_preprocess
from calipers.evaluation.train import ProgressFn, TrainOptions
from calipers.models.loading import resolve_callable

__all__ = ["SearchSettings", "batched_reason", "stacked_task"]

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
    if spec.learner != "calipers":
        return f"learner {spec.learner!r} trains it (calipers.learners)"
    if resolve_callable(spec.model) is not _mlp():  # a bad model name raises ValueError
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
                 chosen: Mapping[str, float], prep: Mapping[str, np.ndarray]) -> FoldResult:
    state = _state_dict(fit, arch.input_dropout)
    if isinstance(mc, MemberProba):  # the keys of calipers.evaluation.cv.run_fold
        metrics = score_classification(y_te, mc.proba)
        metrics["entropy"] = float(np.mean(mc.entropy))
        metrics["mutual_info"] = float(np.mean(mc.mutual_info))
        pred = {"index": test, "y_true": y_te, "proba": mc.proba, "entropy": mc.entropy,
                "expected_entropy": mc.expected_entropy, "mutual_info": mc.mutual_info}
        return FoldResult(name, j, metrics, pred, fit.losses, fit.seconds, False, state,
                          preprocess=prep)
    mean, var = mc.mean.reshape(len(y_te), -1), mc.var.reshape(len(y_te), -1)
    metrics = score_regression(y_te.reshape(len(y_te), -1), mean,
                               var if np.all(var > 0) else None)
    if mc.log_likelihood is not None:
        metrics["log_likelihood"] = mc.log_likelihood
    metrics["rmse_weight_scaling"] = float(mc.rmse)
    metrics.update({f"chosen_{k}": float(v) for k, v in chosen.items()})
    pred = {"index": test, "y_true": y_te, "mean": mean, "var": var}
    return FoldResult(name, j, metrics, pred, fit.losses, fit.seconds, False, state,
                      preprocess=prep)


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
    return [_fold_result(name, j, te, data.y[te], f, m, arch, {"dropout": p},
                         fold_preprocess(data, tr))
            for j, ((tr, te), f, m) in enumerate(zip(folds, fits, mcs, strict=True))]


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
    # the search standardises every table in float64 (NOTE [Fold preprocessing])
    return [_fold_result(name, j, te, data.y[te], f, m, arch, chosen,
                         fold_preprocess(data, tr, dtype=np.float64))
            for j, ((tr, te), f, m, chosen) in enumerate(zip(folds, res.refits, res.test,
                                                             res.chosen, strict=True))]


def stacked_task(
    name: str,
    spec: NetworkSpec,
    data: Dataset,
    folds: Folds,
    *,
    options: TrainOptions,
    n_mc: int,
    tau: float | None,
    seed: int,
    search: SearchSettings | None = None,
    batched: bool = True,
    run_dir: str | Path | None = None,
    todo: tuple[int, ...] | None = None,
    progress: CVProgress | None = None,
) -> tuple[FoldResult, ...]:
    """The engine's task for network ``name``: train every split of ``folds`` at once and save
    the splits ``todo`` (default: all) into ``run_dir``, in increasing order, each fold's
    ``metrics.json`` last — so the last one written marks the task as done.

    Inputs and targets are standardised with each split's training rows;
    ``options.weight_decay`` is Adam's coupled decay on all parameters. With ``search``, dropout
    and tau are chosen per split on an inner split
    (:func:`calipers.batched.search.search_regression`); weight decay then follows from tau
    (NOTE [Weight decay from tau]) and each fold's metrics record ``chosen_dropout`` and
    ``chosen_tau``. Metrics: ``rmse`` (of the MC mean), ``gaussian_nll`` (when every predictive
    variance is positive), ``log_likelihood`` (the paper's MC estimate; needs tau and
    ``n_mc >= 1``), ``rmse_weight_scaling`` (dropout off). Returns one result per split.

    A network is resumed as a whole: if any of its splits is missing, all of them are trained
    again (the same numbers, to float tolerance) and only the missing ones saved.
    """
    fresh = _train_network(name, spec, data, folds, options, n_mc, tau, seed, search, batched,
                           progress)
    if run_dir is not None:
        for j in sorted(range(len(folds)) if todo is None else todo):
            save_fold(run_dir, fresh[j], FoldSpec(name, spec, j, folds.train[j], folds.test[j],
                                                  seed, options, n_mc, tau))
    return tuple(fresh)


def _train_network(name: str, spec: NetworkSpec, data: Dataset, folds: Folds,
                   options: TrainOptions, n_mc: int, tau: float | None, seed: int,
                   search: SearchSettings | None, batched: bool,
                   progress: CVProgress | None) -> list[FoldResult]:
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
