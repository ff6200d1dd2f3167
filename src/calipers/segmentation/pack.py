"""A packed segmentation folder (:func:`calipers.tools.pack.pack`) read as
:class:`~calipers.segmentation.data.SegmentationData`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from calipers.data.pack import read_index
from calipers.exceptions import DataError
from calipers.segmentation.data import assemble, normalize_intensity

__all__ = ["load_segmentation_pack"]


def load_segmentation_pack(path: str | os.PathLike[str], *, multiple: int = 16):
    """A packed segmentation folder as :class:`~calipers.segmentation.data.SegmentationData`,
    normalised and padded exactly as :func:`~calipers.segmentation.data.load_segmentation`
    does with the source folder."""
    index = read_index(path)
    if index["kind"] != "segmentation":
        raise DataError(f"{path} packs a class-folder image set, not a segmentation data set.")
    Xf = np.load(Path(path) / "X.npy", mmap_mode="r")
    yf = np.load(Path(path) / "y.npy", mmap_mode="r")
    vols = index["volumes"]

    def part(a: np.ndarray, v: dict) -> np.ndarray:
        n = int(np.prod(v["shape"]))
        return np.asarray(a[v["offset"]:v["offset"] + n]).reshape(v["shape"],
                                                                  order=v.get("order", "C"))

    images = [normalize_intensity(part(Xf, v)) for v in vols]
    labels = [part(yf, v).astype(np.int64) for v in vols]
    return assemble(images, labels, tuple(v["name"] for v in vols),
                    kind=index.get("image_kind", "nifti"), multiple=multiple)
