"""Grid search: per-split choices, never touching test indices, weight decay from tau."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calipers.batched.search import (
    SearchOptions,
    grid_points,
    inner_split,
    l2_from_tau,
    search_regression,
)
from calipers.evaluation.folds import Folds

OPTS = SearchOptions(grid={"dropout": [0.05, 0.2], "tau": [1.0, 4.0]}, hidden=(8,), epochs=3,
                     batch_size=16, n_mc=20, device="cpu", seed=1)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ [1.0, -1.0, 0.5] + 0.3 * rng.normal(size=n) + 5.0
    return X, y


def _one_split(n, test, seed=3):
    order = np.random.default_rng(seed).permutation(n)
    te = np.sort(order[:test])
    tr = order[test:]
    return Folds((tr,), (te,), (0,), (0,), n)


def test_l2_from_tau_hand_value():
    # l = 1e-2, p = 0.05, N = 404, tau = 0.15: 1e-4 * 0.95 / (2 * 404 * 0.15)
    assert l2_from_tau(dropout=0.05, tau=0.15, lengthscale=1e-2, n=404) == pytest.approx(
        1e-4 * 0.95 / 121.2, rel=1e-12)


def test_grid_points_and_inner_split():
    pts = grid_points({"dropout": [0.1, 0.2], "tau": [1, 2, 3]})
    assert len(pts) == 6 and pts[0] == {"dropout": 0.1, "tau": 1.0}
    assert pts[1] == {"dropout": 0.1, "tau": 2.0}            # tau varies fastest
    fit, val = inner_split(np.array([9, 4, 7, 1, 0]), fraction=0.8)
    assert_array_equal(fit, [9, 4, 7, 1])                     # file order, as the paper
    assert_array_equal(val, [0])


def test_search_never_uses_test_rows():
    X, y = _data()
    folds = _one_split(60, 12)
    res = search_regression(X, y, folds, options=OPTS)
    tr, te = folds.train[0], folds.test[0]
    touched = np.concatenate([res.fit_index[0], res.validation_index[0]])
    assert_array_equal(np.sort(touched), np.sort(tr))          # exactly the training split
    assert np.intersect1d(touched, te).size == 0
    # Poison the test rows: every validation score and choice stays the same.
    Xp, yp = X.copy(), y.copy()
    Xp[te], yp[te] = 1e3, -1e4
    res_p = search_regression(Xp, yp, folds, options=OPTS)
    assert_allclose(res_p.validation_ll, res.validation_ll, rtol=1e-10)
    assert res_p.chosen == res.chosen
    assert res_p.test_mc_rmse[0] > 100 * res.test_mc_rmse[0]   # the test step did read them
    # choice = argmax of validation LL, per split
    assert res.chosen[0] == res.points[int(np.argmax(res.validation_ll[0]))]
    assert res.validation_ll.shape == (1, 4)


def test_batched_search_equals_sequential():
    X, y = _data(50, seed=2)
    perm = np.random.default_rng(0).permutation(50)
    folds = Folds((perm[10:], perm[:40]), (perm[:10], perm[40:]), (0, 0), (0, 1), 50)
    a = search_regression(X, y, folds, options=OPTS)
    b = search_regression(X, y, folds, options=SearchOptions(**{**OPTS.__dict__,
                                                                "batched": False}))
    assert_allclose(a.validation_ll, b.validation_ll, atol=1e-5)
    assert_allclose(a.test_ll, b.test_ll, atol=1e-5)
    s = a.summary()["test_ll"]
    assert s["mean"] == pytest.approx(a.test_ll.mean())
    assert s["se"] == pytest.approx(a.test_ll.std() / np.sqrt(2))


def test_errors():
    X, y = _data(20)
    folds = _one_split(20, 4)
    with pytest.raises(ValueError, match="unknown grid key 'dropot'; did you mean 'dropout'"):
        grid_points({"dropot": [0.1], "tau": [1.0]})
    with pytest.raises(ValueError, match=r"grid needs values for \['tau'\]"):
        grid_points({"dropout": [0.1]})
    with pytest.raises(ValueError, match=r"grid 'dropout' must be a non-empty list of numbers in"):
        grid_points({"dropout": [1.5], "tau": [1.0]})
    with pytest.raises(ValueError, match="unknown criterion 'nll'"):
        search_regression(X, y, folds, options=SearchOptions(criterion="nll"))
    with pytest.raises(ValueError, match=r"folds must be a Folds over the 19 rows"):
        search_regression(X[:19], y[:19], folds)
    with pytest.raises(ValueError, match="leaves an empty fit or validation set"):
        inner_split(np.arange(3), fraction=0.1)
