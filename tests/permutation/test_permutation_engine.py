"""Engine and ``permutation_test`` against scipy, NumPy OLS, brute force and nilearn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats as st
from numpy.testing import assert_allclose, assert_array_equal

from calipers.permutation import permutation_test
from calipers.permutation.design import make_relabellings, partition


def _ols_t(y, x, c):
    """NumPy reference: t of contrast c for every column of y."""
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ beta
    s2 = (res**2).sum(0) / (x.shape[0] - np.linalg.matrix_rank(x))
    var = c @ np.linalg.inv(x.T @ x) @ c
    return (c @ beta) / np.sqrt(s2 * var)


def _ols_f(y, x, cmat):
    """NumPy reference F: extra sum of squares of the reduced model {Xb : cmatᵀ b = 0}."""
    n, p = x.shape
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    rss_full = ((y - x @ beta) ** 2).sum(0)
    cb = cmat.T @ beta
    cov = cmat.T @ np.linalg.inv(x.T @ x) @ cmat
    num = np.einsum("iv,ij,jv->v", cb, np.linalg.inv(cov), cb) / cmat.shape[1]
    return num / (rss_full / (n - p))


# ---------------------------------------------------------------- statistics vs references


def test_one_sample_t_equals_scipy(rng):
    y = rng.normal(0.3, 1.0, size=(14, 40))
    res = permutation_test(y, n_permutations=100, device="cpu")
    assert_allclose(res.t[0], st.ttest_1samp(y, 0.0).statistic, rtol=1e-5)
    assert res.methods == ("sign-flip",)


def test_two_sample_t_equals_scipy(rng):
    y = rng.normal(size=(16, 30))
    y[:7] += 0.8
    x = np.zeros((16, 2))
    x[:7, 0] = 1
    x[7:, 1] = 1
    res = permutation_test(y, x, [[1, -1], [-1, 1]], n_permutations=100, device="cpu")
    ref = st.ttest_ind(y[:7], y[7:]).statistic
    assert_allclose(res.t, np.stack([ref, -ref]), rtol=1e-5)
    assert res.methods == ("permutation", "permutation")


def test_nuisance_t_and_f_equal_numpy_ols(rng):
    n = 18
    x = np.c_[np.ones(n), rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)]
    y = x @ rng.normal(size=(4, 25)) * 0.3 + rng.normal(size=(n, 25))
    c = np.array([[0, 1, 0, 0], [0, 0, 1, -1], [1, 0, 0, 0]], dtype=float)
    res = permutation_test(y, x, c, f_tests=[[1, 1, 0]], n_permutations=50, device="cpu")
    ref_t = np.stack([_ols_t(y, x, ci) for ci in c])
    assert_allclose(res.t, ref_t, rtol=1e-5)
    assert_allclose(res.f[0], _ols_f(y, x, c[:2].T), rtol=1e-5)
    assert res.kinds == ("t", "t", "t", "F")
    # the intercept tested next to covariates is a sign-flip test (NOTE in design.py)
    assert res.methods == ("permutation", "permutation", "sign-flip", "permutation")
    assert res.df == n - 4


def test_partition_keeps_statistic_and_splits_model(rng):
    x = np.c_[np.ones(12), rng.normal(size=(12, 3))]
    c = np.array([[0.0], [1.0], [-1.0], [0.5]])
    x_eff, z = partition(x, c)
    assert_allclose(x_eff.T @ z, 0.0, atol=1e-10)
    # z spans the reduced model: every column of z is X b with cᵀb = 0
    b = np.linalg.lstsq(x, z, rcond=None)[0]
    assert_allclose(c.T @ b, 0.0, atol=1e-10)
    assert z.shape == (12, 3)
    # the coefficient of x_eff in [x_eff, z] is cᵀβ̂ of the full model
    y = rng.normal(size=12)
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    gamma = np.linalg.lstsq(np.c_[x_eff, z], y, rcond=None)[0]
    assert_allclose(gamma[0], c[:, 0] @ beta, rtol=1e-10)


# ---------------------------------------------------------------- exact brute force


def _flip_t(flips, y):
    """t of ttest_1samp for every sign vector (rows of flips), in float64."""
    n = y.shape[0]
    mean = flips @ y / n
    var = ((y**2).sum(0)[None] - n * mean**2) / (n - 1)
    return mean / np.sqrt(var / n)


def _brute_p(stats_null, observed):
    """stats_null (P, V) incl. identity; returns (p_unc, p_fwe) as in randomise."""
    p_unc = (stats_null >= observed[None] - 1e-12).mean(0)
    mx = stats_null.max(1)
    p_fwe = (mx[:, None] >= observed[None] - 1e-12).mean(0)
    return p_unc, p_fwe


def test_exhaustive_sign_flips_equal_brute_force(rng):
    n = 10
    y = rng.normal(0.4, 1.0, size=(n, 60))
    res = permutation_test(y, n_permutations=5000, device="cpu")
    assert res.exhaustive == (True,) and res.n_permutations == (2**n,)
    flips = np.array(list(itertools.product([1.0, -1.0], repeat=n)))
    null = _flip_t(flips, y)
    assert_allclose(null[0], st.ttest_1samp(y, 0.0).statistic, rtol=1e-12)
    p_unc, p_fwe = _brute_p(null, st.ttest_1samp(y, 0.0).statistic)
    assert_array_equal(res.p_uncorrected[0], p_unc)
    assert_array_equal(res.p_fwe[0], p_fwe)
    assert_allclose(np.sort(res.max_null[0]), np.sort(null.max(1)), rtol=1e-5)


def test_exhaustive_two_sample_with_blocks_equals_brute_force(rng):
    # 2 blocks of 4 subjects, 2 per group in each block: (4!/(2!2!))**2 = 36 unique relabellings
    n = 8
    group = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    blocks = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    x = np.c_[group, 1 - group].astype(float)
    y = rng.normal(size=(n, 20)) + 0.7 * group[:, None]
    c = np.array([1.0, -1.0])
    res = permutation_test(
        y, x, [c], exchangeability_blocks=blocks, n_permutations=1000, device="cpu"
    )
    assert res.n_permutations == (36,) and res.exhaustive == (True,)
    # brute force: all 4!·4! within-block permutations of the design rows (each unique one 4 times)
    perms = [
        np.r_[np.array(a), np.array(b) + 4]
        for a in itertools.permutations(range(4))
        for b in itertools.permutations(range(4))
    ]
    null = np.stack([_ols_t(y, x[p], c) for p in perms])
    p_unc, p_fwe = _brute_p(null, _ols_t(y, x, c))
    assert_allclose(res.p_uncorrected[0], p_unc, rtol=0, atol=1e-12)
    assert_allclose(res.p_fwe[0], p_fwe, rtol=0, atol=1e-12)


def test_freedman_lane_null_equals_refitting(rng):
    """The GEMM statistic equals refitting the full model to permuted FL residuals."""
    n = 14
    x = np.c_[np.ones(n), rng.normal(size=n), rng.normal(size=n)]
    y = rng.normal(size=(n, 15)) + 0.5 * x[:, 1:2]
    c = np.array([0.0, 1.0, 0.0])
    res = permutation_test(y, x, [c], n_permutations=300, seed=3, device="cpu")
    relabel = make_relabellings(x, flip=False, n_permutations=300, blocks=None, seed=3)
    _, z = partition(x, c[:, None])
    y_r = y - z @ np.linalg.lstsq(z, y, rcond=None)[0]  # Freedman–Lane residuals
    perms = relabel.rows(0, 300)
    # permuting design rows by π is the same as permuting the residuals by π⁻¹
    null = np.stack([_ols_t(y_r[np.argsort(p)], x, c) for p in perms])
    assert_allclose(res.max_null[0], null.max(1), rtol=2e-5)
    p_unc, p_fwe = _brute_p(null, _ols_t(y, x, c))
    assert_allclose(res.p_uncorrected[0], p_unc, atol=1.5 / 300)
    assert_allclose(res.p_fwe[0], p_fwe, atol=1.5 / 300)


def test_two_sided_uses_absolute_values(rng):
    y = rng.normal(size=(9, 12))
    y[:, :3] -= 1.5
    res = permutation_test(y, n_permutations=5000, two_sided=True, device="cpu")
    flips = np.array(list(itertools.product([1.0, -1.0], repeat=9)))
    null = np.abs(_flip_t(flips, y))
    p_unc, p_fwe = _brute_p(null, np.abs(st.ttest_1samp(y, 0.0).statistic))
    assert_array_equal(res.p_uncorrected[0], p_unc)
    assert_array_equal(res.p_fwe[0], p_fwe)
    assert res.t[0, 0] < 0  # the map keeps its sign


# ---------------------------------------------------------------- against nilearn


def test_pvalues_agree_with_nilearn_permuted_ols(rng):
    from nilearn.mass_univariate import permuted_ols

    n, n_perm = 20, 2000
    y = rng.normal(size=(n, 30))
    y[:, :5] += np.linspace(0.2, 0.9, 5)
    ours = permutation_test(y, n_permutations=n_perm, device="cpu", seed=1)
    ref = permuted_ols(
        np.ones((n, 1)), y, model_intercept=False, n_perm=n_perm, two_sided_test=False,
        random_state=0, n_jobs=1, verbose=0, output_type="dict",
    )
    assert_allclose(ours.t[0], ref["t"][0], rtol=1e-5)
    p_ref = 10 ** -ref["logp_max_t"][0]
    p = ours.p_fwe[0]
    # Monte Carlo error of the difference of two independent estimates, 4 sigma
    tol = 4 * np.sqrt(2 * np.clip(p_ref * (1 - p_ref), 1e-3, None) / n_perm) + 1e-3
    assert np.all(np.abs(p - p_ref) <= tol), np.c_[p, p_ref][np.abs(p - p_ref) > tol]


# ---------------------------------------------------------------- invariances


def test_chunked_equals_unchunked_and_seed_determines_result(rng):
    n = 16
    x = np.c_[np.ones(n), rng.normal(size=n)]
    y = rng.normal(size=(n, 70))
    kw = {"n_permutations": 2500, "device": "cpu", "seed": 5}
    a = permutation_test(y, x, [[0, 1]], chunk_size=2500, **kw)
    b = permutation_test(y, x, [[0, 1]], chunk_size=97, **kw)
    c = permutation_test(y, x, [[0, 1]], chunk_size=1024, **kw)
    for r in (b, c):
        assert_array_equal(a.p_fwe, r.p_fwe)
        assert_array_equal(a.p_uncorrected, r.p_uncorrected)
        assert_allclose(a.max_null[0], r.max_null[0], rtol=1e-6)
    d = permutation_test(y, x, [[0, 1]], chunk_size=2500, **{**kw, "seed": 6})
    assert not np.array_equal(a.max_null[0], d.max_null[0])
    assert a.max_null[0][0] == d.max_null[0][0]  # identity first, whatever the seed


def test_identity_is_first_and_counted(rng):
    y = rng.normal(size=(30, 5))
    res = permutation_test(y, n_permutations=200, device="cpu")
    assert_allclose(res.max_null[0][0], res.t[0].max(), rtol=1e-6)
    assert res.p_fwe.min() >= 1 / 200 and res.p_uncorrected.min() >= 1 / 200


def test_progress_callback_counts_all_relabellings(rng):
    calls = []
    y = rng.normal(size=(12, 10))
    x = np.c_[np.ones(12), rng.normal(size=12)]
    permutation_test(
        y, x, [[1, 0], [0, 1]], n_permutations=300, chunk_size=100, device="cpu",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (600, 600) and len(calls) == 6


def test_to_dict_counts_and_critical_values(rng):
    y = rng.normal(size=(15, 40))
    y[:, :4] += 2.0
    res = permutation_test(y, n_permutations=1000, device="cpu")
    d = res.to_dict()
    assert d["n_significant"]["p_fwe"] == [int((res.p_fwe[0] <= 0.05).sum())]
    crit = d["critical_values"]["max_stat"][0]
    assert np.array_equal(res.t[0] >= crit, res.p_fwe[0] <= 0.05)
    assert d["n_permutations"] == [1000]


@pytest.mark.gpu
def test_cuda_equals_cpu(rng):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    n = 20
    x = np.c_[np.ones(n), rng.normal(size=n)]
    y = rng.normal(size=(n, 500))
    a = permutation_test(y, x, [[0, 1]], n_permutations=2000, device="cpu")
    b = permutation_test(y, x, [[0, 1]], n_permutations=2000, device="cuda")
    assert_allclose(a.max_null[0], b.max_null[0], rtol=1e-5)
    assert np.mean(a.p_fwe != b.p_fwe) < 0.01


def test_torch_path_equals_fused_cpu_path(rng, monkeypatch):
    """The torch reduction (the GPU code path) gives the numba fast path's numbers."""
    from calipers.permutation import engine

    n = 15
    x = np.c_[np.ones(n), rng.normal(size=n), rng.normal(size=n)]
    y = rng.normal(size=(n, 300))
    c = [[0, 1, 0], [1, 0, 0], [0, 1, -1]]
    kw = {"f_tests": [[1, 0, 1]], "n_permutations": 700, "device": "cpu", "two_sided": True}
    fused = permutation_test(y, x, c, **kw)
    monkeypatch.setattr(engine, "_HAVE_NUMBA", False)
    plain = permutation_test(y, x, c, **kw)
    for a, b in zip(fused.max_null, plain.max_null, strict=True):
        assert_allclose(a, b, rtol=1e-5)
    assert np.mean(fused.p_fwe != plain.p_fwe) < 0.01
    assert np.mean(fused.p_uncorrected != plain.p_uncorrected) < 0.01


@pytest.mark.parametrize("nuisance", [False, True])
def test_f_test_of_one_contrast_is_two_sided_t(rng, nuisance):
    n = 12
    x = np.c_[rng.normal(size=n), np.ones(n)] if nuisance else rng.normal(size=(n, 1))
    y = rng.normal(size=(n, 25)) + 0.6 * x[:, :1]
    c = [[1, 0]] if nuisance else [[1]]
    res = permutation_test(y, x, c, f_tests=[[1]], n_permutations=400, device="cpu",
                           seed=4)
    two = permutation_test(y, x, c, n_permutations=400, device="cpu", seed=4, two_sided=True)
    assert res.kinds == ("t", "F") and res.names == ("tstat1", "fstat1")
    assert_allclose(res.f[0], res.t[0] ** 2, rtol=1e-10)
    assert_allclose(res.max_null[1], two.max_null[0] ** 2, rtol=1e-4)
    assert_array_equal(res.p_fwe[1], two.p_fwe[0])


def test_constant_nuisance_dropped_under_permutation_changes_nothing(monkeypatch):
    """NOTE [Constant nuisance under permutation]: same p-values as keeping the column."""
    import calipers.permutation.engine as engine

    rng = np.random.default_rng(1)
    n = 15
    y = rng.normal(size=(n, 300))
    x = np.c_[rng.normal(size=n), np.ones(n), rng.normal(size=(n, 2))]
    z = x[:, 1:]
    dropped = engine._drop_constant(np.linalg.qr(z)[0])
    assert dropped.shape == (n, 2)
    np.testing.assert_allclose(dropped.T @ np.ones(n), 0, atol=1e-12)
    fast = permutation_test(y, x, [[1, 0, 0, 0]], n_permutations=500, seed=3)
    monkeypatch.setattr(engine, "_drop_constant", lambda q: q)
    full = permutation_test(y, x, [[1, 0, 0, 0]], n_permutations=500, seed=3)
    np.testing.assert_array_equal(fast.p_fwe, full.p_fwe)
    np.testing.assert_array_equal(fast.p_uncorrected, full.p_uncorrected)
    np.testing.assert_allclose(fast.max_null[0], full.max_null[0], rtol=1e-5)


@pytest.mark.parametrize(("width", "k", "is_t", "absval"), [
    (1, 1, True, False), (1, 1, True, True), (1, 1, False, False), (3, 1, True, False),
    (3, 1, True, True), (2, 1, True, False), (4, 1, True, False), (4, 2, False, False),
])
def test_fused_max_count_pass_equals_two_passes(rng, width, k, is_t, absval):
    """NOTE [Fused max-T pass]: one pass over a voxel-major tile gives the row maxima and the
    exceedance counts of the two-pass (scores, then max and >=) computation on the same tile."""
    from calipers.permutation import engine

    pytest.importorskip("numba")
    m, n_vox, block = 37, 150, 64
    g = (rng.normal(size=(n_vox, width * m)) * (0.3 / width)).astype(np.float32)  # 1 - b > 0
    cols = g.reshape(n_vox, width, m)
    if width == 1 and is_t:
        score = np.abs(cols[:, 0]) if absval else cols[:, 0].copy()
    else:
        den = np.maximum(1 - (cols[:, k:] ** 2).sum(1), np.float32(1e-12))
        if is_t:
            score = cols[:, 0] / np.sqrt(den)
            score = np.abs(score) if absval else score
        else:
            score = (cols[:, :k] ** 2).sum(1) / den
    obs = np.quantile(score, 0.9, axis=1).astype(np.float32)
    ident = np.array([0, 5])
    score[:, ident] = obs[:, None]
    n_blocks = -(-n_vox // block)
    blockmax = np.full((n_blocks, m), -np.inf, np.float32)
    counts = np.zeros(n_vox, np.int64)
    engine._fused_reduce(g.copy(), m, k, is_t, obs, ident, absval, blockmax, counts, block)
    if width == 1:  # the same float32 operations: equal bit for bit
        assert_array_equal(blockmax.max(0), score.max(0))
        assert_array_equal(counts, (score >= obs[:, None]).sum(1))
    else:  # fma contraction may round the denominator differently in the last bit
        assert_allclose(blockmax.max(0), score.max(0), rtol=1e-5)
        assert np.abs(counts - (score >= obs[:, None]).sum(1)).sum() <= 2
        assert_array_equal(counts >= 2, np.ones(n_vox, bool))  # the two identity columns count


def test_split_enumeration_of_exhaustive_flips_equals_plain_enumeration(rng, monkeypatch):
    """NOTE [Split enumeration of exhaustive sign flips]: H(g) + L(t) per score gives the counts
    and maxima of the full GEMM over the plain enumeration, aligned chunks or not."""
    pytest.importorskip("numba")
    from calipers.permutation import engine

    n = 12
    y = rng.normal(0.3, 1.0, size=(n, 700))
    calls = []
    real = engine._chunk_split
    monkeypatch.setattr(engine, "_chunk_split", lambda *a: calls.append(1) or real(*a))
    split = permutation_test(y, n_permutations=2**n, device="cpu")
    assert split.exhaustive == (True,) and len(calls) == 4  # 4 chunks of 1,024, all split
    odd = permutation_test(y, n_permutations=2**n, device="cpu", chunk_size=1000)
    assert len(calls) == 5  # of the 1,000-row chunks only the last (4000..4095) is aligned
    monkeypatch.setattr(engine, "_SPLIT_LOW", 64)  # never splits
    plain = permutation_test(y, n_permutations=2**n, device="cpu")
    assert len(calls) == 5
    for other in (odd, plain):
        assert_array_equal(split.p_uncorrected[0], other.p_uncorrected[0])
        assert_array_equal(split.p_fwe[0], other.p_fwe[0])
        assert_allclose(split.max_null[0], other.max_null[0], rtol=1e-5)
    flips = np.array(list(itertools.product([1.0, -1.0], repeat=n)))[:, ::-1]  # bit i: subject i
    null = _flip_t(flips, y)
    p_unc, p_fwe = _brute_p(null, st.ttest_1samp(y, 0.0).statistic)
    assert_array_equal(split.p_uncorrected[0], p_unc)
    assert_array_equal(split.p_fwe[0], p_fwe)
    assert_allclose(split.max_null[0], null.max(1), rtol=1e-5)  # in enumeration order


@pytest.mark.parametrize("kind,k", [("t", 1), ("F", 1), ("F", 3)])
def test_in_place_score_to_stat_is_bit_identical(rng, kind, k):
    """_score_to_stat_ (in place, TFCE/cluster maps) gives _score_to_stat's float32 values."""
    import torch

    from calipers.permutation.engine import PreparedContrast, _score_to_stat, _score_to_stat_

    prep = PreparedContrast(kind=kind, flip=False, k=k, df=17, basis=np.zeros((20, k)),
                            y_hat=np.zeros((20, 1)), score=np.zeros(1), stat=np.zeros(1))
    lo = -1.0 if kind == "t" else 0.0
    score = torch.from_numpy(rng.uniform(lo, 1.0, size=(7, 1000)).astype(np.float32))
    score[0, :4] = torch.tensor([lo, 0.0, 1.0, np.nextafter(np.float32(1), np.float32(0))])
    expected = _score_to_stat(prep, score.clone()).numpy()
    got = _score_to_stat_(prep, score).numpy()
    assert np.shares_memory(got, score.numpy())
    assert_array_equal(got, expected)  # inf where the score is 1, like the reference
