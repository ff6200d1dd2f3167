"""Many small MLPs trained and sampled at once, as one stacked model (batched layers).

Every member of a group (an outer split × a grid point × a refit) has the same architecture; its
weights are slices ``W[m]`` of stacked tensors ``(M, fan_in, fan_out)`` and one forward pass is a
``torch.baddbmm`` per layer. Members are independent: the summed loss has block-diagonal
gradients, Adam is element-wise, and each member brings its own data, data order, dropout masks,
dropout rate and weight decay. So a group of M members gives, to float tolerance, what training
them one by one gives (``batched=False`` does exactly that, one member per group).

# NOTE [Batched layers, not vmap]
``torch.func.stack_module_state`` + ``functional_call`` + ``vmap`` would stack any module, but
dropout under ``vmap(randomness="different")`` draws from the global generator in a layout that
a one-by-one run cannot reproduce, and the masks would depend on how members are grouped. With
explicit batched layers the masks are inputs, drawn per member from the member's own generator
(NOTE [Member randomness]), so results do not depend on grouping, order or device, and the
stacked Adam is plain ``torch.optim.Adam`` on a few large tensors (cheap on CPU and GPU).

# NOTE [Member randomness]
Member m owns a NumPy ``PCG64`` generator seeded with ``child_seed(seed_m, "train")``. Per block of
``E_c`` epochs (``E_c`` depends only on the member's n and architecture, never on the group) it
draws ``4·E_c·n`` bytes, read as little-endian uint32 sort keys ``(E_c, n)`` (the epoch's sample
order is their stable argsort), then ``2·E_c·n·U`` bytes, read as uint16 ``(E_c, n, U)``: the
dropout draws of the sample in that *position* of the epoch (input units first when
``input_dropout``, then each hidden layer). A unit is kept when its draw is ``>= r``, with
``r = round(65536·p)``, and scaled by ``65536/(65536 − r)`` (inverted dropout), so the dropout
rate used is ``r/65536`` (|error| ≤ 7.7e-6). MC passes use ``child_seed(seed_m, "mc")`` and
``2·k·n_test·U`` bytes per chunk of k passes. Raw bytes are 5× cheaper than float uniforms, and
drawing on the CPU makes GPU runs give the same numbers as CPU runs.

# NOTE [Workspace]
On the CPU the stacked model is bound by memory traffic, not arithmetic: a (240, 128, 50) float
tensor is 6 MB, and a freshly allocated one costs page faults on first touch. So ``_Step`` keeps
every activation in tensors allocated once per shape and writes into them (``out=``, in-place
ops); on the CPU a step runs over slabs of members (MC: slabs of rows) whose activations, about
``_SLAB_FLOATS`` floats per tensor, stay in cache; the dropout masks are drawn as one contiguous
boolean array per layer and turned into floats through a uint8 view (the bool → float cast is
10× slower); the epoch's sample order is one ``np.sort`` of packed keys and the rows are gathered
with ``np.take``. Training gives bit-identical numbers whatever the slab size, MC passes the same
to float rounding (a GEMM kernel may depend on the number of rows); both are checked against the
reference loops in ``tests/test_batched.py``. Together these make CPU training about 2× and MC
passes about 5× faster than allocating every temporary.

# NOTE [Hand-written backward]
The stacked MLP is small and its gradients are three lines per layer, so ``_fit_group`` computes
them by hand instead of through autograd: the ReLU and the dropout mask of a hidden layer fold
into one multiplier (kept in the forward pass), and a layer with one output (regression) uses
broadcast products and sums instead of ``bmm``, which on the CPU is 6× slower for
``(M, B, H) @ (M, H, 1)``. ``tests/test_batched.py`` checks the result against an independent
``nn.Linear`` + autograd + ``torch.optim.Adam`` loop with the same random draws.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from calipers._checks import _check_finite
from calipers._device import resolve_device
from calipers._seeds import child_seed, torch_generator
from calipers.evaluation.train import ProgressFn, TrainOptions

__all__ = ["MCTask", "MLPArch", "Member", "MemberFit", "MemberMC", "MemberProba", "fit_members",
           "init_weights", "mc_members"]

# Random numbers drawn per member per call (NOTE [Member randomness]); fixes E_c and k.
_RANDOM_BYTES = 1 << 19  # random bytes per member per draw (NOTE [Member randomness])
_DEFAULT_GROUP_BYTES = 1 << 30
_SLAB_FLOATS = 1 << 19  # CPU: floats per activation tensor of one slab (NOTE [Workspace])


@dataclass(frozen=True)
class MLPArch:
    """A fully connected ReLU network ``n_inputs → hidden… → n_outputs`` with dropout before every
    linear layer after the first and, when ``input_dropout`` (Gal & Ghahramani 2016), on the
    inputs too. ``loss``: ``"mse"`` (regression, ``n_outputs`` targets) or ``"cross_entropy"``
    (classification, ``n_outputs`` classes, logits out)."""

    n_inputs: int
    hidden: tuple[int, ...] = (50,)
    n_outputs: int = 1
    input_dropout: bool = True
    loss: str = "mse"

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "cross_entropy"):
            raise ValueError(f"MLPArch loss must be 'mse' or 'cross_entropy'; got {self.loss!r}.")
        if self.loss == "cross_entropy" and self.n_outputs < 2:
            raise ValueError(f"cross_entropy needs n_outputs >= 2 classes; got {self.n_outputs}.")
        widths = (self.n_inputs, *self.hidden, self.n_outputs)
        if any(isinstance(w, bool) or int(w) != w or w < 1 for w in widths) or not self.hidden:
            raise ValueError(f"MLPArch needs n_inputs, n_outputs >= 1 and at least one hidden "
                             f"width >= 1; got n_inputs={self.n_inputs!r}, hidden="
                             f"{self.hidden!r}, n_outputs={self.n_outputs!r}.")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.n_inputs, *self.hidden, self.n_outputs)

    @property
    def unit_parts(self) -> tuple[int, ...]:
        """Dropout units per layer: the inputs (when ``input_dropout``), then each hidden layer."""
        return ((self.n_inputs,) if self.input_dropout else ()) + self.hidden

    @property
    def n_units(self) -> int:
        """Number of dropout units U per sample (NOTE [Member randomness])."""
        return (self.n_inputs if self.input_dropout else 0) + sum(self.hidden)


@dataclass(frozen=True, eq=False)
class Member:
    """One model to train: its (standardised) data, dropout rate, weight decay and seed.

    ``X`` is ``(n, n_inputs)``, ``y`` is ``(n,)`` or ``(n, n_outputs)``; ``weight_decay`` is the
    coupled L2 coefficient of Adam on the weights (and on the biases too when ``decay_biases``,
    as ``torch.optim.Adam(model.parameters(), weight_decay=…)`` does): the gradient gets
    ``weight_decay · W``, i.e. the loss gets ``weight_decay/2 · ‖W‖²``. ``init`` is
    ``[(W (fan_in, fan_out), b (fan_out,)), …]``; ``None`` draws :func:`init_weights` (``seed``).
    """

    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    dropout: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    init: tuple | None = field(default=None, repr=False)
    decay_biases: bool = False


@dataclass(frozen=True)
class MemberFit:
    """A trained member: weights ``[(W, b), …]`` (NumPy, float32), mean training loss per epoch
    (MSE on the standardised targets, without the L2 term), and the wall time of its group (s)."""

    weights: tuple = field(repr=False)
    dropout: float
    losses: tuple[float, ...] = field(repr=False)
    seconds: float
    group_size: int

    def to_dict(self) -> dict:
        return {"dropout": self.dropout, "final_loss": self.losses[-1] if self.losses else None,
                "seconds": self.seconds, "group_size": self.group_size,
                "shapes": [list(w.shape) for w, _ in self.weights]}


def init_weights(arch: MLPArch, seed: int) -> tuple:
    """PyTorch's ``nn.Linear`` default: W and b uniform in ±1/√fan_in, from ``seed``.

    Returns ``((W (fan_in, fan_out), b (fan_out,)), …)`` as float32 NumPy arrays.
    """
    gen = torch_generator(child_seed(seed, "init"))
    out = []
    for fan_in, fan_out in zip(arch.widths[:-1], arch.widths[1:], strict=True):
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
        out.append((w.numpy(), b.numpy()))
    return tuple(out)


def _epoch_block(n: int, arch: MLPArch) -> int:
    """Epochs per random draw of a member with n rows (NOTE [Member randomness])."""
    return max(1, _RANDOM_BYTES // (n * (4 + 2 * arch.n_units)))


def _mc_block(n: int, arch: MLPArch) -> int:
    """MC passes per chunk for n test rows."""
    return max(1, _RANDOM_BYTES // (2 * n * max(arch.n_units, 1)))


def _threshold(p: float) -> int:
    """``r = round(65536·p)``: a unit is dropped when its uint16 draw is below r."""
    return round(float(p) * 65536.0)


def _keep_scale(p: torch.Tensor | float) -> torch.Tensor | float:
    """``65536 / (65536 − r)``, the inverted-dropout scale of the rate actually used."""
    if isinstance(p, torch.Tensor):
        r = torch.round(p.double() * 65536.0)
        return (65536.0 / (65536.0 - r)).float()
    return 65536.0 / (65536.0 - _threshold(p))


def _new_generator(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed)))


def _random_bytes(gen: np.random.Generator, length: int) -> np.ndarray:
    """``gen.bytes(length)`` as a uint8 array, 3× faster: the same uint32 stream (the low then
    the high half of each 64-bit PCG64 output, carrying a buffered half between calls) read
    with ``random_raw``."""
    bitgen = gen.bit_generator
    if length <= 0 or sys.byteorder != "little" or not isinstance(bitgen, np.random.PCG64):
        return np.frombuffer(gen.bytes(length), dtype=np.uint8)
    n32 = (length - 1) // 4 + 1
    state = bitgen.state
    head = int(state["has_uint32"])
    out = np.empty(n32 if head else 0, dtype=np.uint32)
    if head:
        out[0] = state["uinteger"]
        state["has_uint32"] = 0
        bitgen.state = state
    rest = n32 - head
    if rest:
        raw = bitgen.random_raw((rest + 1) // 2)
        if not head:
            out = raw.view(np.uint32)[:rest]
        else:
            out[head:] = raw.view(np.uint32)[:rest]
        if rest % 2:  # the high half of the last output stays buffered, as gen.bytes leaves it
            state = bitgen.state
            state["has_uint32"], state["uinteger"] = 1, int(raw[-1] >> np.uint64(32))
            bitgen.state = state
    return out.view(np.uint8)[:length]


def _draw_keep(gen: np.random.Generator, shape: tuple[int, ...], p: float,
               out: Sequence[np.ndarray]) -> None:
    """Keep masks from ``2·prod(shape)`` bytes of ``gen``, ``shape = (…, U)``, written into
    ``out``: boolean arrays ``(…, w)`` that split the U units (``arch.unit_parts``)."""
    count = int(np.prod(shape))
    u = _random_bytes(gen, 2 * count).view("<u2").reshape(shape)
    r, lo = _threshold(p), 0
    for o in out:
        np.greater_equal(u[..., lo:lo + o.shape[-1]], r, out=o)
        lo += o.shape[-1]


def _draw_masks(gens: Sequence[np.random.Generator], ps: Sequence[float], shape: tuple[int, ...],
                parts: Sequence[int], out: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Keep masks of every member: one ``(M, *shape, w)`` bool array per entry of ``parts``
    (written into ``out`` when given)."""
    if out is None:
        out = [np.empty((len(gens), *shape, w), dtype=bool) for w in parts]
    for i, (g, p) in enumerate(zip(gens, ps, strict=True)):
        _draw_keep(g, (*shape, sum(parts)), p, [o[i] for o in out])
    return out


def _draw_orders(gens: Sequence[np.random.Generator], epochs: int, n: int) -> np.ndarray:
    """Sample orders ``(M, E, n)`` int64 of a block of E epochs, member by member.

    The order is the stable argsort of the uint32 keys, computed as one sort of
    ``key·2³² + position`` (unique values, so any sort gives the stable order; 4× faster). The
    masks of the block's epochs follow in each member's stream; drawing them one epoch at a time
    (:func:`_draw_masks`, just before the epoch, while they fit in cache) reads the same bytes."""
    orders = np.empty((len(gens), epochs, n), dtype=np.int64)
    pos = np.arange(n, dtype=np.uint64)
    for i, g in enumerate(gens):
        keys = _random_bytes(g, 4 * epochs * n).view("<u4").reshape(epochs, n)
        packed = np.sort((keys.astype(np.uint64) << np.uint64(32)) | pos, axis=1)
        np.bitwise_and(packed, np.uint64(0xFFFFFFFF), out=orders[i], casting="unsafe")
    return orders


def _check_labels(i: int, y: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, bool)):
        raise ValueError(f"members[{i}].y must be ({n},) integer class indices for a "
                         f"cross_entropy MLPArch; got shape {y.shape} and dtype {y.dtype}.")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"members[{i}].y holds class indices outside 0..{n_classes - 1} "
                         f"(min {y.min()}, max {y.max()}); set MLPArch n_outputs to the number "
                         "of classes.")
    return y.astype(np.int64)


def _check_member(i: int, m: Member, arch: MLPArch) -> Member:
    X = np.asarray(m.X, dtype=np.float32)
    if arch.loss == "cross_entropy":
        y = _check_labels(i, m.y, len(X), arch.n_outputs)
        shape_ok = True
    else:
        y = np.asarray(m.y, dtype=np.float32)
        y = y[:, None] if y.ndim == 1 else y
        shape_ok = y.shape == (len(X), arch.n_outputs)
    if X.ndim != 2 or X.shape[1] != arch.n_inputs or not shape_ok:
        raise ValueError(
            f"members[{i}]: X must be (n, {arch.n_inputs}) and y (n,) or (n, {arch.n_outputs}) "
            f"for this architecture; got X {X.shape} and y {np.shape(m.y)}. Build MLPArch from "
            "the data or pass matching arrays.")
    if len(X) < 1:
        raise ValueError(f"members[{i}]: X has no rows; each member needs training data.")
    _check_finite(X, name=f"members[{i}].X")
    if arch.loss == "mse":
        _check_finite(y, name=f"members[{i}].y")
    if not 0.0 <= float(m.dropout) < 1.0:
        raise ValueError(f"members[{i}].dropout must be in [0, 1); got {m.dropout!r}.")
    if not float(m.weight_decay) >= 0.0:
        raise ValueError(f"members[{i}].weight_decay must be >= 0; got {m.weight_decay!r}.")
    init = m.init if m.init is not None else init_weights(arch, m.seed)
    shapes = [(np.shape(w), np.shape(b)) for w, b in init]
    want = [((a, b), (b,)) for a, b in zip(arch.widths[:-1], arch.widths[1:], strict=True)]
    if shapes != want:
        raise ValueError(f"members[{i}].init has layer shapes {shapes}; the architecture needs "
                         f"{want} (W is (fan_in, fan_out)).")
    if _threshold(float(m.dropout)) >= 65536:
        raise ValueError(f"members[{i}].dropout={m.dropout!r} rounds to 1 at 16-bit resolution; "
                         "use a rate below 0.99999.")
    return Member(X, y, float(m.dropout), float(m.weight_decay), int(m.seed), tuple(init),
                  bool(m.decay_biases))


def _groups(sizes: Sequence[int], per_member: Sequence[int], batched: bool,
            max_bytes: int) -> list[list[int]]:
    """Members with equal ``sizes`` share a step schedule; cap each group at ``max_bytes``."""
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(sizes):
        by_size.setdefault(s, []).append(i)
    out = []
    for idx in by_size.values():
        cap = 1 if not batched else max(1, max_bytes // max(per_member[idx[0]], 1))
        out += [idx[k:k + cap] for k in range(0, len(idx), cap)]
    return out


def _stack_params(members: Sequence[Member], device: torch.device) -> list[torch.Tensor]:
    params = []
    for layer in range(len(members[0].init)):
        for part in (0, 1):
            t = torch.stack([torch.as_tensor(np.asarray(m.init[layer][part], dtype=np.float32))
                             for m in members])
            params.append(t.to(device).requires_grad_(True))
    return params


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Stacked ``h @ w + b``: h (M, B, i), w (M, i, o), b (M, o) → (M, B, o)."""
    if w.shape[-1] == 1:  # NOTE [Hand-written backward]: bmm is slow for one output
        return (h * w.transpose(1, 2)).sum(-1, keepdim=True) + b[:, None, :]
    return torch.baddbmm(b[:, None, :], h, w)


def _forward_det(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Stacked forward pass without dropout (weight scaling): x (M, B, d) → (M, B, o)."""
    h = x
    for layer in range(len(params) // 2):
        h = _linear(h, params[2 * layer], params[2 * layer + 1])
        if layer < len(params) // 2 - 1:
            h = torch.relu(h)
    return h


class _Step:
    """Forward and backward pass (NOTE [Hand-written backward]) of a stacked group for
    minibatches of ``b`` rows, in tensors allocated once (NOTE [Workspace])."""

    def __init__(self, arch: MLPArch, M: int, b: int, device: torch.device,
                 backward: bool = True) -> None:
        f32 = {"dtype": torch.float32, "device": device}
        self.arch = arch
        # the members' stacked weights [W1, b1, …] and keep scales (M, 1, 1): set before a pass
        self.params: Sequence[torch.Tensor] = []
        self.scale = torch.ones(M, 1, 1, **f32)
        self.n_layers = len(arch.widths) - 1
        d = arch.n_inputs
        self.x = torch.empty(M, b, d, **f32) if arch.input_dropout else None
        self.mask_in = torch.empty(M, b, d, **f32) if arch.input_dropout else None
        hid = arch.hidden
        self.h = [torch.empty(M, b, w, **f32) for w in hid]  # inputs of layers 1…
        self.mask = [torch.empty(M, b, w, **f32) for w in hid]
        self.mult = [torch.empty(M, b, w, **f32) for w in hid]
        self.g = [torch.empty(M, b, w, **f32) for w in hid] if backward else []
        self.z = [torch.empty(M, b, w, **f32) for w in arch.widths[1:]]
        # products h · wᵀ of the layers with one output (NOTE [Hand-written backward])
        fans = zip(arch.widths[:-1], arch.widths[1:], strict=True)
        self.tmp = {k: torch.empty(M, b, fan_in, **f32)
                    for k, (fan_in, fan_out) in enumerate(fans) if fan_out == 1}
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, keep: Sequence[torch.Tensor]) -> torch.Tensor:
        """x (M, b, d), keep: bool masks (M, b, w), one per ``arch.unit_parts`` (NOTE [Member
        randomness]) → output (M, b, o)."""
        h, keep = x, list(keep)
        if self.arch.input_dropout:
            self.mask_in.copy_(keep.pop(0).view(torch.uint8)).mul_(self.scale)
            h = torch.mul(x, self.mask_in, out=self.x)
        self.inputs = [h]
        for layer in range(self.n_layers):
            w, b, z = self.params[2 * layer], self.params[2 * layer + 1], self.z[layer]
            if w.shape[-1] == 1:  # NOTE [Hand-written backward]
                torch.sum(torch.mul(h, w.transpose(1, 2), out=self.tmp[layer]), -1,
                          keepdim=True, out=z)
                z.add_(b[:, None, :])
            else:
                torch.baddbmm(b[:, None, :], h, w, out=z)
            if layer == self.n_layers - 1:
                return z
            mask = self.mask[layer].copy_(keep[layer].view(torch.uint8)).mul_(self.scale)
            h = torch.clamp_min(z, 0, out=self.h[layer]).mul_(mask)
            # ReLU' and the dropout mask in one multiplier, (z > 0) · keep · scale; sign(h)
            # gives the indicator 4× faster than a comparison on the CPU
            torch.sign(h, out=self.mult[layer]).mul_(self.scale)
            self.inputs.append(h)
        raise AssertionError("unreachable")

    def backward(self, g: torch.Tensor) -> list[torch.Tensor]:
        """Gradients ``[dW1, db1, …]`` given ``g`` = d loss / d output (M, b, o)."""
        grads: list[torch.Tensor] = [torch.empty(0)] * (2 * self.n_layers)
        for layer in range(self.n_layers - 1, -1, -1):
            h, w = self.inputs[layer], self.params[2 * layer]
            if w.shape[-1] == 1:
                grads[2 * layer] = torch.mul(h, g, out=self.tmp[layer]).sum(1)[..., None]
            else:
                grads[2 * layer] = torch.bmm(h.transpose(1, 2), g)
            grads[2 * layer + 1] = g.sum(1)
            if layer > 0:
                gh = self.g[layer - 1]
                if w.shape[-1] == 1:
                    torch.mul(g, w.transpose(1, 2), out=gh)
                else:
                    torch.bmm(g, w.transpose(1, 2), out=gh)
                g = gh.mul_(self.mult[layer - 1])
        return grads


def _slabs(M: int, floats_per_member: int, device: torch.device) -> list[tuple[int, int]]:
    """Member ranges of one pass: on the CPU, slabs whose activations (``floats_per_member``
    each) fit in cache (NOTE [Workspace]); elsewhere the whole group at once."""
    if device.type != "cpu":
        return [(0, M)]
    size = max(1, _SLAB_FLOATS // max(floats_per_member, 1))
    return [(lo, min(lo + size, M)) for lo in range(0, M, size)]


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


# --------------------------------------------------------------------------- MC dropout

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


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


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
    slab = max(16, _SLAB_FLOATS // (M * max(arch.widths))) if device.type == "cpu" else 1 << 62
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
    M, n = len(tasks), len(tasks[0].X)
    det, chunks = _mc_passes(tasks, arch, n_mc, device)
    s_p = torch.zeros(M, n, arch.n_outputs, dtype=torch.float64, device=device)
    s_ent = torch.zeros(M, n, dtype=torch.float64, device=device)
    for out in chunks:
        p = torch.softmax(out, dim=-1)
        s_p += p.sum(1)
        s_ent += _entropy(p).sum(1)
    proba = s_p / n_mc if n_mc > 0 else torch.softmax(det, dim=-1)  # n_mc = 0: weight scaling
    ent = _entropy(proba)
    exp_ent = s_ent / n_mc if n_mc > 0 else ent
    mi = (ent - exp_ent).clamp_min(0)
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
    M, n = len(tasks), len(tasks[0].X)
    det, chunks = _mc_passes(tasks, arch, n_mc, device)
    mu = torch.tensor([t.y_mean for t in tasks], dtype=torch.float64, device=device)
    sd = torch.tensor([t.y_std for t in tasks], dtype=torch.float64, device=device)
    has_tau = all(t.tau is not None for t in tasks)
    tau = torch.tensor([t.tau if has_tau else 1.0 for t in tasks], dtype=torch.float64,
                       device=device)
    has_y = all(t.y is not None for t in tasks)
    Y = torch.as_tensor(np.stack([t.y for t in tasks])).to(device) if has_y else None
    s1 = torch.zeros(M, n, arch.n_outputs, dtype=torch.float64, device=device)
    s2 = torch.zeros_like(s1)
    lse = torch.full((M, n), -math.inf, dtype=torch.float64, device=device)
    det = det * sd[:, None, None] + mu[:, None, None]
    for out in chunks:
        out = out * sd[:, None, None, None] + mu[:, None, None, None]
        s1 += out.sum(1)
        s2 += (out * out).sum(1)
        if Y is not None and has_tau:
            a = -0.5 * tau[:, None, None] * ((Y[:, None] - out) ** 2).sum(-1)
            lse = torch.logaddexp(lse, torch.logsumexp(a, dim=1))
    if n_mc > 0:
        mean = s1 / n_mc
        var = (s2 / n_mc - mean * mean).clamp_min(0)
    else:  # weight-scaling predictions only
        mean, var = det, torch.zeros_like(det)
    if has_tau:
        var = var + 1.0 / tau[:, None, None]
    d = arch.n_outputs
    out_list = []
    for i, t in enumerate(tasks):
        ll = rmse = mc_rmse = avg = None
        if Y is not None:
            rmse = float(((Y[i] - det[i]) ** 2).mean().sqrt())
            mc_rmse = float(((Y[i] - mean[i]) ** 2).mean().sqrt())
            if has_tau and n_mc > 0:
                ll_t = lse[i] - math.log(n_mc) - 0.5 * d * math.log(2 * math.pi) \
                    + 0.5 * d * math.log(t.tau)
                ll = ll_t.cpu().numpy()
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
    passes, ``2·k·n·U`` ≤ 2^19 random bytes per member, reduced on the fly: running sums for the
    mean and variance and a running ``logsumexp`` for the log likelihood, so memory does not grow
    with T. Per-sample log likelihood, with ŷ_t in original units::

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
