"""Training of a group of stacked members: Adam on the hand-written gradients, epoch by epoch."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from calipers._device import resolve_device
from calipers._seeds import child_seed
from calipers.batched.members import (
    _DEFAULT_GROUP_BYTES,
    Member,
    MemberFit,
    MLPArch,
    _check_member,
    _groups,
    _stack_params,
)
from calipers.batched.randomness import (
    _draw_masks,
    _draw_orders,
    _epoch_block,
    _keep_scale,
    _new_generator,
)
from calipers.batched.workspace import _slabs, _Step
from calipers.evaluation.train import ProgressFn, TrainOptions

__all__ = ["fit_members"]


def _fit_group(members: Sequence[Member], arch: MLPArch, opts: TrainOptions,
               device: torch.device, progress: ProgressFn | None = None) -> list[MemberFit]:
    t0 = time.perf_counter()
    M, n = len(members), len(members[0].X)
    X = torch.as_tensor(np.stack([m.X for m in members])).to(device)
    Y = torch.as_tensor(np.stack([m.y for m in members])).to(device)
    if Y.ndim == 2:  # class labels (M, n) → (M, n, 1) for the gathers below
        Y = Y[..., None]
    rates = torch.tensor([m.dropout for m in members], dtype=torch.float64)
    scale = _keep_scale(rates).to(device)[:, None, None]
    wd = torch.tensor([m.weight_decay for m in members], dtype=torch.float32,
                      device=device)[:, None, None]
    wd_bias = torch.tensor([m.weight_decay if m.decay_biases else 0.0 for m in members],
                           dtype=torch.float32, device=device)[:, None]
    params = [t.detach() for t in _stack_params(members, device)]
    optim = torch.optim.Adam(params, lr=opts.lr)
    gens = [_new_generator(child_seed(m.seed, "train")) for m in members]
    e_block = _epoch_block(n, arch)
    losses = torch.zeros(opts.epochs, M, dtype=torch.float64, device=device)
    ce = arch.loss == "cross_entropy"
    n_out = 1 if ce else arch.n_outputs  # loss per sample: CE over classes, MSE per output
    orders: np.ndarray | None = None
    rates = [m.dropout for m in members]
    # one epoch's masks at a time, drawn just before the epoch; but when an epoch takes an odd
    # number of uint16 draws, a block's masks share uint32 words across epochs: draw per block
    per_epoch = (n * arch.n_units) % 2 == 0 or e_block == 1
    keep_np = [np.empty((M, n, w), dtype=bool) for w in arch.unit_parts] if per_epoch else []
    block_keep: list[np.ndarray] = []
    offsets = np.arange(M)[:, None] * n
    flat_x, flat_y = X.reshape(M * n, -1), Y.reshape(M * n, -1)
    flat_np = (flat_x.numpy(), flat_y.numpy()) if device.type == "cpu" else None
    epoch_np = [np.empty_like(a) for a in flat_np] if flat_np is not None else []
    steps: dict[tuple[int, int], _Step] = {}
    # per minibatch size: the member slabs and their views of the weights and keep scales
    slabs = {b: [(lo, hi, [q[lo:hi] for q in params], scale[lo:hi])
                 for lo, hi in _slabs(M, b * max(arch.widths), device)]
             for b in {opts.batch_size, n % opts.batch_size or opts.batch_size}}
    with torch.no_grad():
        for epoch in range(opts.epochs):
            if epoch % e_block == 0:
                block = min(e_block, opts.epochs - epoch)
                orders = _draw_orders(gens, block, n)
                if not per_epoch:
                    block_keep = _draw_masks(gens, rates, (block, n), arch.unit_parts)
            e = epoch % e_block
            masks_np = (_draw_masks(gens, rates, (n,), arch.unit_parts, keep_np) if per_epoch
                        else [k[:, e] for k in block_keep])
            keep_all = [torch.from_numpy(k).to(device) for k in masks_np]
            rows = (orders[:, e] + offsets).reshape(-1)
            if flat_np is not None:  # NumPy's take is ~9x faster than index_select on the CPU
                for a, buf in zip(flat_np, epoch_np, strict=True):
                    np.take(a, rows, axis=0, out=buf)
                Xe, Ye = (torch.from_numpy(buf).view(M, n, -1) for buf in epoch_np)
            else:
                rows_t = torch.from_numpy(rows).to(device)
                Xe, Ye = (a.index_select(0, rows_t).view(M, n, -1) for a in (flat_x, flat_y))
            for start in range(0, n, opts.batch_size):
                stop = min(start + opts.batch_size, n)
                b = stop - start
                parts: list[list[torch.Tensor]] = []
                for lo, hi, slab_params, slab_scale in slabs[b]:
                    step = steps.get((b, hi - lo))  # slabs of one size share one workspace
                    if step is None:
                        step = steps[(b, hi - lo)] = _Step(arch, hi - lo, b, device)
                    step.params, step.scale = slab_params, slab_scale
                    out = step.forward(Xe[lo:hi, start:stop],
                                       [k[lo:hi, start:stop] for k in keep_all])
                    yb = Ye[lo:hi, start:stop]
                    if ce:  # mean cross-entropy: d/dlogits = (softmax - onehot) / B
                        logp = torch.log_softmax(out, dim=-1)
                        losses[epoch, lo:hi] -= logp.gather(-1, yb).sum(dim=(1, 2)).double()
                        g = torch.exp(logp)
                        g.scatter_add_(-1, yb, torch.full(yb.shape, -1.0, device=device))
                        parts.append(step.backward(g.mul_(1.0 / b)))
                    else:
                        diff = out - yb
                        losses[epoch, lo:hi] += (diff * diff).sum(dim=(1, 2)).double()
                        parts.append(step.backward(diff * (2.0 / (b * n_out))))
                for k, q in enumerate(params):
                    gq = parts[0][k] if len(parts) == 1 else torch.cat([p[k] for p in parts])
                    q.grad = gq + (wd if k % 2 == 0 else wd_bias) * q
                optim.step()
            if progress is not None:
                progress(epoch + 1, opts.epochs, float(losses[epoch].mean()) / (n * n_out))
    losses = (losses / (n * n_out)).cpu().numpy()
    seconds = time.perf_counter() - t0
    weights = [tuple((params[2 * k][i].cpu().numpy().copy(),
                      params[2 * k + 1][i].cpu().numpy().copy())
                     for k in range(len(params) // 2)) for i in range(M)]
    return [MemberFit(weights[i], members[i].dropout, tuple(losses[:, i].tolist()), seconds, M)
            for i in range(M)]


def fit_members(
    members: Sequence[Member],
    arch: MLPArch,
    *,
    options: TrainOptions | None = None,
    batched: bool = True,
    max_group_bytes: int = _DEFAULT_GROUP_BYTES,
    progress: ProgressFn | None = None,
) -> tuple[MemberFit, ...]:
    """Train every member with Adam on mean squared error (or cross-entropy), stacked in groups.

    Parameters
    ----------
    members : sequence of Member
        Data and settings of each model (see :class:`Member`).
    arch : MLPArch
        The shared architecture.
    options : TrainOptions
        ``epochs``, ``batch_size``, ``lr`` and ``device`` are used; ``weight_decay`` and ``amp``
        are not (weight decay is per member; training is float32 everywhere).
    batched : bool, default True
        Stack members of equal training size into one model. ``False`` trains them one by one
        (same numbers to float tolerance; NOTE [Batched layers, not vmap]).
    max_group_bytes : int
        Rough memory bound of one group (data, random draws, activations, Adam state); larger
        sets of members are split into several groups.
    progress : callable(epoch, n_epochs, loss), optional
        Called after each epoch of each group with the group's mean training loss.

    Returns
    -------
    tuple of MemberFit, in the order of ``members``.
    """
    opts = options or TrainOptions()
    if not members:
        raise ValueError("members is empty; pass at least one Member to train.")
    clean = [_check_member(i, m, arch) for i, m in enumerate(members)]
    device = resolve_device(opts.device)
    n_params = sum(a * b + b for a, b in zip(arch.widths[:-1], arch.widths[1:], strict=True))
    per = [8 * (m.X.size + m.y.size) + _epoch_block(len(m.X), arch) * len(m.X) * (8 + arch.n_units)
           + 16 * n_params + 4 * 8 * opts.batch_size * sum(arch.widths) for m in clean]
    # (orders and masks of a block, data and its epoch copy, weights and Adam state, activations)
    out: list[MemberFit | None] = [None] * len(clean)
    for group in _groups([len(m.X) for m in clean], per, batched, max_group_bytes):
        fits = _fit_group([clean[i] for i in group], arch, opts, device, progress)
        for i, f in zip(group, fits, strict=True):
            out[i] = f
    return tuple(out)  # type: ignore[arg-type]
