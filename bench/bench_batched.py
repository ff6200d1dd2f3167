"""Batched vs sequential training of a 12-point grid × 20 splits (UCI, Gal & Ghahramani).

Trains the inner-split networks of
:func:`calipers.batched.search.search_regression` (4 dropout rates × 3 taus × 20 splits = 240 MLPs,
50 hidden units, batch 128) for a few epochs, in the same process:

- ``batched``: all stacked into one model (:func:`calipers.batched.engine.fit_members`);
- ``one_by_one``: the same engine, one network per group (``batched=False``; same weights);
- ``fit``: one network after another with :func:`calipers.evaluation.train.fit` on a
  ``calipers.models.MLP`` (input dropout, Adam with the member's weight decay), the way a
  PyTorch user trains one model; this is the "sequential" of the issue.

Times per epoch are slopes between two run lengths (the median of 3), so one-off set-up (reported
apart) does not count, and the ratios hold for the 4000-epoch protocol. Writes
``bench/results/batched.json``.

    .venv/bin/python bench/bench_batched.py [--datasets bostonHousing yacht] [--epochs 40]
        [--threads 1] [--repeats 3] [--device cuda]
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

from calipers._seeds import child_seed, seeded_torch
from calipers.batched.engine import MLPArch, fit_members
from calipers.batched.search import SearchOptions, _prepare, grid_points, inner_split
from calipers.evaluation.splits import read_splits
from calipers.evaluation.train import TrainOptions, fit
from calipers.models import MLP
from calipers.repro.env import _cpu_name

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


def _fit_one_by_one(members, arch, epochs: int, device: str) -> float:
    """calipers.evaluation.train.fit on each member in turn; returns seconds."""
    t = time.perf_counter()
    for m in members:
        with seeded_torch(m.seed):
            net = MLP((arch.n_inputs,), arch.n_outputs, hidden=arch.hidden, dropout=m.dropout,
                      input_dropout=arch.input_dropout)
            fit(net, m.X, m.y, task="regression", seed=m.seed,
                options=TrainOptions(epochs=epochs, batch_size=128, lr=1e-3,
                                     weight_decay=m.weight_decay, device=device))
    return time.perf_counter() - t


def _per_epoch(run, e1: int, e2: int, repeats: int) -> tuple[float, float, list[float]]:
    """Seconds per epoch: the slope between runs of e1 and e2 epochs (so one-off set-up does not
    count), the median of ``repeats`` (robust to a shared machine's bursts either way); the
    matching set-up cost; and all the slopes."""
    slopes, setups = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        run(e1)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        run(e2)
        t2 = time.perf_counter() - t
        slopes.append((t2 - t1) / (e2 - e1))
        setups.append(max(t1 - e1 * slopes[-1], 0.0))
    mid = int(np.argsort(slopes)[len(slopes) // 2])
    return slopes[mid], setups[mid], slopes


def bench_one(name: str, epochs: int, device: str, repeats: int = 3) -> dict:
    """Per-epoch times of the three ways: ``batched`` between 1 and ``epochs`` epochs, the two
    one-by-one ways (10–20× slower) between 1 and ``max(2, epochs // 8)``."""
    members, arch = members_for(name, SearchOptions())
    opts = lambda e: TrainOptions(epochs=e, batch_size=128, lr=1e-3, device=device)  # noqa: E731
    # warm up with the same shapes (the first call builds oneDNN kernels: seconds, once)
    fit_members(members, arch, options=opts(1))
    load0 = os.getloadavg()
    slow = max(2, epochs // 8)
    tb, setup_b, all_b = _per_epoch(lambda e: fit_members(members, arch, options=opts(e)),
                                    1, epochs, repeats)
    ts, setup_s, all_s = _per_epoch(
        lambda e: fit_members(members, arch, options=opts(e), batched=False), 1, slow, repeats)
    tf, setup_f, all_f = _per_epoch(lambda e: _fit_one_by_one(members, arch, e, device), 1,
                                    slow, repeats)
    fb = fit_members(members, arch, options=opts(2))
    fs = fit_members(members, arch, options=opts(2), batched=False)
    diff = max(float(np.abs(a.weights[0][0] - b.weights[0][0]).max())
               for a, b in zip(fb, fs, strict=True))
    return {"dataset": name, "n_models": len(members), "n_train": len(members[0].X),
            "epochs": [1, epochs], "one_by_one_epochs": [1, slow],
            "speedup_vs_fit": tf / tb, "speedup_vs_one_by_one": ts / tb,
            "batched_s_per_epoch": tb, "one_by_one_s_per_epoch": ts, "fit_s_per_epoch": tf,
            "setup_s": {"batched": setup_b, "one_by_one": setup_s, "fit": setup_f},
            "all_s_per_epoch": {"batched": all_b, "one_by_one": all_s, "fit": all_f},
            "protocol_train_hours": {"batched": tb * 4000 / 3600, "fit": tf * 4000 / 3600},
            "max_abs_weight_diff": diff, "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=ALL)
    ap.add_argument("--epochs", type=int, default=40, help="batched run length (kin8nm: / 5)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="timings per way; the fastest counts")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "batched.json"))
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    rows = []
    for name in a.datasets:
        ep = max(2, a.epochs // 5) if name == "kin8nm" else a.epochs
        rows.append(bench_one(name, ep, a.device, repeats=a.repeats))
        print(json.dumps(rows[-1]))
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor()
    out = {"machine": {"device": a.device, "name": dev or _cpu_name(),
                       "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                       "torch": torch.__version__, "repeats": a.repeats}, "results": rows}
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
