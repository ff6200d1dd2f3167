"""The learner protocol: what a network must give the engine, whoever trains it.

# NOTE [Learner protocol]
A :class:`Learner` fits a fresh model on the training samples of one fold
(:class:`FoldData`), with the fold's seed and a device, and returns a :class:`Predictor`. The
predictor gives, for test samples,

==============  ===========================================  ==================================
task            ``predict(X)``                               ``predict_mc(X, n_mc, seed)``
==============  ===========================================  ==================================
classification  probabilities ``(N, n_classes)``, rows sum    ``(n_mc, N, n_classes)``
                to one
regression      means ``(N, n_targets)`` (standardised        ``(n_mc, N, n_targets)``
                targets, see below)
==============  ===========================================  ==================================

``predict_mc`` draws T stochastic passes (MC dropout: dropout on, BatchNorm in inference mode)
and returns None for a model without dropout; ``variance(X)`` is a regression model's own
predictive variance (or None); ``save(folder)`` writes the model's files (atomically) and
returns their names; ``describe()`` says framework, version, backend, device and parameter
count. ``Learner.load(spec, saved)`` rebuilds the predictor from a fold folder
(:class:`SavedFold`; :mod:`calipers.learners.saved` loads whole runs). The engine
(:mod:`calipers.learners.fold`) checks shapes and probabilities, computes every metric and
uncertainty measure from these arrays, and saves the fold like any other.

Every learner sees the same preprocessing as calipers' own loop: tables (2-D ``X``) are
standardised with the training split's mean and standard deviation; regression targets are
standardised likewise and the predictions mapped back to the original units. Each fold saves
those statistics (NOTE [Fold preprocessing]) so a loaded model is fed the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from calipers._options import LearnerKind, look_up_option
from calipers.config import NetworkConfig
from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import ConfigError

__all__ = ["FitSettings", "FoldData", "Learner", "Predictor", "SavedFold", "get_learner",
           "network_options", "network_spec", "require"]

#: Training settings a ``[networks.NAME.train]`` table may override; others pass through.
KNOWN_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay")


@dataclass(frozen=True)
class FoldData:
    """The training samples of one fold, as a learner gets them.

    Attributes
    ----------
    X : ndarray of shape (n_train, *sample_shape), float32
        Inputs (tables standardised with this split's mean and std; images as loaded).
    y : ndarray
        Class indices ``0..n_outputs-1`` (int64) or standardised regression targets
        (float32, ``(n_train,)`` or ``(n_train, n_targets)``).
    task : {"classification", "regression"}
    n_outputs : int
        Classes, or regression targets.
    input_shape : tuple of int
        One sample's shape, ``X.shape[1:]``.
    network, split : str, int
        Which network and which split (for messages and file names).
    """

    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    task: str
    n_outputs: int
    input_shape: tuple[int, ...]
    network: str = ""
    split: int = 0


@dataclass(frozen=True)
class FitSettings:
    """How to train, from ``[train]`` with the network's ``[networks.NAME.train]`` on top.

    ``extra`` holds the keys calipers does not know (passed through to the framework's fit,
    e.g. ``shuffle`` for Keras or ``momentum`` for a user's loop).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    device: str = "auto"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SavedFold:
    """A fold folder to load a model from, and what the model was trained on.

    Attributes
    ----------
    folder : Path
        ``RUN/<network>/fold-XX``, holding the files ``Predictor.save`` wrote.
    task : {"classification", "regression"}
    input_shape : tuple of int
        One sample's shape, as in training.
    n_outputs : int
        Classes, or regression targets.
    device : str
        Where to predict (``"cpu"``, ``"cuda:0"``; resolved).
    trusted : tuple of str
        scikit-learn: types the user trusts in ``model.skops`` beyond skops' defaults.
    trust_pickle : bool
        scikit-learn: load a ``model.pkl`` (pickle runs code while loading; only for run
        folders the user made or trusts).
    """

    folder: Path
    task: str
    input_shape: tuple[int, ...]
    n_outputs: int
    device: str = "cpu"
    trusted: tuple[str, ...] = ()
    trust_pickle: bool = False

    def file(self, name: str) -> Path:
        """``folder / name``; :class:`~calipers.exceptions.DataError` when it is missing."""
        from calipers.exceptions import DataError

        path = self.folder / name
        if not path.is_file():
            have = sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []
            raise DataError(f"{path} is missing (the folder holds {', '.join(have) or 'nothing'})"
                            "; the fold's model was not saved or was removed. Rerun `calipers "
                            "cv` with the same config and --out to retrain missing folds.")
        return path


class Predictor:
    """A fitted model of one fold (NOTE [Learner protocol]); adapters subclass it."""

    framework: str = "?"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, C)`` (classification) or means ``(N, k)`` (regression)."""
        raise NotImplementedError

    def predict_mc(self, X: np.ndarray, n_mc: int, *, seed: int) -> np.ndarray | None:
        """``n_mc`` stochastic passes ``(n_mc, N, C|k)``; None when the model has no dropout."""
        return None

    def variance(self, X: np.ndarray) -> np.ndarray | None:
        """The model's own predictive variance ``(N, k)`` (regression), or None."""
        return None

    def save(self, folder: Path) -> list[str]:
        """Write the model's files into ``folder`` (atomically); return their names."""
        return []

    def describe(self) -> dict[str, Any]:
        """``framework``, ``version``, ``backend``, ``device``, ``n_params`` (where known)."""
        return {"framework": self.framework}


class Learner(Protocol):
    """Fits one network of one fold (NOTE [Learner protocol])."""

    name: str

    def require(self, name: str, spec: NetworkSpec) -> None:
        """Raise :class:`ConfigError` with the ``pip install`` line when the framework is
        missing."""
        ...

    def check(self, name: str, spec: NetworkSpec, data: Any, *, n_mc: int) -> bool | None:
        """Refuse, before any training, a network that cannot run on ``data``; return whether
        the model has dropout (None: not known before it is trained)."""
        ...

    def fit(self, spec: NetworkSpec, fold: FoldData, *, seed: int,
            settings: FitSettings) -> Predictor:
        """Train a fresh model on ``fold`` and return its predictor."""
        ...

    def load(self, spec: NetworkSpec, saved: SavedFold) -> Predictor:
        """Rebuild the predictor that ``fit`` returned from the files its ``save`` wrote
        (without running code stored in those files: weights only, Keras safe mode, skops)."""
        ...


#: Where each learner's adapter lives (imported on first use).
_ADAPTERS: dict[str, str] = {
    "calipers": "calipers.learners.native:CalipersLearner",
    "function": "calipers.learners.function:FunctionLearner",
    "sklearn": "calipers.learners.sklearn:SklearnLearner",
    "keras": "calipers.learners.keras:KerasLearner",
    "lightning": "calipers.learners.lightning:LightningLearner",
}


def get_learner(name: str) -> Learner:
    """The adapter of learner ``name`` (``"calipers"``, ``"function"``, ``"sklearn"``,
    ``"keras"``); an unknown name raises :class:`ConfigError` with a suggestion."""
    try:
        name = look_up_option(name, LearnerKind, name="learner")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    module, attr = _ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), attr)()


def require(module: str, *, learner: str, network: str, extra: str) -> None:
    """Raise :class:`ConfigError` naming the ``pip install`` line when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"network {network!r} uses learner {learner!r}, which needs "
                          f"{module}; it is not installed. Install it with: "
                          f"pip install 'calipers[{extra}]'")


def network_spec(net: NetworkConfig) -> NetworkSpec:
    """The :class:`NetworkSpec` of a ``[networks.NAME]`` table (its learner, what the learner
    trains, ``backend``/``output`` and ``[networks.NAME.train]``)."""
    learner = net.learner or "calipers"
    what = {"function": net.fit, "sklearn": net.estimator}.get(learner, net.model)
    options = {k: v for k in ("backend", "output") if (v := getattr(net, k)) is not None}
    if learner == "function" and net.model is not None:  # its module's builder (for loading)
        options["model"] = net.model
    train = net.train.model_dump(exclude_none=True) if net.train is not None else {}
    return NetworkSpec(what, dict(net.args), learner, options, train)


def network_options(options: TrainOptions, spec: NetworkSpec) -> TrainOptions:
    """``options`` with the network's ``[networks.NAME.train]`` overrides it knows applied."""
    known = {k: spec.train[k] for k in KNOWN_TRAIN_KEYS if spec.train.get(k) is not None}
    return replace(options, **known) if known else options


def fit_settings(options: TrainOptions, spec: NetworkSpec, device: str) -> FitSettings:
    """The :class:`FitSettings` of one network (overrides applied, the rest in ``extra``)."""
    opts = network_options(options, spec)
    names = {f.name for f in fields(FitSettings)}
    extra = {k: v for k, v in spec.train.items() if k not in KNOWN_TRAIN_KEYS}
    kw = {k: getattr(opts, k) for k in names if k not in ("extra", "device")}
    return FitSettings(**kw, device=device, extra=extra)
