"""2-D and 3-D U-Net with dropout for segmentation, built on MONAI's ``UNet``.

MONAI's residual U-Net places ``nn.Dropout`` in every convolution block (norm → dropout → act,
``adn_ordering="NDA"``), so MC dropout samples the whole network, not just a head. calipers only
adapts it to the data (``input_shape``/``n_outputs``) and checks the arguments once.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNet as _MonaiUNet

__all__ = ["UNet"]

_NORMS = ("instance", "batch", "none")


class UNet(_MonaiUNet):
    """MONAI residual U-Net whose spatial dimensionality follows the data.

    Parameters
    ----------
    input_shape : (C, H, W) or (C, D, H, W)
        Shape of one image: channels first, then 2 or 3 spatial axes.
    n_outputs : int
        Number of classes (background included); the output holds one logit per class.
    channels : sequence of int, default (16, 32, 64, 128)
        Feature channels per level; level ``i + 1`` is downsampled by 2 from level ``i``.
    dropout : float in [0, 1), default 0.1
        Drop probability of the ``nn.Dropout`` in every convolution block.
    num_res_units : int, default 1
        Residual units per block (0: plain convolutions).
    norm : {"instance", "batch", "none"}, default "instance"
        Normalisation layer of every block.

    Notes
    -----
    Each spatial size must be divisible by ``2 ** (len(channels) - 1)``; calipers pads inputs
    to such sizes (``calipers.segmentation.data.pad_multiple``).

    Shape
    -----
    Input ``(N, C, *S)``; output ``(N, n_outputs, *S)`` logits.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_outputs: int,
        *,
        channels: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.1,
        num_res_units: int = 1,
        norm: str = "instance",
    ) -> None:
        shape, chans, p, norm = _unet_iv(input_shape, n_outputs, channels, dropout, norm)
        super().__init__(
            spatial_dims=len(shape) - 1, in_channels=shape[0], out_channels=int(n_outputs),
            channels=chans, strides=(2,) * (len(chans) - 1), num_res_units=int(num_res_units),
            norm=None if norm == "none" else norm.upper(), dropout=p,
        )
        self.dropout_p = p
        self.input_shape = shape

    @property
    def multiple(self) -> int:
        """Spatial sizes must be multiples of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.channels) - 1)


def _unet_iv(input_shape, n_outputs, channels, dropout, norm):
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"UNet needs input_shape (C, H, W) or (C, D, H, W); got {shape}. Segmentation data "
            "gives (1, *spatial) for single-channel images."
        )
    if isinstance(n_outputs, bool) or int(n_outputs) < 2:
        raise ValueError(f"n_outputs must be >= 2 (background and at least one label); got "
                         f"{n_outputs!r}.")
    chans = tuple(int(c) for c in channels)
    if len(chans) < 2 or min(chans) < 1:
        raise ValueError(f"channels must list >= 2 positive widths, e.g. [16, 32, 64]; got "
                         f"{list(channels)!r}.")
    p = float(dropout)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1); got {dropout!r}.")
    norm = str(norm).lower()
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {', '.join(_NORMS)}; got {norm!r}.")
    return shape, chans, p, norm
