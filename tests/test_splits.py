"""Predefined splits are read exactly, in file order, and bad files are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from calipers.evaluation.folds import make_folds
from calipers.evaluation.splits import read_splits


def _write(d, k, train, test, fmt="%.1f"):
    np.savetxt(d / f"index_train_{k}.txt", train, fmt=fmt)
    np.savetxt(d / f"index_test_{k}.txt", test, fmt=fmt)


def test_directory_read_exactly_in_file_order(tmp_path):
    perm = np.random.default_rng(1).permutation(12)
    _write(tmp_path, 0, perm[:9], perm[9:])          # floats like "7.0", as the UCI files
    _write(tmp_path, 1, perm[3:], perm[:3], fmt="%d")
    (tmp_path / "other.txt").write_text("1 2 3")
    folds = read_splits(tmp_path, n_samples=12)
    assert len(folds) == 2 and folds.n_samples == 12
    assert_array_equal(folds.train[0], perm[:9])       # order kept, not sorted
    assert_array_equal(folds.test[0], perm[9:])
    assert_array_equal(folds.train[1], perm[3:])
    assert folds.fold == (0, 1) and folds.repeat == (0, 0)
    # the hash covers the indices and their order
    _write(tmp_path, 1, perm[3:][::-1], perm[:3], fmt="%d")
    assert read_splits(tmp_path, n_samples=12).hash != folds.hash


def test_json_forms_round_trip(tmp_path):
    pairs = [{"train": [3, 1, 2], "test": [0]}, {"train": [0, 1, 2], "test": [3]}]
    (tmp_path / "a.json").write_text(json.dumps(pairs))
    (tmp_path / "b.json").write_text(json.dumps({"splits": pairs}))
    fa, fb = read_splits(tmp_path / "a.json"), read_splits(tmp_path / "b.json")
    assert fa.hash == fb.hash and fa.n_samples == 4
    assert_array_equal(fa.train[0], [3, 1, 2])
    made = make_folds(np.arange(10.0), n_folds=5)
    (tmp_path / "folds.json").write_text(json.dumps(made.to_dict()))
    assert read_splits(tmp_path / "folds.json").hash == made.hash


def test_uci_boston_splits_if_present():
    from pathlib import Path
    d = Path("/work/shared/data/uci/bostonHousing")
    if not d.is_dir():
        pytest.skip("shared UCI data not present")
    folds = read_splits(d, n_samples=506)
    assert len(folds) == 20
    assert [len(te) for te in folds.test] == [51] * 20
    assert_array_equal(folds.train[0][:3], [307, 343, 47])
    for tr, te in folds:
        assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(506))


@pytest.mark.parametrize("setup, match", [
    (lambda d: None, "has no index_train_<k>.txt"),
    (lambda d: _write(d, 1, [0, 1], [2]), r"must run 0..K-1 without gaps; found \[1\]"),
    (lambda d: np.savetxt(d / "index_train_0.txt", [0, 1]), "split 0 has no index_test_0.txt"),
    (lambda d: _write(d, 0, [0, 1.5], [2], fmt="%.1f"), "non-negative integer row indices"),
    (lambda d: _write(d, 0, [0, 1], [1, 2]), "train and test share 1 indices"),
    (lambda d: _write(d, 0, [0, 9], [2]), r"has index 9, outside 0..4"),
])
def test_errors(tmp_path, setup, match):
    setup(tmp_path)
    with pytest.raises(ValueError, match=match):
        read_splits(tmp_path, n_samples=5)


def test_missing_path_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="splits path .* does not exist"):
        read_splits(tmp_path / "nope")
    (tmp_path / "x.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"expected a list of \{\"train\""):
        read_splits(tmp_path / "x.json")
