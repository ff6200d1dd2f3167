"""Monte Carlo dropout: predictive uncertainty from T stochastic passes (Gal & Ghahramani 2016).

Every dropout module is put in train mode and everything else (BatchNorm!) in eval mode; T
forward passes then sample the approximate posterior predictive. The T passes are batched by
repeating the input, layers before the first dropout are computed once, and the statistics are
reduced on the fly, so memory stays bounded by one chunk of passes.

# NOTE [MC pass layout and seeds]
The samples are cut into batches of ``batch_size`` rows (batch ``b``) and the T passes into chunks
of ``chunk_size`` passes (chunk ``c``; the last one may be shorter). One forward call evaluates a
whole chunk: the batch is repeated pass-major along dimension 0, ``(k·B, ...)`` = ``[x, x, ...]``,
and the output is viewed as ``(k, B, ...)``. Dropout modules draw from torch's global generator,
so each chunk runs inside ``seeded_torch(child_seed(seed, b, c), device)``: the global state is
forked, seeded for that chunk and restored afterwards. Hence, for a given model and input, the
result depends only on ``(seed, n_mc, batch_size, chunk_size)`` (and on the device type, since
torch's CPU and CUDA generators give different streams), never on what ran before, and the
caller's global RNG state is left untouched.

# NOTE [Trunk caching]
When the model is a plain ``nn.Sequential`` (its ``forward`` not overridden; nested plain
Sequentials are flattened), the steps before the first step that contains a dropout module are
the *trunk*. In eval mode they are assumed deterministic, so they run once per batch and only
their output is repeated for the passes; the dropout layers then see tensors of the same shape
and draw the same masks as without caching, so the numbers agree up to float rounding. Pass
``cache_trunk=False`` when a layer before the first dropout draws random numbers in eval mode,
or when hooks registered on the Sequential container itself must run (the cached path calls the
steps one by one). Any other model is called whole on the repeated input.

Each chunk of passes is folded into streaming statistics and dropped: means and variances with
``StreamingMoments`` (NOTE [Streaming moments] in ``streaming.py``), the log likelihood with a
streaming logsumexp; the measures themselves are in ``measures.py``.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from calipers._checks import _check_finite, _check_positive_int
from calipers._device import resolve_device
from calipers._options import PredictionTask, look_up_option
from calipers._seeds import child_seed, seeded_torch
from calipers.uncertainty.measures import (
    _check_tau,
    gaussian_log_kernel,
    mc_log_likelihood,
    predictive_variance,
    torch_entropy,
    torch_mutual_info,
)
from calipers.uncertainty.streaming import StreamingLogSumExp, StreamingMoments

__all__ = [
    "DROPOUT_TYPES", "TASKS", "MCClassification", "MCRegression", "has_dropout",
    "mc_dropout_mode", "mc_predict",
]

#: The public dropout classes of ``torch.nn`` (subclasses count too).
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)
#: Values of ``mc_predict(task=...)`` (:class:`calipers._options.PredictionTask`).
TASKS = tuple(t.value for t in PredictionTask)

# Default chunk_size: batch rows × passes per forward call stay <= this many rows.
_ROWS_PER_FORWARD = 8192
_NO_DROPOUT = (
    "model has no dropout module; MC dropout needs one: add nn.Dropout(p) before the last layer "
    "or set [mc] samples = 0"
)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class MCClassification:
    """Predictive distribution of a classifier under MC dropout (NumPy arrays on the CPU).

    ``S`` below is empty for logits ``(N, C)`` and the spatial shape for per-pixel logits
    ``(N, C, *S)`` (e.g. segmentation); classes are always on axis 1. Entropies are in nats.

    Attributes
    ----------
    proba : ndarray of shape (N, C, *S)
        Predictive mean ``p̄ = mean_t softmax(logits_t)``, probabilities.
    entropy : ndarray of shape (N, *S)
        Predictive entropy ``H[p̄]`` (total uncertainty; 0 = certain, ``log C`` = uniform).
    expected_entropy : ndarray of shape (N, *S)
        ``mean_t H[p_t]``, the aleatoric part.
    mutual_info : ndarray of shape (N, *S)
        ``entropy − expected_entropy`` >= 0 (BALD), the epistemic part.
    std : ndarray of shape (N, C, *S)
        Per-class standard deviation of ``p_t`` over the passes (ddof = 0).
    n_mc : int
        Number of passes T.
    samples : ndarray of shape (T, N, C, *S), float64, or None
        Per-pass probabilities ``p_t``; only with ``keep_samples=True``.
    """

    proba: np.ndarray = field(repr=False)
    entropy: np.ndarray = field(repr=False)
    expected_entropy: np.ndarray = field(repr=False)
    mutual_info: np.ndarray = field(repr=False)
    std: np.ndarray = field(repr=False)
    n_mc: int
    samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def prediction(self) -> np.ndarray:
        """Predicted class ``argmax_c p̄``, shape ``(N, *S)``."""
        return self.proba.argmax(axis=1)

    def summary(self) -> dict[str, float]:
        """Means over samples (and pixels) of each uncertainty measure, for JSON and reports."""
        return {
            "n_mc": self.n_mc,
            "mean_entropy": float(self.entropy.mean()),
            "mean_expected_entropy": float(self.expected_entropy.mean()),
            "mean_mutual_info": float(self.mutual_info.mean()),
            "mean_std": float(self.std.mean()),
        }


@dataclass(frozen=True, eq=False)
class MCRegression:
    """Predictive distribution of a regression network under MC dropout (NumPy on the CPU).

    ``D`` below is the model's per-sample output shape: empty for outputs ``(N,)``.

    Attributes
    ----------
    mean : ndarray of shape (N, *D)
        Predictive mean ``mean_t ŷ_t``, in target units.
    var : ndarray of shape (N, *D)
        Predictive variance ``1/τ + var_t(ŷ_t)`` (just ``var_t(ŷ_t)`` when ``tau`` is None),
        in squared target units.
    std_mc : ndarray of shape (N, *D)
        ``sqrt(var_t(ŷ_t))`` (ddof = 0): the spread of the passes alone.
    tau : float or None
        Model precision τ used in ``var`` and ``log_likelihood``.
    n_mc : int
        Number of passes T.
    log_likelihood : ndarray of shape (N,) or None
        Test log likelihood per sample, in nats (higher is better); only when ``y`` is given.
        See :func:`regression_log_likelihood`.
    samples : ndarray of shape (T, N, *D), float64, or None
        Per-pass outputs ``ŷ_t``; only with ``keep_samples=True``.
    """

    mean: np.ndarray = field(repr=False)
    var: np.ndarray = field(repr=False)
    std_mc: np.ndarray = field(repr=False)
    tau: float | None
    n_mc: int
    log_likelihood: np.ndarray | None = field(default=None, repr=False)
    samples: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, float | None]:
        """Means over samples of ``var``, ``std_mc`` and ``log_likelihood`` (None if absent)."""
        ll = None if self.log_likelihood is None else float(self.log_likelihood.mean())
        return {
            "n_mc": self.n_mc,
            "tau": self.tau,
            "mean_var": float(self.var.mean()),
            "mean_std_mc": float(self.std_mc.mean()),
            "mean_log_likelihood": ll,
        }


# --------------------------------------------------------------------------- modes


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` (or any submodule) is one of :data:`DROPOUT_TYPES`."""
    return any(isinstance(m, DROPOUT_TYPES) for m in model.modules())


@contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with only its dropout modules in train mode.

    Every module's own ``training`` flag is restored on exit, even when the block raises, so a
    model found half in train mode is left exactly so. BatchNorm stays in eval mode and its
    running statistics are not updated.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    >>> with mc_dropout_mode(net):
    ...     print(net[1].training, net[2].training)
    False True
    >>> net.training
    True
    """
    saved = {m: m.training for m in model.modules()}  # pre-order: parents before children
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, DROPOUT_TYPES):
                m.train()
        yield model
    finally:
        for m, flag in saved.items():
            m.train(flag)


# --------------------------------------------------------------------------- reducers


class _ClassReducer:
    """Streaming moments over passes of p_t and H[p_t] (NOTE [Streaming moments])."""

    def __init__(self, keep: bool) -> None:
        self.keep, self.chunks = keep, []
        self.p, self.h = StreamingMoments(), StreamingMoments(variance=False)

    def add(self, logits: torch.Tensor) -> None:  # (k, B, C, *S)
        p = torch.softmax(logits.double(), dim=2)
        self.p.add(p)
        self.h.add(torch_entropy(p, dim=2))
        if self.keep:
            self.chunks.append(p.cpu())

    def finish(self) -> dict[str, torch.Tensor]:
        proba = self.p.mean
        entropy = torch_entropy(proba, dim=1)
        expected = self.h.mean
        out = {
            "proba": proba,
            "entropy": entropy,
            "expected_entropy": expected,
            "mutual_info": torch_mutual_info(entropy, expected),
            "std": self.p.std,
        }
        if self.keep:
            out["samples"] = torch.cat(self.chunks)
        return out


class _RegReducer:
    """Streaming moments of ŷ_t and a streaming logsumexp for the log likelihood."""

    def __init__(self, keep: bool, y: torch.Tensor | None, tau: float | None) -> None:
        self.keep, self.y, self.tau, self.chunks = keep, y, tau, []
        self.v, self.lse = StreamingMoments(), StreamingLogSumExp()

    def add(self, out: torch.Tensor) -> None:  # (k, B, *D)
        v = out.double()
        if self.y is not None:
            if self.lse.n == 0:
                self.y = _match_target(self.y, v.shape[1:])
            self.lse.add(gaussian_log_kernel(self.y, v, self.tau, event_dims=v.dim() - 2))
        self.v.add(v)
        if self.keep:
            self.chunks.append(v.cpu())

    def finish(self) -> dict[str, torch.Tensor]:
        var_mc = self.v.var
        out = {
            "mean": self.v.mean,
            "var": predictive_variance(var_mc, self.tau),
            "std_mc": var_mc.sqrt(),
        }
        if self.y is not None:
            out["log_likelihood"] = mc_log_likelihood(
                self.lse.value, n_mc=self.lse.n, tau=self.tau, n_outputs=self.v.shift[0].numel())
        if self.keep:
            out["samples"] = torch.cat(self.chunks)
        return out


def _match_target(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``y`` of one batch in the model's output shape; (N,) is accepted for outputs (N, 1)."""
    if y.shape == shape:
        return y
    if y.numel() == math.prod(shape):
        return y.reshape(shape)
    raise ValueError(
        f"y must have the model's output shape per sample; the model outputs "
        f"{tuple(shape[1:])} per sample but y has {tuple(y.shape[1:])} (y of shape "
        f"(N, {', '.join(map(str, y.shape[1:]))})). Pass y of shape (N, *output)."
    )


# --------------------------------------------------------------------------- plan and checks


@dataclass(frozen=True)
class _Plan:
    """Cleaned arguments of :func:`mc_predict` (see ``_mc_predict_iv``)."""

    net: nn.Module
    device: torch.device
    x: torch.Tensor
    x_dtype: torch.dtype
    y: torch.Tensor | None
    task: str
    n_mc: int
    seed: int
    batch_size: int
    chunk_size: int
    tau: float | None
    cache_trunk: bool
    keep_samples: bool


def _model_on_device(
    model: nn.Module, device: str | torch.device
) -> tuple[nn.Module, torch.device]:
    """The model to run and its device; a deep copy when an explicit device differs."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    current = None if first is None else first.device
    if isinstance(device, str) and device.strip().lower() == "auto":
        return model, current if current is not None else resolve_device("auto")
    dev = resolve_device(device)
    if current is None or _same_device(current, dev):
        return model, dev
    return copy.deepcopy(model).to(dev), dev  # leave the user's model where it is


def _same_device(a: torch.device, b: torch.device) -> bool:
    def index(d: torch.device) -> int | None:
        return torch.cuda.current_device() if d.type == "cuda" and d.index is None else d.index

    return a.type == b.type and index(a) == index(b)


def _as_tensor(x: object, *, name: str, shape_hint: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"{name} must be a torch.Tensor or a NumPy array of shape {shape_hint}; "
                f"got {type(x).__name__}."
            ) from exc
    if t.dim() == 0 or t.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape {shape_hint} with N >= 1; got shape {tuple(t.shape)}."
        )
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        _check_finite(t.cpu().numpy(), name=name)
    return t


def _mc_predict_iv(model, x, y, *, n_mc, task, seed, device, batch_size, chunk_size, tau,
                   cache_trunk, keep_samples) -> _Plan:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if not has_dropout(model):
        raise ValueError(_NO_DROPOUT)
    n_mc = _check_positive_int(
        n_mc, name="n_mc", fix="Use n_mc = 30 or more passes ([mc] samples in a config)."
    )
    task = look_up_option(task, PredictionTask, name="task")
    seed = _check_positive_int(seed, name="seed", minimum=0, fix="Pass e.g. seed=0.")
    batch_size = _check_positive_int(batch_size, name="batch_size", fix="E.g. batch_size=1024.")
    tau = _check_tau(tau, allow_none=True)
    if task == "classification" and (tau is not None or y is not None):
        raise ValueError(
            "tau and y apply to task='regression' only (predictive variance and test log "
            "likelihood); leave them as None for classification."
        )
    xt = _as_tensor(x, name="x", shape_hint="(N, *sample_shape)")
    yt = None
    if y is not None:
        if tau is None:
            raise ValueError("y was given but tau is None; the log likelihood needs the model "
                             "precision: pass tau=<1 / noise variance>.")
        yt = _as_tensor(y, name="y", shape_hint="(N,) or (N, *output_shape)").double()
        if yt.shape[0] != xt.shape[0]:
            raise ValueError(f"y must have one row per sample of x: x has {xt.shape[0]} rows, "
                             f"y has {yt.shape[0]}.")
    if chunk_size is None:  # NOTE [MC pass layout and seeds]: deterministic, not memory-probing
        chunk_size = max(1, min(n_mc, _ROWS_PER_FORWARD // min(batch_size, xt.shape[0])))
    chunk_size = _check_positive_int(
        chunk_size, name="chunk_size", fix="It is the number of passes per forward call, e.g. 8."
    )
    net, dev = _model_on_device(model, device)  # after the checks: it may copy the model
    floats = [p.dtype for p in net.parameters() if p.is_floating_point()]
    x_dtype = (floats[0] if floats else torch.get_default_dtype()) if xt.is_floating_point() \
        else xt.dtype
    return _Plan(net, dev, xt, x_dtype, yt, task, n_mc, seed, batch_size, chunk_size, tau,
                 bool(cache_trunk), bool(keep_samples))


# --------------------------------------------------------------------------- engine


def _plain_sequential_steps(m: nn.Module) -> list[nn.Module] | None:
    """The steps of a plain ``nn.Sequential`` (nested ones flattened), else None."""
    if not (isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward):
        return None
    steps: list[nn.Module] = []
    for child in m:
        sub = _plain_sequential_steps(child)
        steps.extend(sub if sub is not None else [child])
    return steps


def _split_trunk(net: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(trunk, head): the trunk is computed once per batch (NOTE [Trunk caching])."""
    steps = _plain_sequential_steps(net)
    if steps is None:
        return [], [net]
    first = next((i for i, m in enumerate(steps) if has_dropout(m)), len(steps))
    if first == 0:
        return [], [net]
    return steps[:first], steps[first:]


def _run_steps(steps: list[nn.Module], h: torch.Tensor) -> torch.Tensor:
    for m in steps:
        h = m(h)
    return h


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _by_pass(out: object, k: int, rows: int, task: str, *, where: str) -> torch.Tensor:
    """View a forward output of ``k·rows`` rows as ``(k, rows, ...)``, checking its shape."""
    if not isinstance(out, torch.Tensor):
        fix = " or set cache_trunk=False" if where == "trunk" else ""
        raise TypeError(f"the model's {where} must return a tensor; got {type(out).__name__}. "
                        f"Wrap the model so that it returns a tensor{fix}.")
    if out.dim() == 0 or out.shape[0] != k * rows:
        raise ValueError(
            f"the model's {where} returned shape {tuple(out.shape)} for {k * rows} input rows; "
            f"mc_predict needs one output row per input row (dimension 0 is the batch)."
        )
    if where == "output" and task == "classification" and out.dim() < 2:
        raise ValueError(
            f"classification needs logits of shape (N, C) or (N, C, *spatial); the model returned "
            f"shape {tuple(out.shape)}. For one continuous output use task='regression'."
        )
    return out.reshape(k, rows, *out.shape[1:])


def _mc_batch(plan: _Plan, trunk: list[nn.Module], head: list[nn.Module], b: int,
              lo: int, hi: int) -> dict[str, torch.Tensor]:
    """All T passes for rows ``lo:hi`` (batch ``b``), reduced to per-sample statistics."""
    rows = hi - lo
    h = plan.x[lo:hi].to(plan.device, plan.x_dtype)
    if trunk:
        with seeded_torch(child_seed(plan.seed, b, "trunk"), plan.device):  # only to fork the RNG
            h = _by_pass(_run_steps(trunk, h), 1, rows, plan.task, where="trunk")[0]
    if plan.task == "classification":
        reducer = _ClassReducer(plan.keep_samples)
    else:
        y = None if plan.y is None else plan.y[lo:hi].to(plan.device)
        reducer = _RegReducer(plan.keep_samples, y, plan.tau)
    reps = (1,) * (h.dim() - 1)
    for c, (t0, t1) in enumerate(_spans(plan.n_mc, plan.chunk_size)):
        k = t1 - t0
        with seeded_torch(child_seed(plan.seed, b, c), plan.device):
            out = _run_steps(head, h.repeat(k, *reps))  # repeat copies: in-place dropout is safe
        reducer.add(_by_pass(out, k, rows, plan.task, where="output"))
    return reducer.finish()


def mc_predict(
    model: nn.Module,
    x: torch.Tensor | ArrayLike,
    *,
    n_mc: int = 30,
    task: str = "classification",
    seed: int = 0,
    device: str | torch.device = "auto",
    batch_size: int = 1024,
    chunk_size: int | None = None,
    tau: float | None = None,
    cache_trunk: bool = True,
    keep_samples: bool = False,
    y: torch.Tensor | ArrayLike | None = None,
) -> MCClassification | MCRegression:
    """Monte Carlo dropout predictions: T stochastic passes with only dropout in train mode.

    Parameters
    ----------
    model : torch.nn.Module
        A network with at least one dropout module (:data:`DROPOUT_TYPES`). It is not modified:
        module modes are restored (:func:`mc_dropout_mode`), BatchNorm statistics untouched.
    x : Tensor or ndarray of shape (N, *sample_shape)
        Inputs; floating inputs are cast to the model's parameter dtype batch by batch.
    n_mc : int, default 30
        Number of stochastic passes T.
    task : {"classification", "regression"}
        Classification: the model returns logits ``(N, C)`` or ``(N, C, *S)`` (classes on
        axis 1). Regression: the model returns ``(N,)`` or ``(N, *D)``.
    seed : int, default 0
        Seeds the dropout masks, chunk by chunk; the global torch RNG is left untouched. See
        NOTE [MC pass layout and seeds]: the result depends only on the seed, ``n_mc``,
        ``batch_size`` and ``chunk_size`` (and the device type), not on what ran before.
    device : "auto", "cpu", "cuda", "cuda:i" or torch.device, default "auto"
        "auto" runs where the model's parameters are. An explicit device that differs from
        theirs runs a deep copy of the model there; the user's model never moves.
    batch_size : int, default 1024
        Samples per batch B; x is moved to the device one batch at a time.
    chunk_size : int, optional
        Passes per forward call k: one call sees ``k·B`` rows. Memory is O(k·B·activations),
        independent of T. Default ``max(1, min(n_mc, 8192 // min(batch_size, N)))``, i.e. about
        8192 rows per call; lower it (or ``batch_size``) for large inputs such as images.
    tau : float, optional
        Regression only: model precision τ > 0 added as ``1/τ`` to the variance.
    cache_trunk : bool, default True
        Compute the layers before the first dropout once per batch (NOTE [Trunk caching]).
    keep_samples : bool, default False
        Also return the per-pass values (memory O(T·N·outputs)).
    y : Tensor or ndarray of shape (N,) or (N, *D), optional
        Regression targets; with ``tau`` gives the per-sample ``log_likelihood``, computed with
        a running logsumexp so the passes need not be kept.

    Returns
    -------
    MCClassification or MCRegression
        NumPy arrays on the CPU, float64.

    Notes
    -----
    Classification: ``p_t = softmax(logits_t)``, ``p̄ = mean_t p_t``, entropy ``H[p̄]``,
    expected entropy ``mean_t H[p_t]``, mutual information ``H[p̄] − mean_t H[p_t]``, all in
    nats. Regression: ``mean_t ŷ_t`` and ``1/τ + var_t ŷ_t``. Variances use ddof = 0.

    References
    ----------
    Y. Gal and Z. Ghahramani, "Dropout as a Bayesian approximation: representing model
    uncertainty in deep learning", ICML 2016.
    N. Houlsby et al., "Bayesian active learning for classification and preference learning"
    (BALD), arXiv:1112.5745, 2011.

    Examples
    --------
    >>> from calipers.models import CNN
    >>> net = CNN((1, 8, 8), 10)
    >>> res = mc_predict(net, torch.zeros(5, 1, 8, 8), n_mc=20, seed=0)
    >>> res.proba.shape, res.mutual_info.shape
    ((5, 10), (5,))
    """
    plan = _mc_predict_iv(
        model, x, y, n_mc=n_mc, task=task, seed=seed, device=device, batch_size=batch_size,
        chunk_size=chunk_size, tau=tau, cache_trunk=cache_trunk, keep_samples=keep_samples,
    )
    trunk, head = _split_trunk(plan.net) if plan.cache_trunk else ([], [plan.net])
    parts = []
    with mc_dropout_mode(plan.net), torch.inference_mode():
        for b, (lo, hi) in enumerate(_spans(plan.x.shape[0], plan.batch_size)):
            part = _mc_batch(plan, trunk, head, b, lo, hi)
            parts.append({key: v.cpu().numpy() for key, v in part.items()})
    fields = {
        key: np.concatenate([p[key] for p in parts], axis=1 if key == "samples" else 0)
        for key in parts[0]
    }
    if plan.task == "classification":
        return MCClassification(n_mc=plan.n_mc, **fields)
    return MCRegression(tau=plan.tau, n_mc=plan.n_mc, **fields)
