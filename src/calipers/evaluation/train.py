"""Fit one network on one training split (device, seeds, AMP, per-epoch loss).

The training step keeps no per-model Python state beyond the optimiser, so folds and settings
can later be stacked into one batched model (design §2).

# NOTE [A loop that keeps the GPU busy]
A training split that fits in a memory budget (a quarter of the free device memory) is copied to
the device once and batches are gathered there; a larger one streams through a ``DataLoader``
with pinned memory, workers and prefetch. The loss is summed on the device (float64, the same
sums the CPU path always made) and read once per epoch, so no step waits for the host. The
loop's own timers (CUDA events on the GPU) split each epoch into waiting for data and computing;
:mod:`calipers.gpu.monitor` turns them, with NVML's utilisation, into advice. On the CPU the
data already live "on the device" and the numbers are those of the earlier loop, bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
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

__all__ = ["AMP_MODES", "FitResult", "TrainOptions", "fit", "resolve_amp", "train_step"]

ProgressFn = Callable[[int, int, float], None]
AMP_MODES = ("auto", "bf16", "fp16", "off")
_DEVICE_DATA_FRACTION = 0.25  # a split up to this share of the free device memory lives there
_LOADER_WORKERS = 4


@dataclass(frozen=True)
class TrainOptions:
    """How to train: ``epochs``, ``batch_size`` (or ``"auto"``: the largest that fits, see
    :mod:`calipers.gpu.finder`), Adam ``lr`` and ``weight_decay``, ``device``
    (``auto|cpu|cuda[:i]``), ``amp`` (mixed precision on CUDA only: ``"auto"`` is bf16 where
    the GPU has it, else fp16 with a gradient scaler; ``"bf16" | "fp16" | "off"``; ``True`` means
    ``"auto"`` and ``False`` ``"off"``)."""

    epochs: int = 20
    batch_size: int | str = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    device: str = "auto"
    amp: bool | str = True

    def __post_init__(self) -> None:
        _check_positive_int(self.epochs, name="epochs", fix="Set [train] epochs = 1 or more.")
        if self.batch_size != "auto":
            _check_positive_int(self.batch_size, name="batch_size",
                                fix="Set [train] batch_size = 1 or more, or \"auto\".")
        if not isinstance(self.amp, bool) and self.amp not in AMP_MODES:
            raise ValueError(f"amp must be true, false or one of {AMP_MODES}; got {self.amp!r}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}. Set [train] lr = 1e-3, say.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FitResult:
    """What training produced: mean training loss per epoch, wall time (s), device used,
    whether mixed precision was used (``amp_dtype`` ``"bf16" | "fp16" | ""``), the batch size
    and whether the training split lived on the device."""

    losses: tuple[float, ...]
    seconds: float
    device: str
    amp: bool
    amp_dtype: str = ""
    batch_size: int = 0
    data_on_device: bool = True

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


def resolve_amp(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``: None (full precision) on the CPU or when
    off; ``"auto"`` (or ``True``) is bfloat16 where the GPU supports it, else float16."""
    mode = "auto" if amp is True else "off" if amp is False else str(amp)
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be true, false or one of {AMP_MODES}; got {amp!r}.")
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _fits_on_device(Xt: torch.Tensor, yt: torch.Tensor, device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    need = Xt.numel() * Xt.element_size() + yt.numel() * yt.element_size()
    return need <= _DEVICE_DATA_FRACTION * free


class _Batches(torch.utils.data.Dataset):
    """Batch ``b`` of one epoch's order, gathered on the host (a loader worker's job)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, idx: list[torch.Tensor]) -> None:
        self.X, self.y, self.idx = X, y, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X[self.idx[b]], self.y[self.idx[b]]


def _epoch_batches(
    Xt: torch.Tensor, yt: torch.Tensor, idx: list[torch.Tensor], device: torch.device,
    on_device: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if on_device:
        for i in idx:
            i = i.to(device, non_blocking=True)
            yield Xt[i], yt[i]
        return
    workers = min(_LOADER_WORKERS, len(idx))
    loader = torch.utils.data.DataLoader(
        _Batches(Xt, yt, idx), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(0))  # leaves the global generator (dropout) alone
    for xb, yb in loader:
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)



def train_step(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, loss_fn: nn.Module,
               optim: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               amp_dtype: torch.dtype | None) -> torch.Tensor:
    """One optimiser step on a batch (autocast when ``amp_dtype``; ``scaler`` for fp16);
    the loss, detached and left on the device (no host synchronisation)."""
    optim.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext():
        loss = loss_fn(model(xb).float(), yb)
    scaler.scale(loss).backward()
    scaler.step(optim)
    scaler.update()
    return loss.detach()


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
    loss_fn = _loss_fn(task)
    amp_dtype = resolve_amp(opts.amp, device)
    batch_size = opts.batch_size
    if batch_size == "auto":
        from calipers.gpu.finder import find_batch_size

        batch_size = find_batch_size(model, Xt, yt, loss_fn, device=device,
                                     amp_dtype=amp_dtype).size
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    on_device = _fits_on_device(Xt, yt, device)
    if on_device:
        Xt, yt = Xt.to(device), yt.to(device)
    from calipers.gpu import monitor as _monitor  # the run's GPU monitor, if any

    timers = _monitor.LoopTimers(device, batch_size=batch_size, data_on_device=on_device,
                                 amp=_AMP_NAMES.get(amp_dtype, ""),
                                 workers=0 if on_device else _LOADER_WORKERS)
    old_bench = torch.backends.cudnn.benchmark
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True
    gen = torch_generator(seed)
    n = Xt.shape[0]
    losses = []
    t0 = time.perf_counter()
    try:
        for epoch in range(opts.epochs):
            order = torch.randperm(n, generator=gen)
            idx = [order[start:start + batch_size] for start in range(0, n, batch_size)]
            if has_bn:  # a later batch of one sample breaks BatchNorm; skip it
                idx = idx[:1] + [i for i in idx[1:] if i.numel() >= 2]
            total = torch.zeros((), dtype=torch.float64, device=device)
            timers.epoch_start()
            for xb, yb in timers.wrap(_epoch_batches(Xt, yt, idx, device, on_device)):
                loss = train_step(model, xb, yb, loss_fn, optim, scaler, amp_dtype)
                total += loss.double() * xb.shape[0]
                timers.step_end()
            losses.append(float(total) / n)  # the epoch's one host synchronisation
            if not math.isfinite(losses[-1]):
                raise TrainingError(
                    f"the training loss became {losses[-1]} in epoch {epoch + 1} "
                    f"(lr = {opts.lr:g}): the network's outputs or gradients overflowed. Lower "
                    "[train] lr, or check the network's forward pass for NaN (log of 0, "
                    "division by 0).")
            timers.epoch_end()
            if progress is not None:
                progress(epoch + 1, opts.epochs, losses[-1])
    finally:
        torch.backends.cudnn.benchmark = old_bench
    return FitResult(tuple(losses), time.perf_counter() - t0, str(device), amp_dtype is not None,
                     _AMP_NAMES.get(amp_dtype, ""), int(batch_size), on_device)


_AMP_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}
