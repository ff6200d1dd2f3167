"""Cluster extent and cluster mass of statistic maps at a fixed cluster-forming threshold.

Clusters are the connected components (6/18/26-connectivity, inside the mask) of
``{stat > threshold}``; extent is the number of voxels, mass the sum of ``stat`` over them
(randomise ``-c`` / ``-C``). One union-find pass per map (numba), maps in parallel; a SciPy
``ndimage.label`` fallback, with a warning, when numba is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from calipers.permutation.tfce import (
    _check_maps,
    _neighbour_table,
    _structure,
    _warn_no_numba,
)

try:  # numba gives the speed; the SciPy fallback at the end gives the same numbers
    from numba import njit, prange

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - the fallback is tested by monkeypatching _HAVE_NUMBA
    _HAVE_NUMBA = False

if TYPE_CHECKING:
    import torch

__all__ = ["cluster_maps", "cluster_max"]


def cluster_max(
    stat: ArrayLike | torch.Tensor, mask: ArrayLike, *, threshold: float, connectivity: int = 6
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Largest cluster extent and largest cluster mass of each map (the max-statistic nulls).

    Parameters
    ----------
    stat : ndarray or torch.Tensor of shape (P, V) or (V,)
        Statistic values at the ``True`` voxels of ``mask`` in C order (``stat3d[mask]``), one
        row per map (permutation).
    mask : ndarray of shape (X, Y, Z), bool
        Brain mask; ``V == mask.sum()``.
    threshold : float
        Cluster-forming threshold, in units of ``stat``; voxels with ``stat > threshold`` (strict)
        form clusters.
    connectivity : {6, 18, 26}, default=6
        Neighbourhood: faces (6), faces + edges (18), faces + edges + corners (26).

    Returns
    -------
    max_extent : ndarray of shape (P,) (or () for a (V,) input), int64
        Voxel count of each map's largest cluster; 0 when no voxel exceeds ``threshold``.
    max_mass : ndarray of shape (P,) (or ()), float64
        Largest sum of ``stat`` over one cluster (largest mass, not necessarily the largest
        cluster's mass); 0 when there is no cluster.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.ones((1, 1, 5), bool)
    >>> cluster_max(np.array([3.0, 2.5, 0.0, 4.0, 1.0]), mask, threshold=2.0)
    (array(2), array(5.5))
    """
    values, mask, threshold, back = _cluster_iv(stat, mask, threshold, connectivity)
    if _HAVE_NUMBA:
        neighbours = _neighbour_table(mask, connectivity)
        extent, mass = _cluster_max_batch(values, neighbours, threshold)
    else:
        _warn_no_numba("cluster statistics")
        extent_map, mass_map = _cluster_maps_scipy(values, mask, threshold, connectivity)
        extent, mass = extent_map.max(axis=1), mass_map.max(axis=1)
    return back(extent), back(mass)


def cluster_maps(
    stat: ArrayLike | torch.Tensor, mask: ArrayLike, *, threshold: float, connectivity: int = 6
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Per voxel, the extent and the mass of the cluster it belongs to.

    Parameters
    ----------
    stat : ndarray or torch.Tensor of shape (V,) or (P, V)
        Statistic values at the ``True`` voxels of ``mask`` in C order (``stat3d[mask]``).
    mask : ndarray of shape (X, Y, Z), bool
        Brain mask; ``V == mask.sum()``.
    threshold : float
        Cluster-forming threshold; voxels with ``stat > threshold`` (strict) form clusters.
    connectivity : {6, 18, 26}, default=6
        Neighbourhood: faces (6), faces + edges (18), faces + edges + corners (26).

    Returns
    -------
    extent : ndarray of the shape of ``stat``, int64
        Voxel count of the voxel's cluster; 0 for voxels at or below ``threshold``.
    mass : ndarray of the shape of ``stat``, float64
        Sum of ``stat`` over the voxel's cluster; 0 for voxels at or below ``threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.ones((1, 1, 5), bool)
    >>> cluster_maps(np.array([3.0, 2.5, 0.0, 4.0, 1.0]), mask, threshold=2.0)
    (array([2, 2, 0, 1, 0]), array([5.5, 5.5, 0. , 4. , 0. ]))
    """
    values, mask, threshold, back = _cluster_iv(stat, mask, threshold, connectivity)
    if _HAVE_NUMBA:
        neighbours = _neighbour_table(mask, connectivity)
        extent, mass = _cluster_maps_batch(values, neighbours, threshold)
    else:
        _warn_no_numba("cluster statistics")
        extent, mass = _cluster_maps_scipy(values, mask, threshold, connectivity)
    return back(extent), back(mass)


def _cluster_iv(stat, mask, threshold, connectivity):
    """Check the inputs of the cluster functions; return (values (P, V), mask, threshold, back)."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float, np.integer, np.floating))
        or not np.isfinite(threshold)
    ):
        raise ValueError(
            f"threshold must be a finite number (the cluster-forming threshold, in units of "
            f"stat); got {threshold!r}. randomise users: the value given to -c or -C, e.g. 3.1."
        )
    values, mask, back = _check_maps(stat, mask, connectivity, float_out=False)
    return values, mask, float(threshold), back


# --- numba kernels -------------------------------------------------------------------------------

if _HAVE_NUMBA:

    @njit(cache=True, nogil=True)
    def _root(parent, x):
        """Root of x with path halving."""
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    @njit(cache=True, nogil=True)
    def _label(s, neighbours, threshold):
        """Union-find of the supra-threshold voxels; returns (root per voxel (-1: none), sizes,
        masses), sizes and masses valid at the roots."""
        n_vox = s.shape[0]
        parent = np.full(n_vox, -1, dtype=np.int32)
        size = np.zeros(n_vox, dtype=np.int64)
        mass = np.zeros(n_vox)
        for v in range(n_vox):
            if s[v] > threshold:
                parent[v] = v
                size[v] = 1
                mass[v] = s[v]
        for v in range(n_vox):
            if parent[v] < 0:
                continue
            for j in range(neighbours.shape[1]):
                u = neighbours[v, j]
                if u <= v or parent[u] < 0:  # each pair once (u > v); u < 0: outside the mask
                    continue
                a = _root(parent, v)
                b = _root(parent, u)
                if a == b:
                    continue
                if size[a] < size[b]:
                    a, b = b, a
                parent[b] = a
                size[a] += size[b]
                mass[a] += mass[b]
        for v in range(n_vox):
            if parent[v] >= 0:
                parent[v] = _root(parent, v)
        return parent, size, mass

    @njit(cache=True, parallel=True)
    def _cluster_max_batch(values, neighbours, threshold):
        n_maps = values.shape[0]
        max_extent = np.zeros(n_maps, dtype=np.int64)
        max_mass = np.zeros(n_maps)
        for p in prange(n_maps):
            root, size, mass = _label(values[p], neighbours, threshold)
            for v in range(root.shape[0]):
                if root[v] == v:
                    max_extent[p] = max(max_extent[p], size[v])
                    max_mass[p] = max(max_mass[p], mass[v])
        return max_extent, max_mass

    @njit(cache=True, nogil=True)
    def _cluster_maps_batch(values, neighbours, threshold):
        # serial: maps are usually the one observed map, and a parallel kernel compiles slower
        extent = np.zeros(values.shape, dtype=np.int64)
        mass_map = np.zeros(values.shape)
        for p in range(values.shape[0]):
            root, size, mass = _label(values[p], neighbours, threshold)
            for v in range(root.shape[0]):
                r = root[v]
                if r >= 0:
                    extent[p, v] = size[r]
                    mass_map[p, v] = mass[r]
        return extent, mass_map


# --- SciPy fallback (no numba) --------------------------------------------------------------------


def _cluster_maps_scipy(values, mask, threshold, connectivity):
    """Per-voxel extent and mass via scipy.ndimage.label on the 3-D grid."""
    from scipy import ndimage  # lazily: the fallback only (CLI start-up time)

    structure = _structure(connectivity)
    extent = np.zeros(values.shape, dtype=np.int64)
    mass = np.zeros(values.shape)
    volume = np.zeros(mask.shape)
    for p, s in enumerate(values):
        volume[mask] = s
        labels, _ = ndimage.label((volume > threshold) & mask, structure=structure)
        labels = labels[mask]
        sizes = np.bincount(labels)
        masses = np.bincount(labels, weights=s)
        inside = labels > 0
        extent[p, inside] = sizes[labels[inside]]
        mass[p, inside] = masses[labels[inside]]
    return extent, mass
