"""Cross-validated segmentation: ``calipers cv`` with ``task = "segmentation"``.

The run folder has the layout of design §3, so ``calipers compare``, ``calipers repro`` and the
report read it like any other run. Per fold, ``predictions.npz`` holds one row per test volume:

  index (n,)            volume index in the data set (sorted file names)
  y_true, labels (n, *S) ground truth and prediction (uint8), padded to the data set's shape
  shape (n, ndim)       the volume's own shape; metrics use ``[:s0, :s1, ...]`` only
  dice (n, C-1)         Dice per foreground class
  mean (n, C)           mean predictive probability of each class over the volume's voxels
  var (n,)              mean variance over passes of the winning class's probability
  entropy, mutual_info, fg_entropy (n,)   mean voxel entropy / MI (nats), entropy in foreground
  preview_* (n, h, w)   middle slice of image, truth, prediction and entropy, for the report

``RUN/segmentation.json`` records what ``calipers predict`` needs to rebuild the networks:
classes, label values, the padded input shape and the padding multiple.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from calipers._seeds import child_seed, seeded_torch
from calipers.config import ExperimentConfig
from calipers.evaluation.cv import CVProgress, FoldResult, FoldSpec, NetworkSpec, cross_validate
from calipers.evaluation.folds import Folds, make_folds
from calipers.evaluation.metrics import dice_per_class, uncertainty_auroc
from calipers.evaluation.splits import read_splits
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import CalipersWarning, ConfigError
from calipers.experiment.holdout import check_summarizable
from calipers.experiment.runner import ExperimentResult, _check_resume, finish_run
from calipers.models import build_network
from calipers.repro.determinism import deterministic
from calipers.repro.env import fingerprint
from calipers.runs import atomic_write_json, atomic_write_text
from calipers.segmentation.data import SegmentationData, crop_to, load_segmentation, pad_to
from calipers.segmentation.maps import mc_segment
from calipers.segmentation.train import SegmentationRecipe, fit_segmentation
from calipers.uncertainty.mc import has_dropout

__all__ = ["run_segmentation_experiment", "run_segmentation_fold", "unseen_classes"]

_MULTIPLE = 16       # padded sizes are multiples of this (U-Nets of up to 5 levels)
_PREVIEW_SIDE = 128  # preview slices are subsampled to at most this many pixels a side


def _check_networks(networks: dict[str, NetworkSpec], data: SegmentationData, n_mc: int) -> None:
    for name, spec in networks.items():
        probe = build_network(spec.model, spec.args, input_shape=data.input_shape,
                              n_outputs=data.n_outputs)
        if n_mc > 0 and not has_dropout(probe):
            raise ConfigError(f"network {name!r} ({spec.describe()}) has no dropout module, but "
                              f"[mc] samples = {n_mc}; pass args.dropout > 0 (p = 0 keeps the "
                              "modules), or set [mc] samples = 0.")
        m = int(getattr(probe, "multiple", 1))
        if any(s % m for s in data.input_shape[1:]):
            raise ConfigError(f"network {name!r} needs sizes divisible by {m}; the data are "
                              f"padded to {data.input_shape[1:]}. Use fewer levels in channels.")


def unseen_classes(data: SegmentationData, folds: Folds) -> dict[str, dict[str, int]]:
    """Per split, the number of test volumes holding each class that no training volume of
    that split holds (``{"0": {"2": 3}}``: split 0, class 2, 3 volumes); warns once per split.

    Their Dice for that class scores a class the network never saw: it is kept in the metrics,
    but the warning and the count in ``segmentation.json`` say so.
    """
    present = np.stack([np.bincount(v.reshape(-1), minlength=data.n_outputs) > 0
                        for v in data.y])  # (N, C): class c occurs in volume i
    out: dict[str, dict[str, int]] = {}
    for j, (tr, te) in enumerate(folds):
        seen = present[tr].any(axis=0)
        counts = {str(c): int(present[te, c].sum()) for c in range(1, data.n_outputs)
                  if not seen[c] and present[te, c].any()}
        if counts:
            out[str(j)] = counts
            desc = ", ".join(f"class {c} in {k} volume(s)" for c, k in counts.items())
            warnings.warn(f"split {j}: test volumes hold classes no training volume has "
                          f"({desc}); their Dice scores a class the network never learned. "
                          "Counted in segmentation.json (unseen_classes).", CalipersWarning,
                          stacklevel=3)
    return out


def _preview(x: np.ndarray) -> np.ndarray:
    """Middle slice along the first axis of a 3-D array (2-D as is), subsampled."""
    sl = x[x.shape[0] // 2] if x.ndim == 3 else x
    step = max(1, -(-max(sl.shape) // _PREVIEW_SIDE))
    return np.ascontiguousarray(sl[::step, ::step])


def _score_volumes(model, spec: FoldSpec, data: SegmentationData) -> tuple[dict, dict]:
    """MC maps of every test volume: per-volume arrays and the fold's metrics."""
    C, rows = data.n_outputs, []
    wrong_all, ent_all = [], []
    for i in spec.test:
        shape = tuple(int(s) for s in data.shapes[i])
        maps = mc_segment(model, crop_to(data.X[i], shape), n_mc=spec.n_mc,
                          seed=child_seed(spec.seed, "mc", spec.network, spec.split, int(i)),
                          device=spec.options.device, min_shape=data.input_shape[1:])
        truth = crop_to(data.y[i], shape)
        wrong = maps.segmentation != truth
        wrong_all.append(wrong.reshape(-1))
        ent_all.append(maps.entropy.reshape(-1))
        fg = maps.segmentation > 0
        seg = pad_to(maps.segmentation, data.input_shape[1:])
        rows.append({
            "labels": seg,
            "dice": dice_per_class(truth, maps.segmentation, n_classes=C),
            "mean": maps.proba.reshape(C, -1).mean(axis=1),
            "var": float(np.mean(maps.std.astype(np.float64) ** 2)),
            "entropy": float(maps.entropy.mean()), "mutual_info": float(maps.mutual_info.mean()),
            "fg_entropy": float(maps.entropy[fg].mean()) if fg.any() else 0.0,
            "preview_image": _preview(data.X[i, 0]), "preview_truth": _preview(data.y[i]),
            "preview_pred": _preview(seg),
            "preview_entropy": _preview(pad_to(maps.entropy, data.input_shape[1:])),
        })
    pred = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    pred["labels"] = pred["labels"].astype(np.uint8)
    dice = pred["dice"]
    metrics = {"mean_dice": float(dice.mean())}
    metrics.update({f"dice_{c}": float(dice[:, c - 1].mean()) for c in range(1, C)})
    metrics.update({
        "entropy": float(pred["entropy"].mean()), "mutual_info": float(pred["mutual_info"].mean()),
        "fg_entropy": float(pred["fg_entropy"].mean()),
        "entropy_auroc": uncertainty_auroc(np.concatenate(wrong_all), np.concatenate(ent_all)),
        "voxel_error": float(np.concatenate(wrong_all).mean()),
    })
    return pred, metrics


def run_segmentation_fold(spec: FoldSpec, data: SegmentationData, *,
                          progress: CVProgress | None = None,
                          recipe: SegmentationRecipe | None = None) -> FoldResult:
    """Build a fresh network, train it on ``spec.train`` volumes (with ``recipe``: patches,
    augmentation, LR schedule), MC-segment ``spec.test``."""
    # A fresh network per fold: no fold may see weights trained on another fold's test set.
    with seeded_torch(child_seed(spec.seed, "init", spec.network, spec.split)):
        model = build_network(spec.spec.model, spec.spec.args, input_shape=data.input_shape,
                              n_outputs=data.n_outputs)
    with seeded_torch(child_seed(spec.seed, "train", spec.network, spec.split)):
        fitted = fit_segmentation(
            model, data.X[spec.train], data.y[spec.train], options=spec.options, recipe=recipe,
            seed=child_seed(spec.seed, "order", spec.network, spec.split),
            progress=progress.epoch if progress is not None else None)
    pred, metrics = _score_volumes(model, spec, data)
    pred = {"index": spec.test, "y_true": data.y[spec.test], "shape": data.shapes[spec.test],
            **pred}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return FoldResult(spec.network, spec.split, metrics, pred, fitted.losses, fitted.seconds,
                      False, state)


def _recipe(config: ExperimentConfig) -> SegmentationRecipe | None:
    s = config.segmentation
    if s is None:
        return None
    try:
        return SegmentationRecipe(None if s.patch is None else tuple(s.patch), s.foreground,
                                  s.schedule, s.warmup_epochs, s.augment)
    except ValueError as err:
        raise ConfigError(f"segmentation: {err}") from None


def _check_recipe(recipe: SegmentationRecipe | None, data: SegmentationData) -> None:
    if recipe is None or recipe.patch is None:
        return
    shape = data.input_shape[1:]
    if len(recipe.patch) != len(shape) or any(
            p > s or p % data.multiple for p, s in zip(recipe.patch, shape, strict=False)):
        raise ConfigError(f"segmentation.patch = {list(recipe.patch)} must give one size per "
                          f"spatial axis, each a multiple of {data.multiple} and at most the "
                          f"padded image size {list(shape)}.")


def _data_info(data: SegmentationData, config: ExperimentConfig) -> dict[str, Any]:
    return {"kind": data.kind, "n_classes": data.n_outputs,
            "label_values": list(data.label_values), "input_shape": list(data.input_shape),
            "multiple": data.multiple, "normalize": "zscore", "names": list(data.names),
            "n_mc": config.mc.samples}


def run_segmentation_experiment(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    progress: CVProgress | None = None,
    report: bool = True,
) -> ExperimentResult:
    """Cross-validate every network of ``config`` on the same folds of a segmentation data set.

    ``config.data.path`` holds ``images/`` and ``labels/`` (NIfTI or PNG). Writes the run folder
    of design §3 plus ``segmentation.json``; resumable like :func:`calipers.run_experiment`.
    Metrics per fold: Dice per class and their mean (averaged over volumes), mean voxel entropy
    and mutual information, and the voxel AUROC of entropy for detecting wrong voxels.
    """
    run_dir = Path(run_dir)
    data = load_segmentation(config.data.path, kind=config.data.kind, multiple=_MULTIPLE)
    if config.cv.splits is not None:
        folds = read_splits(config.cv.splits, n_samples=data.n_samples)
    else:
        folds = make_folds(np.zeros(data.n_samples), n_folds=config.cv.folds,
                           n_repeats=config.cv.repeats, seed=config.cv.seed, stratify=False,
                           shuffle=config.cv.shuffle)
    config_text = config.to_toml()
    _check_resume(run_dir, config_text, folds.hash)
    networks = {name: NetworkSpec(n.model, dict(n.args)) for name, n in config.networks.items()}
    _check_networks(networks, data, config.mc.samples)
    check_summarizable(folds, task="segmentation", metric=config.compare.metric)
    _check_recipe(_recipe(config), data)
    unseen = unseen_classes(data, folds)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", config_text)
    atomic_write_json(run_dir / "folds.json", folds.to_dict())
    atomic_write_json(run_dir / "segmentation.json", {**_data_info(data, config),
                                                      "unseen_classes": unseen})
    t = config.train
    options = TrainOptions(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                           weight_decay=t.weight_decay, device=t.device, amp=t.amp)
    with deterministic(config.cv.seed, enabled=t.deterministic):
        if not (run_dir / "env.json").is_file():
            atomic_write_json(run_dir / "env.json", fingerprint().to_dict())
        cv = cross_validate(data, networks, folds, options=options, n_mc=config.mc.samples,
                            seed=config.cv.seed, run_dir=run_dir, progress=progress,
                            fold_fn=partial(run_segmentation_fold, recipe=_recipe(config)))
    return finish_run(config, run_dir, cv, report=report)
