"""Design files (VEST, CSV), input errors, relabellings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from calipers.exceptions import DataError
from calipers.permutation import permutation_test
from calipers.permutation.design import load_matrix, make_relabellings, read_vest

_MAT = """/NumWaves 2
/NumPoints 4
/PPheights 1 1
/Matrix
1 0.5
1 -0.5
1 1.5
1 -1.5
"""


def test_read_vest_design_and_contrasts(tmp_path):
    (tmp_path / "d.mat").write_text(_MAT)
    (tmp_path / "d.con").write_text(
        "/ContrastName1 age\n/NumWaves 2\n/NumContrasts 2\n/Matrix\n0 1\n0 -1\n"
    )
    assert_array_equal(load_matrix(tmp_path / "d.mat", what="design"),
                       [[1, 0.5], [1, -0.5], [1, 1.5], [1, -1.5]])
    assert_array_equal(load_matrix(tmp_path / "d.con", what="contrasts"), [[0, 1], [0, -1]])


def test_vest_without_matrix_raises(tmp_path):
    path = tmp_path / "bad.mat"
    path.write_text("/NumWaves 2\n/NumPoints 2\n1 0\n0 1\n")
    with pytest.raises(DataError, match=r"no /Matrix line"):
        read_vest(path)


def test_vest_size_mismatch_raises(tmp_path):
    path = tmp_path / "bad.mat"
    path.write_text(_MAT.replace("/NumPoints 4", "/NumPoints 5"))
    with pytest.raises(DataError, match=r"NumPoints says 5 but /Matrix has 4 rows"):
        read_vest(path)


@pytest.mark.parametrize("header", ["", "intercept,age\n"])
def test_csv_design_with_or_without_header(tmp_path, header):
    path = tmp_path / "d.csv"
    path.write_text(header + "1,0.5\n1,-0.5\n1,2\n")
    assert_array_equal(load_matrix(path, what="design"), [[1, 0.5], [1, -0.5], [1, 2]])


def test_csv_non_numeric_row_raises(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n1,x\n")
    with pytest.raises(DataError, match=r"row 2 has a non-numeric value"):
        load_matrix(path, what="design")


# ---------------------------------------------------------------- bad input through the API


def test_design_rows_differ_from_subjects(rng):
    with pytest.raises(ValueError, match=r"design has 5 rows but y has 6 subjects"):
        permutation_test(rng.normal(size=(6, 3)), np.ones((5, 1)), device="cpu")


def test_contrast_width_differs_from_design(rng):
    x = np.c_[np.ones(6), np.arange(6.0)]
    with pytest.raises(ValueError, match=r"contrasts have 3 columns but the design has 2"):
        permutation_test(rng.normal(size=(6, 3)), x, [[0, 1, 0]], device="cpu")


def test_rank_deficient_design(rng):
    x = np.c_[np.ones(6), np.arange(6.0), 2 * np.arange(6.0)]
    with pytest.raises(ValueError, match=r"rank deficient: rank 2 < 3 columns"):
        permutation_test(rng.normal(size=(6, 3)), x, [[0, 1, 0]], device="cpu")


def test_demeaned_intercept_is_rank_deficient(rng):
    x = np.c_[np.ones(6), np.arange(6.0)]
    with pytest.raises(ValueError, match=r"After demeaning \(-D\) a constant column"):
        permutation_test(rng.normal(size=(6, 3)), x, [[0, 1]], demean=True, device="cpu")


def test_other_bad_inputs(rng):
    y = rng.normal(size=(6, 4))
    x = np.c_[np.ones(6), np.arange(6.0)]
    with pytest.raises(ValueError, match=r"contrasts are required for a design with 2 columns"):
        permutation_test(y, x, device="cpu")
    with pytest.raises(ValueError, match=r"contrast 1 is all zeros"):
        permutation_test(y, x, [[0, 0]], device="cpu")
    with pytest.raises(ValueError, match=r"n_permutations must be an integer >= 2; got 0"):
        permutation_test(y, n_permutations=0, device="cpu")
    with pytest.raises(ValueError, match=r"TFCE and cluster inference need the voxel grid"):
        permutation_test(y, tfce=True, device="cpu")
    with pytest.raises(ValueError, match=r"mask has 3 True voxels but y has 4 columns"):
        permutation_test(y, tfce=True, mask=np.ones((1, 1, 3), bool), device="cpu")
    with pytest.raises(ValueError, match=r"mask is empty"):
        permutation_test(y[:, :0], mask=np.zeros((1, 1, 2), bool), device="cpu")
    with pytest.raises(ValueError, match=r"y holds 1 NaN"):
        permutation_test(np.where(y > 10, 0, y) * np.r_[np.nan, np.ones(23)].reshape(6, 4),
                         device="cpu")
    with pytest.raises(ValueError, match=r"unknown connectivity 7"):
        permutation_test(y, connectivity=7, device="cpu")
    with pytest.raises(ValueError, match=r"fstat1: the t-contrasts it selects are linearly"):
        permutation_test(y, x, [[0, 1], [0, 2]], f_tests=[[1, 1]], device="cpu")
    with pytest.raises(ValueError, match=r"exchangeability_blocks has 5 entries"):
        permutation_test(y, exchangeability_blocks=[1, 1, 2, 2, 2], device="cpu")


# ---------------------------------------------------------------- relabellings


def test_unique_counts_and_exhaustive_switch():
    x = np.c_[np.r_[np.ones(3), np.zeros(4)], np.r_[np.zeros(3), np.ones(4)]]
    r = make_relabellings(x, flip=False, n_permutations=10_000, blocks=None, seed=0)
    assert r.n_unique == math.comb(7, 3) and r.exhaustive and r.n == 35
    rows = r.rows(0, r.n)
    assert_array_equal(rows[0], np.arange(7))
    labels = x[:, 0][rows]  # group-1 indicator under every relabelling: all distinct
    assert len({tuple(v) for v in labels}) == 35
    r2 = make_relabellings(x, flip=False, n_permutations=20, blocks=None, seed=0)
    assert not r2.exhaustive and r2.n == 20
    f = make_relabellings(x, flip=True, n_permutations=200, blocks=None, seed=0)
    assert f.n_unique == 128 and f.exhaustive and f.n == 128
    flips = f.rows(0, 128)
    assert_array_equal(flips[0], np.ones(7))
    assert len({tuple(v) for v in flips}) == 128


def test_random_relabellings_respect_blocks_and_chunking():
    x = np.c_[np.ones(12), np.arange(12.0)]
    blocks = np.repeat([3, 1, 2], 4)
    r = make_relabellings(x, flip=False, n_permutations=3000, blocks=blocks, seed=7)
    rows = r.rows(0, 3000)
    assert_array_equal(rows[0], np.arange(12))
    assert_array_equal(blocks[rows], np.broadcast_to(blocks, rows.shape))  # stay in block
    assert_array_equal(np.sort(rows, axis=1), np.broadcast_to(np.arange(12), rows.shape))
    pieces = np.concatenate([r.rows(a, min(a + 333, 3000)) for a in range(0, 3000, 333)])
    assert_array_equal(rows, pieces)
    other = make_relabellings(x, flip=False, n_permutations=3000, blocks=blocks, seed=8)
    assert not np.array_equal(rows[1:], other.rows(1, 3000))
