"""Predefined train/test splits read from files: ``index_train_<k>.txt`` / ``index_test_<k>.txt``
(the UCI benchmark layout of Hernández-Lobato & Adams 2015 and Gal & Ghahramani 2016) or JSON.

The index order of each file is kept (the paper's inner validation set is the last 20 % of the
training file, in file order), and :attr:`calipers.evaluation.folds.Folds.hash` covers it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from calipers.evaluation.folds import Folds

__all__ = ["read_splits"]

_FILE = re.compile(r"index_(train|test)_(\d+)\.txt")


def _as_indices(values: Any, *, where: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{where} is empty; every split needs train and test indices.")
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)) or np.any(a < 0):
        bad = a[~(np.isfinite(a) & (a == np.round(a)) & (a >= 0))][0]
        raise ValueError(f"{where} must hold non-negative integer row indices (such as 307 or "
                         f"307.0); found {bad!r}.")
    return a.astype(np.int64)


def _read_dir(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    found: dict[str, dict[int, Path]] = {"train": {}, "test": {}}
    for f in path.iterdir():
        m = _FILE.fullmatch(f.name)
        if m:
            found[m.group(1)][int(m.group(2))] = f
    ks = sorted(set(found["train"]) | set(found["test"]))
    if not ks:
        raise ValueError(f"{path} has no index_train_<k>.txt / index_test_<k>.txt files; point "
                         "[cv] splits at the folder that holds them, or at a JSON file.")
    if ks != list(range(len(ks))):
        raise ValueError(f"{path}: split numbers must run 0..K-1 without gaps; found {ks}.")
    for k in ks:
        for part in ("train", "test"):
            if k not in found[part]:
                raise ValueError(f"{path}: split {k} has no index_{part}_{k}.txt; each split "
                                 "needs both files.")
    return [tuple(_as_indices(np.loadtxt(found[p][k], ndmin=1), where=found[p][k].name)
                  for p in ("train", "test")) for k in ks]  # type: ignore[misc]


def _read_json(path: Path) -> list[tuple[np.ndarray, np.ndarray]] | Folds:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(raw, dict) and "folds" in raw and "n_samples" in raw:
        return Folds.from_dict(raw)  # a folds.json written by calipers
    items = raw.get("splits") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items or not all(
            isinstance(s, dict) and {"train", "test"} <= set(s) for s in items):
        raise ValueError(f"{path}: expected a list of {{\"train\": [...], \"test\": [...]}} "
                         "objects (or {\"splits\": that list}, or a calipers folds.json).")
    return [(_as_indices(s["train"], where=f"{path.name} split {k} train"),
             _as_indices(s["test"], where=f"{path.name} split {k} test"))
            for k, s in enumerate(items)]


def read_splits(path: str | Path, *, n_samples: int | None = None) -> Folds:
    """Read predefined splits into :class:`~calipers.evaluation.folds.Folds`.

    Parameters
    ----------
    path : str or Path
        A folder with ``index_train_<k>.txt`` and ``index_test_<k>.txt`` for k = 0..K-1
        (whitespace-separated 0-based row indices; ``307.0`` is read as 307), or a JSON file
        holding ``[{"train": [...], "test": [...]}, ...]``, ``{"splits": [...]}`` or a
        calipers ``folds.json``.
    n_samples : int, optional
        Rows of the data set; indices must be below it. Default: 1 + the largest index.

    Returns
    -------
    Folds
        One split per k (``repeat`` 0, ``fold`` k), indices in file order.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"splits path {p} does not exist; set [cv] splits to a folder of "
                                "index_train_<k>.txt / index_test_<k>.txt files or a JSON file.")
    pairs = _read_dir(p) if p.is_dir() else _read_json(p)
    if isinstance(pairs, Folds):
        folds = pairs
    else:
        top = max(int(max(tr.max(), te.max())) for tr, te in pairs) + 1
        folds = Folds(tuple(tr for tr, _ in pairs), tuple(te for _, te in pairs),
                      (0,) * len(pairs), tuple(range(len(pairs))),
                      top if n_samples is None else int(n_samples))
    n = folds.n_samples if n_samples is None else int(n_samples)
    if folds.n_samples != n:
        raise ValueError(f"{p}: the splits index {folds.n_samples} samples; the data set has {n}.")
    for k, (tr, te) in enumerate(folds):
        if max(tr.max(), te.max()) >= n:
            raise ValueError(f"{p}: split {k} has index {int(max(tr.max(), te.max()))}, outside "
                             f"0..{n - 1} for a data set of {n} rows.")
        if len(np.unique(tr)) != len(tr) or len(np.unique(te)) != len(te):
            raise ValueError(f"{p}: split {k} repeats an index within train or test.")
        if np.intersect1d(tr, te).size:
            raise ValueError(f"{p}: split {k}: train and test share "
                             f"{np.intersect1d(tr, te).size} indices; they must be disjoint.")
    return folds
