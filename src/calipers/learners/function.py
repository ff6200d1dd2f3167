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

# NOTE [Loading a function learner's model]
calipers cannot know how the user's code built what it returned, so loading it back
(:meth:`FunctionLearner.load`, ``calipers predict``) needs one of two things from the user:

* a module: ``model = "pkg.module:build"`` in ``[networks.NAME]`` (beside ``fit``), a function
  or class that builds the *untrained* module, called like calipers' own networks
  (``input_shape``/``n_outputs`` when it takes them, and those of the network's ``args`` it
  declares); the fold's ``model.pt`` is loaded into it with ``weights_only=True``;
* an object: a ``save(folder)`` method and a classmethod ``load(folder)`` on its class, both
  the user's. calipers calls ``save`` after the fold (it should write its files atomically and
  may return their names) and records the class as ``module:name`` in ``learner.json``;
  loading imports that class and calls ``load``. What ``load`` reads is the user's choice, so
  the same trust applies as to the code the run's config names.

Without either, the fold is scored and saved as before, and loading it says what to add.

``examples/torch_recipe.py`` is a complete example: a hand-written PyTorch loop with its own
optimizer, cosine schedule and augmentation.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calipers._seeds import seeded_torch
from calipers.evaluation.cv import NetworkSpec
from calipers.exceptions import ConfigError
from calipers.models import build_network, resolve_callable
from calipers.runs import read_json

from .base import FitSettings, FoldData, Predictor, SavedFold
from .torch_predictor import TorchPredictor, load_weights

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
        return _predictor(model, spec, fold.task, fold.network, fold.split, settings.device,
                          seconds)

    def load(self, spec: NetworkSpec, saved: SavedFold) -> Predictor:
        """NOTE [Loading a function learner's model]."""
        name = saved.folder.parent.name
        if (saved.folder / "model.pt").is_file():
            build = spec.options.get("model")
            if build is None:
                raise ConfigError(
                    f"network {name!r}: its fit returned a torch module, saved as a state dict "
                    f"(model.pt); to rebuild the module add model = \"pkg.module:build\" to "
                    f"[networks.{name}] in the run's config.toml, a function or class that "
                    "builds the untrained module (called with input_shape, n_outputs and the "
                    "args it declares); see calipers.learners.function.")
            try:
                fn = resolve_callable(build)
                model = build_network(fn, _accepted(fn, spec.args),
                                      input_shape=saved.input_shape, n_outputs=saved.n_outputs)
            except ValueError as exc:
                raise ConfigError(f"networks.{name}.model: {exc}") from None
            load_weights(model, saved.folder / "model.pt")
            return TorchPredictor(model, saved.task, saved.device)
        info = read_json(saved.file("learner.json"))
        cls_name = info.get("class")
        if not cls_name:
            raise ConfigError(
                f"network {name!r}: its fit returned a {info.get('model', 'Python object')}, "
                "which saved no files: give its class a save(folder) method and a classmethod "
                "load(folder), or return a torch module and name its builder with model = "
                "\"pkg.module:build\" (see calipers.learners.function); then retrain.")
        try:
            cls = resolve_callable(cls_name)
        except ValueError as exc:
            raise ConfigError(f"network {name!r}: cannot import the class {cls_name!r} that "
                              f"saved the model: {exc}") from None
        return ObjectPredictor(cls.load(saved.folder), saved.task)


def _accepted(fn: Any, args: Any) -> dict[str, Any]:
    """The ``args`` that ``fn`` declares (all of them when it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(args)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(args)
    return {k: v for k, v in args.items() if k in params}


def _predictor(model: Any, spec: NetworkSpec, task: str, network: str, split: int,
               device: str, seconds: float) -> Predictor:
    """The predictor of what the user's fit returned (module or object)."""
    if isinstance(model, torch.nn.Module):
        pred: Predictor = TorchPredictor(model, task, device)
    elif hasattr(model, "predict_proba" if task == "classification" else "predict"):
        pred = ObjectPredictor(model, task)
    else:
        want = "predict_proba(X)" if task == "classification" else "predict(X)"
        raise ConfigError(
            f"network {network!r}, fold {split}: {spec.describe()} returned a "
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

    def _savable(self) -> bool:
        return callable(getattr(self.model, "save", None)) and callable(
            getattr(type(self.model), "load", None))

    def save(self, folder: Path) -> list[str]:
        """The object's own ``save(folder)`` when its class can ``load`` it back (NOTE
        [Loading a function learner's model]); else nothing."""
        if not self._savable():
            return []
        files = self.model.save(Path(folder))
        return [str(f) for f in files] if isinstance(files, (list, tuple)) else []

    def describe(self) -> dict[str, Any]:
        info = {"framework": self.framework, "model": type(self.model).__name__}
        cls = type(self.model)
        if self._savable() and "." not in cls.__qualname__:
            info["class"] = f"{cls.__module__}:{cls.__qualname__}"
        return info
