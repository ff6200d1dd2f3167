"""The ``sklearn`` learner: any estimator with ``fit`` and ``predict_proba`` (classification)
or ``predict`` (regression).

``estimator = "sklearn.linear_model:LogisticRegression"`` names a class (or any callable
returning an estimator, e.g. a function building a ``Pipeline``), ``args = {...}`` its keyword
arguments. Images are flattened to ``(N, n_pixels)``. An estimator with a ``random_state``
parameter that ``args`` leaves unset gets the fold's seed. Regression estimators whose
``predict`` takes ``return_std`` (``BayesianRidge``, ``GaussianProcessRegressor``) report
their predictive variance. The fitted estimator is saved with ``pickle`` as ``model.pkl``.
"""

from __future__ import annotations

import inspect
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from calipers.evaluation.cv import NetworkSpec
from calipers.exceptions import ConfigError
from calipers.models import resolve_callable
from calipers.runs import atomic_write_bytes

from .base import FitSettings, FoldData, Predictor

__all__ = ["SklearnLearner", "SklearnPredictor"]


def _build(spec: NetworkSpec, name: str) -> Any:
    if not isinstance(spec.model, (str, type)) and hasattr(spec.model, "fit"):
        from sklearn.base import clone  # an estimator object (Python API): a fresh copy

        est = clone(spec.model)
        return est.set_params(**spec.args) if spec.args else est
    try:
        est = resolve_callable(spec.model)
    except ValueError as exc:
        raise ConfigError(f"networks.{name}.estimator: {exc}") from None
    try:
        return est(**spec.args)
    except TypeError as exc:
        raise ConfigError(f"networks.{name}: {spec.describe()} cannot be built: {exc}") from None


class SklearnLearner:
    """Fits a scikit-learn estimator on the flattened training samples of a fold."""

    name = "sklearn"

    def require(self, name: str, spec: NetworkSpec) -> None:
        return None  # scikit-learn is a core dependency

    def check(self, name: str, spec: NetworkSpec, data: Any, *, n_mc: int) -> bool | None:
        est = _build(spec, name)
        want = "predict_proba" if data.task == "classification" else "predict"
        if not (hasattr(est, "fit") and hasattr(est, want)):
            raise ConfigError(f"network {name!r}: {spec.describe()} gives a "
                              f"{type(est).__name__}, which has no fit and {want}; the sklearn "
                              f"learner needs an estimator with both for {data.task}.")
        return False  # no MC passes: deterministic predictions

    def fit(self, spec: NetworkSpec, fold: FoldData, *, seed: int,
            settings: FitSettings) -> Predictor:
        est = _build(spec, fold.network)
        if "random_state" in est.get_params() and "random_state" not in spec.args:
            est.set_params(random_state=seed % 2**32)
        X = fold.X.reshape(len(fold.X), -1)
        y = fold.y
        if fold.task == "regression" and y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        t0 = time.perf_counter()
        est.fit(X, y, **dict(settings.extra))
        pred = SklearnPredictor(est, fold.task, fold.n_outputs)
        pred.seconds = time.perf_counter() - t0
        return pred


class SklearnPredictor(Predictor):
    """Probabilities in the columns of all ``n_outputs`` classes (a class missing from a
    fold's training samples gets probability 0)."""

    framework = "scikit-learn"

    def __init__(self, est: Any, task: str, n_outputs: int) -> None:
        self.est, self.task, self.n_outputs = est, task, n_outputs

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = X.reshape(len(X), -1)
        if self.task == "classification":
            p = np.asarray(self.est.predict_proba(X), dtype=np.float64)
            classes = getattr(self.est, "classes_", None)
            if classes is None or p.shape[1] == self.n_outputs:
                return p
            full = np.zeros((len(X), self.n_outputs))
            full[:, np.asarray(classes, dtype=int)] = p
            return full
        out = np.asarray(self.est.predict(X), dtype=np.float64)
        return out.reshape(len(X), -1)

    def variance(self, X: np.ndarray) -> np.ndarray | None:
        if self.task != "regression":
            return None
        try:
            if "return_std" not in inspect.signature(self.est.predict).parameters:
                return None
        except (TypeError, ValueError):
            return None
        _, std = self.est.predict(X.reshape(len(X), -1), return_std=True)
        return (np.asarray(std, dtype=np.float64) ** 2).reshape(len(X), -1)

    def save(self, folder: Path) -> list[str]:
        atomic_write_bytes(Path(folder) / "model.pkl", pickle.dumps(self.est))
        return ["model.pkl"]

    def describe(self) -> dict[str, Any]:
        import sklearn

        n = sum(int(np.size(v)) for k, v in vars(self.est).items()
                if k.endswith("_") and isinstance(v, np.ndarray) and v.dtype.kind == "f")
        return {"framework": self.framework, "version": sklearn.__version__,
                "backend": "numpy", "device": "cpu", "n_params": n,
                "estimator": type(self.est).__name__}
