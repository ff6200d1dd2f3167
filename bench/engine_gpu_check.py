"""GPU check of the experiment engine (issue 11): seeded_torch on CUDA, the engine on CUDA
(stacked MLP task and fold tasks), resume through a recording executor, CPU vs CUDA metrics.

    python bench/engine_gpu_check.py --device cuda --out /tmp/engine_gpu.json

Needs torch, numpy, scipy, scikit-learn, numba (no pydantic/nibabel/monai: it calls the engine,
not run_experiment). Prints one JSON object and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calipers._seeds import seeded_torch
from calipers.data import make_dataset
from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.train import TrainOptions
from calipers.experiment.engine import cross_validate


class Recording:
    def __init__(self):
        self.keys = []

    def map(self, tasks, *, on_done=None):
        out = []
        for t in tasks:
            self.keys.append(t.key)
            res = t.run()
            out.append(res)
            if on_done is not None:
                on_done(t, res)
        return out


def _seeded(device: str) -> dict:
    dev = torch.device(device)
    if dev.type != "cuda":
        return {"skipped": "no CUDA"}
    before = torch.cuda.get_rng_state(dev)
    with seeded_torch(5, dev):
        a = torch.rand(4, device=dev)
    with seeded_torch(5, "cuda"):  # no index: the current device
        b = torch.rand(4, device=dev)
    return {"same_draws": bool(torch.equal(a, b)),
            "cuda_state_restored": bool(torch.equal(before, torch.cuda.get_rng_state(dev)))}


def _run(device: str, run_dir: Path | None, executor=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 1, 8, 8)).astype(np.float32)
    y = (X.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    data = make_dataset(X, y, name="tiny")
    nets = {"A": NetworkSpec("calipers.models:MLP", {"hidden": [32], "dropout": 0.1}),
            "B": NetworkSpec("calipers.models:CNN", {"channels": 8, "dropout": 0.1})}
    opts = TrainOptions(epochs=3, batch_size=32, lr=5e-3, device=device)
    return cross_validate(data, nets, 3, options=opts, n_mc=5, seed=1, stack=True,
                          run_dir=run_dir, executor=executor)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                 "seeded_torch": _seeded(args.device)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        first = _run(args.device, Path(tmp) / "gpu", Recording())
        out["seconds_first"] = round(time.perf_counter() - t0, 2)
        (Path(tmp) / "gpu/B/fold-01/metrics.json").unlink()
        rec = Recording()
        again = _run(args.device, Path(tmp) / "gpu", rec)
        out["rerun_keys"] = rec.keys
        out["rerun_same"] = all(
            a.metrics == pytest_approx(b.metrics)
            for n in first.results for a, b in zip(first.results[n], again.results[n],
                                                   strict=True))
        cpu = _run("cpu", None)
        out["cpu_vs_device_max_abs_diff"] = {
            n: max(abs(a.metrics[m] - b.metrics[m]) for a, b in zip(first.results[n],
                                                                    cpu.results[n], strict=True)
                   for m in ("accuracy", "nll"))
            for n in first.results}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def pytest_approx(d: dict) -> dict:
    """Metrics equal to 1e-6 relative (CUDA kernels may differ in the last bits between runs)."""
    class _Approx(dict):
        def __eq__(self, other):
            return all(abs(other[k] - v) <= 1e-6 * max(1.0, abs(v)) for k, v in self.items())
    return _Approx(d)


if __name__ == "__main__":
    main()
