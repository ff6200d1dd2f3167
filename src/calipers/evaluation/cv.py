"""Cross-validation of PyTorch networks on identical folds, with MC dropout and resume.

A fold of a network is one task (:func:`run_fold`): a pure function of the data, the fold's
indices, the network spec and the seed (NOTE [Task seeds] in ``_seeds.py``), so rerunning an
interrupted run finishes the missing folds and gives the same results as an uninterrupted run.
"""

from __future__ import annotations

import time
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
from calipers.evaluation.train import TrainOptions, fit
from calipers.models import build_network
from calipers.runs import atomic_path, atomic_write_json, fold_dir, fold_done, read_json, save_npz
from calipers.uncertainty.mc import has_dropout, mc_predict

__all__ = ["CVResult", "FoldResult", "FoldSpec", "NetworkSpec", "cross_validate", "run_fold"]


@dataclass(frozen=True)
class NetworkSpec:
    """A candidate network: ``model`` is ``"module:callable"`` (or a callable), ``args`` its
    keyword arguments; ``input_shape``/``n_outputs`` are added from the data when accepted."""

    model: Any
    args: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        name = self.model if isinstance(self.model, str) else getattr(self.model, "__name__", "?")
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{name}({args})"


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
        ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
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
        fitted = fit(model, X_tr, y_tr, task=data.task, options=spec.options,
                     seed=child_seed(spec.seed, "order", spec.network, spec.split),
                     progress=epoch_cb)
    pred = _predict(model, X_te, data.task, spec, fitted.device)
    if data.task == "classification":
        metrics = score_classification(y_te, pred["proba"])
        metrics["entropy"] = float(np.mean(pred["entropy"]))
        metrics["mutual_info"] = float(np.mean(pred["mutual_info"]))
    else:
        mean = pred["mean"].reshape(len(y_te), -1) * y_sd + y_mu
        # tau is a precision in 1/(target units)², as in calipers.uncertainty.mc and the paper
        var = pred["var"].reshape(len(y_te), -1) * y_sd**2 + (1.0 / spec.tau if spec.tau else 0.0)
        pred = {"mean": mean, "var": var}
        yt = y_te.reshape(len(y_te), -1)
        metrics = score_regression(yt, mean, var if np.all(var > 0) else None)
    pred = {"index": spec.test, "y_true": y_te, **pred}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return FoldResult(spec.network, spec.split, metrics, pred, fitted.losses, fitted.seconds,
                      False, state)


def _save_fold(run_dir: Path, result: FoldResult, spec: FoldSpec) -> None:
    d = fold_dir(run_dir, result.network, result.split)
    save_npz(d / "predictions.npz", result.predictions)
    with atomic_path(d / "model.pt") as tmp:
        torch.save(result.state_dict, tmp)
    atomic_write_json(d / "metrics.json", {  # written last: marks the fold as done
        "network": result.network, "split": result.split, "model": spec.spec.describe(),
        "metrics": result.metrics, "losses": list(result.losses), "seconds": result.seconds,
        "n_train": len(spec.train), "n_test": len(spec.test),
    })


def _load_fold(run_dir: Path, network: str, split: int) -> FoldResult:
    d = fold_dir(run_dir, network, split)
    info = read_json(d / "metrics.json")
    with np.load(d / "predictions.npz", allow_pickle=False) as npz:
        pred = {k: npz[k] for k in npz.files}
    return FoldResult(network, split, info["metrics"], pred, tuple(info["losses"]),
                      float(info["seconds"]), True)


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


def _check_networks(networks: Mapping[str, NetworkSpec], data: Dataset, n_mc: int) -> None:
    if not networks:
        raise ValueError("no networks given; add at least one [networks.NAME] table.")
    for name, spec in networks.items():
        probe = build_network(spec.model, spec.args, input_shape=data.input_shape,
                              n_outputs=data.n_outputs)
        if n_mc > 0 and not has_dropout(probe):
            raise ValueError(
                f"network {name!r} ({spec.describe()}) has no dropout module, but MC dropout "
                f"asks for {n_mc} samples. Add nn.Dropout(p) before its last layer (or pass "
                f"dropout > 0 in args), or set [mc] samples = 0 to skip MC dropout."
            )


def cross_validate(
    data: Dataset,
    networks: Mapping[str, NetworkSpec],
    folds: Folds,
    *,
    options: TrainOptions | None = None,
    n_mc: int = 30,
    tau: float | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    progress: CVProgress | None = None,
    fold_fn: Callable[..., FoldResult] | None = None,
    executor: Any = None,
) -> CVResult:
    """Train and evaluate every network on every split of ``folds`` (the same for all).

    With ``run_dir``, each finished fold is saved (predictions, weights, metrics; atomically)
    and folds already saved there are loaded instead of recomputed, so an interrupted run resumes.
    ``fold_fn(spec, data, progress=...)`` is the fold task, :func:`run_fold` by default
    (segmentation passes its own). ``executor`` (:mod:`calipers.executors`; needs ``run_dir``)
    runs the unfinished folds as tasks first, which the loop below then reads back.
    """
    fold_fn = fold_fn or run_fold
    if folds.n_samples != data.n_samples:
        raise ValueError(f"folds index {folds.n_samples} samples; the data set has "
                         f"{data.n_samples}.")
    _check_networks(networks, data, n_mc)
    options = options or TrainOptions()
    run_path = Path(run_dir) if run_dir is not None else None
    t0 = time.perf_counter()
    results: dict[str, list[FoldResult]] = {name: [] for name in networks}
    if executor is not None:
        _run_fold_tasks(executor, data, networks, folds, run_path, fold_fn,
                        FoldSpec("", NetworkSpec(""), 0, np.empty(0), np.empty(0), seed, options,
                                 n_mc, tau))
    for name, net in networks.items():
        for j, (tr, te) in enumerate(folds):
            if run_path is not None and fold_done(run_path, name, j):
                res = _load_fold(run_path, name, j)
            else:
                spec = FoldSpec(name, net, j, tr, te, seed, options, n_mc, tau)
                if progress is not None:
                    progress.fold_start(name, j, len(folds), options.epochs)
                res = fold_fn(spec, data, progress=progress)
                if run_path is not None:
                    _save_fold(run_path, res, spec)
            results[name].append(res)
            if progress is not None:
                progress.fold_end(res)
    return CVResult(folds, data.task, {k: tuple(v) for k, v in results.items()},
                    time.perf_counter() - t0)



def fold_task(spec: FoldSpec, data: Dataset, run_dir: str, fold_fn: Callable[..., FoldResult],
              deterministic: bool = False) -> None:
    """The task of one fold (:class:`calipers.experiment.tasks.Task`): train, predict, save into
    ``run_dir`` (``metrics.json`` last). ``deterministic`` switches on the determinism flags in
    the worker as the parent had them (NOTE [What determinism covers])."""
    from calipers.repro.determinism import deterministic as _det

    with _det(spec.seed, enabled=deterministic):
        res = fold_fn(spec, data, progress=None)
    _save_fold(Path(run_dir), res, spec)


def _run_fold_tasks(executor: Any, data: Dataset, networks: Mapping[str, NetworkSpec],
                    folds: Folds, run_path: Path | None, fold_fn: Callable[..., FoldResult],
                    proto: FoldSpec) -> None:
    """Run every unfinished fold as a task through ``executor`` (results land in the run
    folder: the same files whatever the executor)."""
    from dataclasses import replace

    from calipers.experiment.tasks import Task

    if run_path is None:
        raise ValueError("an executor writes its folds into the run folder; pass run_dir.")
    det = torch.are_deterministic_algorithms_enabled()
    tasks = []
    for name, net in networks.items():
        for j, (tr, te) in enumerate(folds):
            spec = replace(proto, network=name, spec=net, split=j, train=tr, test=te)
            marker = fold_dir(run_path, name, j) / "metrics.json"
            tasks.append(Task(f"{name}/fold-{j:02d}", fold_task,
                              {"spec": spec, "data": data, "run_dir": str(run_path),
                               "fold_fn": fold_fn, "deterministic": det}, marker))
    executor.map([t for t in tasks if not t.done()])
