import numpy as np
import pytest
from sklearn.model_selection import KFold, StratifiedKFold

from calipers.evaluation.folds import Folds, check_cv, make_folds
from calipers.exceptions import FoldMismatchError


def test_folds_partition_the_data_and_stratify():
    y = np.repeat(np.arange(3), [30, 20, 10])
    f = make_folds(y, n_folds=5, n_repeats=2, seed=1)
    assert len(f) == 10 and f.n_repeats == 2
    for r in range(2):
        tests = [te for te, rr in zip(f.test, f.repeat, strict=True) if rr == r]
        np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(60))
    for tr, te in f:
        assert np.bincount(y[te]).tolist() == [6, 4, 2]
        assert np.intersect1d(tr, te).size == 0
    assert f.test_train_ratio == pytest.approx(12 / 48)


def test_same_seed_same_hash_and_roundtrip():
    y = np.arange(40) % 2
    a, b = make_folds(y, n_folds=4, seed=3), make_folds(y, n_folds=4, seed=3)
    assert a.hash == b.hash != make_folds(y, n_folds=4, seed=4).hash
    assert Folds.from_dict(a.to_dict()).hash == a.hash


def test_corrupt_folds_json_detected():
    d = make_folds(np.arange(20) % 2, n_folds=2).to_dict()
    d["folds"][0]["test"][0] += 1
    with pytest.raises(FoldMismatchError, match="stored hash"):
        Folds.from_dict(d)


def test_more_folds_than_class_samples():
    y = np.array([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match=r"n_folds=5 is more than the 3 samples of class 1.*folds <= 3"):
        make_folds(y, n_folds=5)
    assert len(make_folds(y, n_folds=5, stratify=False)) == 5


def test_groups_stay_together():
    groups = np.arange(30) // 3
    f = make_folds(np.zeros(30), n_folds=5, groups=groups)
    for tr, te in f:
        assert not set(groups[tr]) & set(groups[te])


def test_check_cv_accepts_int_splitter_and_pairs():
    y = np.arange(20) % 2
    assert len(check_cv(4, y)) == 4
    f = check_cv(StratifiedKFold(5), y)
    ref = list(StratifiedKFold(5).split(np.zeros(20), y))
    for (_, te), (_, rte) in zip(f, ref, strict=True):
        np.testing.assert_array_equal(te, np.sort(rte))
    pairs = list(KFold(2).split(np.zeros(20)))
    assert check_cv(pairs, y).hash == check_cv(iter(pairs), y).hash


def test_check_cv_rejects_overlap():
    with pytest.raises(ValueError, match="overlap"):
        check_cv([(np.arange(5), np.arange(4, 8))], np.zeros(8))


def test_one_fold_rejected():
    with pytest.raises(ValueError, match=r"n_folds must be an integer >= 2; got 1. Set \[cv\] folds = 2"):
        make_folds(np.zeros(10), n_folds=1)


def test_unshuffled_folds_are_contiguous_blocks():
    from calipers.evaluation.folds import make_folds

    f = make_folds(np.zeros(10), n_folds=3, stratify=False, shuffle=False)
    assert [t.tolist() for t in f.test] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert f.train[1].tolist() == [0, 1, 2, 3, 7, 8, 9]
    with pytest.raises(ValueError, match="n_repeats=2 without shuffling repeats the same folds"):
        make_folds(np.zeros(10), n_folds=3, n_repeats=2, shuffle=False)
