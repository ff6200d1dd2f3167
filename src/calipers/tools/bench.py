"""``calipers bench``: the device's character, then CPU against GPU over growing sizes.

Part 1, the device: host memory bandwidth (a NumPy copy), host↔device copies from pinned memory,
device memory bandwidth (a device copy), and matrix-multiply throughput in fp64, fp32, tf32 and
bf16 with the fp64:fp32 ratio (data-centre GPUs run fp64 at 1/2 of fp32, consumer cards at 1/32
to 1/64, which decides where a GPU helps double-precision statistics).

Part 2, CPU against GPU on the same work at growing sizes: matrix multiply (NumPy vs torch),
2-D FFT (SciPy vs torch), 2-D and 3-D convolution (torch on both), the pairwise Euclidean
distance matrix of n vectors in 120 dimensions (SciPy ``pdist`` vs ``torch.cdist``; 4,500 is the
classic case), a conjugate-gradient solve of a 3-D Laplacian (SciPy's ``cg`` vs the same
iterations on a torch sparse CSR matrix), calipers' permutation engine (max-T sign flips) and MC
dropout. Each time is the median of repeats after a warm-up, GPU work synchronised; per workload
the *crossover* is the smallest size from which the GPU is faster at every larger size.
Without a GPU: the CPU figures and one line saying so. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["WORKLOADS", "BenchResult", "crossover", "plot_bench", "render_bench", "run_bench"]

Thunk = Callable[[], Any]


def _time(fn: Thunk, *, cuda: bool = False, repeats: int = 3, budget: float = 2.0) -> float:
    """Median seconds of ``repeats`` runs of ``fn()`` after one warm-up (JIT, caches, cuDNN's
    autotuning); one timed run when that already takes ``budget / repeats`` seconds or more."""
    def once() -> float:
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    once()
    first = once()
    if first * repeats > budget:
        return first
    return statistics.median([first, *(once() for _ in range(repeats - 1))])


# --- part 1: the device's character ------------------------------------------------------------

def _matmul_tflops(n: int, dtype: torch.dtype, device: torch.device, tf32: bool = False) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    cuda = device.type == "cuda"
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        s = _time(lambda: a @ b, cuda=cuda)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n**3 / s / 1e12


def device_character(device: torch.device, *, quick: bool) -> dict[str, Any]:
    """Bandwidths (GB/s) and matmul throughput (TFLOP/s) of the CPU and, if given, the GPU."""
    mb = 32 if quick else 512
    host = np.ones(mb * 2**20 // 8)
    dst = np.empty_like(host)
    s = _time(lambda: np.copyto(dst, host))
    out: dict[str, Any] = {"host_bandwidth_gbs": 2 * host.nbytes / s / 1e9}
    n = 512 if quick else 2048
    cpu = torch.device("cpu")
    out["cpu_matmul_tflops"] = {
        "fp64": _matmul_tflops(n, torch.float64, cpu),
        "fp32": _matmul_tflops(n, torch.float32, cpu),
        "bf16": _matmul_tflops(n, torch.bfloat16, cpu)}
    if device.type != "cuda":
        return out
    t = torch.ones(mb * 2**20 // 4).pin_memory()
    d = t.to(device)
    out["h2d_gbs"] = t.nbytes / _time(lambda: d.copy_(t, non_blocking=True), cuda=True) / 1e9
    out["d2h_gbs"] = t.nbytes / _time(lambda: t.copy_(d, non_blocking=True), cuda=True) / 1e9
    d2 = torch.empty_like(d)
    out["device_bandwidth_gbs"] = 2 * d.nbytes / _time(lambda: d2.copy_(d), cuda=True) / 1e9
    n = 2048 if quick else 8192
    g = {"fp64": _matmul_tflops(n, torch.float64, device),
         "fp32": _matmul_tflops(n, torch.float32, device),
         "tf32": _matmul_tflops(n, torch.float32, device, tf32=True),
         "bf16": _matmul_tflops(n, torch.bfloat16, device)}
    out["gpu_matmul_tflops"] = g
    out["gpu_fp64_to_fp32"] = g["fp64"] / g["fp32"]
    out["gpu"] = torch.cuda.get_device_name(device)
    return out


# --- part 2: workloads ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One workload: its name, what its size means, sizes for --quick and full runs, and
    ``make(size, device) -> (cpu_thunk, gpu_thunk or None)``."""

    name: str
    unit: str
    quick: tuple[int, ...]
    full: tuple[int, ...]
    make: Callable[[int, torch.device | None], tuple[Thunk, Thunk | None]]


def _matmul(n, dev):
    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    if dev is None:
        return (lambda: a @ b), None
    ga, gb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
    return (lambda: a @ b), (lambda: ga @ gb)


def _fft(n, dev):
    import scipy.fft

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    cpu = lambda: scipy.fft.fft2(a)  # noqa: E731
    return cpu, None if dev is None else (lambda g=torch.from_numpy(a).to(dev): torch.fft.fft2(g))


def _conv(shape, weight, fn):
    def make(n, dev):
        x = torch.randn(*shape(n))
        w = torch.randn(*weight)
        cpu = lambda: fn(x, w, padding=1)  # noqa: E731
        if dev is None:
            return cpu, None
        gx, gw = x.to(dev), w.to(dev)
        return cpu, (lambda: fn(gx, gw, padding=1))
    return make


def _pdist(n, dev):
    from scipy.spatial.distance import pdist

    x = np.random.default_rng(0).standard_normal((n, 120))
    cpu = lambda: pdist(x)  # noqa: E731
    return cpu, None if dev is None else (
        lambda g=torch.from_numpy(x).float().to(dev): torch.cdist(g, g))


def _laplacian(n: int):
    import scipy.sparse as sp

    d1 = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1])
    eye = sp.identity(n)
    return (sp.kron(sp.kron(d1, eye), eye) + sp.kron(sp.kron(eye, d1), eye)
            + sp.kron(sp.kron(eye, eye), d1)).tocsr()


_CG_ITERS = 50


def _torch_cg(A: torch.Tensor, b: torch.Tensor, iters: int) -> torch.Tensor:
    """Plain conjugate gradients, a fixed number of iterations (no host sync in the loop)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    for _ in range(iters):
        Ap = A @ p
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def torch_csr(A, device: torch.device | str = "cpu") -> torch.Tensor:
    """A SciPy CSR matrix as a torch sparse CSR tensor on ``device`` (float64)."""
    with warnings.catch_warnings():  # torch's "sparse CSR is in beta" notes
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(A.indptr).long(),
                                       torch.from_numpy(A.indices).long(),
                                       torch.from_numpy(A.data), size=A.shape, device=device)


def _cg(n, dev):
    from scipy.sparse.linalg import cg

    A = _laplacian(n)
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    cpu = lambda: cg(A, b, rtol=0.0, atol=0.0, maxiter=_CG_ITERS)  # noqa: E731  fixed iterations
    if dev is None:
        return cpu, None
    gA = torch_csr(A, dev)
    gb = torch.from_numpy(b).to(dev)
    return cpu, (lambda: _torch_cg(gA, gb, _CG_ITERS))


_N_SUBJECTS, _N_FLIPS = 20, 200


def _permutation(v, dev):
    from calipers.permutation.api import permutation_test

    y = np.random.default_rng(0).standard_normal((_N_SUBJECTS, v))

    def run(device):
        return lambda: permutation_test(y, n_permutations=_N_FLIPS, device=device)
    return run("cpu"), None if dev is None else run(str(dev))


def _mc(n, dev):
    from calipers.models import MLP
    from calipers.uncertainty.mc import mc_predict

    torch.manual_seed(0)
    model = MLP((64,), 10, dropout=0.2)
    x = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)

    def run(net, device):  # the network already on the device, as after training
        return lambda: mc_predict(net, x, n_mc=30, device=device)
    return run(model, "cpu"), None if dev is None else run(copy.deepcopy(model).to(dev), dev)


WORKLOADS: tuple[Workload, ...] = (
    Workload("matmul", "n (n×n fp32)", (64, 256, 512), (64, 256, 1024, 2048, 4096, 8192), _matmul),
    Workload("fft2", "n (n×n fp32)", (64, 256, 512), (64, 256, 1024, 2048, 4096), _fft),
    Workload("conv2d", "n (8×16×n×n, 3×3)", (16, 32, 64), (16, 64, 128, 256, 512),
             _conv(lambda n: (8, 16, n, n), (16, 16, 3, 3), torch.nn.functional.conv2d)),
    Workload("conv3d", "n (2×8×n³, 3×3×3)", (8, 16, 24), (8, 16, 32, 64, 96),
             _conv(lambda n: (2, 8, n, n, n), (8, 8, 3, 3, 3), torch.nn.functional.conv3d)),
    Workload("pdist", "n vectors × 120", (250, 500, 1000), (250, 1000, 2000, 4500, 8000),
             _pdist),
    Workload("cg", f"n (n³ Laplacian, {_CG_ITERS} iterations)", (8, 16, 24),
             (16, 32, 64, 96, 128), _cg),
    Workload("permutation", f"voxels ({_N_SUBJECTS} subjects, {_N_FLIPS} flips)",
             (500, 2000), (1000, 10_000, 100_000, 250_000), _permutation),
    Workload("mc_dropout", "samples (MLP 64-…-10, 30 passes)", (64, 256),
             (256, 4096, 32_768), _mc),
)


@dataclass(frozen=True)
class BenchResult:
    """What :func:`run_bench` measured: ``device`` character, per workload the sizes and the
    CPU and GPU seconds (None without a GPU) and the crossover size; ``note`` when no GPU."""

    device: dict[str, Any]
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crossover(sizes: list[int], cpu: list[float], gpu: list[float | None]) -> int | None:
    """The smallest size from which the GPU is faster at it and every larger size, or None.

    Examples
    --------
    >>> crossover([1, 2, 3, 4], [1, 1, 1, 1], [2, 0.5, 1.5, 0.5])
    4
    """
    best = None
    for s, c, g in zip(reversed(sizes), reversed(cpu), reversed(gpu), strict=True):
        if g is None or g >= c:
            break
        best = s
    return best


def run_bench(
    *, quick: bool = False, device: str = "auto", only: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure the device character and every workload (``only``: a subset by name)."""
    from calipers._device import resolve_device
    from calipers.gpu.monitor import cpu_name

    dev = resolve_device(device)
    gpu = dev if dev.type == "cuda" else None
    char = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
            **device_character(dev, quick=quick)}
    note = "" if gpu else f"No CUDA GPU: CPU figures only ({char['cpu']})."
    res = BenchResult(char, {}, note)
    for w in WORKLOADS:
        if only and w.name not in only:
            continue
        sizes = list(w.quick if quick else w.full)
        cpu_s, gpu_s = [], []
        for n in sizes:
            if progress is not None:
                progress(f"{w.name} {n}")
            cpu_fn, gpu_fn = w.make(n, gpu)
            cpu_s.append(_time(cpu_fn))
            gpu_s.append(None if gpu_fn is None else _time(gpu_fn, cuda=True))
        res.workloads[w.name] = {"unit": w.unit, "sizes": sizes, "cpu_s": cpu_s, "gpu_s": gpu_s,
                                 "crossover": crossover(sizes, cpu_s, gpu_s)}
    return res


def render_bench(res: BenchResult) -> str:
    """The result as plain text: the device lines, then one table row per workload and size."""
    d = res.device
    lines = [f"CPU: {d['cpu']} ({d['torch_threads']} torch threads); host memory "
             f"{d['host_bandwidth_gbs']:.1f} GB/s; matmul TFLOP/s "
             + ", ".join(f"{k} {v:.3f}" for k, v in d["cpu_matmul_tflops"].items())]
    if "gpu" in d:
        lines.append(f"GPU: {d['gpu']}; device memory {d['device_bandwidth_gbs']:.0f} GB/s, "
                     f"host→device {d['h2d_gbs']:.1f} GB/s, device→host {d['d2h_gbs']:.1f} GB/s;"
                     " matmul TFLOP/s " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                   d["gpu_matmul_tflops"].items())
                     + f"; fp64:fp32 = 1:{1 / d['gpu_fp64_to_fp32']:.1f}")
    if res.note:
        lines.append(res.note)
    lines.append(f"{'workload':<12} {'size':>8} {'CPU s':>10} {'GPU s':>10} {'GPU ×':>7}")
    for name, w in res.workloads.items():
        for n, c, g in zip(w["sizes"], w["cpu_s"], w["gpu_s"], strict=True):
            gs, x = ("—", "") if g is None else (f"{g:.5f}", f"{c / g:.1f}")
            lines.append(f"{name:<12} {n:>8} {c:>10.5f} {gs:>10} {x:>7}")
        if any(g is not None for g in w["gpu_s"]):
            cx = w["crossover"]
            lines.append(f"{'':<12} GPU wins from {w['unit'].split(' ')[0]} = {cx}" if cx
                         else f"{'':<12} GPU never ahead at these sizes")
    return "\n".join(lines)


def plot_bench(res: BenchResult, path: str) -> None:
    """One panel per workload: seconds against size, CPU and GPU, log-log, crossover marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, NullLocator

    names = list(res.workloads)
    cols = 4
    rows = max(1, -(-len(names) // cols))
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    for i, name in enumerate(names):
        w = res.workloads[name]
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.loglog(w["sizes"], w["cpu_s"], "o-", label="CPU")
        if any(g is not None for g in w["gpu_s"]):
            ax.loglog(w["sizes"], w["gpu_s"], "s-", label="GPU")
        if w["crossover"]:
            ax.axvline(w["crossover"], color="grey", ls=":")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(w["unit"], fontsize=7)
        ax.set_ylabel("seconds", fontsize=7)
        ax.set_xticks(w["sizes"], [f"{n:,}" for n in w["sizes"]])  # the sizes measured
        ax.xaxis.set_minor_locator(NullLocator())
        times = [t for t in (*w["cpu_s"], *w["gpu_s"]) if t]
        if max(times) >= 10 * min(times):  # within one decade the minor labels are all there is
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(which="both", labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(res.note or f"CPU vs {res.device.get('gpu', 'GPU')}", fontsize=9)
    fig.savefig(path, dpi=110)
