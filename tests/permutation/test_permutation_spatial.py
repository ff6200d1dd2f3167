"""TFCE and cluster FWE through ``permutation_test`` against brute force on a small grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from calipers.permutation import permutation_test
from calipers.permutation.tfce import tfce


@pytest.fixture
def grid_data(rng):
    shape = (7, 8, 6)
    n = 8
    y = ndimage.gaussian_filter(rng.normal(size=(n, *shape)), (0, 1, 1, 1))
    y /= y.std()
    y[:, 1:4, 2:6, 1:4] += 0.8
    mask = np.ones(shape, bool)
    mask[0, 0, :] = False
    return y[:, mask], mask


def _flip_t(flips, y):
    n = y.shape[0]
    mean = flips @ y / n
    var = ((y**2).sum(0)[None] - n * mean**2) / (n - 1)
    return mean / np.sqrt(var / n)


def _max_cluster(stat, mask, threshold):
    """Independent reference: largest 26-connected cluster size and mass (scipy.ndimage)."""
    vol = np.zeros(mask.shape)
    vol[mask] = stat
    labels, k = ndimage.label(vol > threshold, structure=np.ones((3, 3, 3)))
    if k == 0:
        return 0.0, 0.0
    idx = np.arange(1, k + 1)
    return float(np.max(ndimage.sum(np.ones_like(vol), labels, idx))), float(
        np.max(ndimage.sum(vol, labels, idx))
    )


def test_tfce_fwe_equals_brute_force(grid_data):
    y, mask = grid_data
    res = permutation_test(y, mask=mask, tfce=True, n_permutations=1000, device="cpu")
    assert res.exhaustive == (True,) and res.n_permutations == (256,)
    flips = np.array(list(itertools.product([1.0, -1.0], repeat=8)))
    t_null = _flip_t(flips, y).astype(np.float32)
    dh = float(t_null[0].max()) / 100
    null = tfce(t_null, mask, dh=dh)
    assert_allclose(res.tfce[0], null[0], rtol=1e-5)
    mx = null.max(1)
    p_fwe = (mx[:, None] >= null[0][None] * (1 - 1e-6)).mean(0)
    p_unc = (null >= null[0][None] * (1 - 1e-6)).mean(0)
    assert_allclose(np.sort(res.tfce_max_null[0]), np.sort(mx), rtol=1e-4)
    assert_array_equal(res.p_tfce_fwe[0], p_fwe)
    assert_array_equal(res.p_tfce_uncorrected[0], p_unc)
    assert res.p_tfce_fwe.min() < 0.05  # the planted effect is found


def test_cluster_fwe_equals_brute_force(grid_data):
    y, mask = grid_data
    thr = 2.5
    res = permutation_test(
        y, mask=mask, cluster_threshold=thr, n_permutations=1000, device="cpu"
    )
    flips = np.array(list(itertools.product([1.0, -1.0], repeat=8)))
    t_null = _flip_t(flips, y)
    ref = np.array([_max_cluster(t, mask, thr) for t in t_null])
    assert_allclose(np.sort(res.cluster_extent_max_null[0]), np.sort(ref[:, 0]))
    assert_allclose(np.sort(res.cluster_mass_max_null[0]), np.sort(ref[:, 1]), rtol=1e-4)
    # the voxel map: each voxel gets the p of its cluster, 1 outside clusters
    vol = np.zeros(mask.shape)
    vol[mask] = t_null[0]
    labels, k = ndimage.label(vol > thr, structure=np.ones((3, 3, 3)))
    lab = labels[mask]
    expected = np.ones(lab.shape)
    for c in range(1, k + 1):
        size = np.sum(lab == c)
        expected[lab == c] = np.mean(ref[:, 0] >= size)
    assert_array_equal(res.p_cluster_extent_fwe[0], expected)
    assert k >= 1 and res.p_cluster_extent_fwe.min() < 0.05


def test_full_map_chunking_does_not_change_results(grid_data):
    y, mask = grid_data
    kw = {"mask": mask, "tfce": True, "cluster_threshold": (2.0, 2.5), "device": "cpu"}
    a = permutation_test(y, n_permutations=200, chunk_size=200, seed=2, **kw)
    b = permutation_test(y, n_permutations=200, chunk_size=7, seed=2, **kw)
    assert_array_equal(a.p_tfce_fwe, b.p_tfce_fwe)
    assert_array_equal(a.p_cluster_extent_fwe, b.p_cluster_extent_fwe)
    assert_array_equal(a.p_cluster_mass_fwe, b.p_cluster_mass_fwe)
    assert a.cluster_extent_threshold == 2.0 and a.cluster_mass_threshold == 2.5


def test_two_sided_tfce_finds_negative_effects(grid_data):
    y, mask = grid_data
    neg = permutation_test(-y, mask=mask, tfce=True, n_permutations=256, device="cpu",
                           two_sided=True)
    pos = permutation_test(y, mask=mask, tfce=True, n_permutations=256, device="cpu",
                           two_sided=True)
    one = permutation_test(-y, mask=mask, tfce=True, n_permutations=256, device="cpu")
    assert_array_equal(neg.p_tfce_fwe, pos.p_tfce_fwe)  # |t| is symmetric in the data's sign
    assert_allclose(neg.tfce, -pos.tfce, rtol=1e-5)
    assert neg.p_tfce_fwe.min() < 0.05 and neg.tfce.min() < 0
    assert one.p_tfce_fwe.min() > 0.05  # one-sided: the negative effect is not found


def test_fused_tfce_null_equals_the_map_path(grid_data, monkeypatch):
    """The engine's fused TFCE null (max and counts in the kernel) gives exactly the p-values and
    null of the path that builds the TFCE maps (one-sided t and an F-test)."""
    import calipers.permutation.engine as engine

    y, mask = grid_data
    design = np.c_[np.ones(y.shape[0]), np.random.default_rng(3).normal(size=y.shape[0])]
    calls = []
    fused_chunk = engine._FullMapState._tfce_fused

    def spy(self, *args):
        calls.append(1)
        return fused_chunk(self, *args)

    for kw in ({}, {"design": design, "contrasts": [[0, 1]], "f_tests": [[1]]}):
        kw.update(mask=mask, tfce=True, n_permutations=200, device="cpu")
        monkeypatch.setattr(engine._FullMapState, "_tfce_fused", spy)
        fused = permutation_test(y, **kw)
        assert calls, "the fused path was not used"
        calls.clear()
        monkeypatch.setattr(engine, "_FUSED_TFCE", False)
        maps = permutation_test(y, **kw)
        assert not calls
        monkeypatch.undo()
        for a, b in ((fused.p_tfce_fwe, maps.p_tfce_fwe),
                     (fused.p_tfce_uncorrected, maps.p_tfce_uncorrected),
                     (fused.tfce, maps.tfce)):
            assert_array_equal(a, b)
        for a, b in zip(fused.tfce_max_null, maps.tfce_max_null, strict=True):
            assert_array_equal(a, b)
