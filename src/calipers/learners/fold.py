"""One fold of any learner: fit, predict, check, score and save like calipers' own folds.

:func:`learner_fold_task` is the engine's task for a network whose learner is not
``calipers`` (module-level and picklable, like :func:`calipers.evaluation.cv.fold_task`). It
writes ``predictions.npz``, the learner's model files, ``learner.json``, ``preprocess.npz``
(NOTE [Fold preprocessing]) and, last, ``metrics.json`` into ``RUN/<network>/fold-XX/``. A
fold whose learner raises leaves its traceback in ``fold-XX/error.txt`` and no
``metrics.json``, so the other tasks go on and a resumed run retries it.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from calipers._checks import warn_user
from calipers._device import resolve_device
from calipers._seeds import child_seed
from calipers.evaluation.contracts import check_output_shape
from calipers.evaluation.cv import CVProgress, FoldResult, FoldSpec, NetworkSpec, save_fold
from calipers.evaluation.metrics import score_classification, score_regression
from calipers.evaluation.preprocess import fold_preprocess
from calipers.exceptions import ConfigError, TrainingError
from calipers.runs import atomic_write_json, atomic_write_text, fold_dir
from calipers.uncertainty.measures import predictive_entropy

from .base import FoldData, Predictor, fit_settings, get_learner

__all__ = ["check_learner_network", "learner_fold_task", "run_learner_fold"]

_WARNED: set[str] = set()  # networks warned that they have no dropout (once per process)


def check_learner_network(name: str, spec: NetworkSpec, data: Any, *, n_mc: int) -> None:
    """Refuse, before any training, a network whose framework is missing or that its learner
    cannot run (NOTE [Learner protocol])."""
    if data.task not in ("classification", "regression"):
        raise ConfigError(f"network {name!r}: learner {spec.learner!r} is for classification "
                          f"and regression; data.task is {data.task!r}.")
    learner = get_learner(spec.learner)
    learner.require(name, spec)
    if learner.check(name, spec, data, n_mc=n_mc) is False and n_mc > 0:
        _warn_no_dropout(name, spec, n_mc)


def _warn_no_dropout(name: str, spec: NetworkSpec, n_mc: int) -> None:
    """Once per network: before training when the learner knows (check_learner_network), else
    at its first fold in this process."""
    _WARNED.add(name)
    warn_user(f"network {name!r} ({spec.describe()}) has no dropout: its {n_mc} MC samples "
              "would all be equal, so its predictions are deterministic (mutual information 0).")


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(axis=0), train.std(axis=0)
    sd[sd == 0] = 1.0
    return ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)


def _where(spec: FoldSpec) -> str:
    return f"{spec.network!r} ({spec.spec.describe()}) on fold {spec.split}"


def check_probabilities(p: np.ndarray, *, network: str, atol: float = 1e-4) -> None:
    """Raise unless every row of ``p`` is finite, non-negative and sums to one."""
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise TrainingError(f"network {network} predicts NaN or infinite probabilities for "
                            f"{int(bad.sum())} of {len(p)} test samples; its training "
                            "diverged (lower the learning rate) or its output layer is broken.")
    sums = p.sum(axis=1)
    if (p < -atol).any() or np.abs(sums - 1).max() > atol:
        raise ConfigError(f"network {network} gives class probabilities whose rows sum to "
                          f"{sums.min():.4g} .. {sums.max():.4g} (min {p.min():.4g}), not 1. "
                          "Return probabilities (softmax), or for Keras say output = "
                          "'logits' when the last layer has no softmax.")


def _classification(pred: Predictor, X: np.ndarray, spec: FoldSpec, n_outputs: int,
                    samples: np.ndarray | None) -> dict[str, np.ndarray]:
    where = _where(spec)
    if samples is None:
        p = pred.predict(X)
        check_output_shape(p, task="classification", n_outputs=n_outputs, network=where)
        check_probabilities(p, network=where)
        ent = predictive_entropy(p, axis=1)
        return {"proba": p, "entropy": ent, "expected_entropy": ent, "mutual_info": 0 * ent}
    check_output_shape(samples[0], task="classification", n_outputs=n_outputs, network=where)
    for s in samples:
        check_probabilities(s, network=where)
    p = samples.mean(axis=0)
    ent = predictive_entropy(p, axis=1)
    exp_ent = predictive_entropy(samples, axis=2).mean(axis=0)
    return {"proba": p, "entropy": ent, "expected_entropy": exp_ent,
            "mutual_info": np.maximum(ent - exp_ent, 0.0)}


def _fit(spec: FoldSpec, data: Any) -> tuple[FoldResult, Predictor]:
    X_tr, X_te = data.X[spec.train], data.X[spec.test]
    y_tr, y_te = data.y[spec.train], data.y[spec.test]
    if X_tr.ndim == 2:
        X_tr, X_te = _standardize(X_tr, X_te)
    y_mu = y_sd = None
    if data.task == "regression":
        y_mu, y_sd = y_tr.mean(axis=0), y_tr.std(axis=0)
        y_sd = np.where(y_sd == 0, 1.0, y_sd)
        y_tr = ((y_tr - y_mu) / y_sd).astype(np.float32)
    fold = FoldData(X_tr, y_tr, data.task, data.n_outputs, tuple(data.input_shape),
                    spec.network, spec.split)
    device = str(resolve_device(spec.options.device))
    settings = fit_settings(spec.options, spec.spec, device)
    learner = get_learner(spec.spec.learner)
    t0 = time.perf_counter()
    pred = learner.fit(spec.spec, fold, seed=child_seed(spec.seed, "train", spec.network,
                                                        spec.split), settings=settings)
    seconds = float(getattr(pred, "seconds", time.perf_counter() - t0))
    samples = None
    if spec.n_mc > 0:
        samples = pred.predict_mc(X_te, spec.n_mc,
                                  seed=child_seed(spec.seed, "mc", spec.network, spec.split))
        if samples is None and spec.network not in _WARNED:
            _warn_no_dropout(spec.network, spec.spec, spec.n_mc)
    if data.task == "classification":
        out = _classification(pred, X_te, spec, data.n_outputs, samples)
        metrics = score_classification(y_te, out["proba"])
        metrics["entropy"] = float(np.mean(out["entropy"]))
        metrics["mutual_info"] = float(np.mean(out["mutual_info"]))
    else:
        if samples is None:
            mean = pred.predict(X_te)
            var = np.zeros_like(mean)
        else:
            mean, var = samples.mean(axis=0), samples.var(axis=0)
        check_output_shape(mean, task="regression", n_outputs=data.n_outputs,
                           network=_where(spec))
        own = pred.variance(X_te)
        if own is not None:
            var = var + own
        if not np.isfinite(mean).all():
            raise TrainingError(f"network {_where(spec)} predicts NaN or infinite values.")
        noise = 1.0 / spec.tau if spec.tau is not None else 0.0
        mean = mean.reshape(len(y_te), -1) * y_sd + y_mu
        var = var.reshape(len(y_te), -1) * y_sd**2 + noise
        out = {"mean": mean, "var": var}
        yt = y_te.reshape(len(y_te), -1)
        metrics = score_regression(yt, mean, var if np.all(var > 0) else None)
    predictions = {"index": spec.test, "y_true": y_te, **out}
    return FoldResult(spec.network, spec.split, metrics, predictions, (), seconds,
                      preprocess=fold_preprocess(data, spec.train)), pred


def run_learner_fold(spec: FoldSpec, data: Any, *,
                     progress: CVProgress | None = None) -> FoldResult:
    """Fit ``spec.spec.learner`` on ``spec.train``, predict ``spec.test``, score (no I/O)."""
    return _fit(spec, data)[0]


def learner_fold_task(spec: FoldSpec, data: Any, *, n_splits: int,
                      run_dir: str | Path | None = None,
                      progress: CVProgress | None = None) -> FoldResult:
    """The engine's task for one fold of a learner; saves into ``run_dir`` when given (model
    files and ``learner.json`` first, ``metrics.json`` last), or ``error.txt`` on failure."""
    if progress is not None:
        progress.fold_start(spec.network, spec.split, n_splits, spec.options.epochs)
    d = fold_dir(run_dir, spec.network, spec.split) if run_dir is not None else None
    try:
        result, pred = _fit(spec, data)
    except Exception:
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(d / "error.txt", traceback.format_exc())
        raise
    if d is not None:
        d.mkdir(parents=True, exist_ok=True)
        files = pred.save(d)
        info = {"learner": spec.spec.learner, **pred.describe(),
                "train_seconds": result.seconds, "files": files}
        atomic_write_json(d / "learner.json", info)
        save_fold(run_dir, result, spec)  # type: ignore[arg-type]
        (d / "error.txt").unlink(missing_ok=True)
    return result
