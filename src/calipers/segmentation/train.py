"""Fit a segmentation network on one training split with MONAI's Dice + cross-entropy loss."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from calipers._device import resolve_device
from calipers._seeds import torch_generator
from calipers.train import FitResult, TrainOptions

__all__ = ["fit_segmentation"]


def fit_segmentation(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    options: TrainOptions | None = None,
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
        ``epochs``, ``batch_size`` (volumes per step), ``lr``, ``weight_decay``, ``device``,
        ``amp`` (CUDA only).
    seed : int
        Seeds the order of the volumes; dropout draws from the global generator that the
        caller seeds (``calipers.segmentation.experiment``).
    progress : callable(epoch, n_epochs, loss), optional

    Returns
    -------
    FitResult
        Mean loss per epoch (Dice + CE, dimensionless), seconds, device.
    """
    from monai.losses import DiceCELoss

    opts = options or TrainOptions()
    if X.shape[0] != y.shape[0] or X.shape[2:] != y.shape[1:]:
        raise ValueError(f"X of shape {X.shape} and y of shape {y.shape} do not match; y must "
                         "be (N, *S) when X is (N, C_in, *S).")
    device = resolve_device(opts.device)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))[:, None]
    model.to(device).train()
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    use_amp = bool(opts.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch_generator(seed)
    n, losses, t0 = Xt.shape[0], [], time.perf_counter()
    for epoch in range(opts.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, opts.batch_size):
            idx = order[start:start + opts.batch_size]
            xb, yb = Xt[idx].to(device), yt[idx].to(device)
            optim.zero_grad(set_to_none=True)
            ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
            with ctx:
                loss = loss_fn(model(xb).float(), yb)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / n)
        if progress is not None:
            progress(epoch + 1, opts.epochs, losses[-1])
    return FitResult(tuple(losses), time.perf_counter() - t0, str(device), use_amp)
