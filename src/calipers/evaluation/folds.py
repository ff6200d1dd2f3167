"""Cross-validation folds: scikit-learn splitters, the same folds for every network, a hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

from calipers._checks import _check_positive_int
from calipers._seeds import child_seed
from calipers.exceptions import DataError, FoldMismatchError

__all__ = ["Folds", "check_cv", "make_folds"]


@dataclass(frozen=True, eq=False)
class Folds:
    """Train/test index pairs shared by every network of a run.

    Attributes
    ----------
    train, test : tuple of int64 ndarrays
        Indices into the data set for each of the J = n_folds × n_repeats splits.
    repeat, fold : tuple of int
        Repeat and within-repeat fold number of each split.
    n_samples : int
    """

    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    repeat: tuple[int, ...]
    fold: tuple[int, ...]
    n_samples: int

    def __len__(self) -> int:
        return len(self.test)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter(zip(self.train, self.test, strict=True))

    @property
    def n_repeats(self) -> int:
        return len(set(self.repeat))

    @property
    def hash(self) -> str:
        """SHA-256 of ``n_samples`` and every split's train and test indices."""
        h = hashlib.sha256(str(self.n_samples).encode())
        for tr, te in self:
            h.update(b"|train|" + np.asarray(tr, dtype="<i8").tobytes())
            h.update(b"|test|" + np.asarray(te, dtype="<i8").tobytes())
        return h.hexdigest()

    @property
    def test_train_ratio(self) -> float:
        """Mean of n_test / n_train over the splits (the Nadeau–Bengio correction term)."""
        return float(np.mean([len(te) / len(tr) for tr, te in self]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "n_samples": self.n_samples,
            "n_splits": len(self),
            "n_repeats": self.n_repeats,
            "folds": [{"repeat": r, "fold": f, "train": tr.tolist(), "test": te.tolist()}
                      for r, f, tr, te in zip(self.repeat, self.fold, self.train, self.test,
                                              strict=True)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Folds:
        """Rebuild folds saved by :meth:`to_dict`, checking the stored hash."""
        try:
            items = d["folds"]
            folds = cls(
                tuple(np.asarray(x["train"], dtype=np.int64) for x in items),
                tuple(np.asarray(x["test"], dtype=np.int64) for x in items),
                tuple(int(x["repeat"]) for x in items), tuple(int(x["fold"]) for x in items),
                int(d["n_samples"]),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"folds.json lacks {exc} or is not in the layout calipers writes "
                            "(folds: [{repeat, fold, train, test}], n_samples); delete it and "
                            "rerun the experiment.") from exc
        if "hash" in d and d["hash"] != folds.hash:
            raise FoldMismatchError(
                f"folds.json is corrupt: its stored hash {d['hash'][:12]}… does not match its "
                f"indices ({folds.hash[:12]}…)."
            )
        return folds


def _label(code, class_labels: tuple | None):
    """The user's label of class ``code`` (a code of ``Dataset.y``), when known."""
    if class_labels and isinstance(code, int) and 0 <= code < len(class_labels):
        return class_labels[code]
    return code


def make_folds(
    y: np.ndarray,
    *,
    n_folds: int = 10,
    n_repeats: int = 1,
    seed: int = 0,
    stratify: bool = True,
    groups: np.ndarray | None = None,
    shuffle: bool = True,
    class_labels: tuple | None = None,
) -> Folds:
    """Shuffled K-fold splits, repeated ``n_repeats`` times with different shuffles.

    ``StratifiedKFold`` when ``stratify`` and ``y`` holds class labels (1-D integers),
    ``GroupKFold`` when ``groups`` is given (samples of a group stay together), else ``KFold``.
    Repeat r shuffles with ``child_seed(seed, "cv", r)`` (NOTE [Task seeds] in ``_seeds.py``).
    ``shuffle=False`` keeps the data order: each test fold of ``KFold`` is a contiguous block
    (for serial sections or time series, whose neighbours are correlated); one repeat only.
    ``class_labels`` (the user's labels of the codes in ``y``, ``Dataset.classes``) only names
    classes in messages.
    """
    y = np.asarray(y)
    n = y.shape[0]
    n_folds = _check_positive_int(n_folds, name="n_folds", minimum=2,
                                  fix="Set [cv] folds = 2 or more.")
    n_repeats = _check_positive_int(n_repeats, name="n_repeats", fix="Set [cv] repeats = 1.")
    if not shuffle and n_repeats > 1:
        raise ValueError(f"n_repeats={n_repeats} without shuffling repeats the same folds; set "
                         "[cv] repeats = 1 or shuffle = true.")
    if n_folds > n:
        raise ValueError(f"n_folds={n_folds} is more than the {n} samples; set [cv] folds <= {n}.")
    classes = y.ndim == 1 and np.issubdtype(y.dtype, np.integer)
    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_folds > n_groups:
            raise ValueError(f"n_folds={n_folds} is more than the {n_groups} groups; "
                             f"set [cv] folds <= {n_groups}.")
    elif stratify and classes:
        labels, counts = np.unique(y, return_counts=True)
        if n_folds > counts.min():
            raise ValueError(
                f"n_folds={n_folds} is more than the {counts.min()} samples of class "
                f"{_label(labels[counts.argmin()].item(), class_labels)!r}: stratified folds "
                "need every class in every fold. "
                f"Set [cv] folds <= {counts.min()} or stratify = false."
            )
    train, test, rep, fold = [], [], [], []
    for r in range(n_repeats):
        rs = child_seed(seed, "cv", r) % (2**32) if shuffle else None
        if groups is not None:
            splitter = GroupKFold(n_splits=n_folds, shuffle=shuffle, random_state=rs)
        elif stratify and classes:
            splitter = StratifiedKFold(n_splits=n_folds, shuffle=shuffle, random_state=rs)
        else:
            splitter = KFold(n_splits=n_folds, shuffle=shuffle, random_state=rs)
        for k, (tr, te) in enumerate(splitter.split(np.zeros(n), y if classes else None, groups)):
            train.append(np.sort(tr).astype(np.int64))
            test.append(np.sort(te).astype(np.int64))
            rep.append(r)
            fold.append(k)
    return Folds(tuple(train), tuple(test), tuple(rep), tuple(fold), n)


def check_cv(
    cv: int | Any | Iterable[tuple[np.ndarray, np.ndarray]] | Folds,
    y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> Folds:
    """Normalise ``cv`` as scikit-learn does: an int (n_folds), a splitter with ``split``, an
    iterable of (train, test) index pairs, or :class:`Folds`."""
    if isinstance(cv, Folds):
        folds = cv
    elif isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        folds = make_folds(y, n_folds=int(cv), seed=seed, groups=groups)
    else:
        pairs = list(cv.split(np.zeros(len(y)), y, groups)) if hasattr(cv, "split") else list(cv)
        if not pairs:
            raise ValueError("cv gave no (train, test) splits.")
        folds = Folds(tuple(np.sort(np.asarray(tr, dtype=np.int64)) for tr, _ in pairs),
                      tuple(np.sort(np.asarray(te, dtype=np.int64)) for _, te in pairs),
                      (0,) * len(pairs), tuple(range(len(pairs))), len(y))
    if folds.n_samples != len(y):
        raise ValueError(
            f"the folds index {folds.n_samples} samples but the data set has {len(y)}."
        )
    for j, (tr, te) in enumerate(folds):
        if len(tr) == 0 or len(te) == 0:
            raise ValueError(f"split {j} has an empty train or test set.")
        if np.intersect1d(tr, te).size:
            raise ValueError(f"split {j}: train and test indices overlap.")
        if tr.min() < 0 or te.min() < 0 or max(tr.max(), te.max()) >= len(y):
            raise ValueError(f"split {j} has indices outside 0..{len(y) - 1}.")
    return folds
