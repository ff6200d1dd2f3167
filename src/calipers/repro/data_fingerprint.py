"""A fingerprint of the data a run was made on: resume and compare refuse changed data.

# NOTE [Data fingerprint]
``RUN/data.json`` records a SHA-256 over the arrays the folds index (``X``, ``y`` and the
groups, each with its dtype and shape) and, for folder data sets, the names and sizes of the
files in the folder (also listed, for a single data file too, to say what changed). It is
computed from the loaded arrays in slabs of at most 16 MiB (no copy of the data set): one pass
over memory (SHA-256 runs at several hundred MB/s on one core). Same configuration
and same folds are not enough: rewriting ``X`` in an ``.npz`` keeps ``y`` and hence the folds,
and a resumed run would train its remaining folds on other data. So:

- a run folder whose ``data.json`` differs from the data now loaded is not resumed
  (:func:`check_data`);
- ``calipers compare`` of runs whose ``data.json`` differ is refused unless the user says
  ``--allow-different-data`` (:func:`check_same_data`). Runs made before this file existed
  have no ``data.json`` and are not checked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calipers.exceptions import DataError
from calipers.runs import atomic_write_json, read_json

__all__ = ["DATA_FILE", "check_data", "check_same_data", "data_fingerprint", "write_data"]

DATA_FILE = "data.json"
_SLAB = 16 * 2**20


def _update(h: Any, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    flat = a.reshape(-1).view(np.uint8) if a.size else np.empty(0, np.uint8)
    for start in range(0, flat.size, _SLAB):
        h.update(memoryview(flat[start:start + _SLAB]))


def _files(path: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    p = Path(path)
    if p.is_file():
        return [{"name": p.name, "size": p.stat().st_size}]
    if p.is_dir():
        return [{"name": str(f.relative_to(p)), "size": f.stat().st_size}
                for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith(".")]
    return []


def data_fingerprint(
    arrays: Sequence[np.ndarray | None], *, path: str | os.PathLike[str] | None = None,
    names: Iterable[str] = (),
) -> dict[str, Any]:
    """The fingerprint of NOTE [Data fingerprint].

    Parameters
    ----------
    arrays : sequence of ndarray or None
        ``X``, ``y`` (and ``groups``); None entries are recorded as absent.
    path : path, optional
        The data file or folder (``data.path``); its files' names and sizes are recorded.
    names : iterable of str
        Sample names (segmentation file stems), hashed in order.

    Returns
    -------
    dict
        ``{"sha256": hex, "n_samples": int, "files": [{"name", "size"}, ...]}``.
    """
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"-")
        else:
            _update(h, np.asarray(a))
    files = _files(path)
    if path is not None and Path(path).is_dir():  # a folder's listing is part of the data
        for f in files:
            h.update(f"{f['name']}\0{f['size']}\0".encode())
    for n in names:
        h.update(f"{n}\0".encode())
    first = next((a for a in arrays if a is not None), None)
    return {"sha256": h.hexdigest(), "n_samples": 0 if first is None else len(first),
            "files": files}


def check_data(run_dir: str | os.PathLike[str], fp: dict[str, Any]) -> None:
    """Refuse to resume ``run_dir`` if it was made on other data (before anything is written)."""
    old = Path(run_dir) / DATA_FILE
    if not old.is_file():
        return
    before = read_json(old)
    if before.get("sha256") != fp["sha256"]:
        raise DataError(
            f"the data have changed since {run_dir} was started ({DATA_FILE}: sha256 "
            f"{str(before.get('sha256'))[:12]}..., now {fp['sha256'][:12]}...; files "
            f"{_diff(before.get('files', []), fp['files'])}). Its finished folds were trained on "
            "the old data; resuming would mix two data sets. Choose another --out, or delete the "
            "folder to start over."
        )


def _diff(old: list[dict], new: list[dict]) -> str:
    a = {f["name"]: f["size"] for f in old}
    b = {f["name"]: f["size"] for f in new}
    changed = sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))
    return ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "") if changed else \
        "of equal names and sizes, other contents"


def write_data(run_dir: str | os.PathLike[str], fp: dict[str, Any]) -> None:
    """Write ``RUN/data.json`` once: the first session's data are the run's. A run folder
    that already holds finished folds but no ``data.json`` (made by an older calipers) gets
    none: its folds' data are unknown, and recording today's would vouch for them."""
    path = Path(run_dir) / DATA_FILE
    if not path.is_file() and not any(Path(run_dir).glob("*/fold-*/metrics.json")):
        atomic_write_json(path, fp)


def check_same_data(run_dirs: Sequence[str | os.PathLike[str]], *,
                    allow_different: bool = False) -> list[str]:
    """Refuse runs made on different data unless ``allow_different``.

    Returns
    -------
    list of str
        Notes for the user: runs without ``data.json`` beside runs with one (not checked) and,
        with
        ``allow_different``, the runs whose data differ.
    """
    prints, unknown, notes = {}, [], []
    for d in run_dirs:
        f = Path(d) / DATA_FILE
        if f.is_file():
            prints[str(d)] = read_json(f).get("sha256")
        else:
            unknown.append(str(d))
    if prints and unknown:  # some runs can be checked, these cannot
        notes += [f"{d} has no {DATA_FILE} (made by an older calipers or by the library "
                  "without a config); its data were not checked." for d in unknown]
    if len(set(prints.values())) > 1:
        lines = "\n".join(f"  {d}: sha256 {str(h)[:12]}..." for d, h in prints.items())
        if not allow_different:
            raise DataError(f"the runs were made on different data:\n{lines}\nA paired "
                            "comparison needs the same samples in the same folds; pass "
                            "--allow-different-data if you know they match (e.g. a re-export "
                            "of the same data).")
        notes.append(f"the runs were made on different data (allowed):\n{lines}")
    return notes
