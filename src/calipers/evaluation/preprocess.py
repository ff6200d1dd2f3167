"""What a fold did to its inputs, saved beside its model so a loaded model sees the same.

# NOTE [Fold preprocessing]
Every fold of a classification or regression run standardises tables (2-D ``X``) with the
mean and standard deviation of its own training rows (a zero std counts as 1), and regression
targets likewise (predictions are mapped back to the original units). These statistics differ
from fold to fold, so a model is useless without the ones it was trained with: predicting new
samples with raw features, or with the statistics of all the data, gives wrong answers
without any error. Each fold therefore saves ``preprocess.npz`` next to its model:

==============  ===================================================  =======================
key             what                                                 when
==============  ===================================================  =======================
``input_shape`` one sample's shape (int64)                           always
``classes``     the class labels as text, ``classes[k]`` is class k   classification
``x_mean``      training rows' mean, ``(n_features,)``               2-D tables
``x_std``       training rows' std (zeros replaced by 1)             2-D tables
``y_mean``      training targets' mean, ``()`` or ``(n_targets,)``    regression
``y_std``       training targets' std (zeros replaced by 1)          regression
==============  ===================================================  =======================

The statistics keep the dtype of the computation that trained the fold (float32 for
calipers' own loop), so :meth:`FoldPreprocess.transform` gives the very inputs the fold saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calipers.exceptions import DataError
from calipers.runs import save_npz

__all__ = ["PREPROCESS_FILE", "FoldPreprocess", "fold_preprocess", "load_preprocess",
           "save_preprocess"]

PREPROCESS_FILE = "preprocess.npz"


def _stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = a.mean(axis=0), a.std(axis=0)
    return np.asarray(mu), np.where(sd == 0, np.ones((), sd.dtype), sd).astype(sd.dtype)


def fold_preprocess(data: Any, train: np.ndarray, *,
                    dtype: Any = None) -> dict[str, np.ndarray]:
    """The arrays of NOTE [Fold preprocessing] for the training rows ``train`` of ``data``.

    Parameters
    ----------
    data : Dataset
        ``X``, ``y``, ``task``, ``classes`` (:class:`calipers.data.Dataset`).
    train : ndarray of int
        The fold's training indices.
    dtype : dtype, optional
        Compute the statistics in this dtype (the grid search works in float64); default the
        dtypes of ``data.X`` and ``data.y``, as calipers' own loop.
    """
    X = np.asarray(data.X)
    out: dict[str, np.ndarray] = {"input_shape": np.asarray(X.shape[1:], dtype=np.int64)}
    if data.task == "classification":
        out["classes"] = np.asarray([str(c) for c in data.classes], dtype=np.str_)
    if X.ndim == 2:
        xt = X[train] if dtype is None else X[train].astype(dtype)
        out["x_mean"], out["x_std"] = _stats(xt)
    if data.task == "regression":
        yt = np.asarray(data.y)[train]
        out["y_mean"], out["y_std"] = _stats(yt if dtype is None else yt.astype(dtype))
    return out


@dataclass(frozen=True)
class FoldPreprocess:
    """A fold's input conventions (NOTE [Fold preprocessing]), as loaded from its folder."""

    input_shape: tuple[int, ...]
    classes: tuple[str, ...] = ()
    x_mean: np.ndarray | None = field(default=None, repr=False)
    x_std: np.ndarray | None = field(default=None, repr=False)
    y_mean: np.ndarray | None = field(default=None, repr=False)
    y_std: np.ndarray | None = field(default=None, repr=False)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``X`` as the fold's model saw it: standardised with the training statistics
        (tables), else unchanged; float32, shape ``(N, *input_shape)``."""
        if self.x_mean is None or self.x_std is None:
            return np.asarray(X, dtype=np.float32)
        X = np.asarray(X, dtype=self.x_mean.dtype)
        return ((X - self.x_mean) / self.x_std).astype(np.float32)

    def to_target_units(self, mean: np.ndarray, var: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """Regression means ``(N, k)`` (and variances) from standardised to target units."""
        if self.y_mean is None or self.y_std is None:
            return mean, var
        sd = self.y_std.astype(np.float64)
        mean = mean.reshape(len(mean), -1) * sd + self.y_mean.astype(np.float64)
        return mean, None if var is None else var.reshape(len(var), -1) * sd**2


def save_preprocess(folder: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``preprocess.npz`` into ``folder`` (atomically)."""
    return save_npz(Path(folder) / PREPROCESS_FILE, arrays)


def load_preprocess(folder: str | Path) -> FoldPreprocess:
    """Read a fold's ``preprocess.npz``; :class:`DataError` when it is missing or damaged."""
    path = Path(folder) / PREPROCESS_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing: this fold was trained by a calipers that did not "
                        "save its preprocessing (the training split's feature and target "
                        "statistics, NOTE [Fold preprocessing]), and its model cannot predict "
                        "new samples correctly without them. They are recomputed from the "
                        "run's data when its data.json shows the data unchanged; else retrain "
                        "the run with this calipers (calipers cv CONFIG --out NEW_FOLDER).")
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        return FoldPreprocess(tuple(int(s) for s in a["input_shape"]),
                              tuple(str(c) for c in a.get("classes", ())),
                              a.get("x_mean"), a.get("x_std"), a.get("y_mean"), a.get("y_std"))
    except Exception as exc:  # zipfile, zlib, missing keys: a damaged or foreign file
        raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc}); it is damaged. "
                        "Retrain the run to recreate it.") from None
