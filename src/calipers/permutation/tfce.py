"""Threshold-free cluster enhancement (TFCE) of voxelwise statistic maps, FSL convention.

One pass per map: a union-find over the mask's voxels added level by level as the threshold falls
(design §5), compiled with numba and run over a batch of maps in parallel. Without numba a SciPy
fallback labels the map once per threshold (slow; warned).
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from calipers._checks import _check_finite
from calipers.exceptions import CalipersWarning

try:  # numba gives the speed, not the correctness: a SciPy fallback follows at the end
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - the fallback is tested by monkeypatching _HAVE_NUMBA
    _HAVE_NUMBA = False

__all__ = ["tfce"]

# NOTE [TFCE convention]
# calipers follows FSL (randomise -T, fslmaths -tfce; ``tfce()`` in newimagefns.h):
#     TFCE(v) = sum over k >= 1 with h_k < stat(v) of  e_k(v)**E * h_k**H,   h_k = k * dh,
# e_k(v) = number of voxels in v's connected component of {stat > h_k} (strict >), dh = max/100
# of the map unless given (randomise: of the unpermuted map, for every permutation). There is
# NO factor dh (Smith & Nichols 2009 integrate e**E h**H dh; FSL, niimath and nilearn all drop it).
# The factor matters for inference only if dh changes between maps: with one dh for all maps
# (pass ``dh``) it is a constant, so p-values are the same either way.
# What the other tools do (checked in tests/permutation/test_tfce.py):
# - FSL fslmaths/randomise: as above (voxels > h), but thresholds are accumulated in float32
#   (h += dh), so a voxel within ~1e-6 relative of a threshold can fall on the other side, and
#   voxels on the outer face of the image grid are skipped.
# - niimath -tfce H E C: voxels >= h, thresholds float32(k * dh), k = 1..ceil(max/dh). Equal to
#   calipers except at voxels equal to a (float32) threshold - always the map's maximum, which
#   gets one extra term e**E * max**H (e = number of voxels at the maximum in its component; 1 for
#   continuous data). Its neighbour wrap check uses the cluster's seed coordinates, harmless
#   when the map is zero on the grid's outer faces.
# - nilearn calculate_tfce(two_sided_test=False): voxels >= h, h = linspace(0, max, 101)[1:];
#   same as niimath (extra max**H at the maximum). Its default two-sided mode adds the negative
#   part with a minus sign; calipers scores the positive part only (randomise: use -c for the
#   negative contrast).
# Differences are therefore confined to the maximum voxel(s) (one term, e.g. 25 for max = 5) and
# ties at thresholds; everywhere else the three agree to float precision.

_CONNECTIVITIES = (6, 18, 26)
_MAX_LEVELS = 1_000_000  # thresholds per map; 8 MB of prefix sums per thread at the limit
_NEIGHBOUR_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_NEIGHBOUR_CACHE_SIZE = 4
_NEIGHBOUR_LOCK = threading.Lock()


if TYPE_CHECKING:
    import torch


def tfce(
    stat: ArrayLike | torch.Tensor,
    mask: ArrayLike,
    *,
    H: float = 2.0,
    E: float = 0.5,
    connectivity: int = 6,
    dh: float | None = None,
) -> np.ndarray | torch.Tensor:
    """Threshold-free cluster enhancement of the positive part of statistic maps (FSL convention).

    Parameters
    ----------
    stat : ndarray or torch.Tensor of shape (P, V) or (V,)
        Statistic values (e.g. t) at the ``True`` voxels of ``mask``, in C order
        (``stat3d[mask]``); one row per map (permutation). Values <= the first threshold get 0.
    mask : ndarray of shape (X, Y, Z), bool
        Brain mask; ``V == mask.sum()``. Voxels outside the mask are never connected through.
    H : float, default=2.0
        Height exponent (> 0).
    E : float, default=0.5
        Extent exponent (> 0).
    connectivity : {6, 18, 26}, default=6
        Neighbourhood: faces (6), faces + edges (18), faces + edges + corners (26).
    dh : float or None, default=None
        Threshold step, in units of ``stat``. ``None``: max(stat)/100 of each map (fslmaths);
        a map whose maximum is <= 0 then scores 0 everywhere. For permutation inference pass the
        unpermuted map's max/100 so every permutation uses the same thresholds (randomise).

    Returns
    -------
    ndarray or torch.Tensor, same shape as ``stat``
        TFCE scores, >= 0, in units of stat**H (see NOTE [TFCE convention]: no dh factor).
        NumPy in, NumPy out (float32 stays float32, otherwise float64); a tensor in gives a tensor
        of its dtype on its device (computed on the CPU).

    Notes
    -----
    ``TFCE(v) = sum_{k >= 1, k*dh < stat(v)} e_k(v)**E * (k*dh)**H`` with ``e_k(v)`` the size of
    v's connected component of ``{stat > k*dh}``. One union-find pass over voxels bucketed by
    level, O(V * connectivity + levels) per map; maps run in parallel (numba ``prange``).

    References
    ----------
    .. [1] Smith, S. M., & Nichols, T. E. (2009). Threshold-free cluster enhancement: addressing
       problems of smoothing, threshold dependence and localisation in cluster inference.
       NeuroImage, 44(1), 83-98.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((1, 1, 4), bool); mask[0, 0, :] = True
    >>> tfce(np.array([1.0, 2.0, 4.0, 3.0]), mask, dh=1.0).round(4)
    array([ 0.    ,  1.7321, 16.3889,  7.3889])
    """
    values, mask, dh_arr, back = _tfce_iv(stat, mask, H, E, connectivity, dh)
    if _HAVE_NUMBA:
        neighbours = _neighbour_table(mask, connectivity)
        out = _tfce_batch(values, neighbours, float(H), float(E), dh_arr)
    else:
        _warn_no_numba("tfce")
        out = _tfce_scipy(values, mask, float(H), float(E), dh_arr, connectivity)
    return back(out)


# NOTE [Fused TFCE null]
# The permutation null needs, per map, only the maximum TFCE and, per voxel, whether TFCE reaches
# the observed value: ``_tfce_max_count`` computes both inside the kernel, as each voxel's TFCE
# is summed, instead of writing (P, V) TFCE maps and reducing them in NumPy. Each thread keeps
# its union-find buffers across maps (only the added voxels are reset). It takes float32 maps as
# they are (their float64 values are exact) and rounds each TFCE to float32 as ``tfce`` does for
# a float32 input, so maxima and counts equal ``tfce(...)``'s ``max(axis=1)`` and ``>=`` counts
# exactly (tested). Not a shortcut over voxels: the count needs every voxel's TFCE (the maximum
# alone lies at a component's highest voxel, but the uncorrected TFCE p needs all of them).


def _tfce_max_count(
    stat: np.ndarray,
    mask: np.ndarray,
    obs: np.ndarray,
    skip: np.ndarray,
    *,
    H: float,
    E: float,
    connectivity: int,
    dh: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Max TFCE per map and exceedance counts per voxel, NOTE [Fused TFCE null].

    ``stat`` (P, V) float32 or float64 maps; ``obs`` (V,) float32 observed TFCE; ``skip`` (P,)
    bool: maps left out (max 0, no counts). Returns ``(maxima (P,) float64 holding float32
    values, counts (V,) int64)``: as ``t = tfce(stat, mask, dh=dh, ...).astype(float32)``,
    ``t.max(axis=1)`` and ``(t >= obs).sum(0)`` over the maps not skipped. Same checks and
    errors as ``tfce``. Needs numba.
    """
    from numba import get_num_threads

    # float32 maps stay float32 (no float64 copy): the kernel compares their exact float64 values
    values, mask, _ = _check_maps(stat, mask, connectivity, float_out=False, keep_float32=True)
    dh_arr = _threshold_steps(values, dh)  # the same check of dh and of the number of levels
    neighbours = _neighbour_table(mask, connectivity)
    n_threads = max(1, min(get_num_threads(), values.shape[0]))
    return _tfce_max_count_batch(
        values, neighbours, float(H), float(E), float(dh_arr[0]),
        np.ascontiguousarray(obs, dtype=np.float32), np.ascontiguousarray(skip, dtype=np.bool_),
        n_threads,
    )


def _tfce_iv(stat, mask, H, E, connectivity, dh):
    """Check and normalise tfce's inputs; return (values (P, V) float64, mask, dh (P,), back)."""
    for name, value in (("H", H), ("E", E)):
        if not _is_positive_number(value):
            raise ValueError(
                f"{name} must be a finite number > 0; got {value!r}. "
                f"FSL's defaults are H=2 (height) and E=0.5 (extent)."
            )
    if dh is not None and not _is_positive_number(dh):
        raise ValueError(
            f"dh must be None or a finite number > 0; got {dh!r}. Pass None for max(stat)/100 "
            f"per map, or the unpermuted map's max/100 for all permutations."
        )
    values, mask, back = _check_maps(stat, mask, connectivity, float_out=True)
    dh_arr = _threshold_steps(values, dh)
    return values, mask, dh_arr, back


def _is_positive_number(value):
    """True for a finite real scalar > 0 (bools excluded)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and bool(np.isfinite(value))
        and value > 0
    )


def _threshold_steps(values, dh):
    """Per-map threshold step (P,): ``dh`` or max/100 (0 where the map has no positive value)."""
    if dh is None:
        dh_arr = np.maximum(values.max(axis=1), 0.0) / 100.0
    else:
        dh_arr = np.full(values.shape[0], float(dh))
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = np.where(dh_arr > 0, values.max(axis=1) / np.where(dh_arr > 0, dh_arr, 1), 0)
    if levels.max(initial=0) > _MAX_LEVELS:
        worst = int(np.argmax(levels))
        raise ValueError(
            f"dh={dh!r} gives {levels[worst]:.3g} thresholds for map {worst} (max "
            f"{values[worst].max():.4g}); the limit is {_MAX_LEVELS:,}. Pass a larger dh "
            f"(FSL uses max/100)."
        )
    return dh_arr


def _check_maps(stat, mask, connectivity, *, float_out, keep_float32=False):
    """Shared checks of (stat, mask, connectivity) for tfce and the cluster functions.

    Returns ``(values, mask, back)``: values as a C-contiguous float64 (P, V) array (float32
    ones kept as float32 with ``keep_float32``), the mask as
    a C-contiguous bool array, and ``back(result)`` that restores stat's shape and type (tensor
    in, tensor out when ``float_out``; the dtype of a floating input).
    """
    if isinstance(connectivity, bool) or connectivity not in _CONNECTIVITIES:
        raise ValueError(
            f"connectivity must be 6, 18 or 26 (faces / + edges / + corners); got "
            f"{connectivity!r}. FSL's default for TFCE is 6."
        )
    mask = _as_mask(mask)
    n_vox = int(mask.sum())
    tensor = None
    if type(stat).__module__.startswith("torch"):
        tensor = stat
        stat = stat.detach().cpu().numpy()
    stat = np.asarray(stat)
    if (
        stat.ndim not in (1, 2)
        or stat.shape[-1] != n_vox
        or not np.issubdtype(stat.dtype, np.number)
    ):
        raise ValueError(
            f"stat must be a numeric array of shape (P, V) or (V,) with V = mask.sum() = "
            f"{n_vox} voxels; got shape {stat.shape} and dtype {stat.dtype}. Pass the values at "
            f"the mask's voxels in C order: stat3d[mask] (or stat4d[:, mask] for P maps)."
        )
    _check_finite(stat, name="stat")
    work = np.float32 if keep_float32 and stat.dtype == np.float32 else np.float64
    values = np.ascontiguousarray(np.atleast_2d(stat), dtype=work)
    one_d = stat.ndim == 1
    out_dtype = stat.dtype if stat.dtype in (np.float32, np.float64) else np.float64

    def back(result):
        result = np.asarray(result[0]) if one_d else result
        if not float_out:
            return result
        result = result.astype(out_dtype, copy=False)
        if tensor is not None:
            import torch

            return torch.from_numpy(np.ascontiguousarray(result)).to(
                device=tensor.device, dtype=tensor.dtype
            )
        return result

    return values, mask, back


def _as_mask(mask):
    """Return ``mask`` as a C-contiguous 3-D bool array, raising if it is not one."""
    if type(mask).__module__.startswith("torch"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(
            f"mask must be a 3-D boolean array (X, Y, Z); got shape {mask.shape}. Pass the "
            f"brain mask's data array, e.g. nibabel.load(path).get_fdata() > 0."
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(
                f"mask must be boolean (or hold only 0 and 1); got dtype {mask.dtype} with other "
                f"values. Binarise it first, e.g. mask = data > 0."
            )
        mask = mask.astype(bool)
    if not mask.any():
        raise ValueError(
            f"mask must contain at least one True voxel; got an empty mask of shape {mask.shape}. "
            f"Check the mask file (or the threshold used to binarise it)."
        )
    return np.ascontiguousarray(mask)


def _offsets(connectivity):
    """Neighbour offsets (n, 3) of the 3x3x3 cube: 6 faces, + 12 edges, + 8 corners."""
    grid = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    order = np.abs(grid).sum(axis=1)
    max_order = {6: 1, 18: 2, 26: 3}[connectivity]
    return grid[(order > 0) & (order <= max_order)]


def _neighbour_table(mask, connectivity):
    """(V, connectivity) int32 table of in-mask neighbour indices (-1: none), cached per mask."""
    key = (
        mask.shape,
        connectivity,
        hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).hexdigest(),
    )
    with _NEIGHBOUR_LOCK:
        table = _NEIGHBOUR_CACHE.get(key)
        if table is not None:
            _NEIGHBOUR_CACHE.move_to_end(key)
            return table
    index = np.full(np.add(mask.shape, 2), -1, dtype=np.int32)  # 1-voxel border of -1
    index[1:-1, 1:-1, 1:-1][mask] = np.arange(int(mask.sum()), dtype=np.int32)
    coords = np.nonzero(mask)
    table = np.empty((coords[0].size, connectivity), dtype=np.int32)
    for j, (dx, dy, dz) in enumerate(_offsets(connectivity)):
        table[:, j] = index[coords[0] + 1 + dx, coords[1] + 1 + dy, coords[2] + 1 + dz]
    table.setflags(write=False)
    with _NEIGHBOUR_LOCK:
        _NEIGHBOUR_CACHE[key] = table
        if len(_NEIGHBOUR_CACHE) > _NEIGHBOUR_CACHE_SIZE:
            _NEIGHBOUR_CACHE.popitem(last=False)
    return table


def _warn_no_numba(what):
    warnings.warn(
        f"numba is not installed, so calipers computes {what} with a SciPy fallback "
        f"(scipy.ndimage.label; for TFCE once per threshold, ~100x slower). Install numba for "
        f"the fast path: pip install numba.",
        CalipersWarning,
        stacklevel=3,
    )


# --- numba kernels -------------------------------------------------------------------------------

# NOTE [TFCE union-find]
# Voxel v lies in {stat > k*dh} for k = 1..level(v), so the supra-threshold sets only grow as k
# falls. Voxels are bucketed by level (a counting sort, O(V + levels)) and added from the top
# level down; each new voxel is unioned with its already-added neighbours (union by size, path
# halving). A component's contribution size**E * h_k**H is credited lazily: a root keeps `top`,
# the highest level not yet credited, and when its size is about to change at level k (a union)
# it is credited for levels k+1..top at once via prefix sums weights[k] = sum_{j<=k} (j*dh)**H.
# Credits sit in `acc` at the root; a voxel's TFCE is the sum of acc along its path to the root.
# When root a goes under root b, acc[a] -= acc[b] keeps the sums of a's voxels unchanged, and path
# halving folds a skipped parent's acc into the child. Cost per map: O(V * connectivity * alpha +
# levels), one pass, independent of how many thresholds a component spans.

if _HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _find(parent, acc, x):
        """Root of x, halving the path; acc keeps sums along paths (the root's acc excluded)."""
        while True:
            p = parent[x]
            if p == x:
                return x
            g = parent[p]
            if g == p:
                return p
            acc[x] += acc[p]
            parent[x] = g
            x = g

    @njit(cache=True, nogil=True)
    def _levels(s, dh):
        """Per voxel, the number of thresholds k*dh (k >= 1) strictly below it (int32, (V,))."""
        level = np.zeros(s.shape[0], dtype=np.int32)
        inv = 1.0 / dh
        for v in range(s.shape[0]):
            x = np.float64(s[v])  # float32 maps: their exact float64 value
            if x <= dh:
                continue
            k = int(x * inv)  # within 1 of the answer; fix it with the exact comparisons
            while (k + 1) * dh < x:
                k += 1
            while k > 0 and k * dh >= x:
                k -= 1
            level[v] = k
        return level

    @njit(cache=True, nogil=True)
    def _bucket_by_level(level, top_level):
        """Voxels with level >= 1 grouped by level; level k is order[start[k]:start[k + 1]]."""
        start = np.zeros(top_level + 2, dtype=np.int64)
        for v in range(level.shape[0]):
            start[level[v] + 1] += 1
        start[1] = 0  # level-0 voxels are left out
        for k in range(2, top_level + 2):
            start[k] += start[k - 1]
        order = np.empty(start[top_level + 1], dtype=np.int32)
        fill = start.copy()
        for v in range(level.shape[0]):
            k = level[v]
            if k > 0:
                order[fill[k]] = v
                fill[k] += 1
        return order, start

    @njit(cache=True, nogil=True)
    def _pow_e(size, E):
        """size**E; sqrt for FSL's E = 0.5 (the same correctly rounded value; whole-brain TFCE
        measured 5-8% faster than with pow)."""
        return math.sqrt(size) if E == 0.5 else size**E

    @njit(cache=True, nogil=True)
    def _flush(root, level, size, top, acc, weights, E):
        """Credit levels level+1..top[root] at the root's current size; then top = level."""
        t = top[root]
        if t > level:
            acc[root] += _pow_e(size[root], E) * (weights[t] - weights[level])
            top[root] = level

    @njit(cache=True, nogil=True)
    def _union_pass(s, neighbours, H, E, dh, parent, size, top, acc):
        """The union-find of NOTE [TFCE union-find] for map ``s`` (V,), ``dh`` > 0, into the
        caller's (V,) buffers; ``parent`` must be all -1 on entry (-1: voxel not added). After
        it, a voxel's TFCE is ``_path_sum`` where ``parent >= 0`` and 0 elsewhere. Returns the
        voxels added (``parent[added] = -1`` restores the buffer for the next map); ``size``,
        ``top`` and ``acc`` need no reset (written when a voxel is added)."""
        level = _levels(s, dh)
        top_level = level.max()
        if top_level == 0:
            return np.empty(0, dtype=np.int32)
        order, start = _bucket_by_level(level, top_level)
        weights = np.zeros(top_level + 1)  # weights[k] = sum_{j<=k} (j*dh)**H
        for k in range(1, top_level + 1):
            weights[k] = weights[k - 1] + (k * dh) ** H
        for k in range(top_level, 0, -1):
            for i in range(start[k], start[k + 1]):
                v = order[i]
                parent[v] = v
                size[v] = 1
                top[v] = k
                acc[v] = 0.0
                root = v
                for j in range(neighbours.shape[1]):
                    u = neighbours[v, j]
                    if u < 0 or parent[u] < 0:
                        continue
                    other = _find(parent, acc, u)
                    if other == root:
                        continue
                    _flush(other, k, size, top, acc, weights, E)
                    _flush(root, k, size, top, acc, weights, E)
                    if size[other] > size[root]:
                        root, other = other, root
                    parent[other] = root  # the smaller tree goes under the larger
                    acc[other] -= acc[root]
                    size[root] += size[other]
        for v in range(s.shape[0]):  # index order: sequential memory access
            if parent[v] == v:
                acc[v] += _pow_e(size[v], E) * weights[top[v]]
        return order

    @njit(cache=True, nogil=True)
    def _path_sum(parent, acc, v):
        """TFCE of added voxel v: the sum of acc from v to its root."""
        total = acc[v]
        x = v
        while parent[x] != x:
            x = parent[x]
            total += acc[x]
        return total

    @njit(cache=True, nogil=True)
    def _tfce_one(s, neighbours, H, E, dh, out):
        """TFCE of one map ``s`` (V,) into ``out`` (V,); see NOTE [TFCE union-find]."""
        out[:] = 0.0
        if not dh > 0:
            return
        n_vox = s.shape[0]
        parent = np.full(n_vox, -1, dtype=np.int32)
        size = np.empty(n_vox, dtype=np.int32)
        top = np.empty(n_vox, dtype=np.int32)
        acc = np.empty(n_vox)
        _union_pass(s, neighbours, H, E, dh, parent, size, top, acc)
        for v in range(n_vox):
            if parent[v] >= 0:
                out[v] = _path_sum(parent, acc, v)

    @njit(cache=True, parallel=True)
    def _tfce_batch(values, neighbours, H, E, dh):
        out = np.empty_like(values)
        for p in prange(values.shape[0]):
            _tfce_one(values[p], neighbours, H, E, dh[p], out[p])
        return out

    @njit(cache=True, parallel=True)
    def _tfce_max_count_batch(values, neighbours, H, E, dh, obs, skip, n_threads):
        """Per map: max over voxels of float32(TFCE), and per voxel the number of maps with
        float32(TFCE) >= obs; maps with ``skip`` are left out (max 0). NOTE [Fused TFCE null]."""
        n_maps, n_vox = values.shape
        maxima = np.zeros(n_maps)
        counts = np.zeros((n_threads, n_vox), dtype=np.int64)
        for t in prange(n_threads):  # one work item per thread: its buffers are reused
            parent = np.full(n_vox, -1, dtype=np.int32)
            size = np.empty(n_vox, dtype=np.int32)
            top = np.empty(n_vox, dtype=np.int32)
            acc = np.empty(n_vox)
            cnt = counts[t]
            for p in range(t, n_maps, n_threads):
                if skip[p]:
                    continue
                added = np.empty(0, dtype=np.int32)
                if dh > 0:
                    added = _union_pass(values[p], neighbours, H, E, dh, parent, size, top,
                                        acc)
                mx = np.float32(-np.inf)
                for v in range(n_vox):
                    f = np.float32(0.0)
                    if parent[v] >= 0:
                        f = np.float32(_path_sum(parent, acc, v))
                    mx = f if f > mx else mx
                    cnt[v] += 1 if f >= obs[v] else 0
                maxima[p] = mx
                for i in range(added.shape[0]):
                    parent[added[i]] = -1
        return maxima, counts.sum(axis=0)


# --- SciPy fallback (no numba) --------------------------------------------------------------------


def _structure(connectivity):
    """scipy.ndimage structuring element for 6/18/26 connectivity."""
    from scipy import ndimage  # lazily: only the fallbacks use it (CLI start-up time)

    return ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])


def _tfce_scipy(values, mask, H, E, dh, connectivity):
    """TFCE by labelling each threshold's supra-threshold set (the definition, made slow)."""
    from scipy import ndimage

    structure = _structure(connectivity)
    out = np.zeros_like(values)
    volume = np.zeros(mask.shape)
    for p, s in enumerate(values):
        if not dh[p] > 0:
            continue
        volume[mask] = s
        k = 1
        while k * dh[p] < s.max():
            h = k * dh[p]
            labels, _ = ndimage.label(volume > h, structure=structure)
            labels = labels[mask]
            sizes = np.bincount(labels).astype(float)
            out[p] += np.where(labels > 0, sizes[labels] ** E * h**H, 0.0)
            k += 1
    return out
