"""The ``calipers`` learner: calipers' own loop (:func:`calipers.evaluation.train.fit`).

The engine runs these networks with :func:`calipers.evaluation.cv.run_fold` (or stacked,
:mod:`calipers.batched`), exactly as before learners existed; this adapter gives the same loop
the :class:`~calipers.learners.base.Learner` face for code that wants one object per fold, and
loads any calipers-loop fold (``model.pt``, rebuilt from the network's ``model``/``args``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.train import TrainOptions, fit
from calipers.exceptions import ConfigError
from calipers.models import build_network
from calipers.runs import atomic_path

from .base import KNOWN_TRAIN_KEYS, FitSettings, FoldData, Predictor, SavedFold
from .torch_predictor import TorchPredictor, load_weights

__all__ = ["CalipersLearner"]


class CalipersLearner:
    """calipers' loop: Adam, constant learning rate, the network built by ``model``."""

    name = "calipers"

    def require(self, name: str, spec: NetworkSpec) -> None:
        return None  # torch is a core dependency

    def check(self, name: str, spec: NetworkSpec, data: Any, *, n_mc: int) -> bool | None:
        extra = sorted(set(spec.train) - set(KNOWN_TRAIN_KEYS))
        if extra:
            raise ConfigError(f"networks.{name}.train: {extra} are not settings of calipers' "
                              f"own loop (it knows {', '.join(KNOWN_TRAIN_KEYS)}); pass-through "
                              "options are for learners 'function', 'sklearn', 'keras' and "
                              "'lightning'.")
        return None  # the engine checks calipers' own networks (check_networks)

    def fit(self, spec: NetworkSpec, fold: FoldData, *, seed: int,
            settings: FitSettings) -> Predictor:
        torch.manual_seed(seed)
        model = build_network(spec.model, spec.args, input_shape=fold.input_shape,
                              n_outputs=fold.n_outputs)
        opts = TrainOptions(epochs=settings.epochs, batch_size=settings.batch_size,
                            lr=settings.lr, weight_decay=settings.weight_decay,
                            device=settings.device)
        res = fit(model, fold.X, fold.y, task=fold.task, options=opts, seed=seed)
        return _Native(model, fold.task, res.device, res.seconds)

    def load(self, spec: NetworkSpec, saved: SavedFold) -> Predictor:
        """The network built from ``model``/``args`` with the fold's ``model.pt`` weights."""
        model = build_network(spec.model, spec.args, input_shape=saved.input_shape,
                              n_outputs=saved.n_outputs)
        load_weights(model, saved.file("model.pt"))
        return _Native(model, saved.task, saved.device, 0.0)


class _Native(TorchPredictor):
    framework = "calipers"

    def __init__(self, model: torch.nn.Module, task: str, device: str, seconds: float) -> None:
        super().__init__(model, task, device)
        self.seconds = seconds

    def save(self, folder: Path) -> list[str]:
        with atomic_path(Path(folder) / "model.pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, tmp)
        return ["model.pt"]
