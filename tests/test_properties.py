"""Property-based input validation (Hypothesis): random valid inputs never crash and give
results in range; invalid ones raise the documented error.

Covers the public statistics (``describe_scores``, ``corrected_ttest``, ``mcnemar_test``) and
the permutation input checks (``permutation_test``, ``permute_images``' output prefix). Only
documented arguments are passed, so new optional keyword arguments do not break these tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from calipers.exceptions import FoldMismatchError
from calipers.permutation import permutation_test
from calipers.stats import corrected_ttest, describe_scores, mcnemar_test

SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
bad_number = st.sampled_from([math.nan, math.inf, -math.inf])
levels = st.floats(0.01, 0.999)
ALTERNATIVES = ("two-sided", "less", "greater")


def scores(min_size: int = 2, max_size: int = 30):
    return arrays(np.float64, st.integers(min_size, max_size), elements=finite)


@st.composite
def score_pairs(draw):
    n = draw(st.integers(2, 30))
    a = draw(arrays(np.float64, n, elements=finite))
    b = draw(arrays(np.float64, n, elements=finite))
    return a, b


# ------------------------------------------------------------------ describe_scores


@SETTINGS
@given(s=scores(), level=levels)
def test_describe_scores_valid(s, level):
    res = describe_scores(s, test_train_ratio=0.25, confidence_level=level)
    assert res.n == s.size and res.std >= 0
    assert math.isfinite(res.mean) and res.ci_low <= res.ci_high
    assert res.mean == pytest.approx(float(np.mean(s)), abs=1e-6 * (1 + np.abs(s).max()))


@SETTINGS
@given(s=scores(), bad=bad_number, i=st.integers(0, 29))
def test_describe_scores_non_finite_is_a_value_error(s, bad, i):
    s = s.copy()
    s[i % s.size] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        describe_scores(s, test_train_ratio=0.25)


@SETTINGS
@given(s=scores(0, 1))
def test_describe_scores_needs_two_folds(s):
    with pytest.raises(ValueError, match="at least 2 fold scores"):
        describe_scores(s, test_train_ratio=0.25)


@SETTINGS
@given(s=scores(), level=st.one_of(st.floats(max_value=0), st.floats(min_value=1),
                                   st.just(math.nan)))
def test_describe_scores_bad_level(s, level):
    with pytest.raises(ValueError, match="confidence_level"):
        describe_scores(s, test_train_ratio=0.25, confidence_level=level)


def test_describe_scores_shape_and_type():
    with pytest.raises(ValueError, match="shape"):
        describe_scores(np.ones((2, 3)), test_train_ratio=0.25)
    with pytest.raises(TypeError, match="1-D array of numbers"):
        describe_scores(["a", "b"], test_train_ratio=0.25)


# ------------------------------------------------------------------ corrected_ttest


@SETTINGS
@given(pair=score_pairs(), ratio=st.floats(0, 10), alt=st.sampled_from(ALTERNATIVES))
def test_corrected_ttest_valid(pair, ratio, alt):
    a, b = pair
    res = corrected_ttest(a, b, test_train_ratio=ratio, alternative=alt)
    assert 0 <= res.pvalue <= 1
    assert res.df == a.size - 1
    assert res.diff_mean == pytest.approx(float(np.mean(b - a)), abs=1e-6 * (1 + np.abs(b - a).max()))


@SETTINGS
@given(pair=score_pairs(), ratio=st.floats(0, 10))
def test_corrected_ttest_antisymmetric(pair, ratio):
    a, b = pair
    ab = corrected_ttest(a, b, test_train_ratio=ratio)
    ba = corrected_ttest(b, a, test_train_ratio=ratio)
    assert ab.pvalue == pytest.approx(ba.pvalue, abs=1e-9)


@SETTINGS
@given(a=scores(), b=scores())
def test_corrected_ttest_unequal_folds(a, b):
    assume(a.size != b.size)
    with pytest.raises(FoldMismatchError, match="fold scores"):
        corrected_ttest(a, b, test_train_ratio=0.1)


@SETTINGS
@given(pair=score_pairs(), ratio=st.one_of(st.floats(max_value=-1e-9), bad_number))
def test_corrected_ttest_bad_ratio(pair, ratio):
    with pytest.raises(ValueError, match="test_train_ratio"):
        corrected_ttest(*pair, test_train_ratio=ratio)


@SETTINGS
@given(pair=score_pairs(), alt=st.text(max_size=12))
def test_corrected_ttest_bad_alternative(pair, alt):
    assume(alt not in ALTERNATIVES)
    with pytest.raises(ValueError, match="alternative"):
        corrected_ttest(*pair, test_train_ratio=0.1, alternative=alt)


# ------------------------------------------------------------------ mcnemar_test


@st.composite
def correctness(draw):
    n = draw(st.integers(1, 200))
    return (draw(arrays(np.bool_, n)), draw(arrays(np.bool_, n)))


@SETTINGS
@given(pair=correctness())
def test_mcnemar_valid(pair):
    ca, cb = pair
    res = mcnemar_test(ca, cb)
    assert 0 <= res.pvalue <= 1
    assert res.b == int(np.sum(ca & ~cb)) and res.c == int(np.sum(~ca & cb))
    assert mcnemar_test(cb, ca).pvalue == pytest.approx(res.pvalue)
    assert mcnemar_test(ca.astype(int), cb.astype(int)).pvalue == res.pvalue  # 0/1 ints too


@SETTINGS
@given(a=arrays(np.bool_, st.integers(1, 20)), b=arrays(np.bool_, st.integers(1, 20)))
def test_mcnemar_unequal_lengths(a, b):
    assume(a.size != b.size)
    with pytest.raises(ValueError, match="same pooled"):
        mcnemar_test(a, b)


@SETTINGS
@given(x=arrays(np.int64, st.integers(1, 20), elements=st.integers(-5, 5)))
def test_mcnemar_non_boolean(x):
    assume(not np.all(np.isin(x, (0, 1))))
    with pytest.raises(ValueError, match="boolean array"):
        mcnemar_test(x, np.ones(x.size, bool))


def test_mcnemar_empty():
    with pytest.raises(ValueError, match="n_samples >= 1"):
        mcnemar_test(np.array([], bool), np.array([], bool))


# ------------------------------------------------------------------ permutation input checks


@st.composite
def subjects(draw, min_n: int = 2):
    n = draw(st.integers(min_n, 8))
    v = draw(st.integers(1, 5))
    return draw(arrays(np.float64, (n, v), elements=st.floats(-100, 100)))


@settings(max_examples=15, deadline=None, database=None)
@given(y=subjects(), n_perm=st.integers(2, 40), seed=st.integers(0, 2**31))
def test_permutation_valid_one_sample(y, n_perm, seed):
    res = permutation_test(y, n_permutations=n_perm, seed=seed, device="cpu")
    p = np.asarray(res.p_fwe)
    assert p.shape == (1, y.shape[1]) and np.all((p > 0) & (p <= 1))
    assert np.all(np.asarray(res.p_uncorrected) >= np.asarray(res.p_uncorrected).min())


@SETTINGS
@given(y=subjects(), n_perm=st.integers(-5, 1))
def test_permutation_too_few_permutations(y, n_perm):
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 2"):
        permutation_test(y, n_permutations=n_perm, device="cpu")


@SETTINGS
@given(thr=st.one_of(st.floats(max_value=0), bad_number))
def test_permutation_bad_cluster_threshold(thr):
    y = np.random.default_rng(0).normal(size=(6, 3, 3, 3))
    with pytest.raises(ValueError, match="cluster_threshold"):
        permutation_test(y, cluster_threshold=thr, n_permutations=10, device="cpu")


@SETTINGS
@given(y=subjects(), rows=st.integers(1, 10))
def test_permutation_design_rows_must_match(y, rows):
    assume(rows != y.shape[0])
    with pytest.raises(ValueError, match="one row per subject"):
        permutation_test(y, np.ones((rows, 1)), n_permutations=10, device="cpu")


@SETTINGS
@given(y=subjects(), bad=bad_number, i=st.integers(0, 100))
def test_permutation_non_finite_data(y, bad, i):
    y = y.copy()
    y.flat[i % y.size] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        permutation_test(y, n_permutations=10, device="cpu")


@SETTINGS
@given(name=st.text(st.characters(categories=("L", "N"), max_codepoint=0x7F), min_size=1,
                    max_size=8),
       suffix=st.sampled_from(["tstat1", "vox_corrp_tstat2", "tfce_p_fstat1",
                               "clustere_corrp_tstat3", "clusterm_corrp_fstat2"]),
       folder=st.booleans())
def test_output_prefix_matches_exactly_its_own_outputs(name, suffix, folder):
    from calipers.permutation.images import _output_pattern

    stem = "" if folder else f"{name}_"
    pattern = _output_pattern(stem)
    assert pattern.fullmatch(f"{stem}{suffix}.nii.gz")
    assert pattern.fullmatch(f"{stem}summary.json")
    assert not pattern.fullmatch(f"{stem}{suffix}.nii")           # not ours
    assert not pattern.fullmatch(f"x{stem}{suffix}.nii.gz") or stem == ""
    assert not pattern.fullmatch(f"{stem}notes.txt")
