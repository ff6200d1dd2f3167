"""Benchmark calipers' TFCE and cluster statistics against nilearn and niimath on the MNI mask.

Maps: Gaussian noise on the grid of nilearn's MNI152 2 mm brain mask, smoothed with FWHM 2.5
voxels, scaled so each map's in-mask maximum is 5 (a smooth t-like map). TFCE with H = 2,
E = 0.5, 6-connectivity; calipers uses one dh for all maps (the first map's max/100, as randomise
does for permutations).

* ``calipers``: ``tfce(maps, mask, dh=...)`` on a batch (numba, ``prange`` over maps), with all
  numba threads and with one; also one map per call, as an engine without batching would.
* ``nilearn``: ``nilearn.mass_univariate._utils.calculate_tfce`` (what ``permuted_ols``
  calls; private, used here only to time it), one-sided, fewer maps.
* ``niimath``: ``niimath 4d.nii -tfce 2 0.5 6`` on a 4-D file (OpenMP over volumes), including
  its NIfTI read/write.
* clusters: ``cluster_max`` at threshold 2.3 against ``scipy.ndimage.label`` + ``bincount``.

JIT: the compile time of the first call in a fresh process with an empty numba cache, and the
first-call time when the cache is already filled (each in a subprocess), reported separately.
The machine may be shared: the load average before and after is recorded; times are the minimum
and median over repeats.

Run::

    .venv/bin/python bench/bench_tfce.py            # full run, writes bench/results/tfce.json
    .venv/bin/python bench/bench_tfce.py --quick    # a fast smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

RESULTS = Path(__file__).parent / "results" / "tfce.json"
FWHM_VOXELS = 2.5
TOP = 5.0
CLUSTER_THRESHOLD = 2.3

_JIT_SNIPPET = """
import time, numpy as np
t0 = time.perf_counter()
from calipers.permutation.tfce import tfce
from calipers.permutation.clusters import cluster_max
t1 = time.perf_counter()
mask = np.ones((6, 6, 6), bool)
s = np.random.default_rng(0).standard_normal((2, 216))
tfce(s, mask)
t2 = time.perf_counter()
cluster_max(s, mask, threshold=1.0)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def load_mask():
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    return np.asarray(img.dataobj).astype(bool), img.affine


def make_maps(mask, n_maps, seed=0):
    """Smooth Gaussian maps (n_maps, V), each scaled to an in-mask maximum of TOP."""
    rng = np.random.default_rng(seed)
    sigma = FWHM_VOXELS / np.sqrt(8 * np.log(2))
    maps = np.empty((n_maps, int(mask.sum())))
    for p in range(n_maps):
        vol = ndimage.gaussian_filter(rng.standard_normal(mask.shape), sigma)
        values = vol[mask]
        maps[p] = values / values.max() * TOP
    return maps


def timed(fn, repeats, clock=time.perf_counter):
    """(min, median) seconds of ``fn()`` over ``repeats`` calls on ``clock``, and the result."""
    times, result = [], None
    for _ in range(repeats):
        start = clock()
        result = fn()
        times.append(clock() - start)
    return min(times), statistics.median(times), result


def jit_times():
    """First-call seconds in fresh processes: (import, tfce, cluster_max) cold and warm cache."""
    cache = tempfile.mkdtemp(prefix="calipers-numba-")
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    out = {}
    try:
        for label in ("cold_cache", "warm_cache"):
            run = subprocess.run(
                [sys.executable, "-c", _JIT_SNIPPET], env=env, capture_output=True, text=True
            )
            run.check_returncode()
            imp, tf, cl = map(float, run.stdout.split())
            out[label] = {"import_s": imp, "tfce_first_call_s": tf, "cluster_first_call_s": cl}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def bench_calipers(maps, mask, dh, repeats):
    import numba

    from calipers.permutation.tfce import tfce

    n = len(maps)
    out = {"n_maps": n, "numba_threads": numba.get_num_threads()}
    tfce(maps[:2], mask, dh=dh)  # compile / load outside the timing
    best, med, result = timed(lambda: tfce(maps, mask, dh=dh), repeats)
    out["batch_ms_per_map"] = {"min": best / n * 1e3, "median": med / n * 1e3}
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        best, med, _ = timed(lambda: tfce(maps, mask, dh=dh), repeats)
    finally:
        numba.set_num_threads(threads)
    out["batch_1_thread_ms_per_map"] = {"min": best / n * 1e3, "median": med / n * 1e3}
    numba.set_num_threads(1)
    try:  # CPU time of the process: less sensitive than wall time to other jobs on the machine
        best, med, _ = timed(lambda: tfce(maps, mask, dh=dh), repeats, clock=time.process_time)
    finally:
        numba.set_num_threads(threads)
    out["batch_1_thread_cpu_ms_per_map"] = {"min": best / n * 1e3, "median": med / n * 1e3}
    k = min(n, 10)
    best, med, _ = timed(lambda: [tfce(m, mask, dh=dh) for m in maps[:k]], repeats)
    out["one_map_per_call_ms"] = {"min": best / k * 1e3, "median": med / k * 1e3}
    return out, result


def bench_nilearn(maps, mask, n_maps, repeats):
    from nilearn.mass_univariate._utils import calculate_tfce

    from calipers.permutation.tfce import tfce

    vols = np.zeros((*mask.shape, n_maps))
    for p in range(n_maps):
        vols[mask, p] = maps[p]
    structure = ndimage.generate_binary_structure(3, 1)
    best, med, ref = timed(
        lambda: calculate_tfce(vols, structure, E=0.5, H=2, two_sided_test=False), repeats
    )
    ours = tfce(maps[:n_maps], mask)  # per-map dh = max/100, as nilearn
    diffs = []
    for p in range(n_maps):
        keep = np.arange(maps.shape[1]) != np.argmax(maps[p])  # nilearn adds max**H there
        r = ref[..., p][mask][keep]
        diffs.append(np.max(np.abs(ours[p][keep] - r) / np.maximum(np.abs(r), 1e-12)))
    return {
        "n_maps": n_maps,
        "ms_per_map": {"min": best / n_maps * 1e3, "median": med / n_maps * 1e3},
        "max_rel_diff_vs_calipers_except_max_voxel": float(max(diffs)),
    }


def bench_niimath(maps, mask, affine, n_maps, repeats):
    try:
        import nibabel as nib
        import niimath
    except ImportError:
        return {"skipped": "niimath or nibabel not installed"}
    from calipers.permutation.tfce import tfce

    binary = Path(niimath.__file__).parent / "bin" / "niimath"
    vols = np.zeros((*mask.shape, n_maps), np.float32)
    for p in range(n_maps):
        vols[mask, p] = maps[p]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "t.nii", Path(tmp) / "o.nii"
        nib.save(nib.Nifti1Image(vols, affine), src)
        cmd = [binary, src, "-tfce", "2", "0.5", "6", dst, "-odt", "float"]
        env = {**os.environ, "FSLOUTPUTTYPE": "NIFTI"}
        best, med, _ = timed(lambda: subprocess.run(cmd, check=True, env=env), repeats)
        ref = np.asarray(nib.load(dst).dataobj, dtype=np.float64)
    ours = tfce(vols[mask].T, mask).astype(np.float64)  # float32 values, per-map dh like niimath
    rel = []
    for p in range(n_maps):
        r = ref[..., p][mask]
        rel.append(np.abs(ours[p] - r) / np.maximum(np.abs(r), 1e-12))
    rel = np.concatenate(rel)
    return {
        "n_maps": n_maps,
        "ms_per_map_including_nifti_io": {"min": best / n_maps * 1e3, "median": med / n_maps * 1e3},
        "fraction_of_voxels_within_1e-5_rel": float(np.mean(rel <= 1e-5)),
        "note": "differences sit at voxels equal to a float32 threshold (niimath counts >= h)",
    }


def bench_clusters(maps, mask, repeats):
    from calipers.permutation.clusters import cluster_max

    n = len(maps)
    cluster_max(maps[:2], mask, threshold=CLUSTER_THRESHOLD)
    best, med, (extent, _) = timed(
        lambda: cluster_max(maps, mask, threshold=CLUSTER_THRESHOLD), repeats
    )
    structure = ndimage.generate_binary_structure(3, 1)
    vol = np.zeros(mask.shape)

    def scipy_max(k):
        res = []
        for m in maps[:k]:
            vol[mask] = m
            labels, _ = ndimage.label(vol > CLUSTER_THRESHOLD, structure=structure)
            res.append((np.bincount(labels.ravel())[1:].max(initial=0),))
        return res

    k = min(n, 20)
    s_best, s_med, ref = timed(lambda: scipy_max(k), repeats)
    assert all(int(extent[p]) == int(ref[p][0]) for p in range(k)), "cluster extents disagree"
    return {
        "threshold": CLUSTER_THRESHOLD,
        "calipers_batch_ms_per_map": {"min": best / n * 1e3, "median": med / n * 1e3},
        "scipy_ndimage_label_ms_per_map": {"min": s_best / k * 1e3, "median": s_med / k * 1e3},
    }


def machine():
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    import numba

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numba_threading_layer_env": numba.config.THREADING_LAYER,
        **{k: version(k) for k in ("numpy", "scipy", "nilearn", "niimath")},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few maps, no JSON written")
    parser.add_argument("--n-maps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    n_maps, n_nilearn, n_niimath = (args.n_maps, 2, 10) if not args.quick else (8, 1, 2)
    repeats = args.repeats if not args.quick else 1

    load_before = os.getloadavg()
    mask, affine = load_mask()
    maps = make_maps(mask, n_maps)
    dh = maps[0].max() / 100.0
    report = {
        "what": "TFCE (H=2, E=0.5, 6-conn) per map on the MNI152 2 mm brain mask",
        "grid": list(mask.shape),
        "n_voxels": int(mask.sum()),
        "maps": f"Gaussian noise smoothed FWHM {FWHM_VOXELS} voxels, in-mask max {TOP}",
        "machine": machine(),
        "jit": jit_times(),
    }
    report["calipers_tfce"], _ = bench_calipers(maps, mask, dh, repeats)
    report["nilearn_calculate_tfce"] = bench_nilearn(maps, mask, n_nilearn, 1)
    report["niimath_tfce"] = bench_niimath(maps, mask, affine, n_niimath, repeats)
    report["clusters"] = bench_clusters(maps, mask, repeats)
    report["load_average_before_after"] = [load_before[0], os.getloadavg()[0]]
    print_table(report)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS}")


def print_table(r):
    c = r["calipers_tfce"]
    rows = [
        ("calipers tfce, batch, all threads", c["batch_ms_per_map"]),
        ("calipers tfce, batch, 1 thread", c["batch_1_thread_ms_per_map"]),
        ("calipers tfce, batch, 1 thread, CPU time", c["batch_1_thread_cpu_ms_per_map"]),
        ("calipers tfce, one map per call", c["one_map_per_call_ms"]),
        ("nilearn calculate_tfce", r["nilearn_calculate_tfce"]["ms_per_map"]),
    ]
    if "ms_per_map_including_nifti_io" in r["niimath_tfce"]:
        rows.append(
            ("niimath -tfce (incl. NIfTI I/O)", r["niimath_tfce"]["ms_per_map_including_nifti_io"])
        )
    rows += [
        ("calipers cluster_max, batch", r["clusters"]["calipers_batch_ms_per_map"]),
        ("scipy ndimage.label per map", r["clusters"]["scipy_ndimage_label_ms_per_map"]),
    ]
    print(f"{r['n_voxels']} voxels, grid {r['grid']}, {r['machine']['cpu_count']} CPUs")
    print(f"{'method':40s} {'ms/map min':>12s} {'median':>10s}")
    for name, t in rows:
        print(f"{name:40s} {t['min']:12.1f} {t['median']:10.1f}")
    for label, j in r["jit"].items():
        print(
            f"first call, {label}: tfce {j['tfce_first_call_s']:.2f} s, "
            f"cluster_max {j['cluster_first_call_s']:.2f} s (import {j['import_s']:.2f} s)"
        )
    print(f"load average before/after: {r['load_average_before_after']}")


if __name__ == "__main__":
    main()
