"""Designs for permutation inference: FSL VEST / CSV files, checks, partition, relabellings.

A design is a matrix X of shape (n_subjects, n_regressors), one row per image. t-contrasts are
the rows of C (n_contrasts, n_regressors); F-tests select sets of t-contrasts (rows of a 0/1
matrix of shape (n_ftests, n_contrasts), FSL's ``.fts``). Exchangeability blocks are one integer
per subject (FSL's ``.grp``): permutations stay inside a block.

# NOTE [Partition of the design]
For a contrast matrix C (n_regressors, k) we split X into effect and nuisance as Beckmann et al.
(2001) and Winkler et al. (2014, appendix A; PALM's default), with D = (XᵀX)⁻¹::

    X_eff = X D C (Cᵀ D C)⁻¹                              (n, k)
    Cv    = Cu − C (Cᵀ D C)⁻¹ Cᵀ D Cu,  Cu = null(Cᵀ)
    Z     = X D Cv (Cvᵀ D Cv)⁻¹                             (n, p − k)

Then Cᵀ D Cv = 0, so Z spans exactly the reduced model {Xβ : Cᵀβ = 0}, X_effᵀ Z = 0, and the
coefficient of X_eff is Cᵀβ̂ of the full model: the statistic of the partitioned model equals
the original one. Freedman–Lane residualises the data on Z once and permutes (or sign-flips)
the residuals.

# NOTE [Sign flips or permutations]
When a contrast tests the mean — the constant vector lies in the design's span but not in the
nuisance Z (one-sample test, the intercept tested next to covariates, the sum of all group
means) — permuting rows cannot build its null, so the errors are assumed symmetric and
subjects' signs are flipped, as randomise does for one-sample designs (2**n relabellings, the
identity and its mirror both counted, as randomise). Otherwise rows are permuted; the number
of unique relabellings is the multinomial count of distinct design rows, taken within each
exchangeability block. Sign flips are per subject, so exchangeability blocks do not restrict
them.

References
----------
Beckmann, Jenkinson & Smith (2001). General multi-level linear modelling for group analysis in
FMRI. FMRIB technical report TR01CB1.
Winkler, Ridgway, Webster, Smith & Nichols (2014). Permutation inference for the general linear
model. NeuroImage 92:381–397.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from calipers._seeds import child_seed
from calipers.exceptions import DataError

__all__ = [
    "MatrixLike",
    "Relabellings",
    "demean",
    "load_matrix",
    "make_relabellings",
    "partition",
    "read_vest",
]

_VEST_EXTENSIONS = (".mat", ".con", ".fts", ".grp")
_BLOCK = 1024  # relabellings are drawn in fixed blocks so chunking never changes them


def read_vest(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an FSL VEST file (``.mat``, ``.con``, ``.fts``, ``.grp``) into a 2-D float array.

    The header lines start with ``/`` (``/NumWaves``, ``/NumPoints`` or ``/NumContrasts``,
    ``/PPheights``, ``/ContrastName1`` ...); the numbers follow the ``/Matrix`` line, one row a
    line. The declared sizes are checked against the rows read.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    header: dict[str, str] = {}
    start = None
    for i, line in enumerate(lines):
        text = line.strip()
        if text.lower().startswith("/matrix"):
            start = i + 1
            break
        if text.startswith("/"):
            key, _, value = text.partition(" ")
            key, _, tab_value = key.partition("\t")
            header[key.lower()] = (value or tab_value).strip()
    if start is None:
        raise DataError(
            f"{path} is not a valid FSL VEST file: it has no /Matrix line. VEST files hold "
            f"/NumWaves, /NumPoints (or /NumContrasts) and then /Matrix followed by the rows; "
            f"write the file with FSL's Text2Vest or the Glm GUI."
        )
    rows = [r.replace(",", " ").split() for r in lines[start:] if r.strip()]
    try:
        mat = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric value after /Matrix ({exc}).") from exc
    if mat.size == 0:
        raise DataError(f"{path}: /Matrix is followed by no rows.")
    if len({len(r) for r in rows}) != 1:
        raise DataError(f"{path}: the rows after /Matrix have different lengths.")
    _check_vest_sizes(path, header, mat)
    return mat


def _check_vest_sizes(path: Path, header: dict[str, str], mat: np.ndarray) -> None:
    names = {"/numwaves": "/NumWaves", "/numpoints": "/NumPoints", "/numcontrasts": "/NumContrasts"}
    for key, axis in (("/numwaves", 1), ("/numpoints", 0), ("/numcontrasts", 0)):
        if key in header:
            try:
                declared = int(float(header[key]))
            except ValueError:
                continue
            if declared != mat.shape[axis]:
                raise DataError(
                    f"{path}: {names[key]} says {declared} but /Matrix has {mat.shape[axis]} "
                    f"{'columns' if axis else 'rows'}; fix the header or the matrix."
                )


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delimiter = "\t" if "\t" in sample else ("," if "," in sample else " ")
        rows = [r for r in csv.reader(fh, delimiter=delimiter, skipinitialspace=True) if r]
    rows = [[v for v in r if v.strip() != ""] for r in rows]
    if rows and not _is_numeric_row(rows[0]):
        rows = rows[1:]  # header line
    if not rows:
        raise DataError(f"{path}: no numeric rows found.")
    for i, r in enumerate(rows):
        if not _is_numeric_row(r):
            raise DataError(f"{path}: row {i + 1} has a non-numeric value: {r!r}.")
    if len({len(r) for r in rows}) != 1:
        raise DataError(f"{path}: the rows have different numbers of columns.")
    return np.array([[float(v) for v in r] for r in rows], dtype=np.float64)


def _is_numeric_row(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


#: A design, contrast, F-test or group matrix: an array or the path of a VEST/CSV file.
MatrixLike = ArrayLike | str | os.PathLike[str]


def load_matrix(source: MatrixLike, *, what: str) -> np.ndarray:
    """Load a design, contrast, F-test or group matrix as a 2-D float64 array.

    ``source`` is an array, an FSL VEST file (``.mat .con .fts .grp``, or any file whose first
    non-blank line starts with ``/``) or a CSV/TSV/whitespace table with an optional header.
    ``what`` names the matrix in error messages (``"design"``, ``"contrasts"``...).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {str(path)!r} does not exist.")
        first = next((ln.strip() for ln in path.read_text().splitlines() if ln.strip()), "")
        if path.suffix.lower() in _VEST_EXTENSIONS or first.startswith("/"):
            mat = read_vest(path)
        else:
            mat = _read_csv(path)
    else:
        mat = np.asarray(source, dtype=np.float64)
    if mat.ndim == 1:
        mat = mat[:, None] if what in ("design", "exchangeability_blocks") else mat[None, :]
    if mat.ndim != 2 or mat.size == 0:
        raise ValueError(f"{what} must be a non-empty 2-D matrix; got shape {mat.shape}.")
    if not np.all(np.isfinite(mat)):
        raise ValueError(f"{what} holds NaN or infinite values; every entry must be finite.")
    return mat


def demean(x: np.ndarray) -> np.ndarray:
    """Subtract each column's mean over subjects (axis 0); randomise's ``-D``."""
    return x - x.mean(axis=0, keepdims=True)


def partition(design: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a full-rank design into effect and nuisance regressors for one contrast.

    Parameters
    ----------
    design : ndarray of shape (n_subjects, n_regressors)
    contrast : ndarray of shape (n_regressors, k)
        Columns are contrast vectors (k = 1 for a t-contrast, k > 1 for an F-test).

    Returns
    -------
    x_eff : ndarray of shape (n_subjects, k)
        Effect regressors; their coefficients are ``contrastᵀ β`` of the full model.
    z : ndarray of shape (n_subjects, n_regressors - k)
        Nuisance regressors spanning the reduced model, orthogonal to ``x_eff``.
        See NOTE [Partition of the design].
    """
    x, c = design, contrast
    d = np.linalg.pinv(x.T @ x)
    cdc_inv = np.linalg.pinv(c.T @ d @ c)
    x_eff = x @ d @ c @ cdc_inv
    from scipy import linalg  # here, not at import: scipy.linalg is ~0.1 s of CLI start-up

    cu = linalg.null_space(c.T)
    if cu.shape[1] == 0:
        return x_eff, np.zeros((x.shape[0], 0))
    cv = cu - c @ cdc_inv @ c.T @ d @ cu
    z = x @ d @ cv @ np.linalg.pinv(cv.T @ d @ cv)
    return x_eff, z


@dataclass(frozen=True)
class Relabellings:
    """The relabellings (sign flips or row permutations) used for one contrast.

    Row 0 is always the identity (NOTE [Identity counts in the null] in ``engine.py``).

    Attributes
    ----------
    flip : bool
        True for sign flips (rows of ±1), False for permutations (rows of row indices).
    n : int
        Number of relabellings, identity included.
    exhaustive : bool
        True when every unique relabelling is used once.
    n_unique : int
        Number of unique relabellings of this design (may be astronomically large).
    """

    flip: bool
    n: int
    exhaustive: bool
    n_unique: int
    n_subjects: int
    seed: int
    blocks: np.ndarray | None = field(default=None, repr=False)
    _table: np.ndarray | None = field(default=None, repr=False)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Relabellings ``start .. stop-1``: (m, n_subjects) float signs or int64 indices.

        The same rows come back however the range is chunked (fixed blocks of 1024 draws, each
        seeded by ``child_seed(seed, kind, block)``).
        """
        if self._table is not None:
            return self._table[start:stop]
        if self.exhaustive:  # sign flips: relabelling j flips the subjects whose bit is set in j
            j = np.arange(start, stop, dtype=np.int64)[:, None]
            bits = (j >> np.arange(self.n_subjects, dtype=np.int64)[None, :]) & 1
            return 1.0 - 2.0 * bits
        out = []
        for b in range(start // _BLOCK, (stop - 1) // _BLOCK + 1):
            block = self._random_block(b)
            lo, hi = max(start - b * _BLOCK, 0), min(stop - b * _BLOCK, _BLOCK)
            out.append(block[lo:hi])
        return np.concatenate(out, axis=0)

    def _random_block(self, b: int) -> np.ndarray:
        n = self.n_subjects
        rng = np.random.default_rng(child_seed(self.seed, "flip" if self.flip else "perm", b))
        if self.flip:
            block = rng.choice(np.array([-1.0, 1.0]), size=(_BLOCK, n))
            if b == 0:
                block[0] = 1.0
            return block
        groups = np.zeros(n, dtype=np.int64) if self.blocks is None else self.blocks
        keys = rng.random((_BLOCK, n)) + 2.0 * _dense_labels(groups)[None, :]
        order = np.argsort(keys, axis=1, kind="stable")  # indices grouped by block, shuffled
        slots = np.argsort(groups, kind="stable")  # slot j belongs to the same block as order[:, j]
        block = np.empty_like(order)
        block[:, slots] = order
        if b == 0:
            block[0] = np.arange(n)
        return block


def _dense_labels(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _row_labels(design: np.ndarray) -> np.ndarray:
    """Integer label per subject; equal labels = identical design rows (to 1e-10 relative)."""
    scale = np.maximum(np.abs(design).max(axis=0, keepdims=True), 1e-300)
    return _dense_labels_rows(np.round(design / scale, 10))


def _dense_labels_rows(rows: np.ndarray) -> np.ndarray:
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _count_unique_permutations(labels: np.ndarray, blocks: np.ndarray | None) -> int:
    groups = np.zeros(len(labels), dtype=np.int64) if blocks is None else blocks
    total = 1
    for g in np.unique(groups):
        within = labels[groups == g]
        count = math.factorial(len(within))
        for value in np.unique(within):
            count //= math.factorial(int(np.sum(within == value)))
        total *= count
    return total


def _multiset_arrangements(labels: np.ndarray) -> np.ndarray:
    """All distinct orderings of ``labels`` as index permutations (next_permutation order)."""
    order = np.argsort(labels, kind="stable")
    seq = list(labels[order])
    arrangements = []
    while True:
        arrangements.append(list(seq))
        i = len(seq) - 2
        while i >= 0 and seq[i] >= seq[i + 1]:
            i -= 1
        if i < 0:
            break
        j = len(seq) - 1
        while seq[j] <= seq[i]:
            j -= 1
        seq[i], seq[j] = seq[j], seq[i]
        seq[i + 1 :] = reversed(seq[i + 1 :])
    arr = np.asarray(arrangements, dtype=np.int64)  # (m, n_b) labels per position
    # position taking the r-th occurrence of a label gets the r-th original index with it
    ranks = np.argsort(arr, axis=1, kind="stable")
    perms = np.empty_like(arr)
    np.put_along_axis(perms, ranks, np.broadcast_to(order, arr.shape), axis=1)
    return perms


def _enumerate_permutations(labels: np.ndarray, blocks: np.ndarray | None) -> np.ndarray:
    n = len(labels)
    groups = np.zeros(n, dtype=np.int64) if blocks is None else blocks
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    per_block = [idx[_multiset_arrangements(labels[idx])] for idx in members]
    table = np.empty((math.prod(len(p) for p in per_block), n), dtype=np.int64)
    for row, combo in enumerate(itertools.product(*per_block)):
        for idx, perm in zip(members, combo, strict=True):
            table[row, idx] = perm
    identity = np.flatnonzero((table == np.arange(n)).all(axis=1))[0]
    table[[0, identity]] = table[[identity, 0]]
    return table


def make_relabellings(
    design: np.ndarray,
    *,
    flip: bool,
    n_permutations: int,
    blocks: np.ndarray | None,
    seed: int,
) -> Relabellings:
    """Choose exhaustive or random relabellings for a design (NOTE [Sign flips or permutations]).

    Exhaustive when ``n_permutations`` >= the number of unique relabellings, else
    ``n_permutations`` random ones with the identity first.
    """
    n = design.shape[0]
    blocks = None if blocks is None else _dense_labels(np.asarray(blocks))
    if flip:
        n_unique = 2**n
    else:
        n_unique = _count_unique_permutations(_row_labels(design), blocks)
    exhaustive = n_permutations >= n_unique
    table = None
    if exhaustive and not flip:
        table = _enumerate_permutations(_row_labels(design), blocks)
    return Relabellings(
        flip=flip,
        n=n_unique if exhaustive else n_permutations,
        exhaustive=exhaustive,
        n_unique=n_unique,
        n_subjects=n,
        seed=seed,
        blocks=blocks,
        _table=table,
    )
