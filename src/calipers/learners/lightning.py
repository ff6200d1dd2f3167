"""The ``lightning`` learner: a ``LightningModule`` trained by its own Trainer per fold.

``model = "pkg.module:LitNet"`` names the module class (or a function returning a module),
built like calipers' own networks: ``input_shape``/``n_outputs`` are passed when it takes them,
``args`` as keyword arguments. Its ``forward`` returns logits (classification) or means
(regression); its own ``training_step`` and ``configure_optimizers`` train it. Each fold gets
a fresh ``lightning.Trainer`` (``max_epochs`` from the network's training settings, the fold's
device, no logger, no checkpoints, no progress bar, its root folder a temporary folder that is
removed afterwards, so nothing is written outside the run folder), and the fold's seed;
keys of ``[networks.NAME.train]`` that calipers does not know are passed to the Trainer. The
training samples come as a ``DataLoader`` of ``(x, y)`` batches of ``batch_size``, shuffled
with a generator seeded from the fold's seed. MC dropout runs the module's dropout layers in
train mode, BatchNorm in eval mode. The state dict is saved as ``model.pt`` and loaded back
into a module built the same way (``weights_only=True``).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import torch

from calipers._seeds import seeded_torch, torch_generator
from calipers.evaluation.contracts import check_network, has_active_dropout
from calipers.evaluation.cv import NetworkSpec
from calipers.exceptions import ConfigError
from calipers.models import build_network

from .base import FitSettings, FoldData, Predictor, SavedFold, require
from .torch_predictor import TorchPredictor, load_weights

__all__ = ["LightningLearner"]


def _build(spec: NetworkSpec, name: str, input_shape: tuple[int, ...],
           n_outputs: int) -> Any:
    import lightning

    try:
        module = build_network(spec.model, spec.args, input_shape=input_shape,
                               n_outputs=n_outputs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"network {name!r} ({spec.describe()}): {exc}") from None
    if not isinstance(module, lightning.LightningModule):
        raise ConfigError(f"network {name!r}: {spec.describe()} gives a "
                          f"{type(module).__name__}, not a lightning.LightningModule; the "
                          "lightning learner needs one (with training_step and "
                          "configure_optimizers).")
    return module


class LightningLearner:
    """Fits a LightningModule with a fresh Trainer per fold."""

    name = "lightning"

    def require(self, name: str, spec: NetworkSpec) -> None:
        require("lightning", learner="lightning", network=name, extra="lightning")

    def check(self, name: str, spec: NetworkSpec, data: Any, *, n_mc: int) -> bool | None:
        probe = _build(spec, name, tuple(data.input_shape), int(data.n_outputs))
        check_network(probe, data.X[:2], task=data.task, n_outputs=data.n_outputs,
                      network=f"{name!r} ({spec.describe()})")
        return has_active_dropout(probe)

    def fit(self, spec: NetworkSpec, fold: FoldData, *, seed: int,
            settings: FitSettings) -> Predictor:
        import lightning

        dev = torch.device(settings.device)
        with seeded_torch(seed, dev):
            module = _build(spec, fold.network, fold.input_shape, fold.n_outputs)
        X = torch.as_tensor(np.asarray(fold.X), dtype=torch.float32)
        dtype = torch.long if fold.task == "classification" else torch.float32
        y = torch.as_tensor(np.asarray(fold.y), dtype=dtype)
        if fold.task == "regression" and y.ndim == 1:
            y = y[:, None]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(X, y), batch_size=settings.batch_size,
            shuffle=True, generator=torch_generator(seed))
        options = {"max_epochs": settings.epochs, "logger": False,
                   "enable_checkpointing": False, "enable_progress_bar": False,
                   "enable_model_summary": False, "num_sanity_val_steps": 0,
                   "accelerator": "gpu" if dev.type == "cuda" else "cpu",
                   "devices": [dev.index or 0] if dev.type == "cuda" else 1,
                   **dict(settings.extra)}
        with tempfile.TemporaryDirectory() as root, seeded_torch(seed, dev):
            trainer = lightning.Trainer(default_root_dir=root, **options)
            t0 = time.perf_counter()
            trainer.fit(module, train_dataloaders=loader)
            seconds = time.perf_counter() - t0
        pred = _LightningPredictor(module, fold.task, dev)
        pred.seconds = seconds
        return pred

    def load(self, spec: NetworkSpec, saved: SavedFold) -> Predictor:
        """The module built from ``model``/``args`` with the fold's ``model.pt`` state dict
        (``weights_only=True``)."""
        module = _build(spec, saved.folder.parent.name, saved.input_shape, saved.n_outputs)
        load_weights(module, saved.file("model.pt"))
        return _LightningPredictor(module, saved.task, saved.device)


class _LightningPredictor(TorchPredictor):
    framework = "lightning"

    def describe(self) -> dict[str, Any]:
        import lightning

        return {**super().describe(), "framework": "lightning",
                "version": lightning.__version__, "backend_version": torch.__version__}
