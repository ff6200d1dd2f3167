"""``permutation_test``: randomise-style voxelwise permutation inference on arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from calipers._checks import _check_finite, _check_positive_int
from calipers._device import resolve_device
from calipers._options import StatKind, look_up_option
from calipers.permutation.design import MatrixLike, load_matrix, make_relabellings, partition
from calipers.permutation.design import demean as _demean_columns
from calipers.permutation.engine import _Extras, prepare_contrast, run_contrast

if TYPE_CHECKING:
    import torch

__all__ = ["PermutationResult", "permutation_test"]


@dataclass(frozen=True)
class PermutationResult:
    """Result of :func:`permutation_test`. All p-values are plain p (not 1 − p).

    Rows of every (n_stats, n_voxels) array are the t-contrasts in order, then the F-tests
    (``kinds`` and ``names`` say which); without F-tests they are exactly the t-contrasts.
    Null distributions are tuples with one array per statistic, because exhaustive
    enumeration can give different counts for different contrasts.

    Attributes
    ----------
    statistic : ndarray of shape (n_stats, n_voxels)
        Observed t (sign of cᵀβ̂) or F values, float64.
    p_uncorrected, p_fwe : ndarray of shape (n_stats, n_voxels)
        Voxelwise uncorrected p and max-statistic family-wise (FWE) p.
    max_null : tuple of ndarray (n_permutations_i,)
        Maximum statistic over voxels per relabelling; entry 0 is the unpermuted data.
    tfce, p_tfce_uncorrected, p_tfce_fwe, tfce_max_null
        TFCE maps (FSL convention), their p-values and max null; None without ``tfce=True``.
    p_cluster_extent_fwe, cluster_extent_max_null, p_cluster_mass_fwe, cluster_mass_max_null
        Cluster-extent / cluster-mass FWE p (each voxel gets its cluster's p, 1 outside
        clusters) and the max cluster size (voxels) / mass (sum of the statistic) nulls.
    n_permutations : tuple of int
        Relabellings used per statistic, identity included.
    exhaustive : tuple of bool
    methods : tuple of str
        "sign-flip" or "permutation" per statistic.
    """

    statistic: np.ndarray
    p_uncorrected: np.ndarray
    p_fwe: np.ndarray
    max_null: tuple[np.ndarray, ...]
    kinds: tuple[str, ...]
    names: tuple[str, ...]
    n_permutations: tuple[int, ...]
    exhaustive: tuple[bool, ...]
    methods: tuple[str, ...]
    df: int
    device: str
    two_sided: bool
    tfce: np.ndarray | None = None
    p_tfce_uncorrected: np.ndarray | None = None
    p_tfce_fwe: np.ndarray | None = None
    tfce_max_null: tuple[np.ndarray, ...] | None = None
    cluster_extent_threshold: float | None = None
    p_cluster_extent_fwe: np.ndarray | None = None
    cluster_extent_max_null: tuple[np.ndarray, ...] | None = None
    cluster_mass_threshold: float | None = None
    p_cluster_mass_fwe: np.ndarray | None = None
    cluster_mass_max_null: tuple[np.ndarray, ...] | None = None
    work_bytes: int = field(default=0, repr=False)  # engine's working buffers (memory bound)

    @property
    def t(self) -> np.ndarray:
        """t maps (n_contrasts, n_voxels): the rows of ``statistic`` that are t-contrasts."""
        return self.statistic[[i for i, k in enumerate(self.kinds) if k == StatKind.T]]

    @property
    def f(self) -> np.ndarray:
        """F maps (n_ftests, n_voxels): the rows of ``statistic`` that are F-tests."""
        return self.statistic[[i for i, k in enumerate(self.kinds) if k == "F"]]

    def critical_values(self, alpha: float = 0.05) -> dict[str, list[float]]:
        """FWE critical values per statistic: the smallest value with p_FWE <= ``alpha``."""
        out: dict[str, list[float]] = {}
        nulls = {
            "max_stat": self.max_null,
            "tfce": self.tfce_max_null,
            "cluster_extent": self.cluster_extent_max_null,
            "cluster_mass": self.cluster_mass_max_null,
        }
        for key, null in nulls.items():
            if null is not None:
                out[key] = [_critical(np.asarray(n), alpha) for n in null]
        return out

    def to_dict(self, alpha: float = 0.05) -> dict[str, Any]:
        """JSON-ready summary: settings, significant-voxel counts at ``alpha``, critical values."""
        counts: dict[str, list[int]] = {
            "p_uncorrected": _count(self.p_uncorrected, alpha),
            "p_fwe": _count(self.p_fwe, alpha),
        }
        for key in ("p_tfce_fwe", "p_cluster_extent_fwe", "p_cluster_mass_fwe"):
            if getattr(self, key) is not None:
                counts[key] = _count(getattr(self, key), alpha)
        return {
            "names": list(self.names),
            "kinds": list(self.kinds),
            "n_voxels": int(self.statistic.shape[1]),
            "n_permutations": list(self.n_permutations),
            "exhaustive": list(self.exhaustive),
            "methods": list(self.methods),
            "df": self.df,
            "device": self.device,
            "two_sided": self.two_sided,
            "alpha": alpha,
            "max_statistic": [float(np.max(s)) for s in self.statistic],
            "min_statistic": [float(np.min(s)) for s in self.statistic],
            "n_significant": counts,
            "critical_values": self.critical_values(alpha),
            "cluster_extent_threshold": self.cluster_extent_threshold,
            "cluster_mass_threshold": self.cluster_mass_threshold,
            "work_bytes": self.work_bytes,
        }


def _count(p: np.ndarray, alpha: float) -> list[int]:
    return [int(np.sum(row <= alpha)) for row in p]


def _critical(null: np.ndarray, alpha: float) -> float:
    """Smallest value c with #{null >= c}/n <= alpha (the (1 − alpha) quantile, randomise-style)."""
    ordered = np.sort(null)
    n = len(ordered)
    k = int(np.floor(alpha * n))  # at most k null values may reach c
    if k == 0:
        return float(np.nextafter(ordered[-1], np.inf))
    return float(np.nextafter(ordered[n - k - 1], np.inf))


@dataclass(frozen=True)
class _Inputs:
    y: np.ndarray
    design: np.ndarray
    contrasts: np.ndarray
    f_tests: np.ndarray | None
    blocks: np.ndarray | None
    mask: np.ndarray | None
    extent_threshold: float | None
    mass_threshold: float | None


def permutation_test(
    y: ArrayLike,
    design: MatrixLike | None = None,
    contrasts: MatrixLike | None = None,
    *,
    f_tests: MatrixLike | None = None,
    n_permutations: int = 5000,
    tfce: bool = False,
    cluster_threshold: float | tuple[float | None, float | None] | None = None,
    mask: ArrayLike | None = None,
    exchangeability_blocks: MatrixLike | None = None,
    demean: bool = False,
    two_sided: bool = False,
    seed: int = 0,
    device: str | torch.device = "auto",
    chunk_size: int | None = None,
    tfce_H: float = 2.0,
    tfce_E: float = 0.5,
    connectivity: int = 6,
    progress: Callable[[int, int], None] | None = None,
    executor: Any = None,
    n_chunks: int | None = None,
    work_dir: Any = None,
) -> PermutationResult:
    """Voxelwise permutation inference for the GLM, with FSL randomise's conventions.

    Parameters
    ----------
    y : array of shape (n_subjects, n_voxels) or (n_subjects, X, Y, Z)
        One row per subject/image. With a grid, the voxels are ``y[:, mask]`` (``mask``
        defaults to the whole grid). Must be finite.
    design : array (n_subjects, n_regressors) or path (FSL ``.mat`` or CSV), optional
        Full-rank GLM design. None: one-sample test (a column of ones), by sign flipping.
    contrasts : array (n_contrasts, n_regressors) or path (``.con`` or CSV), optional
        t-contrasts, one per row; positive t means cᵀβ̂ > 0. Default ``[[1]]`` for a
        one-column design (required otherwise).
    f_tests : array (n_ftests, n_contrasts) of 0/1 or path (``.fts``), optional
        Each row selects the t-contrasts tested jointly by one F-test.
    n_permutations : int, default 5000
        Relabellings, identity included. If this is >= the number of unique relabellings
        (2**n sign flips, or the distinct row orders of the design within blocks) every
        unique one is used once (exhaustive); otherwise random ones.
    tfce : bool
        Also compute TFCE (FSL: H, E, connectivity; Δh = max of the observed map / 100).
    cluster_threshold : float or (float | None, float | None), optional
        Cluster-forming threshold on the statistic: one value for both cluster extent and
        cluster mass FWE, or an (extent, mass) pair (randomise ``-c`` / ``-C``). Clusters
        use 26-connectivity, as randomise.
    mask : bool array of shape (X, Y, Z), optional
        Needed for TFCE and clusters when ``y`` is 2-D: ``y``'s columns are the True voxels
        in C order.
    exchangeability_blocks : array (n_subjects,) of int or path (``.grp``), optional
        Permutations stay within blocks (sign flips are per subject and ignore blocks).
    demean : bool
        Subtract the mean over subjects from ``y`` and from every design column (``-D``).
    two_sided : bool
        Test |t| (randomise is one-sided per contrast: add the negated contrast instead).
    seed : int
        Seeds the random relabellings (the same on every device and for any ``chunk_size``).
    device : "auto", "cpu", "cuda", "cuda:i" or torch.device
    chunk_size : int, optional
        Relabellings per chunk; memory is O(chunk_size · n_voxels) with TFCE or clusters,
        O(n_subjects · n_voxels) plus small GEMM tiles for max-T alone.
    tfce_H, tfce_E, connectivity : TFCE height and extent exponents and neighbourhood (6,
        18 or 26).
    progress : callable (n_done, n_total), optional
        Called after each chunk; ``n_total`` sums the relabellings of all statistics.
    executor, n_chunks, work_dir : optional
        Split the relabellings into ``n_chunks`` tasks (default: the executor's worker count,
        else 1) run by ``executor`` (:mod:`calipers.executors`), chunk files kept in
        ``work_dir`` (resumable). p-maps equal one run's (:mod:`calipers.permutation.chunks`).

    Returns
    -------
    PermutationResult

    Notes
    -----
    Statistics and nuisance follow Winkler et al. (2014): the design is partitioned per
    contrast (Beckmann), the data residualised on the nuisance and relabelled
    (Freedman–Lane). The identity relabelling counts in the null, so p >= 1/n_permutations.
    p_FWE(v) = #{j : max_v' stat_j(v') >= stat(v)} / n_permutations.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).normal(0.5, 1.0, size=(12, 50))
    >>> res = permutation_test(y, n_permutations=1000, device="cpu")
    >>> res.t.shape, res.n_permutations
    ((1, 50), (1000,))
    """
    inp = _permutation_test_iv(
        y,
        design,
        contrasts,
        f_tests,
        exchangeability_blocks,
        mask,
        cluster_threshold,
        n_permutations=n_permutations,
        tfce=tfce,
        connectivity=connectivity,
        chunk_size=chunk_size,
    )
    dev = resolve_device(device)
    x, yy = inp.design, inp.y
    if demean:
        x, yy = _demean_columns(x), _demean_columns(yy)
        _check_rank(x, demeaned=True)
    tests = _statistics(inp.contrasts, inp.f_tests)
    _check_f_rank(tests)
    extras = _Extras(
        mask=inp.mask,
        tfce=tfce,
        tfce_H=float(tfce_H),
        tfce_E=float(tfce_E),
        connectivity=connectivity,
        extent_threshold=inp.extent_threshold,
        mass_threshold=inp.mass_threshold,
    )
    plans = []
    for _name, c in tests:
        flip = _tests_the_mean(x, c)
        relabel = make_relabellings(
            x, flip=flip, n_permutations=n_permutations, blocks=inp.blocks, seed=seed
        )
        plans.append((c, relabel))
    total = sum(r.n for _, r in plans)
    done = [0]

    def _tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    if executor is not None or n_chunks is not None:
        from calipers.permutation.chunks import run_chunked

        preps = [prepare_contrast(yy, x, c, flip=r.flip, two_sided=two_sided,
                                  f_test=name.startswith("f"))
                 for (name, _), (c, r) in zip(tests, plans, strict=True)]
        nulls = run_chunked(preps, [r for _, r in plans], executor=executor,
                            n_chunks=n_chunks or getattr(executor, "workers", 1),
                            work_dir=work_dir, device=device, two_sided=two_sided,
                            chunk_size=chunk_size, extras=extras, progress=progress)
        return _assemble(nulls, tests, plans, inp, dev, two_sided, tfce, x.shape)
    nulls = []
    for (name, _), (c, relabel) in zip(tests, plans, strict=True):
        prep = prepare_contrast(
            yy, x, c, flip=relabel.flip, two_sided=two_sided, f_test=name.startswith("f")
        )
        nulls.append(
            run_contrast(
                prep,
                relabel,
                device=dev,
                two_sided=two_sided,
                chunk_size=chunk_size,
                extras=extras,
                progress=_tick,
            )
        )
    return _assemble(nulls, tests, plans, inp, dev, two_sided, tfce, x.shape)


def _assemble(nulls, tests, plans, inp, dev, two_sided, tfce, shape) -> PermutationResult:
    def stack(key):
        return np.stack([getattr(n, key) for n in nulls])

    def tup(key):
        return tuple(np.asarray(getattr(n, key)) for n in nulls)

    ext, mass = inp.extent_threshold, inp.mass_threshold
    return PermutationResult(
        statistic=stack("stat"),
        p_uncorrected=stack("p_uncorrected"),
        p_fwe=stack("p_fwe"),
        max_null=tup("max_null"),
        kinds=tuple((StatKind.F if name.startswith("f") else StatKind.T).value
                    for name, _ in tests),
        names=tuple(name for name, _ in tests),
        n_permutations=tuple(r.n for _, r in plans),
        exhaustive=tuple(r.exhaustive for _, r in plans),
        methods=tuple("sign-flip" if r.flip else "permutation" for _, r in plans),
        df=int(shape[0] - shape[1]),
        device=str(dev),
        two_sided=two_sided,
        tfce=stack("tfce") if tfce else None,
        p_tfce_uncorrected=stack("p_tfce_uncorrected") if tfce else None,
        p_tfce_fwe=stack("p_tfce_fwe") if tfce else None,
        tfce_max_null=tup("tfce_max_null") if tfce else None,
        cluster_extent_threshold=ext,
        p_cluster_extent_fwe=stack("p_extent_fwe") if ext is not None else None,
        cluster_extent_max_null=tup("extent_max_null") if ext is not None else None,
        cluster_mass_threshold=mass,
        p_cluster_mass_fwe=stack("p_mass_fwe") if mass is not None else None,
        cluster_mass_max_null=tup("mass_max_null") if mass is not None else None,
        work_bytes=max(n.work_bytes for n in nulls),
    )


def _statistics(contrasts: np.ndarray, f_tests: np.ndarray | None):
    """[(name, contrast matrix (p, k))]: tstat1.., then fstat1.."""
    tests = [(f"tstat{i + 1}", contrasts[i][:, None]) for i in range(contrasts.shape[0])]
    if f_tests is not None:
        for j, row in enumerate(f_tests):
            tests.append((f"fstat{j + 1}", contrasts[row.astype(bool)].T))
    return tests


def _tests_the_mean(design: np.ndarray, contrast: np.ndarray) -> bool:
    """True when the constant is in the model but not in the nuisance (sign flips)."""
    _, z = partition(design, contrast)
    ones = np.ones(design.shape[0])

    def resid(m):
        return ones - m @ np.linalg.lstsq(m, ones, rcond=None)[0] if m.shape[1] else ones

    tol = 1e-8 * np.sqrt(design.shape[0])
    return bool(np.linalg.norm(resid(design)) < tol and np.linalg.norm(resid(z)) > tol)


def _check_f_rank(tests) -> None:
    for name, c in tests:
        if c.shape[1] > 1 and np.linalg.matrix_rank(c) < c.shape[1]:
            raise ValueError(
                f"{name}: the t-contrasts it selects are linearly dependent (rank "
                f"{np.linalg.matrix_rank(c)} < {c.shape[1]}); select independent contrasts."
            )


def _check_rank(design: np.ndarray, *, demeaned: bool = False) -> None:
    n, p = design.shape
    rank = np.linalg.matrix_rank(design)
    if rank < p:
        extra = (
            " After demeaning (-D) a constant column (intercept) is all zeros: drop it."
            if demeaned
            else ""
        )
        raise ValueError(
            f"design is rank deficient: rank {rank} < {p} columns (shape {design.shape}); "
            f"some columns are linear combinations of others. Remove the redundant "
            f"column(s).{extra}"
        )
    if p >= n:
        raise ValueError(
            f"design has {p} columns but only {n} subjects; need more subjects than regressors "
            f"(df = n − p >= 1)."
        )


def _permutation_test_iv(
    y,
    design,
    contrasts,
    f_tests,
    blocks,
    mask,
    cluster_threshold,
    *,
    n_permutations,
    tfce,
    connectivity,
    chunk_size,
) -> _Inputs:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim not in (2, 4):
        raise ValueError(
            f"y must have shape (n_subjects, n_voxels) or (n_subjects, X, Y, Z); got {y.shape}."
        )
    mask = _check_mask(y, mask, need=tfce or cluster_threshold is not None)
    if y.ndim == 4:
        y = y[:, mask]
    _check_finite(y, name="y")
    n = y.shape[0]
    if n < 2:
        raise ValueError(f"y needs at least 2 subjects (rows); got {n}.")
    if design is None:
        x = np.ones((n, 1))
    else:
        x = load_matrix(design, what="design")
    if x.shape[0] != n:
        raise ValueError(
            f"design has {x.shape[0]} rows but y has {n} subjects (images); the design needs "
            f"exactly one row per subject, in the order of the images."
        )
    _check_rank(x)
    c = _check_contrasts(contrasts, x.shape[1])
    f = _check_f_tests(f_tests, c.shape[0])
    b = None
    if blocks is not None:
        b = load_matrix(blocks, what="exchangeability_blocks")[:, 0]
        if b.shape[0] != n:
            raise ValueError(
                f"exchangeability_blocks has {b.shape[0]} entries but y has {n} subjects; "
                f"give one block number per subject."
            )
    _check_positive_int(n_permutations, name="n_permutations", minimum=2,
                        fix="One permutation is the data itself (every p = 1); 5000 is usual.")
    if chunk_size is not None:
        _check_positive_int(chunk_size, name="chunk_size")
    look_up_option(connectivity, (6, 18, 26), name="connectivity")
    ext, mass = _check_cluster_threshold(cluster_threshold)
    return _Inputs(y, x, c, f, b, mask, ext, mass)


def _check_mask(y: np.ndarray, mask, *, need: bool) -> np.ndarray | None:
    if mask is None:
        if y.ndim == 4:
            return np.ones(y.shape[1:], dtype=bool)
        if need:
            raise ValueError(
                "TFCE and cluster inference need the voxel grid: pass mask= (a 3-D bool array "
                "whose True voxels, in C order, are y's columns) or y of shape (n, X, Y, Z)."
            )
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 3:
        raise ValueError(
            f"mask must be a 3-D bool array; got dtype {mask.dtype}, shape {mask.shape}."
        )
    if y.ndim == 4 and mask.shape != y.shape[1:]:
        raise ValueError(f"mask has shape {mask.shape} but y's grid is {y.shape[1:]}.")
    if y.ndim == 2 and int(mask.sum()) != y.shape[1]:
        raise ValueError(
            f"mask has {int(mask.sum())} True voxels but y has {y.shape[1]} columns; "
            f"y's columns must be the mask's True voxels in C order."
        )
    if not mask.any():
        raise ValueError("mask is empty (no True voxel); nothing to test.")
    return mask


def _check_contrasts(contrasts, p: int) -> np.ndarray:
    if contrasts is None:
        if p == 1:
            return np.ones((1, 1))
        raise ValueError(
            f"contrasts are required for a design with {p} columns; pass e.g. "
            f"contrasts=[[0, 1, 0, ...]] (one row per t-contrast)."
        )
    c = load_matrix(contrasts, what="contrasts")
    if c.shape[1] != p:
        raise ValueError(
            f"contrasts have {c.shape[1]} columns but the design has {p}; each contrast needs "
            f"one weight per design column."
        )
    zero = np.flatnonzero(~np.any(c != 0, axis=1))
    if zero.size:
        raise ValueError(f"contrast {int(zero[0]) + 1} is all zeros; give it a non-zero weight.")
    return c


def _check_f_tests(f_tests, n_contrasts: int) -> np.ndarray | None:
    if f_tests is None:
        return None
    f = load_matrix(f_tests, what="f_tests")
    if f.shape[1] != n_contrasts or not np.all(np.isin(f, (0, 1))):
        raise ValueError(
            f"f_tests must be a 0/1 matrix with one column per t-contrast ({n_contrasts}); "
            f"got shape {f.shape}."
        )
    return f.astype(bool).astype(np.float64)


def _check_cluster_threshold(value) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(
            f"cluster_threshold must be a number or an (extent, mass) pair; got {value!r}."
        )
    out = []
    for v in pair:
        if v is not None and not (np.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"cluster_threshold must be finite and > 0 (clusters are voxels "
                             f"whose statistic exceeds it, e.g. 2.3); got {value!r}.")
        out.append(None if v is None else float(v))
    return out[0], out[1]
