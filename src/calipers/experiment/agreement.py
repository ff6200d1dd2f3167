"""Do two runs agree? Configs, environments, per-fold metrics, predictions, segmentations.

:func:`compare_runs_repro` compares two finished run folders — the same experiment rerun later,
on another machine, with another GPU or library version — and says whether their results agree
within tolerances (``calipers repro RUN_A RUN_B``).

# NOTE [Aligning predictions by sample]
Out-of-fold predictions are matched by (repeat, sample index), not by position in a fold, so
two runs are compared sample by sample even when their folds differ (another seed). Per-fold
metrics are compared split by split, which is meaningful only when the folds are equal; the
report says when they are not.

# NOTE [Segmentation agreement]
Glatard et al. (2015) compared the segmentations of one pipeline run on two operating systems by
the Dice coefficient per structure and subject, and found values as low as 0.59. calipers does
the same per volume: for each foreground label, Dice = 2|A∩B| / (|A| + |B|), 1 when the label is
absent from both; a volume's score is the mean over its labels, and the lowest volumes are
listed. A run's predictions carry label volumes as ``labels`` of shape (n_test, *spatial).

References
----------
Glatard T. et al. (2015). Reproducibility of neuroimaging analyses across operating systems.
Frontiers in Neuroinformatics 9:12.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calipers.evaluation.cv import CVResult
from calipers.experiment.summary import load_cv_result
from calipers.repro.env import Environment, load_env

__all__ = [
    "Difference",
    "MetricAgreement",
    "PredictionAgreement",
    "ReproReport",
    "SegmentationAgreement",
    "VolumeDice",
    "compare_runs_repro",
    "segmentation_agreement",
]

_ENV_KEYS = ("hostname", "os", "machine", "cpu", "cpu_count", "python", "torch_threads", "cuda",
             "cudnn", "cuda_available", "driver")


@dataclass(frozen=True)
class Difference:
    """One key whose value differs between run A and run B (``None``: absent there)."""

    key: str
    a: Any
    b: Any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetricAgreement:
    """One metric of one network, split by split: ``diffs[j] = B − A`` in metric units."""

    network: str
    metric: str
    diffs: tuple[float, ...]

    @property
    def max_abs_diff(self) -> float:
        """Largest ``|B − A|``; infinite where one run has the metric and the other has not
        (NaN: NOTE [Undefined metrics]), 0 where both lack it."""
        return float(np.max(np.abs(self.diffs), initial=0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "metric": self.metric,
                "max_abs_diff": self.max_abs_diff, "diffs": list(self.diffs)}


@dataclass(frozen=True)
class PredictionAgreement:
    """Out-of-fold predictions of one network, matched by sample (NOTE [Aligning predictions
    by sample]).

    ``max_abs_diff`` is over class probabilities (classification) or predictive means
    (regression), in their units; ``fraction_identical`` counts samples whose whole prediction
    is bit-identical; ``label_agreement`` (classification only) counts identical argmax classes.
    """

    network: str
    n_samples: int
    max_abs_diff: float
    fraction_identical: float
    label_agreement: float | None = None
    var_max_abs_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentationAgreement:
    """Dice per label between two segmentations of one volume (NOTE [Segmentation agreement]).

    Attributes
    ----------
    classes : tuple of int
        Labels compared (foreground unless ``include_background``), ascending.
    dice : tuple of float
        Dice in [0, 1] per label, same order; 1 where the label is absent from both.
    """

    classes: tuple[int, ...]
    dice: tuple[float, ...]

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the labels; 1.0 when there is no label to compare."""
        return float(np.mean(self.dice)) if self.dice else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "dice": list(self.dice),
                "mean_dice": self.mean_dice}


@dataclass(frozen=True)
class VolumeDice:
    """Agreement of one network's segmentation of one volume (sample ``index``) across runs."""

    network: str
    repeat: int
    index: int
    agreement: SegmentationAgreement

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "repeat": self.repeat, "index": self.index,
                **self.agreement.to_dict()}


@dataclass(frozen=True)
class ReproReport:
    """How two runs compare; ``ok`` when configs and folds match and results are in tolerance.

    Environment differences are reported but do not make ``ok`` false: they are what a
    reproduction on another machine is expected to change.
    """

    run_a: str
    run_b: str
    config_diffs: tuple[Difference, ...]
    env_diffs: tuple[Difference, ...]
    folds_match: bool
    metrics_csv_identical: bool
    metrics: tuple[MetricAgreement, ...]
    predictions: tuple[PredictionAgreement, ...]
    segmentation: tuple[VolumeDice, ...] = field(repr=False)   # ascending mean Dice
    tolerances: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def config_match(self) -> bool:
        return not self.config_diffs

    def lowest_dice(self, k: int = 5) -> tuple[VolumeDice, ...]:
        """The ``k`` volumes whose segmentations agree least."""
        return self.segmentation[:k]

    @property
    def sentence(self) -> str:
        if self.ok:
            exact = self.metrics_csv_identical and all(
                p.fraction_identical == 1.0 for p in self.predictions)
            return ("The runs agree: bit-identical metrics and predictions." if exact else
                    "The runs agree within the tolerances.")
        return f"The runs differ: {'; '.join(self.problems)}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a, "run_b": self.run_b, "ok": self.ok,
            "sentence": self.sentence, "problems": list(self.problems),
            "tolerances": dict(self.tolerances), "config_match": self.config_match,
            "config_diffs": [d.to_dict() for d in self.config_diffs],
            "env_diffs": [d.to_dict() for d in self.env_diffs],
            "folds_match": self.folds_match, "metrics_csv_identical": self.metrics_csv_identical,
            "metrics": [m.to_dict() for m in self.metrics],
            "predictions": [p.to_dict() for p in self.predictions],
            "segmentation": {"n_volumes": len(self.segmentation),
                             "lowest": [v.to_dict() for v in self.lowest_dice(10)]},
        }


def segmentation_agreement(
    labels_a: np.ndarray,
    labels_b: np.ndarray,
    *,
    include_background: bool = False,
) -> SegmentationAgreement:
    """Dice per label between two label volumes of the same shape.

    Parameters
    ----------
    labels_a, labels_b : integer arrays of the same shape (*spatial)
        Label volumes (0 = background), e.g. one subject segmented by run A and by run B.
    include_background : bool, default False
        Compare label 0 as well.

    Returns
    -------
    SegmentationAgreement
        Labels present in either volume, with Dice = 2|A∩B| / (|A| + |B|) in [0, 1].

    Examples
    --------
    >>> a = np.array([0, 1, 1, 2]); b = np.array([0, 1, 2, 2])
    >>> segmentation_agreement(a, b).dice
    (0.6666666666666666, 0.6666666666666666)
    """
    a, b = _segmentation_agreement_iv(labels_a, labels_b)
    classes = np.union1d(np.unique(a), np.unique(b))
    if not include_background:
        classes = classes[classes != 0]
    dice = []
    for c in classes:
        in_a, in_b = a == c, b == c
        total = int(in_a.sum()) + int(in_b.sum())
        dice.append(2.0 * int(np.logical_and(in_a, in_b).sum()) / total if total else 1.0)
    return SegmentationAgreement(tuple(int(c) for c in classes), tuple(dice))


def _segmentation_agreement_iv(labels_a: Any, labels_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape:
        raise ValueError(f"labels_a and labels_b must have the same shape; got {a.shape} and "
                         f"{b.shape}. Pass two segmentations of the same volume.")
    for name, x in (("labels_a", a), ("labels_b", b)):
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_)):
            raise ValueError(f"{name} must hold integer labels; got dtype {x.dtype}. Pass "
                             "label volumes (argmax of the probabilities), not probabilities.")
    return a, b


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _diffs(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[Difference, ...]:
    keys = sorted(set(a) | set(b))
    return tuple(Difference(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k))


def _env_view(env: Environment | None) -> dict[str, Any]:
    if env is None:
        return {}
    view = {k: getattr(env, k) for k in _ENV_KEYS}
    view["gpus"] = ", ".join(g.get("name", "?") for g in env.gpus) or None
    versions = {**env.packages, **env.dependencies}
    view.update({f"packages.{k}": v for k, v in versions.items()})
    view.update({f"determinism.{k}": v for k, v in env.determinism.items()})
    return view


def _metric_agreement(a: CVResult, b: CVResult) -> tuple[MetricAgreement, ...]:
    out = []
    for name in (n for n in a.networks if n in b.results):
        ra, rb = a.results[name], b.results[name]
        if len(ra) != len(rb):
            continue
        for metric in (m for m in ra[0].metrics if m in rb[0].metrics):
            diffs = tuple(float(_abs_diff(np.float64(y.metrics[metric]),
                                          np.float64(x.metrics[metric]), signed=True))
                          for x, y in zip(ra, rb, strict=True))
            out.append(MetricAgreement(name, metric, diffs))
    return tuple(out)


def _abs_diff(a: np.ndarray, b: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """``|a − b|`` (``a − b`` if ``signed``) where NaN never hides a difference: 0 where both
    are NaN (equally undefined), infinite where only one is."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = a - b if signed else np.abs(a - b)
    both, one = np.isnan(a) & np.isnan(b), np.isnan(a) ^ np.isnan(b)
    return np.where(both, 0.0, np.where(one, np.inf, d))


def _pooled(cv: CVResult, name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(keys, values) of one prediction array pooled over splits, sorted by (repeat, index)."""
    rep = np.concatenate([np.full(len(r.predictions["index"]), cv.folds.repeat[r.split])
                          for r in cv.results[name]])
    idx = cv.pooled(name, "index")
    vals = cv.pooled(name, key)
    order = np.lexsort((idx, rep))
    return np.stack([rep[order], idx[order]], axis=1), vals[order]


def _aligned(a: CVResult, b: CVResult, name: str, key: str) -> tuple[np.ndarray, ...] | None:
    ka, va = _pooled(a, name, key)
    kb, vb = _pooled(b, name, key)
    if ka.shape != kb.shape or not np.array_equal(ka, kb) or va.shape != vb.shape:
        return None
    return ka, va, vb


def _prediction_agreement(a: CVResult, b: CVResult, name: str) -> PredictionAgreement | None:
    key = "proba" if a.task == "classification" else "mean"
    got = _aligned(a, b, name, key)
    if got is None:
        return None
    keys, va, vb = got
    n = len(keys)
    rows_a, rows_b = va.reshape(n, -1), vb.reshape(n, -1)
    diff = _abs_diff(rows_a, rows_b)
    identical = float(np.mean(np.all(rows_a == rows_b, axis=1))) if n else 1.0
    labels = var = None
    if a.task == "classification":
        labels = float(np.mean(va.argmax(axis=1) == vb.argmax(axis=1))) if n else 1.0
    else:
        got_var = _aligned(a, b, name, "var")
        if got_var is not None:
            var = float(np.max(_abs_diff(got_var[1], got_var[2]), initial=0.0))
    return PredictionAgreement(name, n, float(diff.max(initial=0.0)), identical, labels, var)


def _segmentation(a: CVResult, b: CVResult, name: str) -> tuple[VolumeDice, ...] | None:
    if "labels" not in a.results[name][0].predictions:
        return ()
    if "labels" not in b.results[name][0].predictions:
        return None
    got = _aligned(a, b, name, "labels")
    if got is None:
        return None
    keys, la, lb = got
    return tuple(VolumeDice(name, int(r), int(i), segmentation_agreement(x, y))
                 for (r, i), x, y in zip(keys, la, lb, strict=True))


def _load_run(run_dir: Path) -> tuple[CVResult, dict[str, Any], Environment | None]:
    cv = load_cv_result(run_dir)
    config = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    env = load_env(run_dir) if (run_dir / "env.json").is_file() else None
    return cv, config, env


def _compare_runs_repro_iv(run_a: Any, run_b: Any, tolerances: Mapping[str, Any]
                           ) -> tuple[Path, Path, dict[str, float]]:
    paths = []
    for name, run in (("run_a", run_a), ("run_b", run_b)):
        p = Path(run)
        if not (p / "folds.json").is_file() or not (p / "config.toml").is_file():
            raise FileNotFoundError(f"{name}: {p} is not a finished calipers run folder (it "
                                    "needs config.toml and folds.json); pass the --out folder "
                                    "of `calipers cv` or `calipers demo`.")
        paths.append(p)
    tol = {}
    for key, value in tolerances.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value) or value < 0:
            raise ValueError(f"{key} must be a finite number >= 0; got {value!r}. Pass 0 to "
                             "require bit-identical results.")
        tol[key] = float(value)
    if tol["dice_min"] > 1:
        raise ValueError(f"dice_min must lie in [0, 1]; got {tol['dice_min']!r}. Pass 1 to "
                         "require identical segmentations.")
    return paths[0], paths[1], tol


def _result_problems(report_parts: dict[str, Any], tol: dict[str, float]) -> list[str]:
    problems = []
    over: dict[str, list[str]] = {}
    for m in report_parts["metrics"]:
        if m.max_abs_diff > tol["metric_atol"]:
            over.setdefault(m.network, []).append(f"{m.metric} up to {m.max_abs_diff:.3g}")
    problems += [f"{name} metrics differ by more than {tol['metric_atol']:g}: {', '.join(items)}"
                 for name, items in over.items()]
    for p in report_parts["predictions"]:
        if p.max_abs_diff > tol["proba_atol"]:
            what = "probabilities" if p.label_agreement is not None else "predicted means"
            problems.append(f"{p.network} {what} differ by up to {p.max_abs_diff:.3g} "
                            f"(tolerance {tol['proba_atol']:g})")
    low = [v for v in report_parts["segmentation"] if v.agreement.mean_dice < tol["dice_min"]]
    if low:
        problems.append(f"{len(low)} segmentation(s) with Dice below {tol['dice_min']:g} "
                        f"(lowest {low[0].agreement.mean_dice:.3f}, sample {low[0].index})")
    return problems


def compare_runs_repro(
    run_a: str | Path,
    run_b: str | Path,
    *,
    metric_atol: float = 0.0,
    proba_atol: float = 0.0,
    dice_min: float = 1.0,
) -> ReproReport:
    """Compare two finished runs of (nominally) one experiment.

    Parameters
    ----------
    run_a, run_b : path
        Run folders written by ``calipers cv``/``demo`` (:func:`calipers.run_experiment`).
    metric_atol : float >= 0, default 0
        Largest allowed |B − A| of any metric on any split, in the metric's units.
    proba_atol : float >= 0, default 0
        Largest allowed |B − A| of any out-of-fold class probability (regression: predictive
        mean, in target units), samples matched by index (NOTE [Aligning predictions by sample]).
    dice_min : float in [0, 1], default 1
        Smallest allowed mean Dice between the runs' segmentations of one volume (runs whose
        predictions hold ``labels``; NOTE [Segmentation agreement]).

    Returns
    -------
    ReproReport
        ``ok`` is True when the configs, networks and folds match and every difference is
        within its tolerance; ``problems`` says what is not. Defaults demand bit-identical runs.
    """
    path_a, path_b, tol = _compare_runs_repro_iv(
        run_a, run_b, {"metric_atol": metric_atol, "proba_atol": proba_atol,
                       "dice_min": dice_min})
    cv_a, cfg_a, env_a = _load_run(path_a)
    cv_b, cfg_b, env_b = _load_run(path_b)
    config_diffs = _diffs(_flatten(cfg_a), _flatten(cfg_b))
    problems = []
    if config_diffs:
        keys = ", ".join(f"{d.key} ({d.a!r} → {d.b!r})" for d in config_diffs[:5])
        more = f" and {len(config_diffs) - 5} more" if len(config_diffs) > 5 else ""
        problems.append(f"configs differ in {keys}{more}")
    folds_match = cv_a.folds.hash == cv_b.folds.hash
    if not folds_match:
        problems.append(f"folds differ (hash {cv_a.folds.hash[:12]}… vs "
                        f"{cv_b.folds.hash[:12]}…), so per-fold metrics are not comparable")
    common = [n for n in cv_a.networks if n in cv_b.results]
    if set(common) != set(cv_a.networks) | set(cv_b.networks):
        problems.append(f"networks differ: {sorted(cv_a.networks)} vs {sorted(cv_b.networks)}")
    parts: dict[str, Any] = {"metrics": _metric_agreement(cv_a, cv_b) if folds_match else (),
                             "predictions": [], "segmentation": []}
    for name in common:
        pred = _prediction_agreement(cv_a, cv_b, name)
        seg = _segmentation(cv_a, cv_b, name)
        if pred is None or seg is None:
            problems.append(f"{name}: out-of-fold predictions cover different samples or "
                            "shapes and cannot be matched")
            continue
        parts["predictions"].append(pred)
        parts["segmentation"] += seg
    problems += _result_problems(parts, tol)
    csv_a, csv_b = path_a / "metrics.csv", path_b / "metrics.csv"
    csv_same = csv_a.is_file() and csv_b.is_file() and csv_a.read_bytes() == csv_b.read_bytes()
    return ReproReport(
        str(path_a), str(path_b), config_diffs, _diffs(_env_view(env_a), _env_view(env_b)),
        folds_match, csv_same, tuple(parts["metrics"]), tuple(parts["predictions"]),
        tuple(sorted(parts["segmentation"], key=lambda v: v.agreement.mean_dice)), tol,
        tuple(problems))
