"""``train.batch_size = "auto"``: the batch size that fills the device.

On CUDA the largest batch whose training step fits in memory: double until out of memory, bisect
between the last size that fitted and the first that did not, then keep a safety margin (90 %)
for fragmentation and the variation between batches. On the CPU memory is rarely the limit and
larger batches stop paying off first: the size where doubling raises throughput (samples per
second) by no more than 5 %. The search functions take the probe as an argument, so they are
tested against simulated thresholds; :func:`find_batch_size` builds the probe from a real model.
"""

from __future__ import annotations

import contextlib
import copy
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["BatchSizeChoice", "BatchSizeError", "find_batch_size", "no_fit_message",
           "plateau_batch_size", "search_batch_size"]

MARGIN = 0.9
GAIN = 0.05
_PROBE_SECONDS = 0.2  # CPU: each size trains at least this long (timings on a busy machine)


class BatchSizeError(ValueError):
    """Not even one sample fits; ``needed_bytes`` is the memory one step asked for."""

    def __init__(self, message: str, needed_bytes: int | None = None) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes


@dataclass(frozen=True)
class BatchSizeChoice:
    """The chosen ``size``, the ``largest`` that worked, how (``"memory"`` or
    ``"throughput"``) and the probes made (size → fitted, or samples/s)."""

    size: int
    largest: int
    method: str
    probes: dict[int, float]

    def to_dict(self) -> dict:
        return {**asdict(self), "probes": {str(k): v for k, v in self.probes.items()}}


def search_batch_size(fits: Callable[[int], bool], *, limit: int, margin: float = MARGIN
                      ) -> BatchSizeChoice:
    """The largest ``b <= limit`` with ``fits(b)``, by doubling from 1 and bisecting, times
    ``margin`` (at least 1). Raises :class:`BatchSizeError` when ``fits(1)`` is false.

    Examples
    --------
    >>> search_batch_size(lambda b: b <= 300, limit=10_000).size
    270
    """
    probes: dict[int, float] = {}

    def ok(b: int) -> bool:
        probes[b] = float(fits(b))
        return bool(probes[b])

    if not ok(1):
        raise BatchSizeError("not even one sample fits")
    good, bad = 1, None
    while bad is None and good < limit:
        b = min(2 * good, limit)
        if ok(b):
            good = b
        else:
            bad = b
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    size = good if bad is None else max(1, int(good * margin))
    return BatchSizeChoice(size, good, "memory", probes)


def plateau_batch_size(throughput: Callable[[int], float], *, limit: int, gain: float = GAIN,
                       patience: int = 2) -> BatchSizeChoice:
    """The largest power of two ``b <= limit`` whose ``throughput`` beat the best smaller size
    by more than ``gain`` (5 %); the search stops after ``patience`` doublings in a row without
    such a gain (two, so that one noisy timing does not end it).

    Examples
    --------
    >>> plateau_batch_size(lambda b: 1000 * b / (b + 16), limit=10_000).size
    256
    """
    probes = {1: throughput(1)}
    best, misses, b = 1, 0, 1
    while 2 * b <= limit and misses < patience:
        b *= 2
        probes[b] = throughput(b)
        if probes[b] > (1 + gain) * probes[best]:
            best, misses = b, 0
        else:
            misses += 1
    return BatchSizeChoice(best, max(probes), "throughput", probes)


_CACHE: dict[tuple, BatchSizeChoice] = {}


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def find_batch_size(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, *,
    device: torch.device, amp_dtype: torch.dtype | None = None, limit: int | None = None,
) -> BatchSizeChoice:
    """The batch size for training ``model`` on ``(X, y)`` (see the module docstring).

    Probes train a copy of ``model`` with its own optimiser; the model, its optimiser state and
    the random generators are left as they were. The choice is cached per model class, size,
    sample shape, device and precision for the process (folds do not repeat the search), and
    recorded in the active monitor's ``gpu.json`` under ``batch_size``, per network.
    """
    from calipers.gpu.monitor import record

    limit = int(min(limit or X.shape[0], X.shape[0]))
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()),
           tuple(X.shape[1:]), str(device), str(amp_dtype), limit)
    if key not in _CACHE:
        _CACHE[key] = _search(model, X, y, loss_fn, device, amp_dtype, limit)
    choice = _CACHE[key]
    record("batch_size", {f"{key[0]} ({key[1]:,} parameters)": choice.to_dict()}, merge=True)
    return choice


def no_fit_message(shape: tuple[int, ...], device: torch.device | str, oom: str, free: int,
                   total: int, n_params: int) -> str:
    """The error for a batch of one that does not fit: the memory the step asked for (from
    torch's out-of-memory message ``oom``), the memory free, and what to change."""
    m = re.search(r"Tried to allocate ([\d.]+ [KMGT]i?B)", oom)
    asked = m.group(1) if m else "more than was free"
    return (f"train.batch_size = \"auto\": not even one sample of shape {shape} fits on "
            f"{device}: one training step asked for {asked} with {_gib(free)} of {_gib(total)} "
            f"free (weights, gradients and Adam state alone take {_gib(16 * n_params)}). Use "
            "smaller inputs (patches), a smaller network, amp = \"auto\", or a GPU with more "
            "memory.")


def _search(model, X, y, loss_fn, device, amp_dtype, limit) -> BatchSizeChoice:
    probe = copy.deepcopy(model).to(device).train()
    optim = torch.optim.Adam(probe.parameters(), lr=1e-12)
    cuda = device.type == "cuda"

    def step(b: int) -> None:
        idx = torch.arange(b) % X.shape[0]
        xb, yb = X[idx.to(X.device)].to(device), y[idx.to(y.device)].to(device)
        optim.zero_grad(set_to_none=True)
        with (torch.autocast("cuda", dtype=amp_dtype) if cuda and amp_dtype is not None
              else contextlib.nullcontext()):
            loss = loss_fn(probe(xb).float(), yb)
        loss.backward()
        optim.step()

    devices = [torch.cuda.current_device() if device.index is None else device.index] \
        if cuda else []
    with torch.random.fork_rng(devices=devices):
        if not cuda:
            def throughput(b: int) -> float:
                step(b)  # warm-up
                steps, t = 0, time.perf_counter()
                while steps < 3 or time.perf_counter() - t < _PROBE_SECONDS:
                    step(b)
                    steps += 1
                return b * steps / (time.perf_counter() - t)

            return plateau_batch_size(throughput, limit=limit)
        last_oom: list[str] = []

        def fits(b: int) -> bool:
            torch.cuda.empty_cache()
            try:
                step(b)
                torch.cuda.synchronize(device)
                return True
            except torch.cuda.OutOfMemoryError as exc:
                last_oom[:] = [str(exc)]
                return False
            finally:
                optim.zero_grad(set_to_none=True)

        try:
            return search_batch_size(fits, limit=limit)
        except BatchSizeError:
            free, total = torch.cuda.mem_get_info(device)
            raise BatchSizeError(no_fit_message(
                tuple(X.shape[1:]), device, last_oom[0] if last_oom else "", free, total,
                sum(p.numel() for p in model.parameters()))) from None
        finally:
            optim.state.clear()
            torch.cuda.empty_cache()
