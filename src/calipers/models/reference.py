"""Small reference networks that adapt to the data: ``MLP`` and ``CNN``.

Both are plain ``nn.Sequential`` stacks whose dropout comes after a deterministic trunk, so MC
dropout can compute the trunk once (see :func:`calipers.uncertainty.mc.mc_predict`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

__all__ = ["CNN", "MLP"]


def _check_dropout(p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1); got {p!r}.")
    return float(p)


def _check_n_outputs(n_outputs: int) -> int:
    if int(n_outputs) < 1:
        raise ValueError(f"n_outputs must be >= 1; got {n_outputs!r}.")
    return int(n_outputs)


class MLP(nn.Sequential):
    """Multi-layer perceptron with dropout after every hidden layer.

    Parameters
    ----------
    input_shape : sequence of int
        Shape of one sample, e.g. ``(13,)`` or ``(1, 8, 8)``; inputs are flattened.
    n_outputs : int
        Number of classes (logits) or regression targets.
    hidden : sequence of int, default (128, 128)
        Width of each hidden layer.
    dropout : float, default 0.1
        Drop probability after each hidden activation.
    input_dropout : bool, default False
        Drop inputs too, with the same probability (Gal & Ghahramani's UCI networks).

    Shape
    -----
    Input ``(N, *input_shape)``; output ``(N, n_outputs)``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_outputs: int,
        *,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.1,
        input_dropout: bool = False,
    ) -> None:
        p = _check_dropout(dropout)
        n_out = _check_n_outputs(n_outputs)
        if len(hidden) == 0:
            raise ValueError("hidden must list at least one layer width, e.g. hidden = [64].")
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(nn.Dropout(p))
        width = math.prod(int(s) for s in input_shape)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(p)]
            width = int(h)
        layers.append(nn.Linear(width, n_out))
        super().__init__(*layers)
        self.dropout = p
        self.input_dropout = bool(input_dropout)


class CNN(nn.Sequential):
    """Two convolution blocks with BatchNorm, then a dropout-regularised classifier head.

    ``conv3x3(C→c)–BN–ReLU, conv3x3(c→2c)–BN–ReLU, maxpool 2, adaptive avg-pool to 4×4``, then
    ``dropout, linear(32c→4c), ReLU, dropout, linear(4c→n_outputs)``. Works for any image size
    ≥ 2×2; the deterministic trunk ends before the first dropout.

    Parameters
    ----------
    input_shape : (C, H, W)
        Shape of one image.
    n_outputs : int
        Number of classes (logits) or regression targets.
    channels : int, default 16
        Channels of the first convolution (the second has twice as many).
    dropout : float, default 0.1
        Drop probability in the head.

    Shape
    -----
    Input ``(N, C, H, W)``; output ``(N, n_outputs)``.
    """

    def __init__(
        self, input_shape: Sequence[int], n_outputs: int, *, channels: int = 16,
        dropout: float = 0.1,
    ) -> None:
        p = _check_dropout(dropout)
        n_out = _check_n_outputs(n_outputs)
        if len(input_shape) != 3:
            raise ValueError(
                f"CNN needs images of shape (C, H, W); got samples of shape {tuple(input_shape)}. "
                "Use calipers.models:MLP for tabular data or reshape X to (N, C, H, W)."
            )
        c_in, h, w = (int(s) for s in input_shape)
        if min(h, w) < 2:
            raise ValueError(f"CNN needs images of at least 2x2 pixels; got {h}x{w}.")
        c = int(channels)
        if c < 1:
            raise ValueError(f"channels must be >= 1; got {channels!r}.")
        super().__init__(
            nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Dropout(p), nn.Linear(2 * c * 16, 4 * c), nn.ReLU(),
            nn.Dropout(p), nn.Linear(4 * c, n_out),
        )
        self.dropout = p
