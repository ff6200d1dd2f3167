"""Member random streams of the stacked engine: sample orders and dropout keep masks.

# NOTE [Member randomness]
Member m owns a NumPy ``PCG64`` generator seeded with ``child_seed(seed_m, "train")``. Per block of
``E_c`` epochs (``E_c`` depends only on the member's n and architecture, never on the group) it
draws ``4·E_c·n`` bytes, read as little-endian uint32 sort keys ``(E_c, n)`` (the epoch's sample
order is their stable argsort), then ``2·E_c·n·U`` bytes, read as uint16 ``(E_c, n, U)``: the
dropout draws of the sample in that *position* of the epoch (input units first when
``input_dropout``, then each hidden layer). A unit is kept when its draw is ``>= r``, with
``r = round(65536·p)``, and scaled by ``65536/(65536 − r)`` (inverted dropout), so the dropout
rate used is ``r/65536`` (|error| ≤ 7.7e-6). MC passes use ``child_seed(seed_m, "mc")`` and
``2·k·n_test·U`` bytes per chunk of k passes. Raw bytes are 5× cheaper than float uniforms, and
drawing on the CPU makes GPU runs give the same numbers as CPU runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from calipers.batched.members import MLPArch

__all__: list[str] = []

_RANDOM_BYTES = 1 << 19  # random bytes per member per draw (NOTE [Member randomness])


def _epoch_block(n: int, arch: MLPArch) -> int:
    """Epochs per random draw of a member with n rows (NOTE [Member randomness])."""
    return max(1, _RANDOM_BYTES // (n * (4 + 2 * arch.n_units)))


def _mc_block(n: int, arch: MLPArch) -> int:
    """MC passes per chunk for n test rows."""
    return max(1, _RANDOM_BYTES // (2 * n * max(arch.n_units, 1)))


def _threshold(p: float) -> int:
    """``r = round(65536·p)``: a unit is dropped when its uint16 draw is below r."""
    return round(float(p) * 65536.0)


def _keep_scale(p: torch.Tensor | float) -> torch.Tensor | float:
    """``65536 / (65536 − r)``, the inverted-dropout scale of the rate actually used."""
    if isinstance(p, torch.Tensor):
        r = torch.round(p.double() * 65536.0)
        return (65536.0 / (65536.0 - r)).float()
    return 65536.0 / (65536.0 - _threshold(p))


def _new_generator(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed)))


def _random_bytes(gen: np.random.Generator, length: int) -> np.ndarray:
    """``gen.bytes(length)`` as a uint8 array, 3× faster: the same uint32 stream (the low then
    the high half of each 64-bit PCG64 output, carrying a buffered half between calls) read
    with ``random_raw``."""
    bitgen = gen.bit_generator
    if length <= 0 or sys.byteorder != "little" or not isinstance(bitgen, np.random.PCG64):
        return np.frombuffer(gen.bytes(length), dtype=np.uint8)
    n32 = (length - 1) // 4 + 1
    state = bitgen.state
    head = int(state["has_uint32"])
    out = np.empty(n32 if head else 0, dtype=np.uint32)
    if head:
        out[0] = state["uinteger"]
        state["has_uint32"] = 0
        bitgen.state = state
    rest = n32 - head
    if rest:
        raw = bitgen.random_raw((rest + 1) // 2)
        if not head:
            out = raw.view(np.uint32)[:rest]
        else:
            out[head:] = raw.view(np.uint32)[:rest]
        if rest % 2:  # the high half of the last output stays buffered, as gen.bytes leaves it
            state = bitgen.state
            state["has_uint32"], state["uinteger"] = 1, int(raw[-1] >> np.uint64(32))
            bitgen.state = state
    return out.view(np.uint8)[:length]


def _draw_keep(gen: np.random.Generator, shape: tuple[int, ...], p: float,
               out: Sequence[np.ndarray]) -> None:
    """Keep masks from ``2·prod(shape)`` bytes of ``gen``, ``shape = (…, U)``, written into
    ``out``: boolean arrays ``(…, w)`` that split the U units (``arch.unit_parts``)."""
    count = int(np.prod(shape))
    u = _random_bytes(gen, 2 * count).view("<u2").reshape(shape)
    r, lo = _threshold(p), 0
    for o in out:
        np.greater_equal(u[..., lo:lo + o.shape[-1]], r, out=o)
        lo += o.shape[-1]


def _draw_masks(gens: Sequence[np.random.Generator], ps: Sequence[float], shape: tuple[int, ...],
                parts: Sequence[int], out: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Keep masks of every member: one ``(M, *shape, w)`` bool array per entry of ``parts``
    (written into ``out`` when given)."""
    if out is None:
        out = [np.empty((len(gens), *shape, w), dtype=bool) for w in parts]
    for i, (g, p) in enumerate(zip(gens, ps, strict=True)):
        _draw_keep(g, (*shape, sum(parts)), p, [o[i] for o in out])
    return out


def _draw_orders(gens: Sequence[np.random.Generator], epochs: int, n: int) -> np.ndarray:
    """Sample orders ``(M, E, n)`` int64 of a block of E epochs, member by member.

    The order is the stable argsort of the uint32 keys, computed as one sort of
    ``key·2³² + position`` (unique values, so any sort gives the stable order; 4× faster). The
    masks of the block's epochs follow in each member's stream; drawing them one epoch at a time
    (:func:`_draw_masks`, just before the epoch, while they fit in cache) reads the same bytes."""
    orders = np.empty((len(gens), epochs, n), dtype=np.int64)
    pos = np.arange(n, dtype=np.uint64)
    for i, g in enumerate(gens):
        keys = _random_bytes(g, 4 * epochs * n).view("<u4").reshape(epochs, n)
        packed = np.sort((keys.astype(np.uint64) << np.uint64(32)) | pos, axis=1)
        np.bitwise_and(packed, np.uint64(0xFFFFFFFF), out=orders[i], casting="unsafe")
    return orders
