"""Networks: small reference models and loading of user models from ``"module:callable"``.

``UNet`` (MONAI-based, for segmentation) is imported on first use, so MONAI is needed only by
those who segment.
"""

from calipers.models.loading import build_network, resolve_callable
from calipers.models.reference import CNN, MLP

__all__ = ["CNN", "MLP", "UNet", "build_network", "resolve_callable"]


def __getattr__(name: str):
    if name == "UNet":
        from calipers.models.unet import UNet

        return UNet
    raise AttributeError(f"module 'calipers.models' has no attribute {name!r}")
