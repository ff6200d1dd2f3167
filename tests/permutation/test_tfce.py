"""TFCE against niimath, nilearn, a per-threshold labelling reference and hand-computed sums.

See NOTE [TFCE convention] in calipers/permutation/tfce.py for the conventions compared here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import ndimage

from calipers.exceptions import CalipersWarning
from calipers.permutation.tfce import tfce

tfce_module = sys.modules["calipers.permutation.tfce"]

STRUCTURE = {c: ndimage.generate_binary_structure(3, r) for c, r in ((6, 1), (18, 2), (26, 3))}


def _reference_tfce(vol, mask, *, H=2.0, E=0.5, connectivity=6, dh=None):
    """FSL's definition, threshold by threshold: label {vol > k*dh} for k = 1, 2, ... ."""
    vol = np.where(mask, vol, 0.0)
    top = vol[mask].max()
    dh = top / 100 if dh is None else dh
    out = np.zeros(mask.shape)
    k = 1
    while k * dh < top:
        h = k * dh
        labels, _ = ndimage.label(vol > h, structure=STRUCTURE[connectivity])
        sizes = np.bincount(labels.ravel())
        out += np.where(labels > 0, sizes[labels] ** E * h**H, 0.0)
        k += 1
    return out[mask]


def _smooth_volume(rng, shape, *, sigma=1.0, top=5.0):
    vol = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return vol / vol.max() * top


def _ellipsoid_mask(shape, margin=2):
    """An ellipsoid that stays ``margin`` voxels away from every face of the grid."""
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r2 = sum(
        ((g - (n - 1) / 2) / ((n - 1) / 2 - margin)) ** 2 for g, n in zip(grid, shape, strict=True)
    )
    return r2 <= 1.0


@pytest.fixture
def smooth_map(rng):
    """A smooth float32 map (max 5, unique) in an ellipsoid mask, no ties with niimath's
    float32 thresholds except at the maximum."""
    shape = (22, 24, 20)
    mask = _ellipsoid_mask(shape)
    vol = _smooth_volume(rng, shape).astype(np.float32)
    values = vol[mask]
    imax = int(np.argmax(values))
    dh = float(values[imax]) / 100.0
    thresholds = (np.arange(1, 101) * dh).astype(np.float32)
    ties = np.isin(values, thresholds)
    ties[imax] = False
    values[ties] = np.nextafter(values[ties], np.float32(np.inf))
    assert (values == values[imax]).sum() == 1
    return values, mask


def test_hand_computed_line():
    # A line of 6 voxels in a 3x8x3 grid (only the line is in the mask), dh = 1, H = 2, E = 0.5:
    # values 1, 2, 4, 3, 0, 2.5. Thresholds h < value, voxels > h (strict):
    #   h=1: {2, 4, 3} one cluster of 3 -> +sqrt(3)*1 each; {2.5} alone -> +1*1
    #   h=2: {4, 3} cluster of 2 -> +sqrt(2)*4 each;      {2.5} alone -> +1*4
    #   h=3: {4} alone -> +1*9
    # so TFCE = [0, sqrt3, sqrt3 + 4 sqrt2 + 9, sqrt3 + 4 sqrt2, 0, 1 + 4].
    mask = np.zeros((3, 8, 3), bool)
    mask[1, 1:7, 1] = True
    stat = np.array([1.0, 2.0, 4.0, 3.0, 0.0, 2.5])
    r2, r3 = np.sqrt(2), np.sqrt(3)
    expected = [0, r3, r3 + 4 * r2 + 9, r3 + 4 * r2, 0, 5]
    assert_allclose(tfce(stat, mask, dh=1.0), expected, rtol=1e-12)
    # H = 1, E = 1: sizes times heights: [0, 3, 3 + 2*2 + 3, 3 + 2*2, 0, 1 + 2]
    assert_allclose(tfce(stat, mask, dh=1.0, H=1, E=1), [0, 3, 10, 7, 0, 3], rtol=1e-12)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_matches_niimath(smooth_map, tmp_path, connectivity):
    niimath = pytest.importorskip("niimath")
    nib = pytest.importorskip("nibabel")
    binary = Path(niimath.__file__).parent / "bin" / "niimath"
    if not binary.exists():
        pytest.skip("niimath binary not shipped with the installed niimath package")
    values, mask = smooth_map
    vol = np.zeros(mask.shape, np.float32)
    vol[mask] = values
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "t.nii")
    subprocess.run(
        [
            *(binary, tmp_path / "t.nii", "-tfce", "2", "0.5", str(connectivity)),
            *(tmp_path / "o.nii", "-odt", "float"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "FSLOUTPUTTYPE": "NIFTI"},
    )
    ref = np.asarray(nib.load(tmp_path / "o.nii").dataobj, dtype=np.float64)[mask]
    ours = tfce(values, mask, connectivity=connectivity)
    assert ours.dtype == np.float32
    imax = int(np.argmax(values))
    others = np.arange(values.size) != imax
    assert (ref[others] > 0).sum() > 1000  # a real comparison, not of zeros
    assert_allclose(ours[others], ref[others], rtol=1e-5)
    # niimath counts voxels >= h, so the (unique) maximum also gets 1**E * max**H at h = max
    assert_allclose(ref[imax], ours[imax] + float(values[imax]) ** 2, rtol=1e-5)


@pytest.mark.parametrize("connectivity", [6, 26])
def test_matches_nilearn_calculate_tfce(rng, connectivity):
    utils = pytest.importorskip("nilearn.mass_univariate._utils")
    shape = (16, 18, 14)
    mask = _ellipsoid_mask(shape, margin=1)
    vol = np.where(mask, _smooth_volume(rng, shape), 0.0)
    ref = utils.calculate_tfce(
        vol[..., None], STRUCTURE[connectivity], E=0.5, H=2, two_sided_test=False
    )[..., 0][mask]
    values = vol[mask]
    ours = tfce(values, mask, connectivity=connectivity)
    imax = int(np.argmax(values))
    others = np.arange(values.size) != imax
    assert (ref[others] > 0).sum() > 300
    assert_allclose(ours[others], ref[others], rtol=1e-10)
    # nilearn counts voxels >= h: the maximum gets one extra term 1**E * max**H
    assert_allclose(ref[imax], ours[imax] + values[imax] ** 2, rtol=1e-10)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("dh", [None, 0.3])
def test_matches_per_threshold_labelling(rng, connectivity, dh):
    shape = (14, 15, 13)
    mask = _ellipsoid_mask(shape, margin=0) & (rng.random(shape) > 0.1)  # holes in the mask
    vol = _smooth_volume(rng, shape, sigma=1.2, top=4.0)
    ref = _reference_tfce(vol, mask, connectivity=connectivity, dh=dh)
    ours = tfce(vol[mask], mask, connectivity=connectivity, dh=dh)
    assert (ref > 0).sum() > 100
    assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_default_dh_is_max_over_100(rng):
    shape = (12, 12, 12)
    mask = np.ones(shape, bool)
    stat = _smooth_volume(rng, shape, top=3.0)[mask]
    assert_allclose(tfce(stat, mask), tfce(stat, mask, dh=0.03), rtol=1e-12)
    assert not np.allclose(tfce(stat, mask), tfce(stat, mask, dh=0.1))


def test_connectivity_on_diagonal_pairs():
    mask = np.ones((3, 3, 3), bool)
    corner = np.zeros((3, 3, 3))
    corner[0, 0, 0] = corner[1, 1, 1] = 2.0  # share a corner only
    edge = np.zeros((3, 3, 3))
    edge[0, 0, 0] = edge[0, 1, 1] = 2.0  # share an edge
    # dh = 1: one threshold (h = 1) below 2; separate voxels score 1**0.5 * 1**2 = 1, a pair
    # scores sqrt(2)
    expected = {
        (6, "corner"): 1.0,
        (18, "corner"): 1.0,
        (26, "corner"): np.sqrt(2),
        (6, "edge"): 1.0,
        (18, "edge"): np.sqrt(2),
        (26, "edge"): np.sqrt(2),
    }
    for (connectivity, name), value in expected.items():
        vol = corner if name == "corner" else edge
        out = tfce(vol[mask], mask, connectivity=connectivity, dh=1.0)
        assert_allclose(np.sort(out)[-2:], [value, value], rtol=1e-12)
        assert (out > 0).sum() == 2


def test_batch_equals_single_maps(rng):
    shape = (12, 13, 11)
    mask = _ellipsoid_mask(shape, margin=0)
    maps = np.stack([_smooth_volume(rng, shape, top=t)[mask] for t in (2.0, 3.5, 5.0, 1.0)])
    for dh in (None, 0.05):
        batch = tfce(maps, mask, dh=dh)
        assert batch.shape == maps.shape
        for p in range(len(maps)):
            assert_allclose(batch[p], tfce(maps[p], mask, dh=dh), rtol=1e-12)
    # per-map dh: map 1 alone is scored with its own max/100, not with the batch's
    assert_allclose(tfce(maps, mask)[1], tfce(maps[1], mask, dh=maps[1].max() / 100), rtol=1e-12)
    assert not np.allclose(tfce(maps, mask)[1], tfce(maps, mask, dh=maps.max() / 100)[1])


def test_scaling_and_exponents(rng):
    # With sizes unchanged, TFCE(c*s, dh=c*dh) = c**H * TFCE(s, dh) (c = 2 keeps thresholds exact)
    shape = (12, 12, 12)
    mask = np.ones(shape, bool)
    stat = _smooth_volume(rng, shape)[mask]
    for H, E in ((2.0, 0.5), (3.0, 1.0), (1.5, 0.25)):
        base = tfce(stat, mask, H=H, E=E, dh=0.1)
        assert_allclose(tfce(2 * stat, mask, H=H, E=E, dh=0.2), 2**H * base, rtol=1e-12)
        vol = np.zeros(shape)
        vol[mask] = stat
        assert_allclose(base, _reference_tfce(vol, mask, H=H, E=E, dh=0.1), rtol=1e-10)


def test_non_positive_maps_score_zero():
    mask = np.ones((4, 4, 4), bool)
    assert not tfce(-np.ones(64), mask).any()
    assert not tfce(np.zeros((2, 64)), mask).any()
    assert not tfce(np.full(64, 0.5), mask, dh=0.5).any()  # nothing strictly above h = 0.5


def test_torch_in_torch_out(rng):
    shape = (10, 11, 9)
    mask = _ellipsoid_mask(shape, margin=0)
    stat = _smooth_volume(rng, shape)[mask].astype(np.float32)
    out = tfce(torch.from_numpy(stat), mask, dh=0.05)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert_allclose(out.numpy(), tfce(stat, mask, dh=0.05), rtol=1e-7)
    both = tfce(torch.from_numpy(np.stack([stat, stat])).double(), torch.from_numpy(mask))
    assert both.dtype == torch.float64 and both.shape == (2, stat.size)


def test_scipy_fallback_warns_and_agrees(rng, monkeypatch):
    shape = (10, 10, 10)
    mask = _ellipsoid_mask(shape, margin=0)
    maps = np.stack([_smooth_volume(rng, shape)[mask] for _ in range(2)])
    fast = tfce(maps, mask, connectivity=18)
    monkeypatch.setattr(tfce_module, "_HAVE_NUMBA", False)
    with pytest.warns(CalipersWarning, match="numba is not installed"):
        slow = tfce(maps, mask, connectivity=18)
    assert_allclose(slow, fast, rtol=1e-10)


def test_errors():
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 1, :] = True  # V = 5
    stat = np.ones(5)
    with pytest.raises(ValueError, match=r"V = mask.sum\(\) = 5 voxels; got shape \(4,\)"):
        tfce(np.ones(4), mask)
    with pytest.raises(ValueError, match=r"shape \(P, V\) or \(V,\).*got shape \(1, 1, 5\)"):
        tfce(np.ones((1, 1, 5)), mask)
    with pytest.raises(ValueError, match=r"mask must be a 3-D boolean array.*got shape \(3, 4\)"):
        tfce(stat, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="mask must be boolean .* Binarise it first"):
        tfce(stat, mask * 2.5)
    with pytest.raises(
        ValueError, match=r"at least one True voxel; got an empty mask .*\(2, 2, 2\)"
    ):
        tfce(np.ones(0), np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="connectivity must be 6, 18 or 26 .*got 8"):
        tfce(stat, mask, connectivity=8)
    for name, bad in (("H", 0.0), ("E", -0.5), ("H", float("nan")), ("E", True)):
        with pytest.raises(ValueError, match=f"{name} must be a finite number > 0; got {bad!r}"):
            tfce(stat, mask, **{name: bad})
    with pytest.raises(ValueError, match="dh must be None or a finite number > 0; got 0"):
        tfce(stat, mask, dh=0)
    with pytest.raises(ValueError, match=r"stat holds 1 NaN or infinite value\(s\)"):
        tfce(np.array([1.0, np.nan, 1, 1, 1]), mask)
    with pytest.raises(ValueError, match="the limit is 1,000,000. Pass a larger dh"):
        tfce(stat, mask, dh=1e-7)
    # integer 0/1 masks are accepted
    assert_allclose(tfce(stat * 2, mask.astype(np.uint8), dh=1.0), np.sqrt(5) * np.ones(5))


@pytest.mark.parametrize("connectivity", [6, 26])
def test_fused_max_and_counts_equal_the_maps(rng, connectivity):
    """NOTE [Fused TFCE null]: max and >= counts from the kernel equal those of tfce()'s maps
    (float32 in, float32 TFCE), skipped maps left out; float64 maps likewise."""
    from calipers.permutation.tfce import _tfce_max_count

    shape = (14, 15, 12)
    mask = _ellipsoid_mask(shape, margin=0)
    maps = np.stack([_smooth_volume(rng, shape, top=t)[mask] for t in (5.0, 3.0, 4.2, 0.5, 6.0)])
    maps[3] = -np.abs(maps[3])  # no positive voxel: TFCE 0 everywhere
    dh = 0.05
    skip = np.array([False, True, False, False, False])
    for values in (maps.astype(np.float32), maps):
        t = tfce(values, mask, dh=dh, connectivity=connectivity).astype(np.float32)
        obs = t[0] * np.float32(0.9)
        mx, counts = _tfce_max_count(values, mask, obs, skip, H=2.0, E=0.5,
                                     connectivity=connectivity, dh=dh)
        np.testing.assert_array_equal(mx[~skip], t[~skip].max(axis=1))
        assert mx[1] == 0.0 and mx[3] == 0.0 and mx[0] > 0
        np.testing.assert_array_equal(counts, (t[~skip] >= obs).sum(axis=0))
        assert 0 < counts.min() < counts.max() <= (~skip).sum()
    with pytest.raises(ValueError, match="NaN or infinite"):
        _tfce_max_count(np.full_like(maps, np.inf), mask, obs, skip, H=2.0, E=0.5,
                        connectivity=6, dh=dh)
