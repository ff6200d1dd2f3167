"""Benchmark calipers' MC dropout against torch-uncertainty's MC-dropout wrapper.

Same model, same inputs, same number of passes T, same process; the methods take turns in each
repeat (so background load hits all of them alike) and the median of the repeats after a
warm-up is reported. Every method returns the same quantities: predictive mean, predictive
entropy, expected entropy, mutual information and per-class std.

* ``calipers``: ``calipers.uncertainty.mc.mc_predict(model, x, n_mc=T, cache_trunk=...)``.
* ``torch-uncertainty``: ``mc_dropout(model, num_estimators=T, on_batch=True)`` in eval mode
  (repeats the batch T times, one forward), followed by the same reductions in torch.
  Its batch is chosen so that a forward call sees as many rows as calipers' default
  (``batch × T ≈ 8192``).

Run::

    .venv/bin/python bench/bench_mc_dropout.py            # full run, writes bench/results/
    .venv/bin/python bench/bench_mc_dropout.py --quick    # a fast smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from calipers._seeds import seeded_torch
from calipers.models import CNN
from calipers.uncertainty.mc import mc_predict

N_MC = 50
ROWS = 8192  # rows per forward call for every method (calipers' default bound)
RESULTS = Path(__file__).parent / "results" / "mc_dropout.json"


def load_peer():
    """torch-uncertainty's ``mc_dropout`` factory and how it was imported.

    torch-uncertainty 0.13's package ``__init__`` imports ``lightning`` (its ``[cpu]``/``[gpu]``
    extra). Without it, the module that holds the wrapper (it needs only torch and einops) is
    loaded from the installed file, unchanged.
    """
    try:
        from torch_uncertainty.methods import mc_dropout

        return mc_dropout, "torch_uncertainty.methods.mc_dropout"
    except ImportError:
        spec = importlib.util.find_spec("torch_uncertainty")
        if spec is None:
            sys.exit("torch-uncertainty is not installed: pip install torch-uncertainty")
        path = Path(next(iter(spec.submodule_search_locations))) / "methods" / "mc_dropout.py"
        mod_spec = importlib.util.spec_from_file_location("_tu_mc_dropout", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module.mc_dropout, f"{path} (loaded by file: lightning not installed)"


def peer_predict(wrapper, x, n_mc, batch):
    """torch-uncertainty's forward plus the reductions calipers returns."""
    keys = ("proba", "entropy", "expected_entropy", "mutual_info", "std")
    parts = {k: [] for k in keys}
    with torch.inference_mode():
        for lo in range(0, x.shape[0], batch):
            xb = x[lo:lo + batch]
            logits = wrapper(xb)  # (T·B, C), pass-major
            p = torch.softmax(logits.reshape(n_mc, xb.shape[0], -1), dim=-1)
            pbar = p.mean(0)
            ent = -torch.special.xlogy(pbar, pbar).sum(-1)
            exp_ent = -torch.special.xlogy(p, p).sum(-1).mean(0)
            values = (pbar, ent, exp_ent, (ent - exp_ent).clamp_min(0), p.std(0, correction=0))
            for k, v in zip(keys, values, strict=True):
                parts[k].append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(methods, device, *, repeats, warmup):
    """Median wall time per method; methods take turns within each repeat."""
    times = {name: [] for name in methods}
    outputs = {}
    for r in range(warmup + repeats):
        for name, fn in methods.items():
            sync(device)
            t0 = time.perf_counter()
            outputs[name] = fn()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times, outputs


def run_case(name, model, x, *, calipers_batch, peer_batch, peer_factory, device, repeats, warmup):
    model = model.to(device)
    wrapper = peer_factory(copy.deepcopy(model), num_estimators=N_MC, on_batch=True)
    wrapper.eval()  # torch-uncertainty: core model eval, its dropout modules train
    x = x.to(device)
    methods = {
        "torch_uncertainty": lambda: peer_predict(wrapper, x, N_MC, peer_batch),
        "calipers_no_cache": lambda: mc_predict(model, x, n_mc=N_MC, batch_size=calipers_batch,
                                                cache_trunk=False),
        "calipers_cache": lambda: mc_predict(model, x, n_mc=N_MC, batch_size=calipers_batch,
                                             cache_trunk=True),
    }
    load = os.getloadavg()
    times, out = time_methods(methods, device, repeats=repeats, warmup=warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = x.shape[0]
    tu = med["torch_uncertainty"]
    peer_pred = out["torch_uncertainty"]["proba"].argmax(1)
    return {
        "name": name,
        "model": repr(model).replace("\n", " "),
        "n_samples": n,
        "input_shape": list(x.shape[1:]),
        "n_mc": N_MC,
        "calipers_batch_size": calipers_batch,
        "peer_batch": peer_batch,
        "median_s": med,
        "all_s": times,
        "loadavg_before_after": [load, os.getloadavg()],
        "throughput_sample_passes_per_s": {k: n * N_MC / v for k, v in med.items()},
        "ratio_vs_torch_uncertainty": {k: tu / v for k, v in med.items()},
        "cache_speedup": med["calipers_no_cache"] / med["calipers_cache"],
        "check": {
            "max_abs_proba_diff_cache_vs_no_cache": float(np.abs(
                out["calipers_cache"].proba - out["calipers_no_cache"].proba).max()),
            "argmax_agreement_calipers_vs_peer": float(
                (out["calipers_cache"].prediction == peer_pred).mean()),
        },
    }


def machine(device, peer_origin):
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_uncertainty": importlib.metadata.version("torch-uncertainty"),
        "peer_import": peer_origin,
        "device": str(device),
        "loadavg_start": os.getloadavg(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def table(cases):
    lines = [f"{'case':<28}{'method':<20}{'median s':>10}{'samples·passes/s':>18}"
             f"{'× t-u':>8}"]
    for c in cases:
        for k, v in c["median_s"].items():
            lines.append(f"{c['name']:<28}{k:<20}{v:>10.3f}"
                         f"{c['throughput_sample_passes_per_s'][k]:>18,.0f}"
                         f"{c['ratio_vs_torch_uncertainty'][k]:>8.2f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, 3 repeats, no file")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; quick 3)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--out", type=Path, default=None, help=f"JSON path (default {RESULTS})")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    peer_factory, peer_origin = load_peer()
    info = machine(device, peer_origin)  # before the runs: records the load average at start

    digits = load_digits().images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    n_digits, n_big = (256, 8) if args.quick else (len(digits), 64)
    with seeded_torch(0):
        demo = CNN((1, 8, 8), 10, channels=16, dropout=0.1)
        big = CNN((3, 32, 32), 10, channels=64, dropout=0.1)
        x_big = torch.rand(n_big, 3, 32, 32)
    common = dict(peer_factory=peer_factory, device=device, repeats=repeats, warmup=1)
    cases = [
        run_case("demo CNN c=16, digits 8x8", demo, torch.from_numpy(digits[:n_digits]),
                 calipers_batch=1024, peer_batch=ROWS // N_MC, **common),
        # 3·32·32 images with 64/128 channels: 800 rows per call keeps activations ~0.4 GB.
        run_case("CNN c=64, 3x32x32", big, x_big, calipers_batch=16, peer_batch=16, **common),
    ]
    result = {
        "benchmark": "mc_dropout",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "n_mc": N_MC,
        "repeats": repeats,
        "warmup": 1,
        "note": "untrained networks (timing does not depend on the weights); wall-clock medians",
        "machine": info,
        "cases": cases,
        "targets": {
            "calipers_no_cache_ge_1x_tu_demo": cases[0]["ratio_vs_torch_uncertainty"][
                "calipers_no_cache"] >= 1.0,
            "calipers_cache_ge_3x_tu_demo": cases[0]["ratio_vs_torch_uncertainty"][
                "calipers_cache"] >= 3.0,
        },
    }
    result["machine"]["loadavg_end"] = os.getloadavg()
    print(table(cases))
    print("targets:", result["targets"])
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
