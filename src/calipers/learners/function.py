"""The ``function`` learner: the user's own training code.

A network with ``learner = "function"`` names a fit function, ``fit = "pkg.module:fit"`` (a
module beside the config, on ``PYTHONPATH`` or installed), called once per fold as::

    fit(data, *, seed, device, settings, **args) -> model

==========  ==================================================================================
argument    what it is
==========  ==================================================================================
data        :class:`~calipers.learners.base.FoldData`: ``X``, ``y`` of the fold's training
            samples only, ``task``, ``n_outputs``, ``input_shape``, ``network``, ``split``
seed        an int for this network and fold (NOTE [Task seeds]); seed every generator you
            use from it (torch's global generator is already seeded with it)
device      ``"cpu"``, ``"cuda"``, ``"cuda:1"``: where to train
settings    :class:`~calipers.learners.base.FitSettings`: ``epochs``, ``batch_size``, ``lr``,
            ``weight_decay`` from ``[train]`` and ``[networks.NAME.train]``, and ``extra``,
            every other key of ``[networks.NAME.train]``
``**args``  the network's ``args = {...}``
==========  ==================================================================================

(parameters the function does not declare are not passed). It returns either

* the trained ``torch.nn.Module``, returning logits (classification) or means (regression);
  calipers predicts with it in eval mode, and MC dropout runs its dropout modules in train mode
  with BatchNorm in eval mode; its ``state_dict`` is saved as ``model.pt``; or
* any object with ``predict_proba(X)`` (classification) or ``predict(X)`` (regression), and
  optionally ``predict_mc(X, n_mc, seed=...)`` returning ``(n_mc, N, C|k)``.

``examples/torch_recipe.py`` is a complete example: a hand-written PyTorch loop with its own
optimizer, cosine schedule and augmentation.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np
import torch

from calipers._seeds import seeded_torch
from calipers.evaluation.cv import NetworkSpec
from calipers.exceptions import ConfigError
from calipers.models import resolve_callable

from .base import FitSettings, FoldData, Predictor
from .torch_predictor import TorchPredictor

__all__ = ["FunctionLearner", "ObjectPredictor"]


class FunctionLearner:
    """Runs the user's ``fit`` (see the module docstring)."""

    name = "function"

    def require(self, name: str, spec: NetworkSpec) -> None:
        return None

    def check(self, name: str, spec: NetworkSpec, data: Any, *, n_mc: int) -> bool | None:
        try:
            fn = resolve_callable(spec.model)
        except ValueError as exc:
            raise ConfigError(f"networks.{name}.fit: {exc}") from None
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return None
        if not params or next(iter(params.values())).kind not in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise ConfigError(f"networks.{name}.fit: {spec.describe()} must take the fold's "
                              "data as its first argument: fit(data, *, seed, device, "
                              "settings, **args) (calipers.learners.function).")
        return None  # known once it is trained

    def fit(self, spec: NetworkSpec, fold: FoldData, *, seed: int,
            settings: FitSettings) -> Predictor:
        fn = resolve_callable(spec.model)
        offered = {"seed": seed, "device": settings.device, "settings": settings,
                   **dict(spec.args)}
        try:
            params = inspect.signature(fn).parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                offered = {k: v for k, v in offered.items() if k in params}
        except (TypeError, ValueError):
            pass
        t0 = time.perf_counter()
        with seeded_torch(seed, settings.device):
            model = fn(fold, **offered)
        seconds = time.perf_counter() - t0
        if isinstance(model, torch.nn.Module):
            pred: Predictor = TorchPredictor(model, fold.task, settings.device)
        elif hasattr(model, "predict_proba" if fold.task == "classification" else "predict"):
            pred = ObjectPredictor(model, fold.task)
        else:
            want = "predict_proba(X)" if fold.task == "classification" else "predict(X)"
            raise ConfigError(
                f"network {fold.network!r}, fold {fold.split}: {spec.describe()} returned a "
                f"{type(model).__name__}, not a model. Return the trained torch.nn.Module "
                f"(logits or means) or an object with {want}.")
        pred.seconds = seconds  # type: ignore[attr-defined]
        return pred


class ObjectPredictor(Predictor):
    """Wraps an object with ``predict_proba``/``predict`` (and maybe ``predict_mc``)."""

    framework = "python"

    def __init__(self, model: Any, task: str) -> None:
        self.model, self.task = model, task

    def predict(self, X: np.ndarray) -> np.ndarray:
        f = self.model.predict_proba if self.task == "classification" else self.model.predict
        return np.asarray(f(X), dtype=np.float64)

    def predict_mc(self, X: np.ndarray, n_mc: int, *, seed: int) -> np.ndarray | None:
        if not hasattr(self.model, "predict_mc"):
            return None
        return np.asarray(self.model.predict_mc(X, n_mc, seed=seed), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"framework": self.framework, "model": type(self.model).__name__}
