"""Fit a segmentation network on one training split with MONAI's Dice + cross-entropy loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from calipers.evaluation.train import FitResult, TrainOptions, fit

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
    if X.shape[0] != y.shape[0] or X.shape[2:] != y.shape[1:]:
        raise ValueError(f"X of shape {X.shape} and y of shape {y.shape} do not match; y must "
                         "be (N, *S) when X is (N, C_in, *S).")
    return fit(model, X, y, task="segmentation", options=options, seed=seed, progress=progress)
