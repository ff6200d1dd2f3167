"""A predictor around a trained ``torch.nn.Module`` that returns logits (or means)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from calipers._seeds import seeded_torch
from calipers.evaluation.contracts import has_active_dropout
from calipers.exceptions import DataError
from calipers.runs import atomic_path
from calipers.uncertainty.mc import mc_dropout_mode

from .base import Predictor

__all__ = ["TorchPredictor", "load_weights"]


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load the state dict at ``path`` into ``model`` (``weights_only=True``: no code runs);
    :class:`~calipers.exceptions.DataError` when it is damaged or does not fit the model."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # RuntimeError, UnpicklingError, EOFError, ...
        raise DataError(f"{path}: cannot load the fold's weights ({type(exc).__name__}: "
                        f"{exc}); the file is damaged or not a state dict.") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: the weights do not fit the network built from the run's "
                        f"config ({str(exc).splitlines()[0]}); was the network's code or args "
                        "changed since the run?") from None
    return model


class TorchPredictor(Predictor):
    """Predicts with ``model`` (logits for classification, means for regression).

    MC passes run with only the dropout modules in train mode
    (:func:`calipers.uncertainty.mc.mc_dropout_mode`: BatchNorm statistics untouched).
    """

    framework = "torch"

    def __init__(self, model: torch.nn.Module, task: str, device: str | torch.device,
                 batch_size: int = 1024) -> None:
        self.model, self.task, self.device = model, task, torch.device(device)
        self.batch_size = batch_size

    def _forward(self, X: np.ndarray) -> np.ndarray:
        outs = []
        with torch.inference_mode():
            for start in range(0, len(X), self.batch_size):
                xb = torch.as_tensor(np.asarray(X[start:start + self.batch_size]),
                                     dtype=torch.float32, device=self.device)
                out = self.model(xb).float()
                if self.task == "classification":
                    out = torch.softmax(out, dim=1)
                outs.append(out.cpu().numpy().astype(np.float64))
        return np.concatenate(outs)

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.model.to(self.device).eval()
        return self._forward(X)

    def predict_mc(self, X: np.ndarray, n_mc: int, *, seed: int) -> np.ndarray | None:
        if not has_active_dropout(self.model):
            return None
        self.model.to(self.device)
        with mc_dropout_mode(self.model), seeded_torch(seed, self.device):
            return np.stack([self._forward(X) for _ in range(n_mc)])

    def save(self, folder: Path) -> list[str]:
        with atomic_path(Path(folder) / "model.pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, tmp)
        return ["model.pt"]

    def describe(self) -> dict[str, Any]:
        return {"framework": self.framework, "version": torch.__version__,
                "backend": "torch", "device": str(self.device),
                "n_params": int(sum(p.numel() for p in self.model.parameters()))}
