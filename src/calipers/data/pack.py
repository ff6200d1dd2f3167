"""Reading array packs (``data.kind = "pack"``): one memory-mapped ``.npy`` plus ``pack.json``.

Packs are written by :func:`calipers.tools.pack.pack` (``calipers pack SRC DST``); see there for the
layout. This module only reads them, memory-mapped: only the samples a fold touches are read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from calipers.data.dataset import Dataset
from calipers.exceptions import DataError

__all__ = ["FORMAT", "VERSION", "load_pack", "read_index"]

FORMAT, VERSION = "calipers-pack", 1


def read_index(path: str | os.PathLike[str]) -> dict:
    """The ``pack.json`` of the pack folder ``path``, checked."""
    p = Path(path)
    f = p / "pack.json"
    if not f.is_file():
        raise FileNotFoundError(f"{p} is not a calipers pack (no pack.json); make one with "
                                "`calipers pack SRC DST`.")
    index = json.loads(f.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise DataError(f"{f}: not a {FORMAT} version {VERSION} index.")
    return index


def load_pack(path: str | os.PathLike[str]) -> Dataset:
    """A packed class-folder image set as a :class:`~calipers.data.Dataset` whose ``X`` is a
    read-only memory map (the same arrays as :func:`calipers.data.load_images` on the source)."""
    index = read_index(path)
    if index["kind"] != "images":
        raise DataError(f"{path} packs a segmentation data set; use data.task = "
                        "\"segmentation\" (load_segmentation_pack).")
    X = np.load(Path(path) / "X.npy", mmap_mode="r")
    y = np.load(Path(path) / "y.npy")
    if X.shape[0] != index["n"] or y.shape != (index["n"],):
        raise DataError(f"{path}: X.npy / y.npy do not hold the {index['n']} samples of "
                        "pack.json; repack it.")
    return Dataset(X, y, "classification", Path(path).name, tuple(index["classes"]))
