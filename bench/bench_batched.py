"""Batched vs sequential training of a 12-point grid × 20 splits (UCI, Gal & Ghahramani).

Trains the inner-split networks of :func:`calipers.search.search_regression` (4 dropout rates ×
3 taus × 20 splits = 240 MLPs, 50 hidden units, batch 128) for a few epochs, once stacked
(``batched=True``) and once one network after another (``batched=False``), in the same process,
and checks the two give the same weights. Time per epoch is constant, so the ratio holds for the
4000-epoch protocol. Writes ``bench/results/batched.json``.

    .venv/bin/python bench/bench_batched.py [--datasets bostonHousing yacht] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from calipers._seeds import child_seed
from calipers.batched import MLPArch, fit_members
from calipers.search import SearchOptions, _prepare, grid_points, inner_split
from calipers.splits import read_splits
from calipers.train import TrainOptions

UCI = Path(os.environ.get("CALIPERS_UCI", Path(__file__).resolve().parents[2] / "shared/data/uci"))
ALL = ["bostonHousing", "concrete", "energy", "kin8nm", "yacht"]


def load_uci(name: str):
    d = UCI / name
    data = np.loadtxt(d / "data.txt")
    feat = np.loadtxt(d / "index_features.txt", dtype=int)
    tgt = int(np.loadtxt(d / "index_target.txt"))
    grid = {"dropout": np.loadtxt(d / "dropout_rates.txt").tolist(),
            "tau": np.loadtxt(d / "tau_values.txt").tolist()}
    return data[:, feat], data[:, tgt], read_splits(d, n_samples=len(data)), grid


def members_for(name: str, opts: SearchOptions):
    X, y, folds, grid = load_uci(name)
    pts = grid_points(grid)
    pairs = [_prepare(X, y, *inner_split(tr), pt, opts, child_seed(0, "search", j, g))
             for j, tr in enumerate(folds.train) for g, pt in enumerate(pts)]
    return [m for m, _ in pairs], MLPArch(X.shape[1], (50,), 1, True)


def bench_one(name: str, epochs: int, device: str) -> dict:
    members, arch = members_for(name, SearchOptions())
    opts = TrainOptions(epochs=epochs, batch_size=128, lr=1e-3, device=device)
    load0 = os.getloadavg()
    t = time.perf_counter()
    fb = fit_members(members, arch, options=opts, batched=True)
    tb = time.perf_counter() - t
    t = time.perf_counter()
    fs = fit_members(members, arch, options=opts, batched=False)
    ts = time.perf_counter() - t
    diff = max(float(np.abs(a.weights[0][0] - b.weights[0][0]).max())
               for a, b in zip(fb, fs, strict=True))
    return {"dataset": name, "n_models": len(members), "n_train": len(members[0].X),
            "epochs": epochs, "batched_s": tb, "sequential_s": ts, "speedup": ts / tb,
            "batched_s_per_epoch": tb / epochs, "sequential_s_per_epoch": ts / epochs,
            "max_abs_weight_diff": diff, "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=ALL)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (shared 2-core CI box)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "batched.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.datasets:
        ep = max(1, a.epochs // 5) if name == "kin8nm" else a.epochs
        rows.append(bench_one(name, ep, a.device))
        print(json.dumps(rows[-1]))
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor()
    out = {"machine": {"device": a.device, "name": dev, "threads": torch.get_num_threads(),
                       "cpus": os.cpu_count(), "torch": torch.__version__}, "results": rows}
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
