"""The ``sklearn`` learner: any estimator with ``fit`` and ``predict_proba`` (classification)
or ``predict`` (regression).

``estimator = "sklearn.linear_model:LogisticRegression"`` names a class (or any callable
returning an estimator, e.g. a function building a ``Pipeline``), ``args = {...}`` its keyword
arguments. Images are flattened to ``(N, n_pixels)``. An estimator with a ``random_state``
parameter that ``args`` leaves unset gets the fold's seed. Regression estimators whose
``predict`` takes ``return_std`` (``BayesianRidge``, ``GaussianProcessRegressor``) report
their predictive variance.

# NOTE [Saving estimators without pickle]
Unpickling a file runs whatever code the file names, so a ``model.pkl`` from a run folder
someone else made (a shared drive, a download, a container) could do anything. The fitted
estimator is saved with skops (``skops.io.dump``) as ``model.skops``: loading it builds only
types skops trusts (scikit-learn's estimators, NumPy, SciPy) plus those the user names
(``trusted=``, ``calipers predict --trust TYPE``); a file holding any other type is refused,
with the list of those types. Some scikit-learn internals are not on skops' default list
(``sklearn.tree._tree.Tree`` of trees and forests): trust them by name for run folders you
trust. Without skops installed (``pip install 'calipers[sklearn]'``) the estimator is
pickled to ``model.pkl`` with a warning, and loading it needs ``trust_pickle=True``
(``--trust-pickle``), a statement that the folder is yours.
"""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from calipers._checks import warn_user
from calipers.evaluation.cv import NetworkSpec
from calipers.exceptions import ConfigError, DataError
from calipers.models import resolve_callable
from calipers.runs import atomic_write_bytes

from .base import FitSettings, FoldData, Predictor, SavedFold

__all__ = ["SklearnLearner", "SklearnPredictor"]

_WARNED_PICKLE: list[bool] = []  # warned once per process that skops is missing


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

    def load(self, spec: NetworkSpec, saved: SavedFold) -> Predictor:
        """NOTE [Saving estimators without pickle]."""
        skops_file = saved.folder / "model.skops"
        if skops_file.is_file():
            est = _load_skops(skops_file, saved.trusted)
        elif (saved.folder / "model.pkl").is_file():
            path = saved.folder / "model.pkl"
            if not saved.trust_pickle:
                raise DataError(
                    f"{path} is a pickle, and loading a pickle runs any code it names; calipers "
                    "does not load it unless told the folder is trusted. If you made this run "
                    "folder yourself, pass trust_pickle=True (calipers predict --trust-pickle); "
                    "or install skops (pip install 'calipers[sklearn]') and retrain, which "
                    "saves model.skops instead.")
            est = pickle.loads(path.read_bytes())  # the user vouched for the folder
        else:
            raise DataError(f"{saved.file('model.skops')}")  # file() raises, listing the folder
        return SklearnPredictor(est, saved.task, saved.n_outputs)


def _load_skops(path: Path, trusted: tuple[str, ...]) -> Any:
    """Load ``path`` with skops, trusting its defaults and ``trusted`` only."""
    if importlib.util.find_spec("skops") is None:
        raise ConfigError(f"{path} was saved with skops, which is not installed; install it "
                          "with: pip install 'calipers[sklearn]'")
    import skops.io

    data = path.read_bytes()
    try:
        unknown = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # zipfile, JSON: a damaged file
        raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc}); it is "
                        "damaged.") from None
    missing = [t for t in unknown if t not in trusted]
    if missing:
        flags = " ".join(f"--trust {t}" for t in missing)
        raise DataError(f"{path} holds types that skops does not trust by default: "
                        f"{', '.join(missing)}. Loading builds them, so calipers needs you to "
                        f"name them if you trust this run folder: trusted=[...] in Python, or "
                        f"calipers predict {flags}.")
    return skops.io.loads(data, trusted=list(unknown))


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
        """``model.skops`` (NOTE [Saving estimators without pickle]); ``model.pkl`` with a
        warning when skops is not installed."""
        if importlib.util.find_spec("skops") is not None:
            import skops.io

            atomic_write_bytes(Path(folder) / "model.skops", skops.io.dumps(self.est))
            return ["model.skops"]
        if not _WARNED_PICKLE:
            _WARNED_PICKLE.append(True)
            warn_user("skops is not installed, so the fitted estimators are pickled to "
                      "model.pkl, which loads only with trust_pickle=True (pickle runs code); "
                      "install it with: pip install 'calipers[sklearn]'")
        atomic_write_bytes(Path(folder) / "model.pkl", pickle.dumps(self.est))
        return ["model.pkl"]

    def describe(self) -> dict[str, Any]:
        import sklearn

        n = sum(int(np.size(v)) for k, v in vars(self.est).items()
                if k.endswith("_") and isinstance(v, np.ndarray) and v.dtype.kind == "f")
        return {"framework": self.framework, "version": sklearn.__version__,
                "backend": "numpy", "device": "cpu", "n_params": n,
                "estimator": type(self.est).__name__}
