"""GPU check of the permutation engine (issue 17), one short self-contained run; one JSON line.

Whole brain (nilearn's 2 mm MNI mask, 235,375 voxels), n = 20 seeded-random subjects:
1. max-T, 10,000 sign flips on the GPU (goal <= 0.1 s of compute), and the same run on the CPU:
   the null maxima agree to float32 rounding and the p-maps (FWE, uncorrected) are the same but
   for the rare voxel whose statistic ties a null value within float32 rounding;
2. TFCE, 1,000 sign flips with ``device="cuda"`` (goal <= 5 s; the statistic maps come from the
   GPU, TFCE's union-find runs on the CPU cores), against the same run on the CPU.

    python bench/gpu_permutation_check.py                  # on the GPU machine (< 3 min)
    python bench/gpu_permutation_check.py --cpu-smoke      # anywhere: tiny sizes, CPU only

Timings are medians of 3 after a warm-up; "compute" is the wall time of ``permutation_test``
minus the float64 preparation on the CPU (``prepare_contrast``), measured separately.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from calipers.permutation import permutation_test
from calipers.permutation.engine import prepare_contrast


def _median_time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _compare(a, b, n_perm: int) -> dict:
    """CPU vs device: null maxima (relative) and p-maps (fraction of voxels, largest gap)."""
    out = {"max_null_max_rel_diff": float(np.max(np.abs(a.max_null[0] - b.max_null[0])
                                                 / np.maximum(np.abs(a.max_null[0]), 1e-12)))}
    for key in ("p_fwe", "p_uncorrected", "p_tfce_fwe"):
        pa, pb = getattr(a, key, None), getattr(b, key, None)
        if pa is None or pb is None:
            continue
        d = np.abs(np.asarray(pa) - np.asarray(pb))
        out[f"{key}_frac_differ"] = float(np.mean(d > 0))
        out[f"{key}_max_diff_in_counts"] = float(d.max() * n_perm)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (a test)")
    ap.add_argument("--n-flips", type=int, default=10_000)
    ap.add_argument("--tfce-perm", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from nilearn.datasets import load_mni152_brain_mask

    mask = np.asarray(load_mni152_brain_mask(resolution=2).dataobj) > 0
    if args.cpu_smoke:
        keep = np.zeros_like(mask)
        keep[30:50, 30:50, 30:40] = True
        mask &= keep
        args.n_flips, args.tfce_perm, args.repeat = 300, 20, 1
        device = "cpu"
        from calipers.permutation import engine

        engine._HAVE_NUMBA = False  # the "device" runs take the torch code path a GPU takes
        _cpu = permutation_test

        def reference(*a, **kw):  # ... and the CPU reference the numba path
            engine._HAVE_NUMBA = True
            try:
                return _cpu(*a, **kw)
            finally:
                engine._HAVE_NUMBA = False
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --cpu-smoke for the CPU test")
        device = "cuda"
        reference = permutation_test
    n, v = 20, int(mask.sum())
    y = np.random.default_rng(0).normal(0.1, 1.0, size=(n, v)).astype(np.float32).astype(float)
    res: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                 "cpu_threads": torch.get_num_threads(), "n_subjects": n, "n_voxels": v,
                 "n_flips": args.n_flips, "tfce_perm": args.tfce_perm,
                 "load_start": os.getloadavg()[0]}

    permutation_test(y[:, :4000], n_permutations=256, device=device)  # warm-up, JIT, CUDA init
    prep_s, _ = _median_time(lambda: prepare_contrast(
        y, np.ones((n, 1)), np.ones((1, 1)), flip=True, two_sided=False), args.repeat)
    wall, dev_max = _median_time(
        lambda: permutation_test(y, n_permutations=args.n_flips, device=device, seed=0),
        args.repeat)
    res.update(max_t_wall_s=wall, max_t_prep_s=prep_s, max_t_compute_s=wall - prep_s,
               max_t_goal_s=0.1)
    t = time.perf_counter()
    cpu_max = reference(y, n_permutations=args.n_flips, device="cpu", seed=0)
    res["max_t_cpu_wall_s"] = time.perf_counter() - t
    res["max_t_vs_cpu"] = _compare(cpu_max, dev_max, args.n_flips)

    slab = mask.copy()
    slab[:, :, 40:] = False
    permutation_test(y[:, : slab.sum()], mask=slab, tfce=True, n_permutations=4, device=device)
    wall, dev_tfce = _median_time(
        lambda: permutation_test(y, mask=mask, tfce=True, n_permutations=args.tfce_perm,
                                 device=device, seed=0), min(2, args.repeat))
    res.update(tfce_wall_s=wall, tfce_goal_s=5.0)
    t = time.perf_counter()
    cpu_tfce = reference(y, mask=mask, tfce=True, n_permutations=args.tfce_perm,
                                device="cpu", seed=0)
    res["tfce_cpu_wall_s"] = time.perf_counter() - t
    res["tfce_vs_cpu"] = _compare(cpu_tfce, dev_tfce, args.tfce_perm)
    cmp_ = res["max_t_vs_cpu"]
    res["same_p_maps"] = bool(
        cmp_["max_null_max_rel_diff"] < 1e-5 and cmp_["p_fwe_frac_differ"] < 1e-3
        and cmp_["p_uncorrected_max_diff_in_counts"] <= 2
        and res["tfce_vs_cpu"]["p_tfce_fwe_frac_differ"] < 1e-3)
    if device == "cuda":
        res["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    res["load_end"] = os.getloadavg()[0]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
