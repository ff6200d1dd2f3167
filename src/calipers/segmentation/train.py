"""Fit a segmentation network on one training split with MONAI's Dice + cross-entropy loss.

The plain recipe trains on whole (padded) images with a constant learning rate
(:func:`calipers.evaluation.train.fit`). :class:`SegmentationRecipe` (``[segmentation]`` in a
config) adds what buys Dice per CPU-minute: random patches (MONAI ``RandSpatialCropd``, or
``RandCropByPosNegLabeld`` centred on foreground for a fraction of them), MONAI augmentation
(flips on every axis, a small affine, gamma) and a learning-rate schedule with linear warm-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from calipers._device import resolve_device
from calipers._seeds import torch_generator
from calipers.evaluation.train import (
    _AMP_NAMES,
    FitResult,
    TrainOptions,
    _loss_fn,
    fit,
    resolve_amp,
    train_step,
)

__all__ = ["SegmentationRecipe", "fit_segmentation", "lr_factor"]

_SCHEDULES = ("constant", "cosine", "poly")


@dataclass(frozen=True)
class SegmentationRecipe:
    """Segmentation training options beyond :class:`~calipers.evaluation.train.TrainOptions`.

    Attributes
    ----------
    patch : tuple of int, optional
        Train on random crops of this spatial size (one per image and step) instead of whole
        images; e.g. ``(256, 256)`` on 512×512 slices costs a quarter per epoch.
    foreground : float in [0, 1]
        Fraction of crops centred on a foreground voxel (``RandCropByPosNegLabeld``); the rest
        are centred on background. 0 (default): uniform random crops (``RandSpatialCropd``).
        Needs ``patch``.
    schedule : {"constant", "cosine", "poly"}
        Learning rate per epoch after warm-up: constant; ``0.5 (1 + cos(π t / T))``; or
        ``(1 - t / T) ** 0.9`` (nnU-Net), with t the epoch after warm-up and T the remaining.
    warmup_epochs : int
        Linear warm-up from ``lr / (warmup_epochs + 1)`` to ``lr``.
    augment : bool
        MONAI ``RandFlipd`` (p = 0.5 per axis), ``RandAffined`` (p = 0.5, rotation ±0.1 rad,
        scale ±10 %, labels nearest) and ``RandAdjustContrastd`` (p = 0.3, gamma 0.7–1.5).
    """

    patch: tuple[int, ...] | None = None
    foreground: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    augment: bool = False

    def __post_init__(self) -> None:
        if self.patch is not None and (not self.patch or any(int(p) < 1 for p in self.patch)):
            raise ValueError(f"patch must be positive sizes, one per spatial axis; got "
                             f"{self.patch!r}. Set [segmentation] patch = [256, 256], say.")
        if not 0.0 <= self.foreground <= 1.0:
            raise ValueError(f"foreground must be a fraction in [0, 1]; got {self.foreground!r}.")
        if self.foreground > 0 and self.patch is None:
            raise ValueError("foreground centres patches on labelled voxels; set [segmentation] "
                             "patch too (e.g. [32, 48, 32]).")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(_SCHEDULES)}; got "
                             f"{self.schedule!r}.")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0; got {self.warmup_epochs!r}.")

    @property
    def is_plain(self) -> bool:
        """True when nothing differs from whole-image training at a constant rate."""
        return self == SegmentationRecipe()

    def to_dict(self) -> dict:
        return asdict(self)


def lr_factor(epoch: int, n_epochs: int, *, schedule: str = "constant",
              warmup_epochs: int = 0) -> float:
    """Multiplier of the base learning rate in epoch ``epoch`` (0-based) of ``n_epochs``."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    t, T = epoch - warmup_epochs, max(1, n_epochs - warmup_epochs)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t / T))
    if schedule == "poly":
        return (1.0 - t / T) ** 0.9
    return 1.0


def _transforms(recipe: SegmentationRecipe, ndim: int, seed: int):
    """The MONAI dictionary transforms of one training image (``image`` (C, *S), ``label``
    (1, *S)), seeded."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandSpatialCropd,
    )

    keys = ("image", "label")
    steps = []
    if recipe.patch is not None:
        size = tuple(int(p) for p in recipe.patch)
        if recipe.foreground > 0:
            steps.append(RandCropByPosNegLabeld(keys, label_key="label", spatial_size=size,
                                                pos=recipe.foreground,
                                                neg=1.0 - recipe.foreground, num_samples=1,
                                                allow_smaller=True))
        else:
            steps.append(RandSpatialCropd(keys, roi_size=size, random_size=False))
    if recipe.augment:
        steps += [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(ndim)]
        steps.append(RandAffined(keys, prob=0.5, rotate_range=[0.1] * (1 if ndim == 2 else 3),
                                 scale_range=[0.1] * ndim, mode=("bilinear", "nearest"),
                                 padding_mode="zeros"))
        steps.append(RandAdjustContrastd(("image",), prob=0.3, gamma=(0.7, 1.5)))
    comp = Compose(steps, map_items=True)
    comp.set_random_state(seed=int(seed) % 2**32)
    return comp


def _sample(transform, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = transform({"image": image, "label": label})
    if isinstance(out, list):  # RandCropByPosNegLabeld returns num_samples dictionaries
        out = out[0]
    return (torch.as_tensor(out["image"]).as_subclass(torch.Tensor).float(),
            torch.as_tensor(out["label"]).as_subclass(torch.Tensor).round().long())


def fit_segmentation(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    options: TrainOptions | None = None,
    recipe: SegmentationRecipe | None = None,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> FitResult:
    """Train ``model`` in place with Adam on ``DiceCELoss`` (softmax, one-hot targets).

    Parameters
    ----------
    model : nn.Module
        Fresh network mapping ``(B, C_in, *S)`` to logits ``(B, C, *S)``; moved to the device
        and left there.
    X : ndarray of shape (N, C_in, *S), float32
        Normalised, padded images.
    y : ndarray of shape (N, *S), integer
        Class index per voxel, 0 .. C-1.
    options : TrainOptions
        ``epochs``, ``batch_size`` (images per step), ``lr``, ``weight_decay``, ``device``,
        ``amp`` (CUDA only).
    recipe : SegmentationRecipe, optional
        Patches, augmentation, schedule; None or the default trains on whole images at a
        constant rate (:func:`calipers.evaluation.train.fit`, same numbers as before).
    seed : int
        Seeds the order of the images and the transforms; dropout draws from the global
        generator that the caller seeds (``calipers.segmentation.experiment``).
    progress : callable(epoch, n_epochs, loss), optional

    Returns
    -------
    FitResult
        Mean loss per epoch (Dice + CE, dimensionless), seconds, device.
    """
    if X.shape[0] != y.shape[0] or X.shape[2:] != y.shape[1:]:
        raise ValueError(f"X of shape {X.shape} and y of shape {y.shape} do not match; y must "
                         "be (N, *S) when X is (N, C_in, *S).")
    if recipe is None or recipe.is_plain:
        return fit(model, X, y, task="segmentation", options=options, seed=seed,
                   progress=progress)
    if recipe.patch is not None and len(recipe.patch) != X.ndim - 2:
        raise ValueError(f"patch {tuple(recipe.patch)} has {len(recipe.patch)} sizes but the "
                         f"images have {X.ndim - 2} spatial axes.")
    return _fit_recipe(model, X, y, options or TrainOptions(), recipe, seed, progress)


def _recipe_batches(order: torch.Tensor, batch_size: int, transform, Xt: torch.Tensor,
                    yt: torch.Tensor, device: torch.device):
    """One epoch's batches: one transformed sample (patch) per image, stacked on the host."""
    for start in range(0, order.numel(), batch_size):
        pairs = [_sample(transform, Xt[i], yt[i]) for i in order[start:start + batch_size].tolist()]
        yield (torch.stack([p[0] for p in pairs]).to(device),
               torch.stack([p[1] for p in pairs]).to(device))


def _fit_recipe(model, X, y, opts: TrainOptions, recipe: SegmentationRecipe, seed: int,
                progress) -> FitResult:
    # NOTE [A loop that keeps the GPU busy] (calipers.evaluation.train) holds here too: mixed
    # precision, batch_size = "auto" (probed on patch-sized inputs), the loss summed on the
    # device and read once per epoch, the loop's timers for the GPU monitor. The CPU's numbers
    # are those of the earlier loop (tests/segmentation/test_seg_recipe.py).
    from calipers.gpu.monitor import LoopTimers

    device = resolve_device(opts.device)
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)[:, None]
    model.to(device).train()
    loss_fn = _loss_fn("segmentation")
    amp_dtype = resolve_amp(opts.amp, device)
    batch_size = opts.batch_size
    if batch_size == "auto":  # the steps see patches: probe with patch-sized crops
        from calipers.gpu.finder import find_batch_size

        crop = (slice(None), slice(None), *(slice(0, int(p)) for p in recipe.patch or ()))
        batch_size = find_batch_size(model, Xt[crop], yt[crop], loss_fn, device=device,
                                     amp_dtype=amp_dtype).size
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda e: lr_factor(
        e, opts.epochs, schedule=recipe.schedule, warmup_epochs=recipe.warmup_epochs))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    transform = _transforms(recipe, X.ndim - 2, seed)
    gen = torch_generator(seed)
    timers = LoopTimers(device, batch_size=batch_size, data_on_device=False,
                        amp=_AMP_NAMES.get(amp_dtype, ""), workers=0)
    n, losses, t0 = Xt.shape[0], [], time.perf_counter()
    for epoch in range(opts.epochs):
        order = torch.randperm(n, generator=gen)
        total = torch.zeros((), dtype=torch.float64, device=device)
        timers.epoch_start()
        for xb, yb in timers.wrap(_recipe_batches(order, batch_size, transform, Xt, yt, device)):
            loss = train_step(model, xb, yb, loss_fn, optim, scaler, amp_dtype)
            total += loss.double() * xb.shape[0]
            timers.step_end()
        sched.step()
        losses.append(float(total) / n)  # the epoch's one host synchronisation
        timers.epoch_end()
        if progress is not None:
            progress(epoch + 1, opts.epochs, losses[-1])
    return FitResult(tuple(losses), time.perf_counter() - t0, str(device), amp_dtype is not None,
                     _AMP_NAMES.get(amp_dtype, ""), int(batch_size), False)
