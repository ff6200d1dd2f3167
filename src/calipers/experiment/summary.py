"""Summaries of cross-validation results: ``metrics.csv``, ``summary.json``, comparing runs."""

from __future__ import annotations

import csv
import io
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calipers._checks import _look_up_option
from calipers.evaluation.cv import CVResult, load_fold
from calipers.evaluation.folds import Folds
from calipers.evaluation.metrics import METRICS
from calipers.exceptions import CalipersWarning, FoldMismatchError
from calipers.repro.data_fingerprint import check_same_data
from calipers.runs import atomic_write_json, atomic_write_text, fold_done, read_json
from calipers.stats.compare import Comparison, compare, describe_scores
from calipers.stats.holdout import HoldoutComparison
from calipers.stats.scales import metric_scale

__all__ = ["RunSummary", "compare_runs", "load_cv_result", "summarize", "write_summary"]

_DEFAULT_METRIC = {"classification": "accuracy", "regression": "rmse",
                   "segmentation": "mean_dice"}


@dataclass(frozen=True)
class RunSummary:
    """Per-network summaries of every metric and the paired comparison of the primary one."""

    task: str
    metric: str
    n_splits: int
    n_repeats: int
    networks: dict[str, dict[str, dict[str, Any]]] = field(repr=False)
    comparison: Comparison | HoldoutComparison | None = field(repr=False)
    pair: tuple[str, str] | None = None
    note: str | None = None  # NOTE [Undefined metrics]: the comparison used fewer folds
    protocol: str = "cv"  # "holdout": one split, intervals over its test samples

    @property
    def sentence(self) -> str:
        if self.comparison is None:
            return self.note or "Only one network: nothing to compare."
        return self._pair_dict()["sentence"]

    def _pair_dict(self) -> dict[str, Any]:
        pairs = [self._noted(p.to_dict()) for p in self.comparison.pairs]
        if self.pair is not None:
            for p in pairs:
                if (p["a"], p["b"]) == self.pair:
                    return p
        return pairs[0]

    def _noted(self, d: dict[str, Any]) -> dict[str, Any]:
        if self.note is not None and "sentence" in d:
            d = {**d, "sentence": f"{self.note} {d['sentence']}", "note": self.note}
        return d

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task, "metric": self.metric,
            "higher_is_better": METRICS[self.metric].higher_is_better,
            "n_folds": self.n_splits // max(self.n_repeats, 1), "n_repeats": self.n_repeats,
            "n_splits": self.n_splits, "networks": self.networks,
        }
        if self.protocol != "cv":
            out["protocol"] = self.protocol
        if self.comparison is not None:
            cmp = self.comparison.to_dict()
            out.update(comparison=self._pair_dict(),
                       pairs=[self._noted(p) for p in cmp["pairs"]], best=cmp["best"],
                       sentence=self._noted(cmp)["sentence"])
        elif self.note is not None:
            out.update(sentence=self.note)
        return out


def summarize(
    cv: CVResult,
    *,
    metric: str | None = None,
    alpha: float = 0.05,
    a: str | None = None,
    b: str | None = None,
    rope: float | None = None,
    seed: int = 0,
) -> RunSummary:
    """Summarise every metric per network; compare networks pairwise on ``metric``.

    ``a``/``b`` pick the pair reported as the run's ``comparison`` (default: the first two);
    ``rope`` is the margin of equivalence (see :func:`calipers.stats.compare.compare`).
    Per-network intervals are corrected for overlapping training sets and respect the bounds
    of bounded metrics (NOTE [Bounded intervals] in :mod:`calipers.stats.paired`).
    """
    metric = metric or _DEFAULT_METRIC[cv.task]
    info = METRICS[_look_up_option(metric, [m for m, i in METRICS.items() if i.task == cv.task],
                                   what=f"{cv.task} metric")]
    names = list(cv.networks)
    for key, name in (("a", a), ("b", b)):
        if name is not None:
            _look_up_option(name, names, what=f"network (--{key})")
    if a is not None and b is not None:  # put the requested pair first, in order a, b
        names = [a, b] + [n for n in names if n not in (a, b)]
    metric_names = _common_metrics(cv)
    if metric not in metric_names:
        lacking = [n for n in names if any(metric not in r.metrics for r in cv.results[n])]
        raise ValueError(f"metric {metric!r} is missing from the folds of {lacking}; compare on "
                         f"one every network reports: {', '.join(metric_names)}.")
    if len(cv.folds) == 1:  # one held-out split: intervals and tests over its test samples
        from calipers.experiment.holdout import summarize_holdout

        nets, held = summarize_holdout(cv, names, metric_names, metric=metric, alpha=alpha,
                                       seed=seed)
        return RunSummary(cv.task, metric, 1, 1, nets, held,
                          (a, b) if a is not None and b is not None else None,
                          protocol="holdout")
    ratio = cv.folds.test_train_ratio
    n_test = max(1, round(float(np.mean([len(te) for te in cv.folds.test]))))
    networks = {n: {m: _describe(cv.scores(m)[n], test_train_ratio=ratio, n_test=n_test,
                                 bounds=metric_scale(m).bounds)
                    for m in metric_names} for n in names}  # fmt: skip
    comparison = note = None
    if len(names) >= 2:
        scores = {n: cv.scores(metric)[n] for n in names}
        used = np.logical_and.reduce([np.isfinite(v) for v in scores.values()])
        ratio = cv.folds.test_train_ratio
        if not used.all():  # NOTE [Undefined metrics]: only folds where every network has it
            note = _fewer_folds_note(cv, metric, names, used)
            scores = {n: v[used] for n, v in scores.items()}
            if used.any():
                ratio = float(np.mean([len(te) / len(tr) for (tr, te), u
                                       in zip(cv.folds, used, strict=True) if u]))
        correct = uncertainty = None
        if cv.task == "classification":
            if metric == "accuracy" and cv.folds.n_repeats == 1:  # McNemar: each sample once
                correct = {n: cv.pooled(n, "proba").argmax(axis=1) == cv.pooled(n, "y_true")
                           for n in names}  # fmt: skip
            uncertainty = {n: {"entropy": _nanmean(cv.scores("entropy")[n]),
                               "ece": _nanmean(cv.scores("ece")[n])} for n in names}
        elif cv.task == "segmentation":  # no McNemar: voxels of one volume are not independent
            uncertainty = {n: {"entropy": _nanmean(cv.scores("entropy")[n])} for n in names}
        if used.sum() >= 2:
            comparison = compare(scores, metric=metric, higher_is_better=info.higher_is_better,
                                 test_train_ratio=ratio, correct=correct, rope=rope,
                                 n_repeats=cv.folds.n_repeats, n_test=n_test,
                                 uncertainty=uncertainty, alpha=alpha)
        else:
            note = f"{note} No comparison: a paired test needs at least 2 such folds."
    pair = (a, b) if a is not None and b is not None else None
    return RunSummary(cv.task, metric, len(cv.folds), cv.folds.n_repeats, networks, comparison,
                      pair, note)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _describe(values: np.ndarray, **options: Any) -> dict[str, Any]:
    """Mean, std and corrected interval (:func:`~calipers.stats.describe_scores` with
    ``options``) of the folds where the metric is defined (finite); ``folds`` lists every fold
    (None where undefined), ``n_folds`` how many count."""
    finite = values[np.isfinite(values)]
    if finite.size >= 2:
        out = describe_scores(finite, **options).to_dict()
    else:
        out = {"mean": float(finite[0]) if finite.size else None, "std": None,
               "ci_low": None, "ci_high": None}
    out["folds"] = [float(v) if np.isfinite(v) else None for v in values]
    out["n_folds"] = int(finite.size)
    return out


def _fewer_folds_note(cv: CVResult, metric: str, names: list[str], used: np.ndarray) -> str:
    """"Based on k of J folds" and why the others do not count (their ``undefined`` reasons)."""
    reasons = sorted({r.undefined.get(metric, "not finite") for n in names
                      for r in cv.results[n] if not np.isfinite(r.metrics[metric])})
    return (f"Based on {int(used.sum())} of {len(used)} folds: {metric} is undefined on the "
            f"others ({'; '.join(reasons)}).")


def _common_metrics(cv: CVResult) -> list[str]:
    """Metrics every fold of every network has, in the first fold's order (networks trained
    by different engines may report extra ones, kept in their folds' ``metrics.json``)."""
    folds = [r for rs in cv.results.values() for r in rs]
    return [m for m in folds[0].metrics if all(m in r.metrics for r in folds)]


def _metrics_csv(cv: CVResult) -> str:
    buf = io.StringIO()
    names = list(cv.networks)
    cols = _common_metrics(cv)
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["network", "fold", "repeat", *cols])
    for n in names:
        for r in cv.results[n]:
            w.writerow([n, r.split, cv.folds.repeat[r.split],
                        *(repr(float(r.metrics[c])) for c in cols)])
    return buf.getvalue()


def write_summary(run_dir: str | Path, cv: CVResult, summary: RunSummary) -> None:
    """Write ``metrics.csv`` and ``summary.json`` into ``run_dir`` (atomically)."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "metrics.csv", _metrics_csv(cv))
    atomic_write_json(run_dir / "summary.json", summary.to_dict())


def load_cv_result(run_dir: str | Path) -> CVResult:
    """Read a finished run directory back into a :class:`CVResult`."""
    run_dir = Path(run_dir)
    if not (run_dir / "folds.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a calipers run directory (no folds.json); "
                                "run `calipers cv CONFIG.toml --out DIR` first.")
    folds = Folds.from_dict(read_json(run_dir / "folds.json"))
    cfg = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    task = cfg.get("data", {}).get("task", "classification")
    results = {}
    for name in cfg.get("networks", {}):
        missing = [j for j in range(len(folds)) if not fold_done(run_dir, name, j)]
        if missing:
            raise FileNotFoundError(
                f"{run_dir}: network {name!r} has unfinished folds {missing}; rerun "
                f"`calipers cv {run_dir / 'config.toml'} --out {run_dir}` to finish them."
            )
        results[name] = tuple(load_fold(run_dir, name, j) for j in range(len(folds)))
    return CVResult(folds, task, results)


def compare_runs(
    run_dirs: Sequence[str | Path],
    *,
    metric: str | None = None,
    a: str | None = None,
    b: str | None = None,
    alpha: float = 0.05,
    allow_different_data: bool = False,
    rope: float | None = None,
) -> RunSummary:
    """Compare the networks of one or more finished runs made on identical folds.

    Networks of several runs are pooled (a name taken twice gets ``<run>/`` in front). Runs on
    different folds cannot be compared pairwise and raise :class:`FoldMismatchError`; runs on
    different data (NOTE [Data fingerprint]) raise :class:`DataError` unless
    ``allow_different_data``, which warns instead.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory.")
    for note in check_same_data(run_dirs, allow_different=allow_different_data):
        warnings.warn(note, CalipersWarning, stacklevel=2)
    loaded = [(Path(d), load_cv_result(d)) for d in run_dirs]
    first_dir, first = loaded[0]
    results: dict[str, Any] = {}
    for d, cv in loaded:
        if cv.folds.hash != first.folds.hash:
            raise FoldMismatchError(
                f"runs were made on different folds and cannot be compared pairwise:\n"
                f"  {first_dir}: folds hash {first.folds.hash}\n  {d}: folds hash {cv.folds.hash}\n"
                "Rerun one of them with the same data, [cv] settings and seed."
            )
        if cv.task != first.task:
            raise ValueError(f"{d} is a {cv.task} run but {first_dir} is {first.task}.")
        for name, res in cv.results.items():
            results[f"{d.name}/{name}" if name in results else name] = res
    merged = CVResult(first.folds, first.task, results)
    return summarize(merged, metric=metric, alpha=alpha, a=a, b=b, rope=rope)
