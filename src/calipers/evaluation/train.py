"""Fit one network on one training split (device, seeds, AMP, per-epoch loss).

The training step keeps no per-model Python state beyond the optimiser, so folds and settings
can later be stacked into one batched model (design §2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from calipers._checks import _check_positive_int, _look_up_option
from calipers._device import resolve_device
from calipers._options import Task
from calipers._seeds import torch_generator
from calipers.exceptions import TrainingError

__all__ = ["FitResult", "TrainOptions", "fit"]

ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainOptions:
    """How to train: ``epochs``, ``batch_size``, Adam ``lr`` and ``weight_decay``, ``device``
    (``auto|cpu|cuda[:i]``), ``amp`` (mixed precision, used on CUDA only)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        _check_positive_int(self.epochs, name="epochs", fix="Set [train] epochs = 1 or more.")
        _check_positive_int(self.batch_size, name="batch_size",
                            fix="Set [train] batch_size = 1 or more.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}. Set [train] lr = 1e-3, say.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FitResult:
    """What training produced: mean training loss per epoch, wall time (s), device used."""

    losses: tuple[float, ...]
    seconds: float
    device: str
    amp: bool

    def to_dict(self) -> dict:
        return asdict(self)


_TASKS = Task
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _loss_fn(task: str) -> nn.Module:
    if task == "segmentation":
        from monai.losses import DiceCELoss

        return DiceCELoss(to_onehot_y=True, softmax=True)  # targets (B, 1, *S) class indices
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()


def _targets(y: np.ndarray | torch.Tensor, task: str) -> torch.Tensor:
    if task == "regression":
        yt = torch.as_tensor(np.asarray(y), dtype=torch.float32)
        return yt[:, None] if yt.ndim == 1 else yt
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    return yt[:, None] if task == "segmentation" else yt  # segmentation: a channel axis


def fit(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    task: str = "classification",
    options: TrainOptions | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Train ``model`` in place with Adam on ``(X, y)``.

    Parameters
    ----------
    model : nn.Module
        A freshly built network; it is moved to the device and left there in train mode.
    X : array of shape (n_samples, *sample_shape)
    y : array of shape (n_samples,) class indices, or (n_samples,) / (n_samples, k) targets
    task : {"classification", "regression", "segmentation"}
        Cross-entropy on logits, mean squared error, or MONAI's Dice + cross-entropy on
        per-voxel logits ``(N, C, *S)`` with ``y`` of shape ``(N, *S)``.
    options : TrainOptions
    seed : int
        Seeds the data order (and, on CUDA, nothing else is random: dropout draws use the
        global generator, which the caller seeds; see :func:`calipers.evaluation.cv.run_fold`).
    progress : callable(epoch, n_epochs, loss), optional
        Called after each epoch (1-based).

    Returns
    -------
    FitResult
    """
    opts = options or TrainOptions()
    task = _look_up_option(task, _TASKS, what="task")
    device = resolve_device(opts.device)
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    yt = _targets(y, task)
    has_bn = any(isinstance(m, _BATCHNORMS) for m in model.modules())
    model.to(device).train()
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    loss_fn = _loss_fn(task)
    use_amp = bool(opts.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch_generator(seed)
    n = Xt.shape[0]
    losses = []
    t0 = time.perf_counter()
    for epoch in range(opts.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, opts.batch_size):
            idx = order[start:start + opts.batch_size]
            if has_bn and idx.numel() < 2 and start > 0:
                continue  # a last batch of one sample breaks BatchNorm; skip it
            xb = Xt[idx].to(device, non_blocking=True)
            yb = yt[idx].to(device, non_blocking=True)
            optim.zero_grad(set_to_none=True)
            ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
            with ctx:
                loss = loss_fn(model(xb).float(), yb)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / n)
        if not math.isfinite(losses[-1]):
            raise TrainingError(
                f"the training loss became {losses[-1]} in epoch {epoch + 1} (lr = {opts.lr:g}): "
                "the network's outputs or gradients overflowed. Lower [train] lr, or check the "
                "network's forward pass for NaN (log of 0, division by 0).")
        if progress is not None:
            progress(epoch + 1, opts.epochs, losses[-1])
    return FitResult(tuple(losses), time.perf_counter() - t0, str(device), use_amp)
