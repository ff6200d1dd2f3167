"""Permutation engine: GEMM-based t/F statistics over relabellings, max fused, tiled over voxels.

Pure torch on ``cpu`` or ``cuda``; no I/O. One contrast at a time (``run_contrast``).

# NOTE [Statistic as one GEMM]
After Freedman–Lane residualisation on the nuisance Z (NOTE [Partition of the design] in
``design.py``) the data Y_r are normalised to unit-norm columns Ŷ. With an orthonormal basis
[Q_x | Q_z] of [X_eff | Z] (k + q columns), a relabelling π (row permutation or sign flip) gives

    a = (π Q_x)ᵀ Ŷ   (k × V),     b = ‖(π Q_z)ᵀ Ŷ‖²   (V,),

and, with df = n − rank(X), since ‖πŶ‖ = 1 and [Q_x Q_z] stays orthonormal under π,

    t = √df · a / √(1 − a² − b) = √df · ρ / √(1 − ρ²),      ρ = a / √(1 − b)   (k = 1)
    F = (ρ²/k) / ((1 − ρ²)/df),                              ρ² = ‖a‖² / (1 − b).

So every relabelling is k + q rows of one GEMM against Ŷ, and the statistic is a monotone
function of the *score* ρ (t) or ρ² (F), which lies in [−1, 1]. One-sample sign flipping is the
case q = 0, k = 1, Q_x = 1/√n: then ρ = sᵀŶ/√n directly and t = √(n−1)·ρ/√(1−ρ²). The max over
voxels is taken on scores tile by tile (never P × V in memory) and mapped to t or F once.
Observed statistics are computed separately in float64 (they match scipy to rounding).

# NOTE [Identity counts in the null]
Relabelling 0 is always the identity and is counted in the null (p >= 1/n_perm, as randomise).
The scores of every identity row (row 0, random duplicates of it and, for two-sided sign flips,
its mirror −1, which gives the same |t|; flips are canonicalised so that the mirror *is* the
identity) are overwritten with the observed scores in the compute dtype, so the identity ties
the observed value exactly whatever the GEMM's rounding. Other comparisons are ``>=`` on float32
scores: a genuine tie closer than float32 rounding (~1e-7 in ρ) may count differently from a
float64 reference; the tests compare with float64 brute force exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calipers.permutation.design import Relabellings, partition

try:  # numba fuses score, max and count into one pass on the CPU; torch does it otherwise
    from numba import get_num_threads, njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised by monkeypatching _HAVE_NUMBA
    _HAVE_NUMBA = False

__all__ = [
    "ContrastNull",
    "PreparedContrast",
    "RangeNull",
    "combine_ranges",
    "engine_chunk",
    "prepare_contrast",
    "run_contrast",
    "run_contrast_range",
]

_TILE_ELEMENTS = 1 << 20  # scores per GEMM tile (Pc·m × Vt), 4 MiB in float32 (measured best)
_CUDA_TILE_ELEMENTS = 1 << 26  # on a GPU: 256 MiB tiles, a few kernel launches per chunk
_FUSED_TILE_BYTES = 1 << 19  # fused CPU path: (Vt × Pc·m) float32 tile, half of one core's L2
_FULL_MAP_BYTES = 256 << 20  # budget for the (chunk × V) maps TFCE and clusters need
_FUSED_TFCE = True  # TFCE null by max/count in the kernel (NOTE [Fused TFCE null], tfce.py)


@dataclass(frozen=True)
class PreparedContrast:
    """One contrast ready for the engine (all float64, on the CPU).

    ``basis`` is (n, k + q): Q_x then Q_z; ``y_hat`` (n, V) the unit-norm residualised data;
    ``score`` (V,) the observed score; ``stat`` (V,) the observed t or F.
    """

    kind: str  # "t" or "F"
    flip: bool
    k: int
    df: int
    basis: np.ndarray
    y_hat: np.ndarray
    score: np.ndarray
    stat: np.ndarray


@dataclass(frozen=True)
class ContrastNull:
    """What the engine returns for one contrast (NumPy, CPU)."""

    stat: np.ndarray  # (V,) observed t or F (float64)
    p_uncorrected: np.ndarray  # (V,)
    p_fwe: np.ndarray  # (V,)
    max_null: np.ndarray  # (n_perm,) max statistic per relabelling (t or F units)
    tfce: np.ndarray | None = None  # (V,) observed TFCE
    p_tfce_uncorrected: np.ndarray | None = None
    p_tfce_fwe: np.ndarray | None = None
    tfce_max_null: np.ndarray | None = None
    p_extent_fwe: np.ndarray | None = None
    extent_max_null: np.ndarray | None = None
    p_mass_fwe: np.ndarray | None = None
    mass_max_null: np.ndarray | None = None
    work_bytes: int = 0  # size of the largest working buffers (device memory bound)


def _orthonormal(m: np.ndarray) -> np.ndarray:
    if m.shape[1] == 0:
        return m
    q, _ = np.linalg.qr(m)
    return q


def prepare_contrast(
    y: np.ndarray,
    design: np.ndarray,
    contrast: np.ndarray,
    *,
    flip: bool,
    two_sided: bool,
    f_test: bool = False,
) -> PreparedContrast:
    """Partition, residualise (Freedman–Lane) and normalise, in float64.

    ``y`` (n, V), ``design`` (n, p) full rank, ``contrast`` (p, k); ``f_test`` gives F (always
    so when k > 1) instead of t.
    """
    is_t = contrast.shape[1] == 1 and not f_test
    n, p = design.shape
    k = contrast.shape[1]
    x_eff, z = partition(design, contrast)
    qz = _orthonormal(z)
    if is_t:
        qx = x_eff / np.linalg.norm(x_eff)  # keep the sign: positive a <=> positive cᵀβ̂
    else:
        qx = _orthonormal(x_eff)
    y_r = y - qz @ (qz.T @ y) if qz.shape[1] else y
    norms = np.sqrt(np.einsum("ij,ij->j", y_r, y_r))
    y_hat = y_r / np.where(norms > 0, norms, 1.0)
    a = qx.T @ y_hat
    qz_perm = qz if flip else _drop_constant(qz)
    df = n - p
    if is_t:
        score = a[0]
        stat = _t_from_score(score, df, xp=np)
        if two_sided:
            score = np.abs(score)
    else:
        score = np.einsum("ij,ij->j", a, a)
        stat = _f_from_score(score, k, df, xp=np)
    return PreparedContrast(
        kind="t" if is_t else "F",
        flip=flip,
        k=k,
        df=df,
        basis=np.concatenate([qx, qz_perm], axis=1),
        y_hat=y_hat,
        score=score,
        stat=stat,
    )


def _drop_constant(qz: np.ndarray) -> np.ndarray:
    """Nuisance basis without the constant direction, when the constant lies in its span.

    # NOTE [Constant nuisance under permutation]
    Freedman–Lane needs the projection of the relabelled data on every permuted basis column.
    A permutation maps the constant vector 1 onto itself, and the residualised data are
    orthogonal to it, so its projection is exactly 0 for every permutation (within blocks too)
    and its GEMM rows can be dropped: a design with an intercept and q covariates costs q, not
    q + 1, rows per relabelling. Sign flips do not preserve 1, so they keep every column.
    """
    n = qz.shape[0]
    if qz.shape[1] == 0:
        return qz
    one = np.full((n, 1), 1.0 / np.sqrt(n))
    inside = qz.T @ one
    if abs(float((inside.T @ inside)[0, 0]) - 1.0) > 1e-10:  # constant not in the nuisance span
        return qz
    rest = qz - one @ (one.T @ qz)  # the span of qz minus the constant direction
    u, sv, _ = np.linalg.svd(rest, full_matrices=False)
    return u[:, sv > 1e-8 * max(1.0, float(sv.max(initial=0.0)))]


def _t_from_score(score, df, *, xp):
    one_minus = xp.clip(1.0 - score * score, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = math.sqrt(df) * score / xp.sqrt(one_minus)
    return t


def _f_from_score(score, k, df, *, xp):
    one_minus = xp.clip(1.0 - score, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (score / k) / (one_minus / df)


def _score_to_stat(prep: PreparedContrast, score):
    xp = torch if isinstance(score, torch.Tensor) else np
    if prep.kind == "t":
        return _t_from_score(score, prep.df, xp=xp)
    return _f_from_score(score, prep.k, prep.df, xp=xp)


def _score_to_stat_(prep: PreparedContrast, score: torch.Tensor) -> torch.Tensor:
    """``_score_to_stat`` of a float tensor, in place: the same operations in the same order
    (so the same values, bit for bit), without the five (P, V) temporaries. Returns ``score``."""
    tmp = score * score
    if prep.kind == "t":
        tmp.neg_().add_(1.0).clamp_(min=0.0).sqrt_()  # -x + 1 == 1 - x exactly
        return score.mul_(math.sqrt(prep.df)).div_(tmp)
    tmp = score.neg().add_(1.0).clamp_(min=0.0).div_(prep.df)
    return score.div_(prep.k).div_(tmp)


def _left_rows(prep: PreparedContrast, relabel: np.ndarray, flip: bool) -> np.ndarray:
    """(m, n) relabellings -> (m·(k+q), n) GEMM rows: the permuted or flipped basis columns."""
    if flip:
        rows = relabel[:, :, None] * prep.basis[None, :, :]  # (m, n, k+q)
    else:
        rows = prep.basis[relabel]  # (m, n, k+q): row i of π Q is Q[π(i)]
    return np.ascontiguousarray(rows.transpose(0, 2, 1)).reshape(-1, prep.basis.shape[0])


def _tile_scores(prep, left, y_tile):
    """Signed scores (m, Vt) of m relabellings (left: (m·(k+q), n)) on one voxel tile (n, Vt)."""
    g = torch.matmul(left, y_tile)
    width = prep.basis.shape[1]
    if width == 1 and prep.kind == "t":
        s = g
    else:
        g = g.view(-1, width, y_tile.shape[1])
        b = (g[:, prep.k :, :] ** 2).sum(1) if width > prep.k else None
        if prep.kind == "t":
            s = g[:, 0, :]
            if b is not None:
                s = s * torch.rsqrt(torch.clamp(1.0 - b, min=1e-12))
        else:
            s = (g[:, : prep.k, :] ** 2).sum(1)
            if b is not None:
                s = s / torch.clamp(1.0 - b, min=1e-12)
    return s


@dataclass(frozen=True)
class _Extras:
    """Full-map statistics (TFCE, clusters) for the engine; all None means max-T only."""

    mask: np.ndarray | None = None
    tfce: bool = False
    tfce_H: float = 2.0
    tfce_E: float = 0.5
    connectivity: int = 6
    extent_threshold: float | None = None
    mass_threshold: float | None = None
    cluster_connectivity: int = 26

    @property
    def full_maps(self) -> bool:
        return self.tfce or self.extent_threshold is not None or self.mass_threshold is not None


def run_contrast(
    prep: PreparedContrast,
    relabellings: Relabellings,
    *,
    device: torch.device,
    two_sided: bool = False,
    chunk_size: int | None = None,
    extras: _Extras | None = None,
    progress: Callable[[int], None] | None = None,
) -> ContrastNull:
    """Run every relabelling of one contrast; max-T (and TFCE/cluster) FWE, uncorrected p.

    ``progress(n_done)`` is called after each chunk with the number of relabellings done.
    """
    part = run_contrast_range(prep, relabellings, 0, relabellings.n, device=device,
                              two_sided=two_sided, chunk_size=chunk_size, extras=extras,
                              progress=progress)
    return combine_ranges(prep, relabellings.n, [part], two_sided=two_sided, extras=extras)


@dataclass(frozen=True)
class RangeNull:
    """What relabellings ``start .. stop-1`` of one contrast add to its null (NumPy, CPU).

    NOTE [Chunked nulls]: the maxima are per relabelling and the counts integers, so chunks
    computed anywhere (another process, node or session) combine by concatenation and sums into
    exactly what one run gives, as long as every chunk runs the same GEMMs: range boundaries
    are multiples of :func:`engine_chunk` (the engine's own chunk), so each GEMM has the same
    rows as in a single run.
    """

    start: int
    stop: int
    max_score: np.ndarray  # (stop-start,) float32 max score per relabelling
    counts: np.ndarray  # (V,) int64 #{relabellings with score >= observed}
    tfce_max: np.ndarray | None = None
    tfce_counts: np.ndarray | None = None
    extent_max: np.ndarray | None = None
    mass_max: np.ndarray | None = None
    identity: tuple[int, ...] = ()  # global indices of identity relabellings
    work_bytes: int = 0


def engine_chunk(prep: PreparedContrast, n_perm: int, *, chunk_size: int | None = None,
                 extras: _Extras | None = None, device: Any = None) -> int:
    """Relabellings per GEMM chunk that :func:`run_contrast` uses for ``n_perm`` relabellings
    on ``device`` (a GPU takes fewer, larger chunks)."""
    extras = extras or _Extras()
    width = prep.basis.shape[1]
    chunk = chunk_size or (
        _default_full_chunk(prep.y_hat.shape[1], width) if extras.full_maps
        else max(128, 1024 // width)
    )
    chunk = min(chunk, n_perm)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if on_gpu and chunk_size is None and not extras.full_maps:
        chunk = max(chunk, min(n_perm, 4096 // width))  # fewer, larger kernels on a GPU
    return chunk


def run_contrast_range(
    prep: PreparedContrast,
    relabellings: Relabellings,
    start: int,
    stop: int,
    *,
    device: torch.device,
    two_sided: bool = False,
    chunk_size: int | None = None,
    extras: _Extras | None = None,
    progress: Callable[[int], None] | None = None,
) -> RangeNull:
    """Relabellings ``start .. stop-1`` of one contrast (NOTE [Chunked nulls]); ``start`` must
    be a multiple of :func:`engine_chunk` for results identical to one run."""
    extras = extras or _Extras()
    n_perm, n_vox = relabellings.n, prep.y_hat.shape[1]
    dtype = torch.float32
    y_hat = torch.as_tensor(prep.y_hat, dtype=dtype, device=device)
    obs = torch.as_tensor(prep.score, dtype=dtype, device=device)
    width = prep.basis.shape[1]
    abs_scores = two_sided and prep.kind == "t"
    chunk = engine_chunk(prep, n_perm, chunk_size=chunk_size, extras=extras, device=device)
    per_tile = _TILE_ELEMENTS if device.type == "cpu" else _CUDA_TILE_ELEMENTS
    tile = max(64, min(n_vox, per_tile // (chunk * width)))
    max_score = torch.empty(stop - start, dtype=dtype, device=device)
    counts = torch.zeros(n_vox, dtype=torch.int64, device=device)
    full = _FullMapState(prep, extras, n_perm, two_sided) if extras.full_maps else None
    fused = maps_buf = None
    if full is None and device.type == "cpu" and _HAVE_NUMBA:
        fused = _FusedBuffers(y_hat, chunk, width)
    for p0 in range(start, stop, chunk):
        p1 = min(p0 + chunk, stop)
        rows = relabellings.rows(p0, p1)
        if relabellings.flip and abs_scores:
            rows = rows * rows[:, :1]  # |t| is the same for s and −s: the mirror is the identity
        ident = torch.as_tensor(_identity_rows(rows, relabellings.flip), device=device)
        left = torch.as_tensor(
            _left_rows(prep, rows, relabellings.flip), dtype=dtype, device=device
        )
        if full is not None and maps_buf is None:  # one buffer for every chunk's maps
            maps_buf = torch.empty(chunk, n_vox, dtype=dtype, device=device)
        maps = maps_buf[: p1 - p0] if full is not None else None
        split = fused is not None and not abs_scores and _split_rows(prep, rows, relabellings)
        if split:
            running = _chunk_split(prep, rows, obs, ident, counts, *split)
        elif fused is not None:
            running = _chunk_fused(prep, left, obs, ident, abs_scores, counts, fused)
        else:
            running = _chunk_torch(prep, left, y_hat, obs, ident, abs_scores, counts, tile, maps)
        max_score[p0 - start : p1 - start] = running
        if full is not None:
            full.add_chunk(p0, maps, ident.cpu().numpy())
        if progress is not None:
            progress(p1 - p0)
    work = chunk * width * tile * 4 + (chunk * n_vox * 4 * 3 if full else 0)
    part = RangeNull(start, stop, max_score.cpu().numpy(), counts.cpu().numpy(),
                     work_bytes=int(y_hat.numel() * 4 + work))
    if full is None:
        return part
    from dataclasses import replace

    sl = slice(start, stop)
    return replace(
        part,
        tfce_max=full.tfce_max[sl] if extras.tfce else None,
        tfce_counts=full.tfce_counts if extras.tfce else None,
        extent_max=full.ext_max[sl] if full.ext_max is not None else None,
        mass_max=full.mass_max[sl] if full.mass_max is not None else None,
        identity=tuple(full.identity),
    )


def combine_ranges(
    prep: PreparedContrast,
    n_perm: int,
    parts: list[RangeNull],
    *,
    two_sided: bool = False,
    extras: _Extras | None = None,
) -> ContrastNull:
    """The :class:`ContrastNull` of ranges covering ``0 .. n_perm-1`` (NOTE [Chunked nulls])."""
    extras = extras or _Extras()
    parts = sorted(parts, key=lambda r: r.start)
    edges = [0] + [b for r in parts for b in (r.start, r.stop)] + [n_perm]
    if any(edges[i] != edges[i + 1] for i in range(0, len(edges), 2)):
        raise ValueError(f"relabelling ranges {[(r.start, r.stop) for r in parts]} do not cover "
                         f"0..{n_perm} exactly once.")
    max_np = np.concatenate([r.max_score for r in parts]).astype(np.float32, copy=False)
    counts = parts[0].counts.copy()
    for r in parts[1:]:
        counts += r.counts
    obs_np = prep.score.astype(np.float32)
    result = ContrastNull(
        stat=prep.stat,
        p_uncorrected=counts / n_perm,
        p_fwe=_fwe_p(max_np, obs_np),
        max_null=_score_to_stat(prep, max_np.astype(np.float64)),
        work_bytes=max(r.work_bytes for r in parts),
    )
    if not extras.full_maps:
        return result
    full = _FullMapState(prep, extras, n_perm, two_sided)
    for r in parts:
        sl = slice(r.start, r.stop)
        if extras.tfce:
            full.tfce_max[sl] = r.tfce_max
            full.tfce_counts += r.tfce_counts
        if full.ext_max is not None:
            full.ext_max[sl] = r.extent_max
        if full.mass_max is not None:
            full.mass_max[sl] = r.mass_max
        full.identity.extend(r.identity)
    return full.finish(result)


def _chunk_torch(prep, left, y_hat, obs, ident, abs_scores, counts, tile, maps):
    """Max score per relabelling of one chunk; adds to ``counts``; fills ``maps`` if given."""
    n_vox = y_hat.shape[1]
    running = torch.full((left.shape[0] // prep.basis.shape[1],), -math.inf,
                         dtype=y_hat.dtype, device=y_hat.device)
    for v0 in range(0, n_vox, tile):
        v1 = min(v0 + tile, n_vox)
        signed = _tile_scores(prep, left, y_hat[:, v0:v1])
        if maps is not None:
            maps[:, v0:v1] = signed
        s = signed.abs() if abs_scores else signed
        if len(ident):  # NOTE [Identity counts in the null]
            s[ident] = obs[v0:v1]
        torch.maximum(running, s.amax(1), out=running)
        counts[v0:v1] += (s >= obs[v0:v1]).sum(0)
    return running


_FUSED_BLOCK = 64  # fewest voxels per numba work item


def _fused_block(tile: int) -> int:
    """Voxels per work item: one item per numba thread and tile (few, long items win)."""
    per_thread = -(-tile // max(1, get_num_threads()))
    return max(_FUSED_BLOCK, -(-per_thread // 16) * 16)


def _fused_tile(n_vox: int, columns: int) -> int:
    """Voxels per GEMM tile of the fused path: the (Vt, columns) float32 tile fills the cache."""
    return int(max(16, min(n_vox, _FUSED_TILE_BYTES // (4 * columns))))


class _FusedBuffers:
    """The fused path's working memory, allocated once per contrast (reused by every chunk)."""

    def __init__(self, y_hat: torch.Tensor, chunk: int, width: int):
        self.y_t = y_hat.T.contiguous()  # (V, n): a voxel tile is a contiguous row block
        self.tile = _fused_tile(y_hat.shape[1], chunk * width)
        self.block = _fused_block(self.tile)
        self.out = torch.empty(self.tile, chunk * width, dtype=y_hat.dtype)
        n_blocks = -(-self.tile // self.block)
        self.blockmax = np.empty((n_blocks, chunk), np.float32)


def _chunk_fused(prep, left, obs, ident, abs_scores, counts, bufs: _FusedBuffers):
    """As ``_chunk_torch`` for max-T on the CPU: GEMM by torch, the rest in one numba pass.

    # NOTE [Fused max-T pass]
    The GEMM is laid out voxel-major, G = Ŷ_tileᵀ · Lᵀ of shape (Vt, width·m) with column
    j·m + p holding basis column j under relabelling p. For one voxel the m scores are then
    contiguous, so both reductions vectorise with no loop-carried dependency across lanes: the
    per-relabelling max is an elementwise running max over voxel rows, and the exceedance count
    is one integer sum per voxel. (The relabelling-major layout makes the max a horizontal
    reduction per row, which numba/LLVM does not vectorise: 8x slower, measured.) The tile
    (Vt · width·m float32) is sized to stay in cache between the GEMM and the pass.
    """
    n_vox, width = bufs.y_t.shape[0], prep.basis.shape[1]
    n_rel = left.shape[0] // width
    n_sub = left.shape[1]
    # rows p·width + j -> columns j·m + p
    left_t = left.view(n_rel, width, n_sub).permute(2, 1, 0).reshape(n_sub, width * n_rel)
    ident_idx = np.ascontiguousarray(ident.numpy(), dtype=np.int64)
    n_blocks = bufs.blockmax.shape[0]  # a contiguous view: one compiled layout for all chunks
    blockmax = bufs.blockmax.reshape(-1)[: n_blocks * n_rel].reshape(n_blocks, n_rel)
    blockmax.fill(-np.inf)
    obs_np, counts_np = obs.numpy(), counts.numpy()
    tile, cols = bufs.tile, width * n_rel
    flat = bufs.out.view(-1)[: tile * cols].view(tile, cols)
    for v0 in range(0, n_vox, tile):
        v1 = min(v0 + tile, n_vox)
        out = flat[: v1 - v0]
        torch.matmul(bufs.y_t[v0:v1], left_t, out=out)
        _fused_reduce(out.numpy(), n_rel, prep.k, prep.kind == "t", obs_np[v0:v1], ident_idx,
                      abs_scores, blockmax, counts_np[v0:v1], bufs.block)
    return torch.from_numpy(blockmax.max(axis=0))


if _HAVE_NUMBA:

    # no nnan/ninf: blockmax starts at -inf; reassociation lets the count sums vectorise
    @njit(parallel=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
    def _fused_reduce(g, m, k, is_t, obs, ident, absval, blockmax, counts, block):
        """Scores of g (Vt, width·m), NOTE [Fused max-T pass]: max into blockmax, counts.

        Work items are blocks of ``block`` voxels (each owns a row of ``blockmax`` and its
        voxels' counts: no write conflicts). Scores as ``_tile_scores``; the identity columns
        ``ident`` score the observed value exactly (NOTE [Identity counts in the null]).
        """
        n_vox = g.shape[0]
        width = g.shape[1] // m
        plain = width == 1 and is_t and not absval
        for b in prange((n_vox + block - 1) // block):
            v0, v1 = b * block, min(b * block + block, n_vox)
            mx = blockmax[b]
            s = np.empty(m, np.float32)
            den = np.empty(m, np.float32)
            for i in range(v0, v1):
                row = g[i]
                o = obs[i]
                if plain:  # the common one-column t: scores are the GEMM row itself
                    for q in ident:
                        row[q] = o
                    c = 0
                    for p in range(m):
                        x = row[p]
                        mx[p] = x if x > mx[p] else mx[p]
                        c += 1 if x >= o else 0
                    counts[i] += c
                    continue
                if is_t and k == 1 and (width == 2 or width == 3):
                    # t with one or two nuisance rows (the intercept dropped, NOTE [Constant
                    # nuisance under permutation]): one loop, unrolled (5x the general path)
                    eps = np.float32(1e-12)
                    if width == 2:
                        for p in range(m):
                            x1 = row[m + p]
                            d = np.float32(1.0) - x1 * x1
                            d = d if d > eps else eps
                            s[p] = row[p] / np.sqrt(d)
                    else:
                        for p in range(m):
                            x1 = row[m + p]
                            x2 = row[2 * m + p]
                            d = np.float32(1.0) - x1 * x1 - x2 * x2
                            d = d if d > eps else eps
                            s[p] = row[p] / np.sqrt(d)
                    if absval:
                        for p in range(m):
                            s[p] = abs(s[p])
                elif width == 1 and is_t:
                    for p in range(m):
                        s[p] = abs(row[p])
                else:
                    for p in range(m):
                        den[p] = np.float32(1.0)
                    for j in range(k, width):
                        for p in range(m):
                            x = row[j * m + p]
                            den[p] -= x * x
                    for p in range(m):  # a ternary, not max(): numba's max() does not vectorise
                        den[p] = den[p] if den[p] > np.float32(1e-12) else np.float32(1e-12)
                    if is_t:
                        for p in range(m):
                            s[p] = row[p] / np.sqrt(den[p])
                        if absval:
                            for p in range(m):
                                s[p] = abs(s[p])
                    else:
                        for p in range(m):
                            s[p] = np.float32(0.0)
                        for j in range(k):
                            for p in range(m):
                                x = row[j * m + p]
                                s[p] += x * x
                        for p in range(m):
                            s[p] = s[p] / den[p]
                for q in ident:
                    s[q] = o
                c = 0
                for p in range(m):
                    x = s[p]
                    mx[p] = x if x > mx[p] else mx[p]
                    c += 1 if x >= o else 0
                counts[i] += c


_SPLIT_LOW = 5  # exhaustive sign flips: 2**5 low patterns x (chunk / 32) high patterns


def _split_rows(prep, rows: np.ndarray, relabellings: Relabellings):
    """(low bits b, high rows, low rows) when a chunk of exhaustive sign flips splits, else None.

    # NOTE [Split enumeration of exhaustive sign flips]
    Exhaustive relabelling j flips the subjects whose bit is set in j, so an aligned run of
    G·T relabellings (T = 2**b) is every pairing of G patterns of the high subjects with the
    same T patterns of the b low subjects: row g·T + t = hi_g ⊕ lo_t. With one GEMM row per
    relabelling (a t test without nuisance: the score is linear in the signs),

        score(g·T + t, v) = H(g, v) + L(t, v),  H = hi·diag(q)·Ŷ,  L = lo·diag(q)·Ŷ,

    so the G·T scores of a voxel cost one addition each, after (G + T)·n multiply-adds, instead
    of n each from the full GEMM: the O(V)-per-flip update of a Gray-code walk, with no running
    sum to drift (every score is one rounding of two correctly computed parts).
    """
    n = rows.shape[1]
    b = _SPLIT_LOW
    t_count = 1 << b
    if (not (relabellings.flip and relabellings.exhaustive) or relabellings._table is not None
            or prep.basis.shape[1] != 1 or prep.kind != "t" or n < 2 * b
            or rows.shape[0] % t_count or rows.shape[0] < 2 * t_count):
        return None
    grid = rows.reshape(-1, t_count, n)
    lo, hi = grid[0, :, :b], grid[:, 0, b:]
    if not ((grid[:, :, :b] == lo[None]).all() and (grid[:, :, b:] == hi[:, None]).all()):
        return None  # not aligned: the general path
    return b, hi, lo


def _chunk_split(prep, rows, obs, ident, counts, b, hi, lo):
    """Max-T of a chunk of exhaustive sign flips by NOTE [Split enumeration ...]."""
    q = prep.basis[:, 0]
    y = prep.y_hat  # float64: H and L are each rounded once to float32
    h = np.ascontiguousarray(((hi * q[None, b:]) @ y[b:]).T, dtype=np.float32)  # (V, G)
    low = np.ascontiguousarray(((lo * q[None, :b]) @ y[:b]).T, dtype=np.float32)  # (V, T)
    block = _fused_block(h.shape[0])  # one long work item per thread: H, L read in order
    blockmax = np.full((-(-h.shape[0] // block), rows.shape[0]), -np.inf, np.float32)
    _split_reduce(h, low, obs.numpy(), np.ascontiguousarray(ident.numpy(), dtype=np.int64),
                  blockmax, counts.numpy(), block)
    return torch.from_numpy(blockmax.max(axis=0))


if _HAVE_NUMBA:

    @njit(parallel=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
    def _split_reduce(h, low, obs, ident, blockmax, counts, block):
        """Scores H(g, v) + L(t, v) at column g·T + t: max into blockmax, ``>= obs`` counts."""
        n_vox, n_hi = h.shape
        n_lo = low.shape[1]
        m = n_hi * n_lo
        for b in prange((n_vox + block - 1) // block):
            v0, v1 = b * block, min(b * block + block, n_vox)
            mx = blockmax[b]
            s = np.empty(m, np.float32)
            for i in range(v0, v1):
                lr = low[i]
                for g in range(n_hi):
                    hg = h[i, g]
                    for t in range(n_lo):
                        s[g * n_lo + t] = hg + lr[t]
                o = obs[i]
                for q in ident:
                    s[q] = o
                c = 0
                for p in range(m):
                    x = s[p]
                    mx[p] = x if x > mx[p] else mx[p]
                    c += 1 if x >= o else 0
                counts[i] += c


def _identity_rows(rows: np.ndarray, flip: bool) -> np.ndarray:
    """Indices of the rows that are the identity (all +1, or 0..n-1)."""
    if flip:
        return np.flatnonzero((rows > 0).all(axis=1))
    return np.flatnonzero((rows == np.arange(rows.shape[1])[None, :]).all(axis=1))


def _default_full_chunk(n_vox: int, width: int) -> int:
    return int(max(1, min(256, _FULL_MAP_BYTES // (n_vox * 4 * (width + 3)))))


def _fwe_p(max_null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """p(v) = #{j : max_null[j] >= observed[v]} / n_perm (exact comparisons, same dtype)."""
    ordered = np.sort(max_null)
    return (len(ordered) - np.searchsorted(ordered, observed, side="left")) / len(ordered)


class _FullMapState:
    """Accumulates TFCE and cluster nulls over chunks of full statistic maps (CPU, NumPy)."""

    def __init__(self, prep: PreparedContrast, extras: _Extras, n_perm: int, two_sided: bool):
        self.prep, self.extras, self.two_sided = prep, extras, two_sided
        # the observed map as the engine sees it (compute dtype): the identity row ties exactly
        score32 = prep.score.astype(np.float32)
        if prep.kind == "t" and two_sided:
            score32 = (np.sign(prep.stat) * prep.score).astype(np.float32)
        self.obs_stat = _score_to_stat(prep, score32.astype(np.float32))
        self.dh = None
        if extras.tfce:
            top = float(np.max(np.abs(self.obs_stat) if two_sided else self.obs_stat))
            self.dh = top / 100.0 if top > 0 else 1.0
            self.tfce_obs = self._tfce(self.obs_stat[None])[0]
            self.tfce_score = np.abs(self.tfce_obs) if two_sided else self.tfce_obs
            self.tfce_max = np.empty(n_perm)
            self.tfce_counts = np.zeros(prep.stat.shape[0], dtype=np.int64)
        self.ext_max = np.empty(n_perm) if extras.extent_threshold is not None else None
        self.mass_max = np.empty(n_perm) if extras.mass_threshold is not None else None
        self.n_perm = n_perm
        self.identity: list[int] = []

    def _tfce(self, stat: np.ndarray) -> np.ndarray:
        from calipers.permutation.tfce import tfce

        e = self.extras
        kw = {"H": e.tfce_H, "E": e.tfce_E, "connectivity": e.connectivity, "dh": self.dh}
        pos = np.asarray(tfce(stat, e.mask, **kw))
        if self.two_sided and self.prep.kind == "t":
            return pos - np.asarray(tfce(-stat, e.mask, **kw))
        return pos

    def _cluster_max(self, stat: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        from calipers.permutation.clusters import cluster_max

        e = self.extras
        ext, mass = cluster_max(
            stat, e.mask, threshold=threshold, connectivity=e.cluster_connectivity
        )
        ext, mass = np.asarray(ext, dtype=np.float64), np.asarray(mass, dtype=np.float64)
        if self.two_sided and self.prep.kind == "t":
            ext2, mass2 = cluster_max(
                -stat, e.mask, threshold=threshold, connectivity=e.cluster_connectivity
            )
            ext, mass = np.maximum(ext, ext2), np.maximum(mass, mass2)
        return ext, mass

    def add_chunk(self, p0: int, score_maps: torch.Tensor, ident: np.ndarray) -> None:
        """Add one chunk's score maps (overwritten: they become the statistic maps)."""
        stat = _score_to_stat_(self.prep, score_maps).cpu().numpy().astype(np.float32, copy=False)
        stat[ident] = self.obs_stat  # NOTE [Identity counts in the null]
        self.identity.extend(int(i) + p0 for i in ident)
        p1 = p0 + stat.shape[0]
        if (self.extras.tfce and _HAVE_NUMBA and _FUSED_TFCE
                and not (self.two_sided and self.prep.kind == "t")):
            self._tfce_fused(stat, ident, p0, p1)
        elif self.extras.tfce:
            t = self._tfce(stat)
            t_score = np.abs(t) if self.two_sided else t
            t_score[ident] = self.tfce_score
            self.tfce_max[p0:p1] = t_score.max(axis=1)
            self.tfce_counts += (t_score >= self.tfce_score[None]).sum(0)
        for thr, target, col in (
            (self.extras.extent_threshold, self.ext_max, 0),
            (self.extras.mass_threshold, self.mass_max, 1),
        ):
            if thr is not None:
                target[p0:p1] = self._cluster_max(stat, thr)[col]

    def _tfce_fused(self, stat: np.ndarray, ident: np.ndarray, p0: int, p1: int) -> None:
        """The TFCE null of one chunk without TFCE maps (NOTE [Fused TFCE null] in tfce.py):
        what the branch after it in ``add_chunk`` computes, for one-sided TFCE (F: >= 0)."""
        from calipers.permutation.tfce import _tfce_max_count

        e = self.extras
        skip = np.zeros(stat.shape[0], dtype=bool)
        skip[ident] = True  # the identity is the observed map: it ties itself everywhere
        mx, counts = _tfce_max_count(stat, e.mask, self.tfce_score, skip, H=e.tfce_H,
                                     E=e.tfce_E, connectivity=e.connectivity, dh=self.dh)
        mx[ident] = self.tfce_score.max()
        self.tfce_max[p0:p1] = mx
        self.tfce_counts += counts + len(ident)

    def _cluster_p(self, threshold: float, null: np.ndarray, col: int) -> np.ndarray:
        from calipers.permutation.clusters import cluster_maps

        e = self.extras
        maps = [
            cluster_maps(
                self.obs_stat, e.mask, threshold=threshold, connectivity=e.cluster_connectivity
            )[col]
        ]
        if self.two_sided and self.prep.kind == "t":
            maps.append(
                cluster_maps(
                    -self.obs_stat, e.mask, threshold=threshold, connectivity=e.cluster_connectivity
                )[col]
            )
        value = np.max(np.stack([np.asarray(m, dtype=np.float64) for m in maps]), axis=0)
        # the identity's max equals the largest observed cluster (guards summation order)
        for i in self.identity:
            null[i] = max(null[i], float(value.max(initial=0.0)))
        p = _fwe_p(null, value)
        p[value <= 0] = 1.0
        return p

    def finish(self, result: ContrastNull) -> ContrastNull:
        from dataclasses import replace

        updates: dict[str, object] = {}
        if self.extras.tfce:
            updates.update(
                tfce=self.tfce_obs,
                p_tfce_uncorrected=self.tfce_counts / self.n_perm,
                p_tfce_fwe=_fwe_p(self.tfce_max, self.tfce_score),
                tfce_max_null=self.tfce_max,
            )
        if self.ext_max is not None:
            updates.update(
                p_extent_fwe=self._cluster_p(self.extras.extent_threshold, self.ext_max, 0),
                extent_max_null=self.ext_max,
            )
        if self.mass_max is not None:
            updates.update(
                p_mass_fwe=self._cluster_p(self.extras.mass_threshold, self.mass_max, 1),
                mass_max_null=self.mass_max,
            )
        return replace(result, **updates)
