"""Batched (stacked) training and MC dropout equal a plain one-model-at-a-time PyTorch loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.special import logsumexp
from torch import nn

from calipers._seeds import child_seed
from calipers.batched import engine as batched
from calipers.batched import workspace
from calipers.batched.engine import MCTask, Member, MLPArch, fit_members, init_weights, mc_members
from calipers.evaluation.train import TrainOptions
from calipers.uncertainty import regression_log_likelihood

ARCH = MLPArch(3, (6,), 1, input_dropout=True)
OPTS = TrainOptions(epochs=4, batch_size=8, lr=1e-2, device="cpu")


def _members(rng, sizes=(21, 21, 17)):
    ps, wds = (0.1, 0.3, 0.05), (0.0, 1e-2, 3e-3)
    out = []
    for k, n in enumerate(sizes):
        X = rng.normal(size=(n, 3)).astype(np.float32)
        y = (X @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=n)).astype(np.float32)
        out.append(Member(X, y, dropout=ps[k], weight_decay=wds[k], seed=10 + k))
    return out


def _reference_fit(m: Member, arch: MLPArch, opts: TrainOptions):
    """Independent reference: nn.Linear layers, torch.optim.Adam with per-group weight decay,
    and the randomness contract of NOTE [Member randomness] written out by hand."""
    init = init_weights(arch, m.seed)
    layers = [nn.Linear(w.shape[0], w.shape[1]) for w, _ in init]
    with torch.no_grad():
        for lin, (w, b) in zip(layers, init, strict=True):
            lin.weight.copy_(torch.as_tensor(w).T)
            lin.bias.copy_(torch.as_tensor(b))
    optim = torch.optim.Adam([
        {"params": [lin.weight for lin in layers], "weight_decay": m.weight_decay},
        {"params": [lin.bias for lin in layers],
         "weight_decay": m.weight_decay if m.decay_biases else 0.0}], lr=opts.lr)
    X = torch.as_tensor(m.X, dtype=torch.float32)
    y = torch.as_tensor(m.y, dtype=torch.float32).reshape(len(X), -1)
    n, U = len(X), arch.n_units
    gen = np.random.Generator(np.random.PCG64(child_seed(m.seed, "train")))
    block = max(1, (1 << 19) // (n * (4 + 2 * U)))
    r = round(65536 * m.dropout)
    for epoch in range(opts.epochs):
        if epoch % block == 0:
            e = min(block, opts.epochs - epoch)
            keys = np.frombuffer(gen.bytes(4 * e * n), dtype="<u4").reshape(e, n)
            u_all = np.frombuffer(gen.bytes(2 * e * n * U), dtype="<u2").reshape(e, n, U)
        order = torch.as_tensor(np.argsort(keys[epoch % block], kind="stable"))
        u = torch.as_tensor(u_all[epoch % block].astype(np.int64))
        for s in range(0, n, opts.batch_size):
            idx = order[s:s + opts.batch_size]
            masks = u[s:s + len(idx)]
            h, off = X[idx], 0
            for k, lin in enumerate(layers):
                w = h.shape[1]
                if k > 0 or arch.input_dropout:
                    h = h * (masks[:, off:off + w] >= r) * (65536 / (65536 - r))
                    off += w
                h = lin(h)
                h = torch.relu(h) if k < len(layers) - 1 else h
            if arch.loss == "cross_entropy":
                loss = nn.functional.cross_entropy(h, y[idx, 0].long())
            else:
                loss = ((h - y[idx]) ** 2).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
    return [(lin.weight.detach().T.numpy(), lin.bias.detach().numpy()) for lin in layers]


@pytest.mark.parametrize("sizes", [(21, 21, 17), (22, 22, 18)],
                         ids=["odd-draws-per-epoch", "even-draws-per-epoch"])
def test_batched_equals_sequential_reference(rng, sizes):
    members = _members(rng, sizes)  # n·U odd: masks drawn per block; even: per epoch
    batched = fit_members(members, ARCH, options=OPTS, batched=True)
    sequential = fit_members(members, ARCH, options=OPTS, batched=False)
    assert [f.group_size for f in batched] == [2, 2, 1]  # grouped by training size
    assert [f.group_size for f in sequential] == [1, 1, 1]
    for m, fb, fs in zip(members, batched, sequential, strict=True):
        ref = _reference_fit(m, ARCH, OPTS)
        for (wb, bb), (ws, bs), (wr, br) in zip(fb.weights, fs.weights, ref, strict=True):
            assert_allclose(wb, wr, atol=1e-5)
            assert_allclose(bb, br, atol=1e-5)
            assert_allclose(ws, wr, atol=1e-5)
            assert_allclose(bs, br, atol=1e-5)
        assert not np.allclose(fb.weights[0][0], init_weights(ARCH, m.seed)[0][0], atol=1e-3)
    # predictions: deterministic and MC, batched vs one by one
    Xt = rng.normal(size=(5, 3)).astype(np.float32)
    yt = rng.normal(size=5)
    tasks = [MCTask(f, Xt, yt, tau=2.0, y_mean=1.0, y_std=3.0, seed=k)
             for k, f in enumerate(batched)]
    mb = mc_members(tasks, ARCH, n_mc=50, device="cpu")
    ms = mc_members(tasks, ARCH, n_mc=50, device="cpu", batched=False)
    for a, b in zip(mb, ms, strict=True):
        assert_allclose(a.mean, b.mean, atol=1e-5)
        assert_allclose(a.ll, b.ll, atol=1e-5)
        assert a.rmse == pytest.approx(b.rmse, abs=1e-5)


def test_deeper_multi_output_with_bias_decay_equals_reference(rng):
    """Two hidden layers, two outputs (the bmm paths), decay on biases too, no input dropout."""
    arch = MLPArch(3, (5, 4), 2, input_dropout=False)
    members = []
    for k, n in enumerate((19, 19)):
        X = rng.normal(size=(n, 3)).astype(np.float32)
        y = np.stack([X @ [1.0, -2.0, 0.5], X[:, 0] ** 2], 1).astype(np.float32)
        members.append(Member(X, y, dropout=(0.2, 0.1)[k], weight_decay=(1e-2, 0.0)[k],
                              seed=30 + k, decay_biases=True))
    fits = fit_members(members, arch, options=OPTS)
    assert [f.group_size for f in fits] == [2, 2]
    for m, f in zip(members, fits, strict=True):
        for (w, b), (wr, br) in zip(f.weights, _reference_fit(m, arch, OPTS), strict=True):
            assert_allclose(w, wr, atol=1e-5)
            assert_allclose(b, br, atol=1e-5)


def test_hidden_layer_of_one_unit_equals_reference(rng):
    """A one-output layer that is not the last (the broadcast-product path of a hidden layer)."""
    arch = MLPArch(3, (1, 4), 1, input_dropout=True)
    m = _members(rng, sizes=(16,))[0]
    fit = fit_members([m], arch, options=OPTS)[0]
    for (w, b), (wr, br) in zip(fit.weights, _reference_fit(m, arch, OPTS), strict=True):
        assert_allclose(w, wr, atol=1e-5)
        assert_allclose(b, br, atol=1e-5)


def test_mc_groups_never_mix_tasks_with_and_without_tau(rng):
    fit = fit_members(_members(rng)[:1], ARCH, options=OPTS)[0]
    X = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=6)
    alone = mc_members([MCTask(fit, X, y, tau=2.0, seed=1)], ARCH, n_mc=30, device="cpu")[0]
    mixed = mc_members([MCTask(fit, X, y, tau=2.0, seed=1), MCTask(fit, X, y, tau=None, seed=1)],
                       ARCH, n_mc=30, device="cpu")
    assert mixed[0].log_likelihood == pytest.approx(alone.log_likelihood, abs=1e-9)
    assert_allclose(mixed[0].var, alone.var, atol=1e-9)
    assert mixed[1].log_likelihood is None
    assert_allclose(mixed[1].var + 0.5, alone.var, atol=1e-6)  # the same passes, minus 1/tau


def test_classification_equals_reference_and_mc_proba(rng):
    """Cross-entropy members (3 classes) against nn.Linear + F.cross_entropy + Adam; MC gives
    probabilities, entropy = H(mean p) and MI = H(mean p) - mean H(p) by hand."""
    arch = MLPArch(3, (6,), 3, input_dropout=True, loss="cross_entropy")
    members = []
    for k in range(2):
        X = rng.normal(size=(20, 3)).astype(np.float32)
        y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1)
        members.append(Member(X, y, dropout=0.2, weight_decay=1e-3 * k, seed=50 + k))
    fits = fit_members(members, arch, options=OPTS)
    for m, f in zip(members, fits, strict=True):
        for (w, b), (wr, br) in zip(f.weights, _reference_fit(m, arch, OPTS), strict=True):
            assert_allclose(w, wr, atol=1e-5)
            assert_allclose(b, br, atol=1e-5)
    Xt = rng.normal(size=(5, 3)).astype(np.float32)
    res = mc_members([MCTask(fits[0], Xt, None, tau=None, seed=4)], arch, n_mc=40,
                     device="cpu")[0]
    # hand: the same passes as _reference_mc, then softmax per pass
    logits = _reference_mc_logits(fits[0], Xt, arch, 40, 4)          # (T, n, C)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    mean = p.mean(0)
    ent = -(mean * np.log(mean)).sum(-1)
    exp_ent = -(p * np.log(p)).sum(-1).mean(0)
    assert_allclose(res.proba, mean, atol=1e-6)
    assert_allclose(res.entropy, ent, atol=1e-6)
    assert_allclose(res.mutual_info, ent - exp_ent, atol=1e-6)
    with pytest.raises(ValueError, match=r"class indices outside 0..2"):
        fit_members([Member(Xt, np.array([0, 1, 2, 3, 0]))], arch)


def test_group_memory_bound_gives_same_weights(rng):
    members = _members(rng, sizes=(12, 12, 12))
    one = fit_members(members, ARCH, options=OPTS)
    split = fit_members(members, ARCH, options=OPTS, max_group_bytes=1)  # one member per group
    assert [f.group_size for f in one] == [3, 3, 3]
    assert [f.group_size for f in split] == [1, 1, 1]
    for a, b in zip(one, split, strict=True):
        assert_allclose(a.weights[0][0], b.weights[0][0], atol=1e-5)


def test_cache_slabs_give_identical_results(rng, monkeypatch):
    """NOTE [Workspace]: slabs of members leave training bit-identical; slabs of rows change MC
    passes by float rounding at most."""
    members = _members(rng, sizes=(30, 30, 30))
    tasks = lambda fits: [MCTask(f, m.X, m.y, tau=2.0, seed=i)  # noqa: E731
                          for i, (f, m) in enumerate(zip(fits, members, strict=True))]
    whole = fit_members(members, ARCH, options=OPTS)
    mc_whole = mc_members(tasks(whole), ARCH, n_mc=37)
    monkeypatch.setattr(workspace, "_SLAB_FLOATS", 1)  # one member (16 rows) per slab
    sliced = fit_members(members, ARCH, options=OPTS)
    mc_sliced = mc_members(tasks(sliced), ARCH, n_mc=37)
    for a, b in zip(whole, sliced, strict=True):
        for (wa, ba), (wb, bb) in zip(a.weights, b.weights, strict=True):
            np.testing.assert_array_equal(wa, wb)
            np.testing.assert_array_equal(ba, bb)
        assert a.losses == b.losses
    for a, b in zip(mc_whole, mc_sliced, strict=True):  # GEMM kernels depend on the row count
        assert_allclose(a.mean, b.mean, rtol=1e-6, atol=1e-7)
        assert_allclose(a.ll, b.ll, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_equal_generator_bytes(seed):
    """The fast byte reader gives numpy's Generator.bytes stream, buffered halves included."""
    lengths = np.random.default_rng(seed).integers(0, 60, size=8) * [1, 2, 3, 4, 1, 2, 6, 8]
    a = np.random.Generator(np.random.PCG64(seed))
    b = np.random.Generator(np.random.PCG64(seed))
    for n in lengths:
        assert batched._random_bytes(b, int(n)).tobytes() == a.bytes(int(n))
    assert a.bytes(13) == b.bytes(13) and a.random() == b.random()


def _reference_mc_logits(fit, X, arch, n_mc, seed):
    """(T, n, C) outputs of one pass at a time (the chunk layout of NOTE [Member randomness])."""
    n, U = len(X), arch.n_units
    k = max(1, (1 << 19) // (2 * n * U))
    gen = np.random.Generator(np.random.PCG64(child_seed(seed, "mc")))
    u = np.concatenate([np.frombuffer(gen.bytes(2 * min(k, n_mc - d) * n * U), dtype="<u2")
                        .reshape(-1, n, U) for d in range(0, n_mc, k)])
    r = round(65536 * fit.dropout)
    keep = (u >= r) * (65536 / (65536 - r))
    outs = []
    for t in range(n_mc):
        h, off = X.astype(np.float64), 0
        for j, (w, b) in enumerate(fit.weights):
            if j > 0 or arch.input_dropout:
                h = h * keep[t, :, off:off + h.shape[1]]
                off += h.shape[1]
            h = h @ w + b
            h = np.maximum(h, 0) if j < len(fit.weights) - 1 else h
        outs.append(h)
    return np.stack(outs)


def _reference_mc(fit, X, arch, n_mc, seed):
    """One pass at a time with the member's MC generator (chunk layout of NOTE [Member
    randomness]); returns (T, n) standardised predictions."""
    n, U = len(X), arch.n_units
    k = max(1, (1 << 19) // (2 * n * U))
    gen = np.random.Generator(np.random.PCG64(child_seed(seed, "mc")))
    u = np.concatenate([np.frombuffer(gen.bytes(2 * min(k, n_mc - d) * n * U), dtype="<u2")
                        .reshape(-1, n, U) for d in range(0, n_mc, k)])
    u = torch.as_tensor(u.astype(np.int64))
    r = round(65536 * fit.dropout)
    outs = []
    for t in range(n_mc):
        h, off = torch.as_tensor(X), 0
        for j, (w, b) in enumerate(fit.weights):
            width = h.shape[1]
            h = h * (u[t, :, off:off + width] >= r) * (65536 / (65536 - r))
            off += width
            h = h @ torch.as_tensor(w) + torch.as_tensor(b)
            h = torch.relu(h) if j < len(fit.weights) - 1 else h
        outs.append(h[:, 0].double().numpy())
    return np.stack(outs)


def test_mc_log_likelihood_matches_hand_computation(rng):
    fit = fit_members(_members(rng)[:1], ARCH, options=OPTS)[0]
    X = rng.normal(size=(4, 3)).astype(np.float32)
    y = np.array([0.5, -1.0, 2.0, 0.0])
    tau, mu, sd, T = 0.7, 2.0, 1.5, 40
    res = mc_members([MCTask(fit, X, y, tau=tau, y_mean=mu, y_std=sd, seed=3)], ARCH,
                     n_mc=T, device="cpu")[0]
    yhat = _reference_mc(fit, X, ARCH, T, 3) * sd + mu          # (T, n), original units
    hand = (logsumexp(-0.5 * tau * (y - yhat) ** 2, axis=0) - math.log(T)
            - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(tau))
    assert_allclose(res.ll, hand, atol=1e-5)
    assert_allclose(res.ll, regression_log_likelihood(yhat, y, tau), atol=1e-5)
    assert_allclose(res.mean[:, 0], yhat.mean(0), atol=1e-5)
    assert_allclose(res.var[:, 0], yhat.var(0) + 1 / tau, atol=1e-5)
    assert res.mc_rmse == pytest.approx(np.sqrt(np.mean((y - yhat.mean(0)) ** 2)), abs=1e-5)
    assert res.log_likelihood == pytest.approx(hand.mean(), abs=1e-5)


def test_errors(rng):
    m = _members(rng)[0]
    with pytest.raises(ValueError, match=r"members\[0\]: X must be \(n, 4\)"):
        fit_members([m], MLPArch(4, (5,)))
    with pytest.raises(ValueError, match=r"members\[0\].dropout must be in \[0, 1\); got 1.0"):
        fit_members([Member(m.X, m.y, dropout=1.0)], ARCH)
    with pytest.raises(ValueError, match="members is empty"):
        fit_members([], ARCH)
    with pytest.raises(ValueError, match="at least one hidden width"):
        MLPArch(3, ())
    fit = fit_members([m], ARCH, options=TrainOptions(epochs=1, device="cpu"))[0]
    with pytest.raises(ValueError, match="n_mc must be an integer >= 0; got -1"):
        mc_members([MCTask(fit, m.X)], ARCH, n_mc=-1)
    with pytest.raises(ValueError, match=r"tau and y_std must be positive and finite; got tau=0"):
        mc_members([MCTask(fit, m.X, m.y, tau=0.0)], ARCH, n_mc=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(rng):
    """The random draws stay on the CPU, so a GPU run trains and samples the same members."""
    members = _members(rng, sizes=(22, 22, 18))
    cpu = fit_members(members, ARCH, options=OPTS)
    gpu = fit_members(members, ARCH, options=TrainOptions(epochs=4, batch_size=8, lr=1e-2,
                                                          device="cuda"))
    for a, b in zip(cpu, gpu, strict=True):
        for (wa, ba), (wb, bb) in zip(a.weights, b.weights, strict=True):
            assert_allclose(wa, wb, atol=1e-5)
            assert_allclose(ba, bb, atol=1e-5)
    tasks = [MCTask(f, m.X, m.y, tau=2.0, seed=i)
             for i, (f, m) in enumerate(zip(cpu, members, strict=True))]
    for a, b in zip(mc_members(tasks, ARCH, n_mc=40, device="cpu"),
                    mc_members(tasks, ARCH, n_mc=40, device="cuda"), strict=True):
        assert_allclose(a.mean, b.mean, atol=1e-5)
        assert_allclose(a.ll, b.ll, atol=1e-4)
