"""Streaming reductions over MC passes: one mean/variance accumulator, one running logsumexp.

Every MC path of calipers (``mc_predict``, the stacked engine's ``mc_members``, the voxel maps of
``mc_segment``) folds chunks of passes into these accumulators and drops the chunk, so memory
does not grow with the number of passes T.

# NOTE [Streaming moments]
Passes arrive in chunks of k values along one axis (``dim``). The accumulator keeps, per element,
the shift ``s`` (the first pass seen), ``S = Σ (v_t − s)`` and ``M2 = Σ (v_t − v̄)²``:

* chunk statistics are two-pass: ``d = v − s``, ``d̄_b = Σ_b d / k``, ``M2_b = Σ_b (d − d̄_b)²``;
* chunks are combined with Chan, Golub & LeVeque's parallel update,
  ``M2 = M2_a + M2_b + δ²·n_a·n_b/(n_a + n_b)`` with ``δ = d̄_b − S_a/n_a`` (for k = 1 this is
  Welford's update);
* the mean is ``s + S/n`` and the variance ``M2/n`` (ddof = 0).

Never ``E[v²] − E[v]²``: its relative error is about ``ε·mean²/var``, so values of 1e6 with a
spread of 1 lose every digit in float64 (tests/uncertainty/test_measures.py shows it), while the
error here is a few ``ε`` whatever the offset. Shifting by a pass of the same distribution keeps
the summands of S small, and passes that are all equal (dropout p = 0) give ``M2`` and the mutual
information exactly 0. Accumulators of disjoint sets of passes merge with :meth:`merge`, the same
update, so chunked, merged and one-shot reductions agree to rounding.

References
----------
T. F. Chan, G. H. Golub and R. J. LeVeque, "Algorithms for computing the sample variance:
analysis and recommendations", The American Statistician 37(3), 1983.
B. P. Welford, "Note on a method for calculating corrected sums of squares and products",
Technometrics 4(3), 1962.
"""

from __future__ import annotations

import torch

__all__ = ["StreamingLogSumExp", "StreamingMoments"]


class StreamingMoments:
    """Running mean and variance over axis ``dim`` of chunks (NOTE [Streaming moments]).

    Parameters
    ----------
    dim : int, default 0
        The axis of each chunk that holds the passes; the statistics have the chunk's shape
        without it.
    variance : bool, default True
        Also keep ``M2`` (False: the mean only, one map less).

    Examples
    --------
    >>> acc = StreamingMoments()
    >>> for chunk in torch.arange(10.0, dtype=torch.float64).reshape(5, 2, 1):  # (k=2, 1)
    ...     acc.add(chunk)
    >>> acc.n, float(acc.mean[0]), float(acc.var[0])
    (10, 4.5, 8.25)
    """

    def __init__(self, *, dim: int = 0, variance: bool = True) -> None:
        self.dim = dim
        self.variance = variance
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sum_d: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, chunk: torch.Tensor) -> None:
        """Fold in ``chunk``, k >= 1 passes along ``dim``."""
        k = chunk.shape[self.dim]
        if k == 0:
            return
        if self.shift is None:
            self.shift = chunk.select(self.dim, 0).clone()
        d = chunk - self.shift.unsqueeze(self.dim)
        sd = d.sum(self.dim)
        if self.variance:
            d_mean = sd / k
            d.sub_(d_mean.unsqueeze(self.dim))
            m2 = (d * d).sum(self.dim)
            if self.n:
                delta = d_mean - self.sum_d / self.n
                m2 += delta * delta * (self.n * k / (self.n + k))
                self.m2 += m2
            else:
                self.m2 = m2
        self.sum_d = sd if self.sum_d is None else self.sum_d.add_(sd)
        self.n += k

    def merge(self, other: StreamingMoments) -> None:
        """Fold in another accumulator of disjoint passes (the same update as :meth:`add`)."""
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.shift = other.n, other.shift.clone()
            self.sum_d = other.sum_d.clone()
            self.m2 = None if other.m2 is None else other.m2.clone()
            return
        offset = other.shift - self.shift
        if self.variance:
            delta = other.sum_d / other.n + offset - self.sum_d / self.n
            self.m2 += other.m2 + delta * delta * (self.n * other.n / (self.n + other.n))
        self.sum_d += other.sum_d + other.n * offset
        self.n += other.n

    @property
    def mean(self) -> torch.Tensor:
        """``s + S/n``, the mean over the passes."""
        self._check_some()
        return self.shift + self.sum_d / self.n

    @property
    def var(self) -> torch.Tensor:
        """``M2/n``, the variance over the passes (ddof = 0), >= 0."""
        self._check_some()
        if self.m2 is None:
            raise ValueError("this accumulator keeps the mean only; build it with "
                             "StreamingMoments(variance=True) to get a variance.")
        return self.m2 / self.n

    @property
    def std(self) -> torch.Tensor:
        """``sqrt(var)`` (ddof = 0)."""
        return self.var.sqrt()

    def _check_some(self) -> None:
        if self.n == 0:
            raise ValueError("no passes were added; call add(chunk) at least once.")


class StreamingLogSumExp:
    """Running ``logsumexp`` over axis ``dim`` of chunks: ``lse ← logaddexp(lse, lse_b)``.

    Stable for any magnitudes (torch's ``logsumexp`` subtracts the chunk maximum, ``logaddexp``
    the running one); the result has the chunk's shape without ``dim``.
    """

    def __init__(self, *, dim: int = 0) -> None:
        self.dim = dim
        self.n = 0
        self.value: torch.Tensor | None = None

    def add(self, chunk: torch.Tensor) -> None:
        """Fold in ``chunk``, k >= 1 terms along ``dim``."""
        if chunk.shape[self.dim] == 0:
            return
        lse = torch.logsumexp(chunk, dim=self.dim)
        self.value = lse if self.value is None else torch.logaddexp(self.value, lse)
        self.n += chunk.shape[self.dim]

    def merge(self, other: StreamingLogSumExp) -> None:
        """Fold in another accumulator of disjoint terms."""
        if other.value is None:
            return
        self.value = other.value.clone() if self.value is None \
            else torch.logaddexp(self.value, other.value)
        self.n += other.n
