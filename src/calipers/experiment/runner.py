"""Run a whole experiment from a configuration: data, folds, CV, summary, report."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from calipers.batched.cv import SearchSettings, batched_reason, cross_validate_batched
from calipers.config import ExperimentConfig, parse_config
from calipers.data import load_dataset
from calipers.evaluation.cv import (
    CVProgress,
    CVResult,
    NetworkSpec,
    _check_networks,
    cross_validate,
)
from calipers.evaluation.folds import make_folds
from calipers.evaluation.splits import read_splits
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import ConfigError
from calipers.experiment.holdout import check_summarizable
from calipers.experiment.summary import RunSummary, summarize, write_summary
from calipers.repro.determinism import deterministic
from calipers.repro.env import fingerprint
from calipers.runs import atomic_write_json, atomic_write_text, read_json

__all__ = ["ExperimentResult", "demo_config", "run_experiment"]


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


def run_experiment(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    progress: CVProgress | None = None,
    report: bool = True,
) -> ExperimentResult:
    """Cross-validate every network of ``config`` on the same folds and write the run folder.

    Resumable: rerunning with the same configuration and folder finishes missing folds only.
    MLP networks (and every network of a ``[search]``) are trained with all their
    splits stacked (:func:`calipers.batched.cv.cross_validate_batched`; ``[train] batched =
    false`` trains them one by one, same numbers); other networks fold by fold.
    Writes ``config.toml``, ``env.json``, ``folds.json``, per-fold results, ``metrics.csv``,
    ``summary.json`` and (``report=True``) ``report.html`` — every file atomically.
    """
    run_dir = Path(run_dir)
    if config.data.task == "segmentation":
        from calipers.segmentation.experiment import run_segmentation_experiment

        return run_segmentation_experiment(config, run_dir, progress=progress, report=report)
    d = config.data
    data = load_dataset(d.kind, path=d.path, task=d.task, target=d.target, group=d.group)
    if config.cv.splits is not None:
        folds = read_splits(config.cv.splits, n_samples=data.n_samples)
    else:
        folds = make_folds(data.y, n_folds=config.cv.folds, n_repeats=config.cv.repeats,
                           seed=config.cv.seed, stratify=config.cv.stratify, groups=data.groups,
                           shuffle=config.cv.shuffle)
    config_text = config.to_toml()
    _check_resume(run_dir, config_text, folds.hash)
    networks = {name: NetworkSpec(n.model, dict(n.args)) for name, n in config.networks.items()}
    _check_networks(networks, data, config.mc.samples)  # before anything is written
    reasons = {name: batched_reason(spec, data) for name, spec in networks.items()}
    if config.search is not None:
        for name, why in reasons.items():
            if why is not None:
                raise ConfigError(f"networks.{name}: [search] needs calipers.models:MLP "
                                  f"networks on a one-target regression table; {why}.")
    _check_compare_metric(config, reasons)
    check_summarizable(folds, task=data.task, metric=config.compare.metric)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", config_text)
    atomic_write_json(run_dir / "folds.json", folds.to_dict())
    t = config.train
    options = TrainOptions(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                           weight_decay=t.weight_decay, device=t.device, amp=t.amp)
    stacked = {n: s for n, s in networks.items() if reasons[n] is None}
    sequential = {n: s for n, s in networks.items() if reasons[n] is not None}
    with deterministic(config.cv.seed, enabled=t.deterministic):
        if not (run_dir / "env.json").is_file():  # the first session's environment is kept
            atomic_write_json(run_dir / "env.json", fingerprint().to_dict())
        parts = []
        if stacked:
            parts.append(cross_validate_batched(
                data, stacked, folds, options=options, n_mc=config.mc.samples,
                tau=config.mc.tau, seed=config.cv.seed, search=_search_settings(config),
                batched=t.batched, run_dir=run_dir, progress=progress))
        if sequential:
            parts.append(cross_validate(data, sequential, folds, options=options,
                                        n_mc=config.mc.samples, tau=config.mc.tau,
                                        seed=config.cv.seed, run_dir=run_dir,
                                        progress=progress))
    results = {n: r for part in parts for n, r in part.results.items()}
    cv = CVResult(folds, data.task, {n: results[n] for n in networks},
                  sum(part.seconds for part in parts))
    return finish_run(config, run_dir, cv, report=report)


def _check_compare_metric(config: ExperimentConfig, reasons: dict[str, str | None]) -> None:
    """Refuse, before training, a comparison metric that some network will not report
    (``reasons``: each network's :func:`batched_reason`, None for a stacked one)."""
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
    summary = summarize(cv, metric=c.metric, alpha=c.alpha, a=c.a, b=c.b, seed=config.cv.seed)
    write_summary(run_dir, cv, summary)
    report_path = None
    if report:
        from calipers.report import write_report

        report_path = write_report(run_dir)
    return ExperimentResult(run_dir, cv, summary, report_path)
