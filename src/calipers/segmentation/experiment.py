"""The segmentation fold task: ``calipers cv`` with ``task = "segmentation"``.

:func:`calipers.experiment.runner.run_experiment` runs :func:`run_segmentation_fold` for every
fold through the experiment engine (its runner table, :mod:`calipers.experiment.engine`); this
module only provides the fold, its scoring and the checks and files specific to segmentation.
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
from typing import Any

import numpy as np
import torch

from calipers._seeds import child_seed, seeded_torch
from calipers.config import ExperimentConfig
from calipers.evaluation.cv import CVProgress, FoldResult, FoldSpec
from calipers.evaluation.folds import Folds
from calipers.evaluation.metrics import dice_per_class, uncertainty_auroc
from calipers.exceptions import CalipersWarning, ConfigError
from calipers.models import build_network
from calipers.segmentation.data import SegmentationData, crop_to, pad_to
from calipers.segmentation.maps import mc_segment
from calipers.segmentation.train import SegmentationRecipe, fit_segmentation

__all__ = ["MULTIPLE", "check_recipe", "check_segmentation_network", "run_segmentation_fold",
           "segmentation_info", "segmentation_recipe", "unseen_classes"]

MULTIPLE = 16        # padded sizes are multiples of this (U-Nets of up to 5 levels)
_PREVIEW_SIDE = 128  # preview slices are subsampled to at most this many pixels a side


def check_segmentation_network(name: str, probe: torch.nn.Module,
                               data: SegmentationData) -> None:
    """Refuse a network whose input sizes do not divide the padded volume shape."""
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
    undefined = {}
    if not np.isfinite(metrics["entropy_auroc"]):  # NOTE [Undefined metrics] in evaluation/cv.py
        undefined["entropy_auroc"] = {0.0: "no wrong voxel in the test volumes",
                                      1.0: "every voxel of the test volumes is wrong"}.get(
            metrics["voxel_error"], "the entropy AUROC is not finite")
    return FoldResult(spec.network, spec.split, metrics, pred, fitted.losses, fitted.seconds,
                      False, state, undefined)


def segmentation_info(data: SegmentationData, *, n_mc: int) -> dict[str, Any]:
    """What ``RUN/segmentation.json`` records for ``calipers predict`` (classes, label values,
    padded input shape, padding multiple, normalisation, volume names, MC passes)."""
    return {"kind": data.kind, "n_classes": data.n_outputs,
            "label_values": list(data.label_values), "input_shape": list(data.input_shape),
            "multiple": data.multiple, "normalize": "zscore", "names": list(data.names),
            "n_mc": n_mc}


def segmentation_recipe(config: ExperimentConfig) -> SegmentationRecipe | None:
    """The ``[segmentation]`` training recipe of ``config`` (None: whole images, constant LR)."""
    s = config.segmentation
    if s is None:
        return None
    try:
        return SegmentationRecipe(None if s.patch is None else tuple(s.patch), s.foreground,
                                  s.schedule, s.warmup_epochs, s.augment)
    except ValueError as err:
        raise ConfigError(f"segmentation: {err}") from None


def check_recipe(recipe: SegmentationRecipe | None, data: SegmentationData) -> None:
    """Refuse patch sizes that do not fit the padded images (before any training)."""
    if recipe is None or recipe.patch is None:
        return
    shape = data.input_shape[1:]
    if len(recipe.patch) != len(shape) or any(
            p > s or p % data.multiple for p, s in zip(recipe.patch, shape, strict=False)):
        raise ConfigError(f"segmentation.patch = {list(recipe.patch)} must give one size per "
                          f"spatial axis, each a multiple of {data.multiple} and at most the "
                          f"padded image size {list(shape)}.")
