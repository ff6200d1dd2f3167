"""Resolve the ``device`` argument once, at the boundary."""

from __future__ import annotations

import torch

from calipers._checks import warn_user
from calipers._options import DeviceKind, did_you_mean

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:i" | torch.device`` into a ``torch.device``.

    ``"auto"`` picks CUDA when available, else the CPU. Asking for CUDA on a machine without it
    falls back to the CPU with a :class:`CalipersWarning`: the run goes on, slower, and its
    numbers are those of a CPU run — close to, but not bit-identical with, what the GPU would
    give (other kernels and random streams). Pass ``device="cpu"`` to ask for the CPU.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        text = str(device).strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(text)
        except RuntimeError as exc:
            hint = did_you_mean(text.partition(":")[0], DeviceKind) or "."
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'; got {device!r}{hint}"
            ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            warn_user(f"device {str(dev)!r} was asked for but CUDA is not available; using the "
                      "CPU (slower; numbers as on a CPU, not bit-identical with a GPU run). Set "
                      "device = 'cpu' to silence this.")
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(dev)!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1})."
            )
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]'; got {device!r}.")
    return dev
