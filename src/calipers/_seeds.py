"""Seeds for tasks: children spawned from one user seed, never the global RNG.

# NOTE [Task seeds]
Every task (a fold of a network, a chunk of MC passes, a chunk of permutations) gets its seed
from ``np.random.SeedSequence(seed, spawn_key=keys)``, where ``keys`` name the task (fold index,
network name...). So a task's randomness depends only on the user's seed and its own identity, not
on the order tasks run in, on chunking, or on the executor.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__: list[str] = []


def _key(part: int | str) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part)


def child_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the task named by ``keys`` (see NOTE [Task seeds])."""
    ss = np.random.SeedSequence(int(seed), spawn_key=tuple(_key(k) for k in keys))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


@contextmanager
def seeded_torch(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global RNGs inside the block and restore their state afterwards.

    For modules such as ``nn.Dropout`` that draw from the global generator and take none.
    Seeds (and restores) the CPU generator and, for a CUDA ``device``, the generator of that
    device — ``"cuda"`` without an index meaning the current one, where torch runs it — and
    leaves every other GPU's generator alone.
    """
    devices = _rng_devices(torch.device(device))
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(int(seed))
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(int(seed))
        yield


def _rng_devices(dev: torch.device) -> list[int]:
    """The CUDA device indices whose generator a computation on ``dev`` draws from."""
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]
