"""Segmentation data: NIfTI volumes or PNG slices with label masks, normalised and padded.

# NOTE [Padding to a common shape]
Volumes of one data set differ in shape (hippocampus crops range from 31×40×24 to 43×59×47).
Each image is z-scored on its own (per-volume intensity normalisation: scanners and file types
give different scales), then padded *at the end* of every axis with zeros (the normalised mean)
up to the largest shape of the set, rounded up to a multiple of ``2 ** (levels - 1)`` so a U-Net
can pool it. Labels are padded with background. The original shape of each volume is kept, and
every metric and map is computed on ``x[:s0, :s1, ...]``, the original voxels only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calipers._checks import _look_up_option
from calipers.exceptions import CalipersWarning, DataError

__all__ = [
    "Image",
    "SegmentationData",
    "crop_to",
    "find_pairs",
    "image_kind",
    "load_segmentation",
    "normalize_intensity",
    "pad_multiple",
    "pad_to",
    "read_image",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PNG_SUFFIXES = (".png",)
_FOLDERS = (("images", "labels"), ("image", "label"))


@dataclass(frozen=True, eq=False)
class Image:
    """One image as read from disk: array, geometry and where it came from.

    Attributes
    ----------
    data : ndarray of shape (*S)
        Voxel values (float32 for images; as stored for labels).
    affine : ndarray of shape (4, 4) or None
        Voxel-to-world matrix (NIfTI); None for PNG.
    header : nibabel header or None
        The source NIfTI header, copied into outputs.
    path : Path
    """

    data: np.ndarray = field(repr=False)
    affine: np.ndarray | None = field(repr=False)
    header: Any = field(repr=False)
    path: Path


def _stem(path: Path) -> str:
    name = path.name
    for suf in NIFTI_SUFFIXES + PNG_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def image_kind(path: str | Path) -> str | None:
    """``"nifti"``, ``"png"`` or None (not an image file calipers reads)."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PNG_SUFFIXES):
        return "png"
    return None


def read_image(path: str | Path, *, label: bool = False) -> Image:
    """Read a NIfTI (3-D, or 4-D with one volume) or a PNG (grey) image.

    Raises :class:`calipers.exceptions.DataError` naming the file when it cannot be read.
    """
    path = Path(path)
    kind = image_kind(path)
    try:
        if kind == "nifti":
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asarray(img.dataobj)
            if arr.ndim == 4 and arr.shape[3] == 1:
                arr = arr[..., 0]
            if arr.ndim not in (2, 3):
                raise DataError(f"{path}: expected a 3-D volume; got shape {arr.shape}.")
            affine, header = np.asarray(img.affine), img.header
        elif kind == "png":
            from PIL import Image as PILImage

            with PILImage.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("L") if im.mode not in ("L", "I;16", "I") else im)
            affine = header = None
        else:
            raise DataError(f"{path}: not a NIfTI (.nii, .nii.gz) or PNG file.")
    except DataError:
        raise
    except Exception as exc:  # nibabel/Pillow raise many types for corrupt files
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc}).") from exc
    arr = np.asarray(arr) if label else np.asarray(arr, dtype=np.float32)
    if not label and not np.isfinite(arr).all():
        raise DataError(f"{path}: holds NaN or infinite values.")
    return Image(arr, affine, header, path)


def normalize_intensity(x: np.ndarray) -> np.ndarray:
    """Z-score one image over all its voxels (std 0 → centred only), float32."""
    x = np.asarray(x, dtype=np.float32)
    mu, sd = float(x.mean()), float(x.std())
    return (x - mu) / (sd if sd > 0 else 1.0)


def pad_multiple(shape: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """``shape`` rounded up, axis by axis, to a multiple of ``multiple``."""
    return tuple(-(-int(s) // multiple) * multiple for s in shape)


def pad_to(x: np.ndarray, shape: tuple[int, ...], *, value: float = 0) -> np.ndarray:
    """Pad the last ``len(shape)`` axes of ``x`` at their end to ``shape`` (NOTE above)."""
    lead = x.ndim - len(shape)
    extra = [(0, int(t) - int(s)) for s, t in zip(x.shape[lead:], shape, strict=True)]
    if any(e < 0 for _, e in extra):
        raise ValueError(f"cannot pad shape {x.shape[lead:]} to the smaller {tuple(shape)}.")
    return np.pad(x, [(0, 0)] * lead + extra, constant_values=value)


def crop_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first ``shape`` voxels of the last ``len(shape)`` axes of ``x``."""
    return x[(Ellipsis, *(slice(0, int(s)) for s in shape))]


def find_pairs(root: str | Path, *, kind: str,
               missing_labels: str = "error") -> list[tuple[Path, Path]]:
    """(image, label) files with matching names in ``root/images`` and ``root/labels``
    (``image``/``label`` also accepted).

    An image without a label file is an error (``missing_labels="error"``), or with
    ``missing_labels="skip"`` left out with one :class:`~calipers.exceptions.CalipersWarning`
    that counts and names them; never dropped silently.
    """
    root = Path(root)
    for img_name, lab_name in _FOLDERS:
        if (root / img_name).is_dir() and (root / lab_name).is_dir():
            break
    else:
        raise DataError(f"{root} must hold folders images/ and labels/ (files of matching "
                        "names); neither images/+labels/ nor image/+label/ was found.")
    imgs = {_stem(p): p for p in sorted((root / img_name).iterdir()) if image_kind(p) == kind}
    labs = {_stem(p): p for p in sorted((root / lab_name).iterdir()) if image_kind(p) == kind}
    common = sorted(set(imgs) & set(labs))
    unlabelled = sorted(set(imgs) - set(labs))
    if unlabelled and common:
        names = ", ".join(imgs[k].name for k in unlabelled[:5]) + (
            " ..." if len(unlabelled) > 5 else "")
        if _look_up_option(missing_labels, ("error", "skip"), what="missing_labels") == "error":
            raise DataError(f"{root}: {len(unlabelled)} image(s) in {img_name}/ have no label "
                            f"file in {lab_name}/: {names}. Add the labels, move the images "
                            "out, or set [data] missing_labels = \"skip\" to leave them out.")
        warnings.warn(f"{len(unlabelled)} image(s) have no label file and are left out "
                      f"(missing_labels = 'skip'): {names}", CalipersWarning, stacklevel=3)
    if not common:
        raise DataError(f"{root}: no {kind} image/label pairs with matching names in "
                        f"{img_name}/ and {lab_name}/ ({len(imgs)} images, {len(labs)} labels).")
    return [(imgs[k], labs[k]) for k in common]


def _label_map(values: np.ndarray) -> tuple[int, ...]:
    """Stored label values in class order: {0, 255} masks become classes 0/1, else 0..K-1."""
    vals = tuple(int(v) for v in np.unique(values))
    if set(vals) <= {0, 255} and 255 in vals:
        return (0, 255)
    if vals[0] < 0:
        raise DataError(f"labels must be non-negative integers; found {vals[0]}.")
    return tuple(range(max(vals) + 1))


@dataclass(frozen=True, eq=False)
class SegmentationData:
    """Images and label maps padded to one shape (NOTE [Padding to a common shape]).

    Attributes
    ----------
    X : ndarray of shape (N, 1, *S), float32
        Z-scored, padded images.
    y : ndarray of shape (N, *S), uint8
        Class index per voxel (0 = background), padded with 0.
    shapes : ndarray of shape (N, ndim), int
        Original spatial shape of every image.
    names : tuple of str
        File stems, e.g. ``hippocampus_001``.
    label_values : tuple of int
        Stored label value of each class (``(0, 255)`` for binary PNG masks).
    kind : {"nifti", "png"}
    multiple : int
        Every padded size is a multiple of this.
    """

    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    shapes: np.ndarray = field(repr=False)
    names: tuple[str, ...]
    label_values: tuple[int, ...]
    kind: str
    multiple: int
    task: str = "segmentation"

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_outputs(self) -> int:
        return len(self.label_values)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.X.shape[1:])


def load_segmentation(root: str | Path, *, kind: str, multiple: int = 16,
                      missing_labels: str = "error") -> SegmentationData:
    """Read every image/label pair of ``root`` (see :func:`find_pairs`), normalise and pad
    (``kind = "pack"``: a :mod:`calipers.segmentation.pack` folder of such pairs)."""
    if kind == "pack":
        from calipers.segmentation.pack import load_segmentation_pack

        return load_segmentation_pack(root, multiple=multiple)
    pairs = find_pairs(root, kind=kind, missing_labels=missing_labels)
    images, labels = [], []
    for img_path, lab_path in pairs:
        img, lab = read_image(img_path), read_image(lab_path, label=True)
        if img.data.shape != lab.data.shape:
            raise DataError(f"{img_path} has shape {img.data.shape} but its label {lab_path} "
                            f"has {lab.data.shape}; they must match voxel for voxel.")
        lab_arr = np.asarray(lab.data)
        if not np.array_equal(lab_arr, np.round(lab_arr)):
            raise DataError(f"{lab_path}: labels must be integers; found fractional values.")
        images.append(normalize_intensity(img.data))
        labels.append(lab_arr.astype(np.int64))
    ndims = {x.ndim for x in images}
    if len(ndims) != 1:
        raise DataError(f"{root}: images mix {sorted(ndims)}-D data; use one dimensionality.")
    return assemble(images, labels, tuple(_stem(p[0]) for p in pairs), kind=kind,
                    multiple=multiple)


def assemble(images: list[np.ndarray], labels: list[np.ndarray], names: tuple[str, ...], *,
             kind: str, multiple: int) -> SegmentationData:
    """Normalised images and their integer labels (each of its own shape) padded to one shape,
    a multiple of ``multiple``; labels mapped to 0..C-1 (0/255 masks to 0/1)."""
    values = _label_map(np.concatenate([np.unique(y) for y in labels]))
    shapes = np.array([x.shape for x in images], dtype=np.int64)
    target = pad_multiple(tuple(shapes.max(axis=0)), multiple)
    X = np.stack([pad_to(x, target) for x in images])[:, None]
    binary = values == (0, 255)
    y = np.stack([pad_to((v // 255 if binary else v).astype(np.uint8), target) for v in labels])
    return SegmentationData(X, y, shapes, names, values, kind, int(multiple))
