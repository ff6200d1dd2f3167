"""Networks: small reference models and loading of user models from ``"module:callable"``."""

from calipers.models.loading import build_network, resolve_callable
from calipers.models.reference import CNN, MLP

__all__ = ["CNN", "MLP", "build_network", "resolve_callable"]
