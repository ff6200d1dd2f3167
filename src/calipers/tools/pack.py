"""Array packs: a data set of many image files as one memory-mapped ``.npy`` plus an index.

A GPU waits while the CPU decodes PNG, JPEG or compressed NIfTI files; a pack is decoded once.
``pack(SRC, DST)`` accepts the two layouts calipers reads:

* a class-folder image set (``SRC/<class>/*.png``, as ``data.kind = "images"``): ``X.npy``
  ``(N, C, H, W)`` float32 in [0, 1] and ``y.npy`` ``(N,)`` int64 class codes, exactly the
  arrays :func:`calipers.data.load_images` builds;
* a segmentation folder (``SRC/images`` + ``SRC/labels``, NIfTI or PNG, as ``kind = "nifti"``):
  volumes differ in shape, so ``X.npy`` holds every image's voxels (float32, as stored) one after
  another and ``y.npy`` the labels (int32); the index gives each volume's offset, shape and
  affine. :func:`load_segmentation_pack` normalises and pads them as
  :func:`calipers.segmentation.data.load_segmentation` does.

``pack.json`` is the index (format, version, kind, shapes, classes or volumes, source files).
``data.kind = "pack"`` reads it with :func:`load_pack`, memory-mapped: only the samples a fold
touches are read. The pack is written into a temporary folder beside ``DST`` and renamed onto it
when complete, so an unreadable source file (named in the error) leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calipers.data.loaders import read_image_chw
from calipers.data.pack import FORMAT, VERSION, load_pack, read_index
from calipers.exceptions import DataError
from calipers.segmentation.pack import load_segmentation_pack

__all__ = ["PackInfo", "load_pack", "load_segmentation_pack", "pack", "read_index"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class PackInfo:
    """A written pack: its folder, ``kind`` (``images`` or ``segmentation``), number of samples
    and bytes of array data."""

    path: Path
    kind: str
    n_samples: int
    nbytes: int




def _pack_images(src: Path, tmp: Path, progress) -> dict:
    class_dirs = sorted(d for d in src.iterdir() if d.is_dir())
    files, labels = [], []
    for code, d in enumerate(class_dirs):
        fs = sorted(f for f in d.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        if not fs:
            raise DataError(f"class folder {d} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")
        files += fs
        labels += [code] * len(fs)
    first = read_image_chw(files[0])
    X = np.lib.format.open_memmap(tmp / "X.npy", mode="w+", dtype=np.float32,
                                  shape=(len(files), *first.shape))
    for i, f in enumerate(files):
        a = first if i == 0 else read_image_chw(f)
        if a.shape != first.shape:
            raise DataError(f"images in {src} differ in shape/channels: {f} is {a.shape}, "
                            f"{files[0]} is {first.shape}; resize them to one size first.")
        X[i] = a
        if progress is not None:
            progress(i + 1, len(files))
    X.flush()
    del X
    np.save(tmp / "y.npy", np.asarray(labels, dtype=np.int64))
    return {"kind": "images", "task": "classification", "n": len(files),
            "shape": list(first.shape), "classes": [d.name for d in class_dirs],
            "files": [str(f.relative_to(src)) for f in files]}


def _pack_segmentation(src: Path, tmp: Path, progress) -> dict:
    from calipers.segmentation.data import _stem, find_pairs, image_kind, read_image

    kinds = {image_kind(p) for d in ("images", "image") if (src / d).is_dir()
             for p in (src / d).iterdir()} - {None}
    kind = "nifti" if "nifti" in kinds else "png"
    pairs = find_pairs(src, kind=kind)
    images, volumes = [], []
    offset = 0
    # one pass: read, check, append to two growing raw files (shapes are not known up front)
    with open(tmp / "X.raw", "wb") as fx, open(tmp / "y.raw", "wb") as fy:
        for i, (ip, lp) in enumerate(pairs):
            img, lab = read_image(ip), read_image(lp, label=True)
            if img.data.shape != lab.data.shape:
                raise DataError(f"{ip} has shape {img.data.shape} but its label {lp} has "
                                f"{lab.data.shape}; they must match voxel for voxel.")
            lab_arr = np.asarray(lab.data)
            if not np.array_equal(lab_arr, np.round(lab_arr)) or lab_arr.min() < 0 \
                    or lab_arr.max() >= 2**31:
                raise DataError(f"{lp}: labels must be non-negative integers.")
            # kept in the file's memory order, so reductions over a volume sum in the same order
            order = "F" if np.isfortran(img.data) else "C"
            fx.write(np.asarray(img.data, dtype=np.float32).tobytes(order=order))
            fy.write(np.asarray(lab_arr, dtype=np.int32).tobytes(order=order))
            volumes.append({"name": _stem(ip), "offset": offset, "shape": list(img.data.shape),
                            "order": order,
                            "affine": None if img.affine is None else img.affine.tolist(),
                            "image": str(ip.relative_to(src)), "label": str(lp.relative_to(src))})
            offset += int(img.data.size)
            images.append(ip)
            if progress is not None:
                progress(i + 1, len(pairs))
    for name, dtype in (("X", np.float32), ("y", np.int32)):  # raw bytes -> .npy, streamed
        out = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype,
                                        shape=(offset,))
        out[:] = np.memmap(tmp / f"{name}.raw", dtype=dtype, mode="r", shape=(offset,))
        out.flush()
        del out
        (tmp / f"{name}.raw").unlink()
    return {"kind": "segmentation", "task": "segmentation", "image_kind": kind,
            "n": len(volumes), "volumes": volumes}


def pack(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PackInfo:
    """Pack the image data set ``src`` into the folder ``dst`` (see the module docstring).

    Parameters
    ----------
    src : path
        A class-folder image set, or a folder with ``images/`` and ``labels/``.
    dst : path
        The pack folder to write; an existing one is refused unless ``force``.
    progress : callable(done, total), optional

    Raises
    ------
    FileExistsError
        ``dst`` exists and ``force`` is false.
    DataError
        A source file cannot be read (named), or the images do not fit one layout.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist.")
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} exists; choose another destination or pass --force to "
                              "replace it.")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"the pack {dst} must not be inside its source {src}.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        seg = any((src / a).is_dir() and (src / b).is_dir()
                  for a, b in (("images", "labels"), ("image", "label")))
        if seg:
            index = _pack_segmentation(src, tmp, progress)
        else:
            if sum(d.is_dir() for d in src.iterdir()) < 2:
                raise DataError(f"{src} must hold one subfolder per class (at least 2), or "
                                "folders images/ and labels/.")
            index = _pack_images(src, tmp, progress)
        index = {"format": FORMAT, "version": VERSION, **index, "source": str(src.resolve())}
        (tmp / "pack.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
        if dst.exists():  # --force: the old pack goes only once the new one is complete
            old = dst.with_name(f".{dst.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nbytes = sum(f.stat().st_size for f in dst.glob("*.npy"))
    return PackInfo(dst, index["kind"], index["n"], nbytes)
