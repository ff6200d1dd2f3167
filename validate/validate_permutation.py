"""Validation of the permutation engine on real data and on smooth null data (``make validate``).

1. Wager et al. (2008): the 30 emotion-regulation contrast maps in
   ``../shared/data/wager2008-emotion-regulation`` inside nilearn's 2 mm MNI brain mask resampled
   (nearest) onto their grid: one-sample test through the image layer (``permute_images``), max t
   (SOURCE.md: 7.25), voxels with FWE p < 0.05 (max-T and TFCE), runtime.
2. FWE control: 200 null data sets of smooth Gaussian noise (FWHM 2.5 voxels), n = 20, inside the
   same brain mask: the family-wise error rate of max-T and TFCE must lie in the binomial 95%
   interval of 0.05.

Figures are written to ``bench/results/permutation_validation.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.stats as st
from scipy import ndimage

from calipers.permutation import permutation_test, permute_images

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CALIPERS_SHARED", ROOT.parent / "shared")) / "data"
WAGER = DATA / "wager2008-emotion-regulation"
RESULTS = ROOT / "bench" / "results" / "permutation_validation.json"

pytestmark = pytest.mark.slow


def _record(key: str, value: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current[key] = value
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(current, indent=1))
    os.replace(tmp, RESULTS)


def _wager_files() -> list[Path]:
    files = sorted(WAGER.glob("con_*.img"))
    if len(files) != 30:
        pytest.skip(f"the Wager 2008 maps are not in {WAGER} (found {len(files)} of 30 .img files)")
    return files


def _brain_mask_on(reference: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    target = nib.Nifti1Image(np.zeros(reference.shape[:3], np.float32), reference.affine)
    mni = load_mni152_brain_mask(resolution=2)
    res = resample_to_img(mni, target, interpolation="nearest", force_resample=True,
                          copy_header=True)
    return nib.Nifti1Image((np.asarray(res.dataobj) > 0).astype(np.uint8), reference.affine)


def test_wager_2008_real_group_effect(tmp_path):
    files = _wager_files()
    mask_img = _brain_mask_on(nib.load(files[0]))
    nib.save(mask_img, tmp_path / "mask.nii.gz")
    start = time.perf_counter()
    out = permute_images([str(f) for f in files], tmp_path / "wager", mask=tmp_path / "mask.nii.gz",
                         one_sample=True, n_permutations=5000, tfce=True, vox_corrp=True,
                         seed=0, device="cpu")
    seconds = time.perf_counter() - start
    r = out.result
    figures = {
        "n_subjects": 30,
        "n_voxels": out.n_voxels,
        "n_nan_excluded": out.n_nan_excluded,
        "max_t": float(r.t.max()),
        "min_t": float(r.t.min()),
        # SOURCE.md's sanity figures are two-sided parametric
        "n_two_sided_parametric_p_lt_0.001": int(np.sum(2 * st.t.sf(np.abs(r.t[0]), 29) < 0.001)),
        "n_two_sided_bonferroni_p_lt_0.05": int(
            np.sum(2 * st.t.sf(np.abs(r.t[0]), 29) * out.n_voxels < 0.05)
        ),
        "n_fwe_max_t_p_lt_0.05": int(np.sum(r.p_fwe < 0.05)),
        "n_fwe_tfce_p_lt_0.05": int(np.sum(r.p_tfce_fwe < 0.05)),
        "critical_t_fwe_0.05": r.critical_values(0.05)["max_stat"][0],
        "n_permutations": r.n_permutations[0],
        "runtime_s": round(seconds, 2),
        "device": r.device,
    }
    _record("wager2008", figures)
    print(json.dumps(figures, indent=1))
    assert out.n_voxels == 34_711 and out.n_nan_excluded == 0  # SOURCE.md's count
    assert figures["max_t"] == pytest.approx(7.25, abs=0.01)
    assert figures["min_t"] == pytest.approx(-4.21, abs=0.01)
    assert figures["n_two_sided_parametric_p_lt_0.001"] == 1389
    assert figures["n_two_sided_bonferroni_p_lt_0.05"] == 72
    # permutation max-T is less conservative than Bonferroni on smooth data, never more
    assert figures["n_fwe_max_t_p_lt_0.05"] >= int(np.sum(st.t.sf(r.t[0], 29) * out.n_voxels < 0.05))
    assert figures["n_fwe_max_t_p_lt_0.05"] > 0 and figures["n_fwe_tfce_p_lt_0.05"] > 0
    corrp = np.asarray(nib.load(tmp_path / "wager_vox_corrp_tstat1.nii.gz").dataobj)
    assert int(np.sum(corrp > 0.95)) == figures["n_fwe_max_t_p_lt_0.05"]


def _smooth_null(rng, mask: np.ndarray, n: int, fwhm: float) -> np.ndarray:
    sigma = fwhm / np.sqrt(8 * np.log(2))
    vols = ndimage.gaussian_filter(rng.normal(size=(n, *mask.shape)), (0, sigma, sigma, sigma))
    y = vols[:, mask]
    return y / y.std(axis=0, keepdims=True)


def test_fwe_control_on_smooth_null_data():
    files = _wager_files()
    mask = np.asarray(_brain_mask_on(nib.load(files[0])).dataobj) > 0
    n_sets, n, n_perm = 200, 20, 500
    rng = np.random.default_rng(2008)
    hits_t = hits_tfce = 0
    start = time.perf_counter()
    for k in range(n_sets):
        y = _smooth_null(rng, mask, n, fwhm=2.5)
        r = permutation_test(y, mask=mask, tfce=True, n_permutations=n_perm, seed=k, device="cpu")
        hits_t += bool(np.any(r.p_fwe <= 0.05))
        hits_tfce += bool(np.any(r.p_tfce_fwe <= 0.05))
    lo, hi = st.binom.interval(0.95, n_sets, 0.05)
    figures = {
        "n_datasets": n_sets, "n_subjects": n, "n_voxels": int(mask.sum()), "fwhm_voxels": 2.5,
        "n_permutations": n_perm, "fwer_max_t": hits_t / n_sets, "fwer_tfce": hits_tfce / n_sets,
        "binomial_95_interval": [lo / n_sets, hi / n_sets],
        "runtime_s": round(time.perf_counter() - start, 1),
    }
    _record("fwe_control", figures)
    print(json.dumps(figures, indent=1))
    assert lo <= hits_t <= hi
    assert lo <= hits_tfce <= hi
