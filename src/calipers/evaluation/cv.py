"""One fold of cross-validation: train a fresh PyTorch network, predict with MC dropout, save.

A fold of a network is one task (:func:`run_fold`): a pure function of the data, the fold's
indices, the network spec and the seed (NOTE [Task seeds] in ``_seeds.py``), so rerunning an
interrupted run finishes the missing folds and gives the same results as an uninterrupted run.
:func:`fold_task` runs one and saves it (:func:`save_fold`, ``metrics.json`` last); the driver
that plans, resumes and runs every fold is :func:`calipers.experiment.engine.cross_validate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from calipers._seeds import child_seed, seeded_torch
from calipers.data import Dataset
from calipers.evaluation.folds import Folds
from calipers.evaluation.metrics import score_classification, score_regression
from calipers.evaluation.preprocess import fold_preprocess, save_preprocess
from calipers.evaluation.train import TrainOptions, fit
from calipers.exceptions import DataError, TrainingError
from calipers.models import build_network
from calipers.runs import atomic_path, atomic_write_json, fold_dir, read_json, save_npz
from calipers.uncertainty.mc import mc_predict
from calipers.uncertainty.measures import torch_entropy

__all__ = ["CVProgress", "CVResult", "FoldResult", "FoldSpec", "NetworkSpec", "fold_task",
           "load_fold", "run_fold", "save_fold"]


@dataclass(frozen=True)
class NetworkSpec:
    """A candidate network: ``model`` is ``"module:callable"`` (or a callable), ``args`` its
    keyword arguments; ``input_shape``/``n_outputs`` are added from the data when accepted."""

    model: Any
    args: Mapping[str, Any] = field(default_factory=dict)
    learner: str = "calipers"   # who trains it (calipers.learners); "calipers": run_fold
    options: Mapping[str, Any] = field(default_factory=dict)  # the learner's (backend, output)
    train: Mapping[str, Any] = field(default_factory=dict)    # [networks.NAME.train] overrides

    def describe(self) -> str:
        name = self.model if isinstance(self.model, str) else getattr(
            self.model, "__name__", type(self.model).__name__)
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        where = "" if self.learner == "calipers" else f"{self.learner} "
        return f"{where}{name}({args})"


@dataclass(frozen=True)
class FoldSpec:
    """Everything one fold task needs, as plain data."""

    network: str
    spec: NetworkSpec
    split: int               # global split index j in 0..J-1
    train: np.ndarray = field(repr=False)
    test: np.ndarray = field(repr=False)
    seed: int = 0
    options: TrainOptions = field(default_factory=TrainOptions)
    n_mc: int = 30
    tau: float | None = None


@dataclass(frozen=True)
class FoldResult:
    """Scores and out-of-fold predictions of one network on one split."""

    network: str
    split: int
    metrics: dict[str, float]
    predictions: dict[str, np.ndarray] = field(repr=False)
    losses: tuple[float, ...] = ()
    seconds: float = 0.0
    resumed: bool = False
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    undefined: Mapping[str, str] = field(default_factory=dict)  # metric -> why it is NaN
    preprocess: Mapping[str, np.ndarray] | None = field(default=None, repr=False)  # saved


class CVProgress(Protocol):
    """Callbacks a front end may implement to show progress (all optional to act on)."""

    def fold_start(self, network: str, split: int, n_splits: int, n_epochs: int) -> None: ...
    def epoch(self, epoch: int, n_epochs: int, loss: float) -> None: ...
    def fold_end(self, result: FoldResult) -> None: ...


def _standardize(train: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Scale features (2-D tables only) with the training split's mean and std."""
    mu = train.mean(axis=0)
    sd = train.std(axis=0)
    sd[sd == 0] = 1.0
    return [(a - mu) / sd for a in (train, *arrays)]


def _predict(model: torch.nn.Module, X: np.ndarray, task: str, spec: FoldSpec,
             device: str) -> dict[str, np.ndarray]:
    """Predictions on standardised targets (regression); ``var`` is the MC variance only —
    :func:`run_fold` adds ``1/tau`` in original units."""
    if spec.n_mc > 0:
        res = mc_predict(model, X, n_mc=spec.n_mc, task=task, device=device,
                         seed=child_seed(spec.seed, "mc", spec.network, spec.split))
        if task == "classification":
            return {"proba": res.proba, "entropy": res.entropy,
                    "expected_entropy": res.expected_entropy, "mutual_info": res.mutual_info}
        return {"mean": res.mean, "var": res.var}
    model.eval()
    with torch.inference_mode():
        out = model(torch.as_tensor(X, dtype=torch.float32, device=device)).float().cpu()
    if task == "classification":
        p = torch.softmax(out, dim=1).numpy()
        ent = torch_entropy(torch.from_numpy(p), dim=1).numpy()
        return {"proba": p, "entropy": ent, "expected_entropy": ent, "mutual_info": 0 * ent}
    return {"mean": out.numpy(), "var": np.zeros_like(out.numpy())}


def run_fold(spec: FoldSpec, data: Dataset, *, progress: CVProgress | None = None) -> FoldResult:
    """Build a fresh network, train it on ``spec.train``, predict ``spec.test`` (MC dropout)."""
    X_tr, X_te = data.X[spec.train], data.X[spec.test]
    y_tr, y_te = data.y[spec.train], data.y[spec.test]
    if X_tr.ndim == 2:
        X_tr, X_te = _standardize(X_tr, X_te)
    y_mu = y_sd = None
    if data.task == "regression":  # train on standardised targets, report in original units
        y_mu, y_sd = y_tr.mean(axis=0), y_tr.std(axis=0)
        y_sd = np.where(y_sd == 0, 1.0, y_sd)
        y_tr = (y_tr - y_mu) / y_sd
    # A fresh network per fold: no fold may see weights trained on another fold's test set.
    with seeded_torch(child_seed(spec.seed, "init", spec.network, spec.split)):
        model = build_network(spec.spec.model, spec.spec.args, input_shape=data.input_shape,
                              n_outputs=data.n_outputs)
    epoch_cb = progress.epoch if progress is not None else None
    with seeded_torch(child_seed(spec.seed, "train", spec.network, spec.split)):
        try:
            fitted = fit(model, X_tr, y_tr, task=data.task, options=spec.options,
                         seed=child_seed(spec.seed, "order", spec.network, spec.split),
                         progress=epoch_cb)
        except TrainingError as exc:  # say which network and fold
            raise TrainingError(f"network {spec.network!r}, fold {spec.split}: {exc}") from None
    pred = _predict(model, X_te, data.task, spec, fitted.device)
    if data.task == "classification":
        metrics = score_classification(y_te, pred["proba"])
        metrics["entropy"] = float(np.mean(pred["entropy"]))
        metrics["mutual_info"] = float(np.mean(pred["mutual_info"]))
    else:
        mean = pred["mean"].reshape(len(y_te), -1) * y_sd + y_mu
        # tau is a precision in 1/(target units)², as in calipers.uncertainty.mc and the paper
        noise = 1.0 / spec.tau if spec.tau is not None else 0.0  # tau > 0 (checked by config)
        var = pred["var"].reshape(len(y_te), -1) * y_sd**2 + noise
        pred = {"mean": mean, "var": var}
        yt = y_te.reshape(len(y_te), -1)
        metrics = score_regression(yt, mean, var if np.all(var > 0) else None)
    pred = {"index": spec.test, "y_true": y_te, **pred}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return FoldResult(spec.network, spec.split, metrics, pred, fitted.losses, fitted.seconds,
                      False, state, preprocess=fold_preprocess(data, spec.train))


# NOTE [Undefined metrics]
# A metric that is undefined on a fold (the AUROC of entropy when no test voxel is wrong) is
# NaN in memory and ``null`` in ``metrics.json`` (valid JSON), with the reason under
# ``"undefined"``. Summaries then use the folds where it is defined and say how many
# (calipers.experiment.summary); a finished run never fails on it.


def _undefined(result: FoldResult) -> dict[str, str]:
    reasons = dict(result.undefined)
    for k, v in result.metrics.items():
        if not math.isfinite(float(v)) and k not in reasons:
            reasons[k] = f"{k} is not finite on this fold ({float(v)})"
    return reasons


def save_fold(run_dir: str | Path, result: FoldResult, spec: FoldSpec) -> Path:
    """Write a fold's ``predictions.npz``, ``model.pt``, ``preprocess.npz`` (NOTE [Fold
    preprocessing]) and, last, ``metrics.json`` (its marker; NOTE [Atomic writes] in
    ``runs.py``). Returns the path of ``metrics.json``."""
    d = fold_dir(run_dir, result.network, result.split)
    save_npz(d / "predictions.npz", result.predictions)
    if result.state_dict is not None:  # other learners save their own model (calipers.learners)
        with atomic_path(d / "model.pt") as tmp:
            torch.save(result.state_dict, tmp)
    if result.preprocess is not None:  # NOTE [Fold preprocessing]
        save_preprocess(d, result.preprocess)
    undefined = _undefined(result)
    info: dict[str, Any] = {
        "network": result.network, "split": result.split, "model": spec.spec.describe(),
        "metrics": {k: (None if k in undefined and not math.isfinite(float(v)) else v)
                    for k, v in result.metrics.items()},
        "losses": list(result.losses), "seconds": result.seconds,
        "n_train": len(spec.train), "n_test": len(spec.test),
    }
    if undefined:
        info["undefined"] = undefined
    return atomic_write_json(d / "metrics.json", info)  # written last: marks the fold as done


def load_fold(run_dir: str | Path, network: str, split: int) -> FoldResult:
    """Read a fold written by :func:`save_fold` (``resumed=True``; no weights)."""
    d = fold_dir(run_dir, network, split)
    try:
        info = read_json(d / "metrics.json")
        with np.load(d / "predictions.npz", allow_pickle=False) as npz:
            pred = {k: npz[k] for k in npz.files}
        metrics = {k: (float("nan") if v is None else v) for k, v in info["metrics"].items()}
        return FoldResult(network, split, metrics, pred, tuple(info["losses"]),
                          float(info["seconds"]), True, undefined=info.get("undefined", {}))
    except Exception as exc:  # zipfile, zlib, JSON, missing keys: a damaged or foreign file
        what = f"lacks the key {exc}" if isinstance(exc, KeyError) else \
            f"{type(exc).__name__}: {exc}"
        raise DataError(f"{d}: the saved fold cannot be read (metrics.json / predictions.npz "
                        f"{what}). Delete the folder {d} and rerun `calipers cv` with the same "
                        "--out to recompute it.") from None


def fold_task(
    fold_fn: Callable[..., FoldResult],
    spec: FoldSpec,
    data: Any,
    *,
    n_splits: int,
    run_dir: str | Path | None = None,
    progress: CVProgress | None = None,
    deterministic: bool = False,
) -> FoldResult:
    """The engine's task for one fold: ``fold_fn(spec, data, progress=...)`` (:func:`run_fold`,
    or the segmentation fold), then :func:`save_fold` into ``run_dir`` when given.

    ``progress`` (epoch bars) works in-process only; the engine passes it to serial runs.
    ``deterministic``: the parent ran with the determinism flags on; a task in another process
    (an executor's worker) switches them on for itself (NOTE [What determinism covers]).
    """
    if progress is not None:
        progress.fold_start(spec.network, spec.split, n_splits, spec.options.epochs)
    if deterministic and not torch.are_deterministic_algorithms_enabled():
        from calipers.repro.determinism import deterministic as _deterministic

        with _deterministic(spec.seed):
            result = fold_fn(spec, data, progress=progress)
    else:
        result = fold_fn(spec, data, progress=progress)
    if run_dir is not None:
        save_fold(run_dir, result, spec)
    return result


@dataclass(frozen=True)
class CVResult:
    """Per-network, per-split results of :func:`cross_validate`."""

    folds: Folds = field(repr=False)
    task: str
    results: dict[str, tuple[FoldResult, ...]] = field(repr=False)
    seconds: float = 0.0

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(self.results)

    def scores(self, metric: str) -> dict[str, np.ndarray]:
        """``{network: (J,) array}`` of one metric, in split order."""
        return {n: np.array([r.metrics[metric] for r in rs]) for n, rs in self.results.items()}

    def pooled(self, network: str, key: str) -> np.ndarray:
        """Out-of-fold predictions ``key`` of ``network`` concatenated over splits."""
        return np.concatenate([r.predictions[key] for r in self.results[network]])
