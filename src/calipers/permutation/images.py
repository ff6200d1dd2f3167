"""NIfTI/Analyze in, randomise-named NIfTI out: the image layer over ``permutation_test``.

Output names and scaling follow FSL randomise: ``<out>_tstat1.nii.gz`` (raw t),
``<out>_vox_p_tstat1`` (``--uncorrp``), ``<out>_vox_corrp_tstat1`` (``-x``),
``<out>_tfce_corrp_tstat1`` (``-T``; ``_tfce_p_`` with ``--uncorrp``),
``<out>_clustere_corrp_tstat1`` (``-c``), ``<out>_clusterm_corrp_tstat1`` (``-C``); F-tests
likewise with ``fstat``. p-images hold **1 − p** (``logp=True``: −log10 p, as PALM). Everything
is computed first and then written through temporary files renamed into place, so an error never
leaves a partial set of outputs.

# NOTE [Output prefix]
``out_prefix`` ``dir/grp`` writes ``dir/grp_tstat1.nii.gz`` ...; a prefix that ends with a path
separator (``out2/``) names a folder, and the files in it have no name prefix
(``out2/tstat1.nii.gz``, ``out2/summary.json``). A prefix that already has outputs (files named
as above: statistic, p-images and the summary) is refused unless ``overwrite=True``; then the
earlier run's outputs of that prefix are removed just before the new ones are renamed into
place, so no stale ``_tfce_corrp_`` map of an earlier run is left beside the new ones. Other
files are never touched, and an input or mask named like an output is refused.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from calipers.exceptions import CalipersWarning, DataError
from calipers.permutation.api import PermutationResult, permutation_test
from calipers.permutation.design import MatrixLike

if TYPE_CHECKING:
    import torch

#: One image: a path (or glob, for ``inputs``) or an in-memory nibabel image.
ImageLike = str | os.PathLike[str] | nib.spatialimages.SpatialImage

__all__ = ["PermuteOutputs", "load_images", "permute_images"]


@dataclass(frozen=True)
class PermuteOutputs:
    """What :func:`permute_images` wrote.

    Attributes
    ----------
    files : tuple of Path
        Every image written, then ``<out>_summary.json``.
    summary : dict
        The JSON summary (also on disk).
    result : PermutationResult
        The array result (voxels = the mask's True voxels in C order).
    n_voxels : int
        Voxels tested.
    n_nan_excluded : int
        Voxels of the mask dropped because some subject has NaN/inf there.
    """

    files: tuple[Path, ...]
    summary: dict[str, Any]
    result: PermutationResult
    n_voxels: int
    n_nan_excluded: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [str(f) for f in self.files],
            "n_voxels": self.n_voxels,
            "n_nan_excluded": self.n_nan_excluded,
        }


def _expand_inputs(inputs) -> list:
    if isinstance(inputs, (str, os.PathLike)):
        text = str(inputs)
        if any(ch in text for ch in "*?["):
            files = sorted(glob.glob(text))
            if not files:
                raise FileNotFoundError(f"the glob {text!r} matches no file.")
            return files
        return [text]
    if isinstance(inputs, nib.spatialimages.SpatialImage):
        return [inputs]
    items = list(inputs)
    if not items:
        raise ValueError("inputs is empty; give a 4-D image or a list of 3-D images.")
    out = []
    for item in items:
        out.extend(_expand_inputs(item) if isinstance(item, (str, os.PathLike)) else [item])
    return out


def _open(item) -> tuple[nib.spatialimages.SpatialImage, str]:
    if isinstance(item, nib.spatialimages.SpatialImage):
        return item, "<in-memory image>"
    path = Path(item)
    if not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} does not exist.")
    if path.is_dir():
        raise DataError(f"image {str(path)!r} is a folder; give NIfTI files or a glob such as "
                        f"'{path}/*.nii.gz'.")
    try:
        return nib.load(str(path)), str(path)
    except Exception as exc:  # nibabel raises many types for files it cannot read
        raise DataError(f"cannot read image {str(path)!r} as NIfTI/Analyze "
                        f"({type(exc).__name__}: {exc}).") from None


def _voxels(img, name: str, *, keep_float32: bool = False) -> np.ndarray:
    """The image's voxels as float64, or (``keep_float32``) as stored when that is unscaled
    float32: the same values (float32 -> float64 is exact), half the memory until masking."""
    try:
        if keep_float32 and _plain_float32(img.dataobj):
            return np.asarray(img.dataobj)
        return np.asarray(img.dataobj, dtype=np.float64)
    except Exception as exc:  # a truncated .nii.gz fails only when its voxels are read
        raise DataError(f"cannot read the voxels of {name!r} (damaged or truncated file?): "
                        f"{type(exc).__name__}: {exc}") from None


def _plain_float32(dataobj) -> bool:
    """True for float32 voxels read without scaling (an array, or a proxy with slope 1, inter 0)."""
    if isinstance(dataobj, np.ndarray):
        return dataobj.dtype == np.float32
    slope, inter = getattr(dataobj, "slope", None), getattr(dataobj, "inter", None)
    return (getattr(dataobj, "dtype", None) == np.float32 and slope is not None
            and inter is not None and float(slope) == 1.0 and float(inter) == 0.0)


def load_images(
    inputs: ImageLike | Sequence[ImageLike],
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load subjects' images as one array.

    Parameters
    ----------
    inputs : path, glob, nibabel image, or a list of those
        One 4-D NIfTI (subjects on the 4th axis) or several 3-D NIfTI/Analyze images
        (a trailing axis of length 1, as in SPM2 Analyze files, is dropped).

    Returns
    -------
    data : ndarray of shape (n_subjects, X, Y, Z), float64
    affine : ndarray of shape (4, 4)
    names : list of str
        The source of each subject's image.
    """
    return _load_images(inputs, keep_float32=False)


def _load_images(inputs, *, keep_float32: bool):
    """``load_images``; ``keep_float32``: float32 data (all images unscaled float32) stays
    float32 (``permute_images`` masks first, then converts: identical values, less memory)."""
    items = _expand_inputs(inputs)
    volumes, names, ref = [], [], None
    for item in items:
        img, name = _open(item)
        arr = _voxels(img, name, keep_float32=keep_float32)
        while arr.ndim > 3 and arr.shape[-1] == 1 and (len(items) > 1 or arr.ndim > 4):
            arr = arr[..., 0]
        if ref is None:
            ref = (img, name, arr.shape[:3])
        _check_geometry(img, name, arr, ref)
        if arr.ndim == 4:
            volumes.extend(np.moveaxis(arr, 3, 0))
            names.extend(f"{name}[{i}]" for i in range(arr.shape[3]))
        elif arr.ndim == 3:
            volumes.append(arr)
            names.append(name)
        else:
            raise DataError(f"image {name} has shape {arr.shape}; expected 3-D or 4-D.")
    if len({v.dtype for v in volumes}) > 1:  # mixed inputs: float64 throughout
        volumes = [v.astype(np.float64, copy=False) for v in volumes]
    return np.stack(volumes), np.asarray(ref[0].affine, dtype=np.float64), names


def _check_geometry(img, name: str, arr: np.ndarray, ref) -> None:
    ref_img, ref_name, ref_shape = ref
    if arr.shape[:3] != ref_shape:
        raise DataError(
            f"images have different shapes: {name} is {arr.shape[:3]} but {ref_name} is "
            f"{ref_shape}; resample all images to one grid first."
        )
    if not np.allclose(img.affine, ref_img.affine, atol=1e-4):
        raise DataError(
            f"images have different affines: {name} differs from {ref_name}; they must be in "
            f"the same space (resample them onto one grid)."
        )


def _load_mask(mask, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        arr = mask
    else:
        img, name = _open(mask)
        if not np.allclose(img.affine, affine, atol=1e-4):
            raise DataError(f"mask {name} has a different affine from the images.")
        arr = np.asarray(img.dataobj)
        while arr.ndim > 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
    if arr.shape != shape:
        raise DataError(f"mask has shape {arr.shape} but the images are {shape}.")
    return np.asarray(arr != 0) & np.isfinite(arr)


def _make_mask(data: np.ndarray, mask, affine: np.ndarray) -> tuple[np.ndarray, int]:
    """Mask (X, Y, Z) of tested voxels and the number dropped for NaN/inf."""
    finite = np.isfinite(data).all(axis=0)
    if mask is None:  # randomise: voxels finite and not constant across subjects
        with np.errstate(invalid="ignore"):
            varying = np.ptp(np.where(np.isfinite(data), data, 0.0), axis=0) > 0
        base = varying
    else:
        base = _load_mask(mask, data.shape[1:], affine)
    n_nan = int(np.sum(base & ~finite))
    keep = base & finite
    if not keep.any():
        raise DataError(
            "the mask is empty: no voxel is inside the mask, finite in every image"
            + (" and non-constant across subjects" if mask is None else "")
            + f" (images {data.shape[1:]}, {data.shape[0]} subjects); check the mask and the "
            "inputs."
        )
    if n_nan:
        warnings.warn(
            f"{n_nan} voxel(s) of the mask hold NaN/inf in at least one image and were "
            f"excluded ({int(keep.sum())} voxels tested).",
            CalipersWarning,
            stacklevel=3,
        )
    return keep, n_nan


def permute_images(
    inputs: ImageLike | Sequence[ImageLike],
    out_prefix: str | os.PathLike[str],
    *,
    design: MatrixLike | None = None,
    contrasts: MatrixLike | None = None,
    f_tests: MatrixLike | None = None,
    mask: ImageLike | np.ndarray | None = None,
    one_sample: bool = False,
    n_permutations: int = 5000,
    tfce: bool = False,
    cluster_extent_threshold: float | None = None,
    cluster_mass_threshold: float | None = None,
    exchangeability_blocks: MatrixLike | None = None,
    demean: bool = False,
    vox_corrp: bool = False,
    uncorrp: bool = False,
    logp: bool = False,
    seed: int = 0,
    device: str | torch.device = "auto",
    tfce_H: float = 2.0,
    tfce_E: float = 0.5,
    tfce_connectivity: int = 6,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    executor=None,
    n_chunks: int | None = None,
    work_dir=None,
) -> PermuteOutputs:
    """randomise on NIfTI files: load, mask, test, write randomise-named images + summary.

    Parameters mirror randomise (``-i -o -d -t -f -m -1 -n -x --uncorrp -T -c -C -e -D
    --seed``); ``design``/``contrasts``/``f_tests``/``exchangeability_blocks`` are FSL VEST
    files (``.mat .con .fts .grp``), CSV files or arrays. ``one_sample`` (``-1``) ignores the
    design and tests the mean by sign flipping. ``vox_corrp`` (``-x``) writes voxelwise
    max-statistic FWE images; TFCE and cluster FWE images are written whenever requested.
    See :func:`calipers.permutation.permutation_test` for the statistics. ``out_prefix``
    and ``overwrite``: see NOTE [Output prefix]. ``executor``,
    ``n_chunks``, ``work_dir``: permutations in chunk tasks.

    Returns
    -------
    PermuteOutputs
    """
    start = time.perf_counter()
    if one_sample and any(v is not None for v in (design, contrasts, f_tests)):
        raise ValueError("one_sample (-1) tests the mean by sign flips and takes no design; "
                         "drop -1 to use the design (-d/-t/-f), or drop the design files.")
    folder, stem = _split_prefix(out_prefix)
    earlier = _earlier_outputs(folder, stem)
    if earlier and not overwrite:
        raise FileExistsError(
            f"output prefix {str(out_prefix)!r} already has {len(earlier)} output file(s) of an "
            f"earlier run (e.g. {earlier[0].name}); choose another -o or pass --overwrite "
            "(overwrite=True) to replace them.")
    _check_not_outputs(inputs, mask, folder, stem)
    data, affine, names = _load_images(inputs, keep_float32=True)  # float32 or float64
    keep, n_nan = _make_mask(data, mask, affine)
    clusters = None
    if cluster_extent_threshold is not None or cluster_mass_threshold is not None:
        clusters = (cluster_extent_threshold, cluster_mass_threshold)
    result = permutation_test(
        data[:, keep].astype(np.float64, copy=False),
        design,
        contrasts,
        f_tests=f_tests,
        n_permutations=n_permutations,
        tfce=tfce,
        cluster_threshold=clusters,
        mask=keep,
        exchangeability_blocks=exchangeability_blocks,
        demean=demean,
        seed=seed,
        device=device,
        tfce_H=tfce_H,
        tfce_E=tfce_E,
        connectivity=tfce_connectivity,
        progress=progress,
        executor=executor,
        n_chunks=n_chunks,
        work_dir=work_dir,
    )
    images = _output_images(result, vox_corrp=vox_corrp, uncorrp=uncorrp, logp=logp)
    summary = _summary(result, names, keep, n_nan, logp, time.perf_counter() - start)
    files = _write_all(folder, stem, images, keep, affine, summary)
    return PermuteOutputs(files, summary, result, int(keep.sum()), n_nan)


def _p_image(p: np.ndarray, logp: bool) -> np.ndarray:
    return -np.log10(p) if logp else 1.0 - p


def _output_images(
    result: PermutationResult, *, vox_corrp: bool, uncorrp: bool, logp: bool
) -> list[tuple[str, np.ndarray]]:
    """[(suffix, values at the mask's voxels)] in randomise's order and names."""
    out: list[tuple[str, np.ndarray]] = []
    for i, name in enumerate(result.names):
        out.append((name, result.statistic[i]))
        if uncorrp:
            out.append((f"vox_p_{name}", _p_image(result.p_uncorrected[i], logp)))
        if vox_corrp:
            out.append((f"vox_corrp_{name}", _p_image(result.p_fwe[i], logp)))
        if result.tfce is not None:
            if uncorrp:
                out.append((f"tfce_p_{name}", _p_image(result.p_tfce_uncorrected[i], logp)))
            out.append((f"tfce_corrp_{name}", _p_image(result.p_tfce_fwe[i], logp)))
        if result.p_cluster_extent_fwe is not None:
            out.append((f"clustere_corrp_{name}", _p_image(result.p_cluster_extent_fwe[i], logp)))
        if result.p_cluster_mass_fwe is not None:
            out.append((f"clusterm_corrp_{name}", _p_image(result.p_cluster_mass_fwe[i], logp)))
    return out


def _summary(result, names, keep, n_nan, logp, seconds) -> dict[str, Any]:
    summary = result.to_dict()
    summary.update(
        {
            "n_subjects": len(names),
            "inputs": names,
            "n_voxels": int(keep.sum()),
            "n_nan_excluded": n_nan,
            "p_scale": "-log10(p)" if logp else "1 - p",
            "runtime_s": round(seconds, 3),
            "null_max_statistic": [n.tolist() for n in result.max_null],
        }
    )
    for key in ("tfce_max_null", "cluster_extent_max_null", "cluster_mass_max_null"):
        value = getattr(result, key)
        if value is not None:
            summary[f"null_{key.removesuffix('_max_null')}"] = [n.tolist() for n in value]
    return summary


def _split_prefix(out_prefix) -> tuple[Path, str]:
    """(folder, name prefix) of ``out_prefix`` (NOTE [Output prefix])."""
    text = os.fspath(out_prefix)
    if not text:
        raise ValueError("the output prefix is empty; give e.g. -o out/grp.")
    if text.endswith(("/", os.sep)):
        return Path(text), ""
    prefix = Path(text)
    if prefix.is_dir():
        raise ValueError(f"output prefix {text!r} is an existing folder; write into it with "
                         f"{text.rstrip('/' + os.sep)}/ (trailing slash) or {text}/NAME.")
    return prefix.parent, f"{prefix.name}_"


def _output_pattern(stem: str) -> re.Pattern[str]:
    return re.compile(re.escape(stem) + r"(((vox|tfce|clustere|clusterm)_(p|corrp)_)?"
                      r"(tstat|fstat)\d+\.nii\.gz|summary\.json)")


def _earlier_outputs(folder: Path, stem: str) -> list[Path]:
    if not folder.is_dir():
        return []
    pattern = _output_pattern(stem)
    return sorted(p for p in folder.iterdir() if p.is_file() and pattern.fullmatch(p.name))


def _check_not_outputs(inputs, mask, folder: Path, stem: str) -> None:
    """Refuse an input or mask that the outputs would overwrite or remove."""
    pattern = _output_pattern(stem)
    items = _expand_inputs(inputs) + ([mask] if isinstance(mask, (str, os.PathLike)) else [])
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            p = Path(item)
            if pattern.fullmatch(p.name) and p.parent.resolve() == folder.resolve():
                raise ValueError(f"input {str(p)!r} has the name of an output of prefix "
                                 f"{str(folder / stem)!r}; choose another -o.")


def _write_all(folder: Path, stem: str, images, keep, affine, summary) -> tuple[Path, ...]:
    """Write every output to a temporary file, then remove the prefix's earlier outputs and
    rename all into place (or none)."""
    folder.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for suffix, values in images:
            vol = np.zeros(keep.shape, dtype=np.float32)
            vol[keep] = values
            img = nib.Nifti1Image(vol, affine)
            img.header.set_xyzt_units("mm")
            final = folder / f"{stem}{suffix}.nii.gz"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{final.name}.", suffix=".nii.gz")
            os.close(fd)
            staged.append((Path(tmp), final))
            nib.save(img, tmp)
        final = folder / f"{stem}summary.json"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{final.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(summary, fh, indent=1)
        staged.append((Path(tmp), final))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for old in _earlier_outputs(folder, stem):  # only reached with overwrite=True
        old.unlink()
    for tmp, final in staged:
        os.replace(tmp, final)
    return tuple(final for _, final in staged)
