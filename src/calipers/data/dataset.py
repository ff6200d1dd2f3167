"""The in-memory data set every calipers task works on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calipers._checks import _check_finite
from calipers._options import PredictionTask, look_up_option

__all__ = ["TASKS", "Dataset", "make_dataset"]

TASKS = tuple(t.value for t in PredictionTask)  # a Dataset's task


@dataclass(frozen=True)
class Dataset:
    """Samples and targets held in memory.

    Attributes
    ----------
    X : ndarray of shape (n_samples, *sample_shape), float32
        Inputs, e.g. ``(N, 1, 8, 8)`` images or ``(N, n_features)`` tables.
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)
        Class indices ``0..n_classes-1`` (int64) or regression targets (float32).
    task : {"classification", "regression"}
    name : str
        Where the data came from (shown in reports).
    classes : tuple
        Original class labels, ``classes[y[i]]`` is sample i's label (classification only).
    groups : ndarray of shape (n_samples,) or None
        Group labels for group-aware splitting.
    """

    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    task: str
    name: str = "data"
    classes: tuple = ()
    groups: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(int(s) for s in self.X.shape[1:])

    @property
    def n_outputs(self) -> int:
        """Number of classes (classification) or of regression targets."""
        if self.task == "classification":
            return len(self.classes)
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])

    def __repr__(self) -> str:
        extra = f", n_classes={len(self.classes)}" if self.task == "classification" else ""
        return (f"Dataset(name={self.name!r}, task={self.task!r}, n_samples={self.n_samples}, "
                f"input_shape={self.input_shape}{extra})")


def make_dataset(
    X: np.ndarray,
    y: np.ndarray,
    *,
    task: str = "classification",
    name: str = "data",
    groups: np.ndarray | None = None,
) -> Dataset:
    """Check ``X`` and ``y`` and build a :class:`Dataset` (labels encoded to ``0..C-1``).

    Raises
    ------
    ValueError
        If lengths differ, values are NaN/inf, ``y`` has the wrong shape for the task, or a
        classification target has a single class.
    """
    task = look_up_option(task, PredictionTask, name="task")
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise ValueError(
            f"X must have shape (n_samples, ...) with at least 2 dimensions; got shape {X.shape}. "
            "For a single feature use X.reshape(-1, 1)."
        )
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y have different numbers of samples: X has {X.shape[0]} (shape {X.shape}), "
            f"y has {y.shape[0]} (shape {y.shape}). They must match row for row."
        )
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 samples; got {X.shape[0]}.")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X must be numeric; got dtype {X.dtype}.")
    _check_finite(X, name="X")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (X.shape[0],):
            raise ValueError(f"groups must have shape ({X.shape[0]},); got {groups.shape}.")
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(
                f"classification needs y of shape (n_samples,) with one label per sample; "
                f"got shape {y.shape}."
            )
        if np.issubdtype(y.dtype, np.floating):
            _check_finite(y, name="y")
            if not np.all(y == np.round(y)):
                raise ValueError(
                    "classification labels must be integers or strings; y holds non-integer "
                    "floats. Did you mean task = \"regression\"?"
                )
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"classification needs at least 2 classes; y has only {classes!r}.")
        return Dataset(X.astype(np.float32), codes.astype(np.int64), task, name,
                       tuple(c.item() if hasattr(c, "item") else c for c in classes), groups)
    if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"regression needs numeric y of shape (n_samples,) or (n_samples, k); "
                         f"got shape {y.shape}, dtype {y.dtype}.")
    _check_finite(y, name="y")
    return Dataset(X.astype(np.float32), y.astype(np.float32), task, name, (), groups)
