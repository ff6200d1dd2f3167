"""Cluster extent and mass against scipy.ndimage.label and hand-counted examples."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from calipers.exceptions import CalipersWarning
from calipers.permutation.clusters import cluster_maps, cluster_max

clusters_module = sys.modules["calipers.permutation.clusters"]

STRUCTURE = {c: ndimage.generate_binary_structure(3, r) for c, r in ((6, 1), (18, 2), (26, 3))}


def _reference_maps(vol, mask, threshold, connectivity):
    """Per-voxel cluster extent and mass from scipy.ndimage.label on the 3-D grid."""
    labels, _ = ndimage.label((vol > threshold) & mask, structure=STRUCTURE[connectivity])
    sizes = np.bincount(labels.ravel())
    masses = np.bincount(labels.ravel(), weights=vol.ravel())
    extent = np.where(labels > 0, sizes[labels], 0)[mask]
    mass = np.where(labels > 0, masses[labels], 0.0)[mask]
    return extent, mass


def _smooth_volumes(rng, n, shape, sigma=1.0):
    vols = ndimage.gaussian_filter(rng.standard_normal((n, *shape)), (0, sigma, sigma, sigma))
    return vols / vols.std(axis=(1, 2, 3), keepdims=True)


@pytest.fixture
def masked(rng):
    shape = (15, 16, 14)
    mask = rng.random(shape) > 0.15  # holes: clusters must not connect through them
    return _smooth_volumes(rng, 5, shape), mask


def test_hand_counted_line():
    mask = np.ones((1, 1, 7), bool)
    stat = np.array([3.0, 2.5, 0.0, 9.0, 1.0, 2.0, 2.5])
    # > 2 (strict): clusters {3, 2.5} (extent 2, mass 5.5) and {9} (1, 9); 2.0 is not above 2
    extent, mass = cluster_maps(stat, mask, threshold=2.0)
    assert_array_equal(extent, [2, 2, 0, 1, 0, 0, 1])
    assert_allclose(mass, [5.5, 5.5, 0, 9, 0, 0, 2.5])
    max_extent, max_mass = cluster_max(stat, mask, threshold=2.0)
    assert (max_extent, max_mass) == (2, 9.0)  # the largest mass is not the largest cluster's
    assert max_extent.shape == () and max_extent.dtype == np.int64


def test_mask_holes_split_clusters():
    mask = np.ones((1, 1, 5), bool)
    mask[0, 0, 2] = False  # the grid is contiguous but the mask is not
    extent, mass = cluster_maps(np.array([3.0, 3.0, 3.0, 3.0]), mask, threshold=1.0)
    assert_array_equal(extent, [2, 2, 2, 2])
    assert_allclose(mass, [6.0] * 4)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_maps_match_ndimage_label(masked, connectivity):
    vols, mask = masked
    stat = np.stack([v[mask] for v in vols])
    extent, mass = cluster_maps(stat, mask, threshold=1.0, connectivity=connectivity)
    for p, vol in enumerate(vols):
        ref_extent, ref_mass = _reference_maps(vol, mask, 1.0, connectivity)
        assert ref_extent.max() > 5  # real clusters
        assert_array_equal(extent[p], ref_extent)
        assert_allclose(mass[p], ref_mass, rtol=1e-12)
    one_extent, one_mass = cluster_maps(stat[0], mask, threshold=1.0, connectivity=connectivity)
    assert_array_equal(one_extent, extent[0])
    assert_allclose(one_mass, mass[0], rtol=1e-12)


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("threshold", [0.5, 2.0])
def test_max_matches_ndimage_label(masked, connectivity, threshold):
    vols, mask = masked
    stat = np.stack([v[mask] for v in vols] + [np.zeros(mask.sum())])  # last map: no cluster
    max_extent, max_mass = cluster_max(stat, mask, threshold=threshold, connectivity=connectivity)
    assert max_extent.shape == max_mass.shape == (6,)
    for p, vol in enumerate(vols):
        ref_extent, ref_mass = _reference_maps(vol, mask, threshold, connectivity)
        assert max_extent[p] == ref_extent.max()
        assert_allclose(max_mass[p], ref_mass.max(), rtol=1e-12)
    assert max_extent[-1] == 0 and max_mass[-1] == 0.0


def test_connectivity_on_diagonal_pair():
    mask = np.ones((3, 3, 3), bool)
    vol = np.zeros((3, 3, 3))
    vol[0, 0, 0] = vol[1, 1, 1] = 2.0  # share a corner only
    expected = {6: (1, 2.0), 18: (1, 2.0), 26: (2, 4.0)}
    for connectivity, (extent, mass) in expected.items():
        result = cluster_max(vol[mask], mask, threshold=1.0, connectivity=connectivity)
        assert (int(result[0]), float(result[1])) == (extent, mass)


def test_torch_input_gives_numpy(masked):
    vols, mask = masked
    stat = np.stack([v[mask] for v in vols[:2]])
    extent, mass = cluster_max(torch.from_numpy(stat), torch.from_numpy(mask), threshold=1.0)
    ref = cluster_max(stat, mask, threshold=1.0)
    assert isinstance(extent, np.ndarray) and isinstance(mass, np.ndarray)
    assert_array_equal(extent, ref[0])
    assert_allclose(mass, ref[1], rtol=1e-12)


def test_scipy_fallback_warns_and_agrees(masked, monkeypatch):
    vols, mask = masked
    stat = np.stack([v[mask] for v in vols])
    fast_maps = cluster_maps(stat, mask, threshold=1.0, connectivity=18)
    fast_max = cluster_max(stat, mask, threshold=1.0, connectivity=18)
    monkeypatch.setattr(clusters_module, "_HAVE_NUMBA", False)
    with pytest.warns(CalipersWarning, match="numba is not installed"):
        slow_maps = cluster_maps(stat, mask, threshold=1.0, connectivity=18)
    with pytest.warns(CalipersWarning, match="numba is not installed"):
        slow_max = cluster_max(stat, mask, threshold=1.0, connectivity=18)
    for fast, slow in ((fast_maps, slow_maps), (fast_max, slow_max)):
        assert_array_equal(fast[0], slow[0])
        assert_allclose(fast[1], slow[1], rtol=1e-12)


def test_errors():
    mask = np.ones((2, 2, 2), bool)
    stat = np.ones(8)
    for bad in (float("nan"), float("inf"), None, "3.1", True):
        with pytest.raises(ValueError, match=f"threshold must be a finite number .*got {bad!r}"):
            cluster_max(stat, mask, threshold=bad)
    with pytest.raises(ValueError, match="connectivity must be 6, 18 or 26 .*got 4"):
        cluster_maps(stat, mask, threshold=1.0, connectivity=4)
    with pytest.raises(ValueError, match=r"V = mask.sum\(\) = 8 voxels; got shape \(3, 7\)"):
        cluster_max(np.ones((3, 7)), mask, threshold=1.0)
    with pytest.raises(ValueError, match=r"stat holds 1 NaN"):
        cluster_maps(np.r_[np.nan, np.ones(7)], mask, threshold=1.0)
