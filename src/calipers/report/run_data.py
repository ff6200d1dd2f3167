"""Read a run folder into a :class:`RunData`: the summary, environment, folds, configuration
and out-of-fold predictions the report shows.

A run that stopped early (no ``summary.json`` yet) is read from the folds that finished: the
per-network numbers are computed from their ``metrics.json`` files and the missing folds are
listed in :attr:`RunData.incomplete`, so the report shows what is there and says what is not.
"""

from __future__ import annotations

import datetime as _dt
import os
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calipers.exceptions import DataError
from calipers.runs import fold_dir, read_json
from calipers.uncertainty.measures import predictive_entropy

__all__ = ["RunData", "load_run"]

_NEEDED = {"classification": ("y_true", "proba"), "regression": ("y_true", "mean", "var"),
           "segmentation": ("y_true", "labels")}
_SEG_EXAMPLES = 4  # validation volumes shown per network


@dataclass(frozen=True)
class RunData:
    """Everything the report shows, read from one run directory (or built in memory).

    Parameters
    ----------
    summary : mapping
        The content of ``summary.json`` (design §3): ``task``, ``metric``, ``networks``, ...
    name : str, default "run"
        Run name for the title (the run directory's name).
    date : str, default ""
        When the run finished, shown under the title.
    env : mapping, optional
        ``env.json``; None when the file is absent.
    folds : mapping, optional
        ``hash``, ``n_samples``, ``n_folds``, ``n_repeats`` and ``n_splits`` from
        ``folds.json`` (the indices are dropped); None when the file is absent.
    config_text : str, optional
        ``config.toml`` verbatim; None when absent.
    predictions : mapping of str to mapping of int to mapping of str to ndarray
        ``predictions[network][fold]`` holds the arrays of that fold's ``predictions.npz``.
    missing : mapping of str to mapping of int to str
        ``missing[network][fold]`` says why a fold's predictions could not be used.
    run_dir : Path, optional
        Where the run was read from.
    incomplete : tuple of str
        What is missing from a run that stopped early (e.g. "B: folds 03, 04 not finished");
        empty for a finished run.
    """

    summary: Mapping[str, Any]
    name: str = "run"
    date: str = ""
    env: Mapping[str, Any] | None = None
    folds: Mapping[str, Any] | None = None
    config_text: str | None = None
    predictions: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]] = field(
        default_factory=dict, repr=False
    )
    missing: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    run_dir: Path | None = None
    incomplete: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = self.run_dir / "summary.json" if self.run_dir is not None else "summary"
        _check_summary(self.summary, where=str(where))

    @property
    def networks(self) -> list[str]:
        """Network names, in the order of ``summary.json``."""
        return list(self.summary["networks"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view; predictions are given as the number of samples per network."""
        return {
            "name": self.name,
            "date": self.date,
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "summary": dict(self.summary),
            "env": None if self.env is None else dict(self.env),
            "folds": None if self.folds is None else dict(self.folds),
            "config_text": self.config_text,
            "n_predictions": {
                net: int(sum(len(a["y_true"]) for a in folds.values()))
                for net, folds in self.predictions.items()
            },
            "missing": {net: {str(k): v for k, v in m.items()} for net, m in self.missing.items()},
            "incomplete": list(self.incomplete),
        }


def _check_summary(summary: object, *, where: str) -> None:
    fix = "Rerun `calipers cv CONFIG.toml --out RUN_DIR` (it resumes) to rewrite it."
    if not isinstance(summary, Mapping):
        raise DataError(f"{where} must hold a JSON object; got {type(summary).__name__}. {fix}")
    nets = summary.get("networks")
    if not isinstance(nets, Mapping) or not nets:
        raise DataError(
            f"{where}: 'networks' must be a non-empty object mapping each network name to its "
            f"metrics; got {nets!r:.80}. {fix}"
        )
    for key in ("task", "metric"):
        if not isinstance(summary.get(key), str):
            raise DataError(f"{where}: {key!r} must be a string; got {summary.get(key)!r}. {fix}")
    for name, metrics in nets.items():
        if not isinstance(metrics, Mapping):
            raise DataError(
                f"{where}: networks[{name!r}] must map metric names to their summaries; "
                f"got {type(metrics).__name__}. {fix}"
            )


# --------------------------------------------------------------------------- loading


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a run directory written by ``calipers cv`` into a :class:`RunData`.

    Parameters
    ----------
    run_dir : str or path-like
        The run directory. ``env.json``, ``config.toml`` and the predictions are shown as
        missing when absent. Without ``summary.json`` (a run that stopped early) the numbers
        come from the folds that finished and :attr:`RunData.incomplete` says what is missing.

    Returns
    -------
    RunData

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` does not exist, or is not a run folder (neither ``summary.json`` nor
        ``folds.json``), or no fold has finished.
    calipers.exceptions.DataError
        If ``summary.json`` does not have the documented shape.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir} does not exist; pass the folder `calipers cv` or "
                                "`calipers demo` wrote (it holds summary.json).")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is a file, not a run folder; pass the folder that "
                                "holds summary.json.")
    summary_path = run_dir / "summary.json"
    incomplete: tuple[str, ...] = ()
    if summary_path.is_file():
        summary = read_json(summary_path)
        _check_summary(summary, where=str(summary_path))  # before its names become folder names
    elif (run_dir / "folds.json").is_file() and (run_dir / "config.toml").is_file():
        summary, incomplete = _partial_summary(run_dir)
    else:
        raise FileNotFoundError(
            f"{run_dir} is not a calipers run folder: it has neither summary.json nor "
            "folds.json and config.toml. Pass the folder `calipers cv CONFIG.toml --out DIR` "
            "wrote."
        )
    env = read_json(run_dir / "env.json") if (run_dir / "env.json").is_file() else None
    folds = _folds_info(read_json(run_dir / "folds.json")) if (
        run_dir / "folds.json").is_file() else None
    config = run_dir / "config.toml"
    config_text = config.read_text(encoding="utf-8") if config.is_file() else None
    predictions, missing = _load_predictions(run_dir, summary)
    date_source = summary_path if summary_path.is_file() else run_dir / "folds.json"
    return RunData(
        summary=summary, name=run_dir.resolve().name, date=_run_date(summary, env, date_source),
        env=env, folds=folds, config_text=config_text, predictions=predictions,
        missing=missing, run_dir=run_dir, incomplete=incomplete,
    )


def _partial_summary(run_dir: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A summary of the finished folds of a run that stopped early, and what is missing.

    Only per-network numbers (mean, std, t-interval over the finished folds); no comparison,
    since paired tests need the same folds for every network.
    """
    import scipy.stats

    from calipers.evaluation.metrics import METRICS

    cfg = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    raw = read_json(run_dir / "folds.json")
    n_splits = len(raw.get("folds", [])) if isinstance(raw, Mapping) else 0
    task = cfg.get("data", {}).get("task", "classification")
    networks: dict[str, dict[str, Any]] = {}
    incomplete = []
    for net in cfg.get("networks", {}):
        done = {}
        for j in range(n_splits):
            path = fold_dir(run_dir, net, j) / "metrics.json"
            if path.is_file():
                done[j] = read_json(path).get("metrics", {})
        lacking = [j for j in range(n_splits) if j not in done]
        if lacking:
            incomplete.append(f"{net}: {len(lacking)} of {n_splits} folds not finished "
                              f"({', '.join(f'{j:02d}' for j in lacking)})")
        if not done:
            continue
        names = [m for m in next(iter(done.values())) if all(m in d for d in done.values())]
        networks[net] = {}
        for m in names:
            x = np.array([float(d[m]) for d in done.values()])
            std = float(x.std(ddof=1)) if x.size > 1 else float("nan")
            half = (float(scipy.stats.t.ppf(0.975, x.size - 1)) * std / np.sqrt(x.size)
                    if x.size > 1 else float("nan"))
            networks[net][m] = {"mean": float(x.mean()), "std": std,
                                "ci_low": float(x.mean()) - half,
                                "ci_high": float(x.mean()) + half, "folds": x.tolist()}
    if not networks:
        raise FileNotFoundError(
            f"{run_dir}: no fold has finished yet (no */fold-XX/metrics.json); rerun "
            f"`calipers cv {run_dir / 'config.toml'} --out {run_dir}` to train them."
        )
    default = {"classification": "accuracy", "regression": "rmse", "segmentation": "mean_dice"}
    metric = cfg.get("compare", {}).get("metric") or default.get(task, "accuracy")
    info = METRICS.get(metric)
    summary = {"task": task, "metric": metric,
               "higher_is_better": True if info is None else info.higher_is_better,
               "n_folds": n_splits // max(int(raw.get("n_repeats", 1) or 1), 1),
               "n_repeats": raw.get("n_repeats", 1),
               "n_splits": n_splits, "networks": networks}
    return summary, tuple(incomplete)


def _folds_info(raw: Any) -> dict[str, Any] | None:
    """Hash and counts of ``folds.json``; the index lists are dropped."""
    if not isinstance(raw, Mapping):
        return None
    info = {k: raw.get(k) for k in ("hash", "n_samples", "n_folds", "n_repeats", "n_splits")}
    if info["n_splits"] is None and isinstance(raw.get("folds"), list):
        info["n_splits"] = len(raw["folds"])
    k, r = info["n_splits"], info["n_repeats"]
    if info["n_folds"] is None and isinstance(k, int) and isinstance(r, int) and r > 0:
        info["n_folds"] = k // r
    return info


def _run_date(summary: Mapping[str, Any], env: Any, path: Path) -> str:
    """The run's date: a date field of summary.json or env.json, else summary.json's mtime."""
    for source in (summary, env if isinstance(env, Mapping) else {}):
        for key in ("date", "created", "timestamp", "finished"):
            if isinstance(source.get(key), str):
                return source[key]
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, tz=_dt.UTC)
    return mtime.strftime("%Y-%m-%d %H:%M UTC")


def _n_expected_folds(summary: Mapping[str, Any]) -> int:
    if isinstance(summary.get("n_splits"), int) and summary["n_splits"] > 0:
        return summary["n_splits"]
    k, r = summary.get("n_folds"), summary.get("n_repeats", 1)
    if isinstance(k, int) and isinstance(r, int) and k > 0 and r > 0:
        return k * r
    lengths = [
        len(m["folds"]) for metrics in summary["networks"].values() for m in metrics.values()
        if isinstance(m, Mapping) and isinstance(m.get("folds"), list)
    ]
    return max(lengths, default=0)


def _load_predictions(
    run_dir: Path, summary: Mapping[str, Any]
) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], dict[str, dict[int, str]]]:
    task = summary["task"]
    predictions: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    missing: dict[str, dict[int, str]] = {}
    if task not in _NEEDED:
        return predictions, missing
    for net in summary["networks"]:
        predictions[net], missing[net] = {}, {}
        for j in range(_n_expected_folds(summary)):
            arrays, problem = _load_fold(fold_dir(run_dir, net, j) / "predictions.npz", task)
            if arrays is None:
                missing[net][j] = problem
            else:
                predictions[net][j] = arrays
    return predictions, missing


def _load_fold(path: Path, task: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """The arrays of one ``predictions.npz``, or None and the reason they cannot be used."""
    if not path.is_file():
        return None, "predictions.npz not found"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return None, f"predictions.npz unreadable ({type(exc).__name__}: {exc})"
    lacking = [k for k in _NEEDED[task] if k not in arrays]
    if lacking:
        return None, f"predictions.npz lacks {', '.join(lacking)}"
    for key in _NEEDED[task]:
        if not np.issubdtype(arrays[key].dtype, np.number) or arrays[key].ndim == 0:
            return None, f"predictions.npz: {key} is not a numeric array ({arrays[key].dtype})"
    n = len(arrays["y_true"])
    for key in _NEEDED[task][1:]:
        if len(arrays[key]) != n:
            return None, f"predictions.npz: {key} has shape {arrays[key].shape}, y_true ({n},)"
        if not np.isfinite(arrays[key]).all():
            return None, f"predictions.npz: {key} holds NaN or infinite values"
    if task == "classification" and arrays["proba"].ndim != 2:
        return None, f"predictions.npz: proba has shape {arrays['proba'].shape}, not (n, C)"
    return arrays, ""


def _pooled(run: RunData, net: str) -> dict[str, np.ndarray] | None:
    """Out-of-fold predictions of ``net`` concatenated in fold order; None if there are none."""
    folds = run.predictions.get(net, {})
    if not folds:
        return None
    keys = set.intersection(*(set(a) for a in folds.values()))
    pooled = {k: np.concatenate([np.asarray(folds[j][k]) for j in sorted(folds)]) for k in keys}
    if run.summary["task"] == "classification":
        proba = pooled["proba"].astype(float)
        if "entropy" not in pooled:
            pooled["entropy"] = predictive_entropy(proba, axis=1)
        pooled["correct"] = proba.argmax(axis=1) == pooled["y_true"].reshape(-1)
    else:
        n = len(pooled["y_true"])
        pooled["mean"] = pooled["mean"].reshape(n, -1)
        pooled["var"] = pooled["var"].reshape(n, -1)
        pooled["y_true"] = pooled["y_true"].reshape(n, -1)
    return pooled
