"""Benchmark: calipers permutation engine vs nilearn ``permuted_ols`` on the whole MNI brain.

Problem (issue 3, design §6): nilearn's 2 mm MNI brain mask (235,375 voxels), n = 20 random
subjects, one-sample sign flipping; GLM with two nuisance covariates; TFCE. Both tools run in this
process on the same data; nilearn runs fewer permutations (``--nilearn-perm``) and is scaled to
ms per permutation (its cost is linear in the count). The GEMM limit is 2·n·V flops per
permutation at the sgemm rate measured here with a torch matmul.

    python bench/bench_permutation.py                 # CPU, writes bench/results/permutation.json
    python bench/bench_permutation.py --device cuda --n-perm 10000 --tfce-perm 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from calipers.permutation import permutation_test
from calipers.repro.env import _cpu_name

RESULTS = Path(__file__).resolve().parent / "results"
REPEAT = 3  # every timing (calipers and nilearn alike) is the best of REPEAT runs: VMs are noisy
TARGETS = {"max_t_speedup": 50.0, "glm_speedup": 20.0, "tfce_ms_per_perm": 100.0}


def _sgemm_gflops(device: torch.device, size: int = 2048, reps: int = 5) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    _sync(device)
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CPU_SECONDS: list[float] = []  # process CPU time of the best repeat of each _timed call


def _timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` runs; its process CPU time goes to ``_CPU_SECONDS``."""
    best, best_cpu = np.inf, np.inf
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, best_cpu = wall, time.process_time() - c
    _CPU_SECONDS.append(best_cpu)
    return best


def _nilearn_ms(y, tested, confounds, intercept, n_perm) -> tuple[float, float]:
    from nilearn.mass_univariate import permuted_ols

    def run():
        permuted_ols(
            tested, y, confounding_vars=confounds, model_intercept=intercept, n_perm=n_perm,
            two_sided_test=False, random_state=0, n_jobs=1, verbose=0, output_type="dict",
        )

    ms = _timed(run, repeat=REPEAT) / n_perm * 1e3
    return ms, _CPU_SECONDS[-1] / n_perm * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-perm", type=int, default=1000)
    ap.add_argument("--nilearn-perm", type=int, default=100)
    ap.add_argument("--tfce-perm", type=int, default=100)
    ap.add_argument("--skip-nilearn", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice, the number of cores)")
    ap.add_argument("--out", default=str(RESULTS / "permutation.json"))
    args = ap.parse_args()

    from nilearn.datasets import load_mni152_brain_mask

    device = torch.device(args.device)
    if args.threads:  # the same limit for torch, numba and NumPy's BLAS (nilearn)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
        try:
            import numba

            numba.set_num_threads(args.threads)
        except ImportError:
            pass
    threads = torch.get_num_threads()
    mask = np.asarray(load_mni152_brain_mask(resolution=2).dataobj) > 0
    n, v = 20, int(mask.sum())
    rng = np.random.default_rng(0)
    y = rng.normal(size=(n, v)).astype(np.float32).astype(np.float64)
    load_before = os.getloadavg()

    gflops = _sgemm_gflops(device)
    gemm_limit_ms = 2 * n * v / (gflops * 1e9) * 1e3
    permutation_test(y[:, :5000], n_permutations=64, device=device)  # warm-up

    res = {}
    t = _timed(lambda: permutation_test(y, n_permutations=args.n_perm, device=device),
               repeat=REPEAT)
    res["max_t_ms_per_perm"] = t / args.n_perm * 1e3
    res["max_t_cpu_ms_per_perm"] = _CPU_SECONDS[-1] / args.n_perm * 1e3
    x = np.c_[rng.normal(size=n), np.ones(n), rng.normal(size=(n, 2))]
    t = _timed(lambda: permutation_test(y, x, [[1, 0, 0, 0]], n_permutations=args.n_perm,
                                        device=device), repeat=REPEAT)
    res["glm_ms_per_perm"] = t / args.n_perm * 1e3
    res["glm_cpu_ms_per_perm"] = _CPU_SECONDS[-1] / args.n_perm * 1e3
    small = mask[40:50]
    permutation_test(y[:, : small.sum()], mask=small, tfce=True, n_permutations=4,
                     device=device)  # compile numba kernels outside the timing
    out = {}

    def run_tfce():
        out["r"] = permutation_test(y, mask=mask, tfce=True, n_permutations=args.tfce_perm,
                                    device=device)

    t = _timed(run_tfce)
    res["tfce_ms_per_perm"] = t / args.tfce_perm * 1e3
    res["tfce_cpu_ms_per_perm"] = _CPU_SECONDS[-1] / args.tfce_perm * 1e3
    res["tfce_work_bytes"] = out["r"].work_bytes

    if not args.skip_nilearn:
        res["nilearn_max_t_ms_per_perm"], res["nilearn_max_t_cpu_ms_per_perm"] = _nilearn_ms(
            y, np.ones((n, 1)), None, False, args.nilearn_perm
        )
        res["nilearn_glm_ms_per_perm"], res["nilearn_glm_cpu_ms_per_perm"] = _nilearn_ms(
            y, x[:, :1], x[:, 2:], True, args.nilearn_perm
        )
        for key in ("max_t", "glm"):
            res[f"{key}_speedup"] = res[f"nilearn_{key}_ms_per_perm"] / res[f"{key}_ms_per_perm"]
            res[f"{key}_cpu_time_ratio"] = (
                res[f"nilearn_{key}_cpu_ms_per_perm"] / res[f"{key}_cpu_ms_per_perm"]
            )

    report = {
        "machine": {
            "cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": threads,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "torch": torch.__version__, "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "problem": {"n_subjects": n, "n_voxels": v, "n_perm": args.n_perm,
                    "nilearn_perm": args.nilearn_perm, "tfce_perm": args.tfce_perm},
        "sgemm_gflops": gflops,
        "gemm_limit_ms_per_perm": gemm_limit_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **res,
        "targets": TARGETS,
    }
    _write(Path(args.out), report)
    _print_table(report)


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)


def _print_table(r: dict) -> None:
    m = r["machine"]
    print(f"{m['cpu']} ({m['cores']} cores, torch threads {m['torch_threads']}), {m['device']}")
    print(f"load average before/after: {m['load_average_before']} / {m['load_average_after']}")
    print(f"{r['problem']['n_voxels']} voxels, n = {r['problem']['n_subjects']}; "
          f"sgemm {r['sgemm_gflops']:.1f} GFLOP/s -> GEMM limit "
          f"{r['gemm_limit_ms_per_perm']:.3f} ms/perm")
    rows = [
        ("max-T (sign flips)", r["max_t_ms_per_perm"], r.get("nilearn_max_t_ms_per_perm"),
         r.get("max_t_speedup"), "≥ 50×"),
        ("  (process CPU time)", r["max_t_cpu_ms_per_perm"],
         r.get("nilearn_max_t_cpu_ms_per_perm"), r.get("max_t_cpu_time_ratio"), ""),
        ("GLM, 2 nuisance (FL)", r["glm_ms_per_perm"], r.get("nilearn_glm_ms_per_perm"),
         r.get("glm_speedup"), "≥ 20×"),
        ("  (process CPU time)", r["glm_cpu_ms_per_perm"],
         r.get("nilearn_glm_cpu_ms_per_perm"), r.get("glm_cpu_time_ratio"), ""),
        ("TFCE (whole pipeline)", r["tfce_ms_per_perm"], None, None, "≤ 100 ms"),
        ("  (process CPU time)", r["tfce_cpu_ms_per_perm"], None, None, ""),
    ]
    print(f"{'test':24s} {'calipers ms/perm':>17s} {'nilearn ms/perm':>16s} {'ratio':>8s}  target")
    for name, ours, theirs, ratio, target in rows:
        theirs_s = f"{theirs:16.3f}" if theirs is not None else f"{'—':>16s}"
        ratio_s = f"{ratio:7.1f}×" if ratio is not None else f"{'—':>8s}"
        print(f"{name:24s} {ours:17.3f} {theirs_s} {ratio_s}  {target}")
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB; TFCE working buffers "
          f"{r['tfce_work_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
