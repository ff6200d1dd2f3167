"""Run a whole experiment from a configuration: data, folds, CV, summary, report.

The task of ``[data]`` picks how data and folds are loaded (:data:`_SETUPS`) and how folds are
trained (:data:`calipers.experiment.engine.RUNNERS`); everything else is shared.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from calipers.batched.cv import SearchSettings, batched_reason
from calipers.config import ExperimentConfig, parse_config
from calipers.data import load_dataset
from calipers.evaluation.cv import CVProgress, CVResult
from calipers.evaluation.folds import Folds, make_folds
from calipers.evaluation.splits import read_splits
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import ConfigError
from calipers.experiment.engine import check_networks, cross_validate
from calipers.experiment.holdout import check_summarizable
from calipers.experiment.summary import RunSummary, summarize, write_summary
from calipers.gpu.monitor import check_device, gpu_monitor
from calipers.learners.base import network_spec
from calipers.repro.data_fingerprint import check_data, data_fingerprint, write_data
from calipers.repro.determinism import deterministic
from calipers.repro.env import fingerprint
from calipers.runs import atomic_write_json, atomic_write_text, read_json
from calipers.segmentation.data import load_segmentation
from calipers.segmentation.experiment import (
    MULTIPLE,
    check_recipe,
    run_segmentation_fold,
    segmentation_info,
    segmentation_recipe,
    unseen_classes,
)
from calipers.stats.scales import resolve_rope
from calipers.tasks import Executor

__all__ = ["ExperimentResult", "demo_config", "finish_run", "run_experiment"]


@dataclass(frozen=True)
class ExperimentResult:
    """What :func:`run_experiment` produced: the run folder, CV results, their summary."""

    run_dir: Path
    cv: CVResult
    summary: RunSummary
    report: Path | None


def demo_config(*, quick: bool = False) -> ExperimentConfig:
    """The embedded default: scikit-learn digits, CNN A (16 channels, dropout 0.1) against
    CNN B (32 channels, dropout 0.3), 10-fold CV, 30 MC dropout passes.

    ``quick`` shrinks it to 3 folds, 3 epochs and 10 passes (a smoke test in seconds).
    """
    raw = {
        "data": {"kind": "digits", "task": "classification"},
        "cv": {"folds": 3 if quick else 10, "repeats": 1, "seed": 0, "stratify": True},
        "train": {"epochs": 3 if quick else 10, "batch_size": 64, "lr": 2e-3},
        "mc": {"samples": 10 if quick else 30},
        "networks": {
            "A": {"model": "calipers.models:CNN", "args": {"channels": 16, "dropout": 0.1}},
            "B": {"model": "calipers.models:CNN", "args": {"channels": 32, "dropout": 0.3}},
        },
    }
    return parse_config(raw)


def _same_config(old_text: str, new_text: str) -> bool:
    """Same experiment: equal text, or equal once parsed (a newer calipers writes keys with
    their defaults that an older run's config.toml lacks)."""
    if old_text == new_text:
        return True
    try:
        return parse_config(tomllib.loads(old_text)) == parse_config(tomllib.loads(new_text))
    except (ConfigError, tomllib.TOMLDecodeError):
        return False


def _check_resume(run_dir: Path, config_text: str, folds_hash: str) -> None:
    old_cfg = run_dir / "config.toml"
    if old_cfg.is_file() and not _same_config(old_cfg.read_text(encoding="utf-8"), config_text):
        raise ConfigError(
            f"{run_dir} holds a run of a different configuration (its config.toml differs); "
            "resume only reruns the same experiment. Choose another --out or delete the folder."
        )
    old_folds = run_dir / "folds.json"
    if old_folds.is_file() and read_json(old_folds).get("hash") != folds_hash:
        raise ConfigError(f"{run_dir}/folds.json holds different folds (hash "
                          f"{read_json(old_folds).get('hash')}, now {folds_hash}); choose "
                          "another --out or delete the folder.")


@dataclass(frozen=True)
class _Setup:
    """Data, folds and task-specific run files (``{name: JSON object}``) of a configuration."""

    data: Any
    folds: Folds
    files: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None   # NOTE [Data fingerprint]
    fold_fn: Callable[..., Any] | None = None   # None: the task's runner (engine.RUNNERS)


def _setup_table(config: ExperimentConfig) -> _Setup:
    d = config.data
    data = load_dataset(d.kind, path=d.path, task=d.task, target=d.target, group=d.group)
    if config.cv.splits is not None:
        folds = read_splits(config.cv.splits, n_samples=data.n_samples)
    else:
        folds = make_folds(data.y, n_folds=config.cv.folds, n_repeats=config.cv.repeats,
                           seed=config.cv.seed, stratify=config.cv.stratify, groups=data.groups,
                           shuffle=config.cv.shuffle, class_labels=data.classes)
    return _Setup(data, folds, fingerprint=data_fingerprint([data.X, data.y, data.groups],
                                                           path=d.path))


def _setup_segmentation(config: ExperimentConfig) -> _Setup:
    data = load_segmentation(config.data.path, kind=config.data.kind, multiple=MULTIPLE,
                             missing_labels=config.data.missing_labels or "error")
    if config.cv.splits is not None:
        folds = read_splits(config.cv.splits, n_samples=data.n_samples)
    else:
        folds = make_folds(np.zeros(data.n_samples), n_folds=config.cv.folds,
                           n_repeats=config.cv.repeats, seed=config.cv.seed, stratify=False,
                           shuffle=config.cv.shuffle)
    fp = data_fingerprint([data.X, data.y], path=config.data.path, names=data.names)
    recipe = segmentation_recipe(config)
    check_recipe(recipe, data)  # before anything is written
    info = {**segmentation_info(data, n_mc=config.mc.samples),
            "unseen_classes": unseen_classes(data, folds)}
    return _Setup(data, folds, {"segmentation.json": info}, fp,
                  partial(run_segmentation_fold, recipe=recipe) if recipe is not None else None)


#: How each ``[data] task`` loads its data and folds (the fold runners: engine.RUNNERS).
_SETUPS: dict[str, Callable[[ExperimentConfig], _Setup]] = {
    "classification": _setup_table,
    "regression": _setup_table,
    "segmentation": _setup_segmentation,
}


def run_experiment(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    progress: CVProgress | None = None,
    report: bool = True,
    executor: Executor | None = None,
) -> ExperimentResult:
    """Cross-validate every network of ``config`` on the same folds and write the run folder.

    Resumable: rerunning with the same configuration and folder finishes missing folds only.
    MLP networks (and every network of a ``[search]``) are trained with all their
    splits stacked (:func:`calipers.batched.cv.stacked_task`; ``[train] batched =
    false`` trains them one by one, same numbers); other networks fold by fold. Segmentation
    data sets (``task = "segmentation"``) also get ``segmentation.json``. ``executor`` runs the
    tasks (:class:`~calipers.tasks.SerialExecutor` by default; ``progress`` bars
    need it). Writes ``config.toml``, ``env.json``, ``folds.json``, per-fold results,
    ``metrics.csv``, ``summary.json`` and (``report=True``) ``report.html`` — every file
    atomically.
    """
    run_dir = Path(run_dir)
    setup = _SETUPS[config.data.task](config)
    data, folds = setup.data, setup.folds
    config_text = config.to_toml()
    _check_resume(run_dir, config_text, folds.hash)
    check_data(run_dir, setup.fingerprint)  # NOTE [Data fingerprint]
    networks = {name: network_spec(n) for name, n in config.networks.items()}
    check_networks(networks, data, n_mc=config.mc.samples,
                   active_dropout=True)  # before anything is written
    reasons = {name: batched_reason(spec, data) for name, spec in networks.items()}
    if config.train.batch_size == "auto":  # the finder runs per network inside train.fit
        reasons = {n: why or 'train.batch_size = "auto"' for n, why in reasons.items()}
    if config.search is not None:
        for name, why in reasons.items():
            if why is not None:
                raise ConfigError(f"networks.{name}: [search] needs calipers.models:MLP "
                                  f"networks on a one-target regression table; {why}.")
    _check_compare_metric(config, reasons)
    check_device(config.train.device)  # "cuda" without a GPU: a clear error, nothing written
    check_summarizable(folds, task=data.task, metric=config.compare.metric)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", config_text)
    atomic_write_json(run_dir / "folds.json", folds.to_dict())
    for name, obj in setup.files.items():
        atomic_write_json(run_dir / name, obj)
    write_data(run_dir, setup.fingerprint)
    t = config.train
    options = TrainOptions(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                           weight_decay=t.weight_decay, device=t.device, amp=t.amp)
    with gpu_monitor(run_dir, t.device), deterministic(config.cv.seed, enabled=t.deterministic):
        if not (run_dir / "env.json").is_file():  # the first session's environment is kept
            atomic_write_json(run_dir / "env.json", fingerprint().to_dict())
        cv = cross_validate(data, networks, folds, options=options, n_mc=config.mc.samples,
                            tau=config.mc.tau, seed=config.cv.seed,
                            stack=t.batch_size != "auto",  # the finder runs per network
                            search=_search_settings(config), batched=t.batched,
                            run_dir=run_dir, progress=progress, executor=executor, checked=True,
                            fold_fn=setup.fold_fn)
    return finish_run(config, run_dir, cv, report=report)


def _check_compare_metric(config: ExperimentConfig, reasons: dict[str, str | None]) -> None:
    """Refuse, before training, a comparison metric that some network will not report
    (``reasons``: each network's :func:`batched_reason`, None for a stacked one), and a
    ``[compare] rope`` that does not fit the metric's units."""
    if config.compare.rope is not None:  # units depend on the metric: check before any training
        default = {"classification": "accuracy", "regression": "rmse"}.get(config.data.task,
                                                                           "mean_dice")
        try:
            resolve_rope(config.compare.metric or default, config.compare.rope)
        except ValueError as err:
            raise ConfigError(f"compare.rope: {err}") from None
    metric = config.compare.metric
    if metric not in ("log_likelihood", "rmse_weight_scaling"):
        return
    lacking = [n for n, why in reasons.items() if why is not None]
    if metric == "log_likelihood" and (config.mc.samples == 0 or
                                       (config.search is None and config.mc.tau is None)):
        lacking = list(reasons)
    if lacking:
        raise ConfigError(f"compare.metric = {metric!r}: networks {lacking} will not report it "
                          "(it comes from stacked MLP regression with MC dropout"
                          f"{' and a tau' if metric == 'log_likelihood' else ''}); compare on "
                          "'rmse' or 'gaussian_nll'.")


def _search_settings(config: ExperimentConfig) -> SearchSettings | None:
    s = config.search
    if s is None:
        return None
    return SearchSettings(tuple(s.dropout), tuple(s.tau), s.inner_fraction, s.criterion,
                          s.mc_samples, s.lengthscale,
                          inner_shuffle=config.cv.splits is None)  # keep a predefined order


def finish_run(
    config: ExperimentConfig, run_dir: Path, cv: CVResult, *, report: bool = True
) -> ExperimentResult:
    """Summarise a finished cross-validation, write ``metrics.csv``, ``summary.json`` and
    (``report=True``) ``report.html``; shared by every task."""
    c = config.compare
    summary = summarize(cv, metric=c.metric, alpha=c.alpha, a=c.a, b=c.b, rope=c.rope)
    write_summary(run_dir, cv, summary)
    report_path = None
    if report:
        from calipers.report import write_report

        report_path = write_report(run_dir)
    return ExperimentResult(run_dir, cv, summary, report_path)
