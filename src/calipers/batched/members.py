"""The stacked engine's inputs: the architecture, the members, their fits and their checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from calipers._checks import _check_finite
from calipers._seeds import child_seed, torch_generator
from calipers.batched.randomness import _threshold

__all__ = ["MLPArch", "Member", "MemberFit", "init_weights"]

_DEFAULT_GROUP_BYTES = 1 << 30


@dataclass(frozen=True)
class MLPArch:
    """A fully connected ReLU network ``n_inputs → hidden… → n_outputs`` with dropout before every
    linear layer after the first and, when ``input_dropout`` (Gal & Ghahramani 2016), on the
    inputs too. ``loss``: ``"mse"`` (regression, ``n_outputs`` targets) or ``"cross_entropy"``
    (classification, ``n_outputs`` classes, logits out)."""

    n_inputs: int
    hidden: tuple[int, ...] = (50,)
    n_outputs: int = 1
    input_dropout: bool = True
    loss: str = "mse"

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "cross_entropy"):
            raise ValueError(f"MLPArch loss must be 'mse' or 'cross_entropy'; got {self.loss!r}.")
        if self.loss == "cross_entropy" and self.n_outputs < 2:
            raise ValueError(f"cross_entropy needs n_outputs >= 2 classes; got {self.n_outputs}.")
        widths = (self.n_inputs, *self.hidden, self.n_outputs)
        if any(isinstance(w, bool) or int(w) != w or w < 1 for w in widths) or not self.hidden:
            raise ValueError(f"MLPArch needs n_inputs, n_outputs >= 1 and at least one hidden "
                             f"width >= 1; got n_inputs={self.n_inputs!r}, hidden="
                             f"{self.hidden!r}, n_outputs={self.n_outputs!r}.")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden, self.n_outputs)

    @property
    def unit_parts(self) -> tuple[int, ...]:
        """Dropout units per layer: the inputs (when ``input_dropout``), then each hidden layer."""
        return ((self.n_inputs,) if self.input_dropout else ()) + self.hidden

    @property
    def n_units(self) -> int:
        """Number of dropout units U per sample (NOTE [Member randomness])."""
        return (self.n_inputs if self.input_dropout else 0) + sum(self.hidden)


@dataclass(frozen=True, eq=False)
class Member:
    """One model to train: its (standardised) data, dropout rate, weight decay and seed.

    ``X`` is ``(n, n_inputs)``, ``y`` is ``(n,)`` or ``(n, n_outputs)``; ``weight_decay`` is the
    coupled L2 coefficient of Adam on the weights (and on the biases too when ``decay_biases``,
    as ``torch.optim.Adam(model.parameters(), weight_decay=…)`` does): the gradient gets
    ``weight_decay · W``, i.e. the loss gets ``weight_decay/2 · ‖W‖²``. ``init`` is
    ``[(W (fan_in, fan_out), b (fan_out,)), …]``; ``None`` draws :func:`init_weights` (``seed``).
    """

    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    dropout: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    init: tuple | None = field(default=None, repr=False)
    decay_biases: bool = False


@dataclass(frozen=True)
class MemberFit:
    """A trained member: weights ``[(W, b), …]`` (NumPy, float32), mean training loss per epoch
    (MSE on the standardised targets, without the L2 term), and the wall time of its group (s)."""

    weights: tuple = field(repr=False)
    dropout: float
    losses: tuple[float, ...] = field(repr=False)
    seconds: float
    group_size: int

    def to_dict(self) -> dict:
        return {"dropout": self.dropout, "final_loss": self.losses[-1] if self.losses else None,
                "seconds": self.seconds, "group_size": self.group_size,
                "shapes": [list(w.shape) for w, _ in self.weights]}


def init_weights(arch: MLPArch, seed: int) -> tuple:
    """PyTorch's ``nn.Linear`` default: W and b uniform in ±1/√fan_in, from ``seed``.

    Returns ``((W (fan_in, fan_out), b (fan_out,)), …)`` as float32 NumPy arrays.
    """
    gen = torch_generator(child_seed(seed, "init"))
    out = []
    for fan_in, fan_out in zip(arch.widths[:-1], arch.widths[1:], strict=True):
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
        out.append((w.numpy(), b.numpy()))
    return tuple(out)


def _check_labels(i: int, y: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, bool)):
        raise ValueError(f"members[{i}].y must be ({n},) integer class indices for a "
                         f"cross_entropy MLPArch; got shape {y.shape} and dtype {y.dtype}.")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"members[{i}].y holds class indices outside 0..{n_classes - 1} "
                         f"(min {y.min()}, max {y.max()}); set MLPArch n_outputs to the number "
                         "of classes.")
    return y.astype(np.int64)


def _check_member(i: int, m: Member, arch: MLPArch) -> Member:
    X = np.asarray(m.X, dtype=np.float32)
    if arch.loss == "cross_entropy":
        y = _check_labels(i, m.y, len(X), arch.n_outputs)
        shape_ok = True
    else:
        y = np.asarray(m.y, dtype=np.float32)
        y = y[:, None] if y.ndim == 1 else y
        shape_ok = y.shape == (len(X), arch.n_outputs)
    if X.ndim != 2 or X.shape[1] != arch.n_inputs or not shape_ok:
        raise ValueError(
            f"members[{i}]: X must be (n, {arch.n_inputs}) and y (n,) or (n, {arch.n_outputs}) "
            f"for this architecture; got X {X.shape} and y {np.shape(m.y)}. Build MLPArch from "
            "the data or pass matching arrays.")
    if len(X) < 1:
        raise ValueError(f"members[{i}]: X has no rows; each member needs training data.")
    _check_finite(X, name=f"members[{i}].X")
    if arch.loss == "mse":
        _check_finite(y, name=f"members[{i}].y")
    if not 0.0 <= float(m.dropout) < 1.0:
        raise ValueError(f"members[{i}].dropout must be in [0, 1); got {m.dropout!r}.")
    if not float(m.weight_decay) >= 0.0:
        raise ValueError(f"members[{i}].weight_decay must be >= 0; got {m.weight_decay!r}.")
    init = m.init if m.init is not None else init_weights(arch, m.seed)
    shapes = [(np.shape(w), np.shape(b)) for w, b in init]
    want = [((a, b), (b,)) for a, b in zip(arch.widths[:-1], arch.widths[1:], strict=True)]
    if shapes != want:
        raise ValueError(f"members[{i}].init has layer shapes {shapes}; the architecture needs "
                         f"{want} (W is (fan_in, fan_out)).")
    if _threshold(float(m.dropout)) >= 65536:
        raise ValueError(f"members[{i}].dropout={m.dropout!r} rounds to 1 at 16-bit resolution; "
                         "use a rate below 0.99999.")
    return Member(X, y, float(m.dropout), float(m.weight_decay), int(m.seed), tuple(init),
                  bool(m.decay_biases))


def _groups(sizes: Sequence[int], per_member: Sequence[int], batched: bool,
            max_bytes: int) -> list[list[int]]:
    """Members with equal ``sizes`` share a step schedule; cap each group at ``max_bytes``."""
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(sizes):
        by_size.setdefault(s, []).append(i)
    out = []
    for idx in by_size.values():
        cap = 1 if not batched else max(1, max_bytes // max(per_member[idx[0]], 1))
        out += [idx[k:k + cap] for k in range(0, len(idx), cap)]
    return out


def _stack_params(members: Sequence[Member], device: torch.device) -> list[torch.Tensor]:
    params = []
    for layer in range(len(members[0].init)):
        for part in (0, 1):
            t = torch.stack([torch.as_tensor(np.asarray(m.init[layer][part], dtype=np.float32))
                             for m in members])
            params.append(t.to(device).requires_grad_(True))
    return params
