"""MC dropout of trained members, stacked: T passes in chunks, reduced on the fly."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from calipers._checks import _check_finite
from calipers._device import resolve_device
from calipers._seeds import child_seed
from calipers.batched import workspace
from calipers.batched.members import (
    _DEFAULT_GROUP_BYTES,
    Member,
    MemberFit,
    MLPArch,
    _groups,
    _stack_params,
)
from calipers.batched.randomness import (
    _RANDOM_BYTES,
    _draw_masks,
    _keep_scale,
    _mc_block,
    _new_generator,
)
from calipers.batched.workspace import _forward_det, _Step
from calipers.uncertainty.measures import (
    gaussian_log_kernel,
    mc_log_likelihood,
    predictive_variance,
    torch_entropy,
    torch_mutual_info,
)
from calipers.uncertainty.streaming import StreamingLogSumExp, StreamingMoments

__all__ = ["MCTask", "MemberMC", "MemberProba", "mc_members"]


@dataclass(frozen=True, eq=False)
class MCTask:
    """MC-dropout prediction of one trained member on ``X`` (standardised like its training data).

    Predictions are mapped back to original units with ``y_mean + y_std · ŷ``; ``y`` (original
    units) and the precision ``tau`` (1/target units²) give the test log likelihood. With
    ``tau=None`` the variance is the MC variance alone and no log likelihood is computed.
    """

    fit: MemberFit = field(repr=False)
    X: np.ndarray = field(repr=False)
    y: np.ndarray | None = field(default=None, repr=False)
    tau: float | None = 1.0
    y_mean: float = 0.0
    y_std: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class MemberMC:
    """MC-dropout regression of one member, in original target units.

    ``mean`` is the MC predictive mean ``(n, n_outputs)``, ``var`` the predictive variance
    ``1/τ + var_t(ŷ_t)``; ``ll`` the per-sample test log likelihood (design §4), ``rmse`` the
    deterministic (weight-averaging) RMSE, ``mc_rmse`` the RMSE of ``mean``, ``log_likelihood``
    the mean of ``ll`` (higher is better). The last four are None without targets.
    """

    mean: np.ndarray = field(repr=False)
    var: np.ndarray = field(repr=False)
    ll: np.ndarray | None = field(repr=False)
    rmse: float | None
    mc_rmse: float | None
    log_likelihood: float | None
    n_mc: int
    tau: float

    def to_dict(self) -> dict:
        return {"rmse": self.rmse, "mc_rmse": self.mc_rmse, "log_likelihood": self.log_likelihood,
                "n_mc": self.n_mc, "tau": self.tau}


@dataclass(frozen=True)
class MemberProba:
    """MC-dropout classification of one member: ``proba`` ``(n, C)`` the mean of the T softmax
    outputs, ``entropy`` its entropy, ``expected_entropy`` the mean entropy of the passes and
    ``mutual_info`` their difference (nats, ``(n,)`` each)."""

    proba: np.ndarray = field(repr=False)
    entropy: np.ndarray = field(repr=False)
    expected_entropy: np.ndarray = field(repr=False)
    mutual_info: np.ndarray = field(repr=False)
    n_mc: int


def _mc_passes(tasks: Sequence[MCTask], arch: MLPArch, n_mc: int, device: torch.device
               ) -> tuple[torch.Tensor, Iterator[torch.Tensor]]:
    """The weight-scaling outputs ``(M, n, C)`` and an iterator over chunks of MC outputs
    ``(M, k, n, C)``, float64, drawn as NOTE [Member randomness] says (T passes in all)."""
    M, n = len(tasks), len(tasks[0].X)
    members = [Member(t.X, np.zeros(n), t.fit.dropout, init=t.fit.weights) for t in tasks]
    params = [q.detach() for q in _stack_params(members, device)]
    X = torch.as_tensor(np.stack([t.X for t in tasks])).to(device)
    rates = torch.tensor([t.fit.dropout for t in tasks], dtype=torch.float64)
    scale = _keep_scale(rates).to(device)[:, None, None]
    gens = [_new_generator(child_seed(t.seed, "mc")) for t in tasks]
    k = _mc_block(n, arch)
    with torch.inference_mode():
        det = _forward_det(params, X).double()

    # CPU: slabs of rows whose activations stay in cache (NOTE [Workspace]); GPU: all rows
    slab = (max(16, workspace._SLAB_FLOATS // (M * max(arch.widths))) if device.type == "cpu"
            else 1 << 62)
    steps: dict[int, _Step] = {}

    def chunks() -> Iterator[torch.Tensor]:
        for done in range(0, n_mc, k):
            kk = min(k, n_mc - done)
            keep = [torch.from_numpy(k).to(device).reshape(M, kk * n, -1)
                    for k in _draw_masks(gens, [t.fit.dropout for t in tasks], (kk, n),
                                         arch.unit_parts)]
            xr = X[:, None].expand(M, kk, n, X.shape[-1]).reshape(M, kk * n, -1)
            out = torch.empty(M, kk * n, arch.n_outputs, dtype=torch.float64, device=device)
            with torch.inference_mode():
                for start in range(0, kk * n, slab):
                    stop = min(start + slab, kk * n)
                    step = steps.get(stop - start)
                    if step is None:
                        step = steps[stop - start] = _Step(arch, M, stop - start, device,
                                                           backward=False)
                        step.params, step.scale = params, scale
                    out[:, start:stop] = step.forward(xr[:, start:stop],
                                                      [k[:, start:stop] for k in keep])
            yield out.reshape(M, kk, n, -1)

    return det, chunks()


def _mc_group_proba(tasks: Sequence[MCTask], arch: MLPArch, n_mc: int,
                    device: torch.device) -> list[MemberProba]:
    M = len(tasks)
    det, chunks = _mc_passes(tasks, arch, n_mc, device)
    p_acc, h_acc = StreamingMoments(dim=1, variance=False), StreamingMoments(dim=1, variance=False)
    for out in chunks:  # (M, k, n, C)
        p = torch.softmax(out, dim=-1)
        p_acc.add(p)
        h_acc.add(torch_entropy(p, dim=-1))
    proba = p_acc.mean if n_mc > 0 else torch.softmax(det, dim=-1)  # n_mc = 0: weight scaling
    ent = torch_entropy(proba, dim=-1)
    exp_ent = h_acc.mean if n_mc > 0 else ent
    mi = torch_mutual_info(ent, exp_ent)
    return [MemberProba(proba[i].cpu().numpy(), ent[i].cpu().numpy(), exp_ent[i].cpu().numpy(),
                        mi[i].cpu().numpy(), n_mc) for i in range(M)]


def _check_task(i: int, t: MCTask, arch: MLPArch) -> MCTask:
    X = np.asarray(t.X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != arch.n_inputs or len(X) < 1:
        raise ValueError(f"tasks[{i}].X must be (n, {arch.n_inputs}) with n >= 1; got "
                         f"{X.shape}.")
    _check_finite(X, name=f"tasks[{i}].X")
    y = None
    if t.y is not None and arch.loss == "cross_entropy":
        raise ValueError(f"tasks[{i}].y: classification MC takes no targets (score the "
                         "returned probabilities); pass y=None.")
    if t.y is not None:
        y = np.asarray(t.y, dtype=np.float64).reshape(len(X), -1)
        if y.shape[1] != arch.n_outputs:
            raise ValueError(f"tasks[{i}].y must have {len(X)} rows of {arch.n_outputs} "
                             f"target(s); got shape {np.shape(t.y)}.")
        _check_finite(y, name=f"tasks[{i}].y")
    tau_ok = t.tau is None or (math.isfinite(t.tau) and t.tau > 0)
    if not (tau_ok and math.isfinite(t.y_std) and t.y_std > 0):
        raise ValueError(f"tasks[{i}]: tau and y_std must be positive and finite; got "
                         f"tau={t.tau!r}, y_std={t.y_std!r}.")
    tau = None if t.tau is None else float(t.tau)
    return MCTask(t.fit, X, y, tau, float(t.y_mean), float(t.y_std), int(t.seed))


def _mc_group(tasks: Sequence[MCTask], arch: MLPArch, n_mc: int,
              device: torch.device) -> list[MemberMC]:
    det, chunks = _mc_passes(tasks, arch, n_mc, device)
    mu = torch.tensor([t.y_mean for t in tasks], dtype=torch.float64, device=device)
    sd = torch.tensor([t.y_std for t in tasks], dtype=torch.float64, device=device)
    has_tau = all(t.tau is not None for t in tasks)
    tau = torch.tensor([t.tau if has_tau else 1.0 for t in tasks], dtype=torch.float64,
                       device=device)
    has_y = all(t.y is not None for t in tasks)
    Y = torch.as_tensor(np.stack([t.y for t in tasks])).to(device) if has_y else None
    moments, lse = StreamingMoments(dim=1), StreamingLogSumExp(dim=1)
    det = det * sd[:, None, None] + mu[:, None, None]
    for out in chunks:  # (M, k, n, D)
        out = out * sd[:, None, None, None] + mu[:, None, None, None]
        moments.add(out)
        if Y is not None and has_tau:
            lse.add(gaussian_log_kernel(Y[:, None], out, tau[:, None, None]))
    if n_mc > 0:
        mean, var = moments.mean, moments.var
    else:  # weight-scaling predictions only
        mean, var = det, torch.zeros_like(det)
    if has_tau:
        var = predictive_variance(var, tau[:, None, None])
    d = arch.n_outputs
    out_list = []
    for i, t in enumerate(tasks):
        ll = rmse = mc_rmse = avg = None
        if Y is not None:
            rmse = float(((Y[i] - det[i]) ** 2).mean().sqrt())
            mc_rmse = float(((Y[i] - mean[i]) ** 2).mean().sqrt())
            if has_tau and n_mc > 0:
                ll = mc_log_likelihood(lse.value[i], n_mc=n_mc, tau=t.tau,
                                       n_outputs=d).cpu().numpy()
                avg = float(ll.mean())
        out_list.append(MemberMC(mean[i].cpu().numpy(), var[i].cpu().numpy(), ll, rmse, mc_rmse,
                                 avg, n_mc, t.tau))
    return out_list


def mc_members(
    tasks: Sequence[MCTask],
    arch: MLPArch,
    *,
    n_mc: int = 10_000,
    batched: bool = True,
    device: str | torch.device = "auto",
    max_group_bytes: int = _DEFAULT_GROUP_BYTES,
) -> tuple[MemberMC, ...]:
    """MC-dropout regression for many trained members at once (Gal & Ghahramani 2016).

    Each member runs ``n_mc`` stochastic passes (T = 10,000 in the paper) in chunks of ``k``
    passes, ``2·k·n·U`` ≤ 2^19 random bytes per member, reduced on the fly with
    ``calipers.uncertainty``'s streaming moments (NOTE [Streaming moments]) and streaming
    ``logsumexp``, so memory does not grow with T. Per-sample log likelihood, with ŷ_t in
    original units::

        ll = logsumexp_t(−τ/2·‖y − ŷ_t‖²) − log T − D/2·log 2π + D/2·log τ

    ``n_mc=0`` gives the deterministic (weight-scaling) predictions only, without a log
    likelihood. Returns one :class:`MemberMC` per task, in order; for a ``cross_entropy``
    architecture one :class:`MemberProba` (mean softmax, entropy, mutual information).
    """
    if not tasks:
        raise ValueError("tasks is empty; pass at least one MCTask.")
    if isinstance(n_mc, bool) or not isinstance(n_mc, (int, np.integer)) or n_mc < 0:
        raise ValueError(f"n_mc must be an integer >= 0; got {n_mc!r}. The paper uses 10000.")
    clean = [_check_task(i, t, arch) for i, t in enumerate(tasks)]
    dev = resolve_device(device)
    # per member: random bytes and masks of one chunk, then the activations of k·n rows
    per = [12 * _RANDOM_BYTES + 32 * len(t.X) * arch.n_outputs
           + _mc_block(len(t.X), arch) * len(t.X)
           * (4 * arch.n_units + 12 * sum(arch.hidden) + 4 * arch.n_inputs + 16 * arch.n_outputs)
           for t in clean]
    keys = [(len(t.X), t.y is not None, t.tau is not None) for t in clean]
    sizes = [sorted(set(keys)).index(k) for k in keys]  # group by (n, has targets, has tau)
    out: list[MemberMC | MemberProba | None] = [None] * len(clean)
    run = _mc_group_proba if arch.loss == "cross_entropy" else _mc_group
    for group in _groups(sizes, per, batched, max_group_bytes):
        for i, r in zip(group, run([clean[i] for i in group], arch, int(n_mc), dev),
                        strict=True):
            out[i] = r
    return tuple(out)  # type: ignore[arg-type]
