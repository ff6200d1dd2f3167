"""The training loop before and after issue 13, on one GPU: utilisation, time per epoch, advice.

``old``: the loop of main 404b835 (batches gathered on the host and copied from pageable
memory, ``float(loss)`` every step, fp16 autocast with a gradient scaler). ``new``:
:func:`calipers.evaluation.train.fit` (split on the device, loss summed on the device, cuDNN
autotuning, ``amp = "auto"``: bf16 where supported). Both run inside
:func:`calipers.gpu.gpu_monitor` (NVML at 10 Hz); the figure is the mean utilisation over the
training block. ``--finder`` also times :func:`calipers.gpu.finder.find_batch_size` for the
network. Data: scikit-learn's digits with the demo's CNN, or the hippocampus volumes
(``$CALIPERS_DATA/hippocampus-msd``, default ``../shared/data``) with the U-Net 16-32-64-128.
On the CPU it runs too (no NVML figures), as a smoke test.

Run::

    .venv/bin/python bench/bench_gpu_loop.py --data digits --epochs 10
    .venv/bin/python bench/bench_gpu_loop.py --data hippocampus --epochs 10 --batch-size 8 --finder
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calipers._device import resolve_device
from calipers._seeds import seeded_torch, torch_generator
from calipers.evaluation.train import TrainOptions, _loss_fn, _targets, fit
from calipers.gpu.monitor import gpu_monitor

DATA = Path(os.environ.get("CALIPERS_DATA",
                          Path(__file__).resolve().parents[2] / "shared" / "data"))


def old_fit(model, X, y, *, task, epochs, batch_size, lr, device, seed=0):
    """main 404b835's loop (see the module docstring)."""
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    yt = _targets(y, task)
    model.to(device).train()
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = _loss_fn(task)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch_generator(seed)
    n = Xt.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb = Xt[idx].to(device, non_blocking=True)
            yb = yt[idx].to(device, non_blocking=True)
            optim.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model(xb).float(), yb)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            total += float(loss.detach()) * idx.numel()


def load(name: str):
    if name == "digits":
        from calipers.data import load_digits
        from calipers.models import CNN

        d = load_digits()
        return d.X, d.y, "classification", lambda: CNN((1, 8, 8), 10, channels=16, dropout=0.1)
    from calipers.models import UNet
    from calipers.segmentation.data import load_segmentation

    d = load_segmentation(DATA / "hippocampus-msd", kind="nifti", multiple=8)
    shape = tuple(d.X.shape[1:])
    return (d.X, d.y, "segmentation",
            lambda: UNet(shape, d.n_outputs, channels=(16, 32, 64, 128), dropout=0.1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("digits", "hippocampus"), default="digits")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--finder", action="store_true")
    ap.add_argument("--out", type=Path, help="JSON (default bench/results/gpu_loop_DATA.json)")
    a = ap.parse_args()
    device = resolve_device(a.device)
    X, y, task, make = load(a.data)
    print(f"{a.data}: X {X.shape}, {task}, device {device}", flush=True)
    out: dict = {"data": a.data, "device": str(device), "epochs": a.epochs,
                 "batch_size": a.batch_size}
    for which in ("old", "new"):
        with seeded_torch(0):
            net = make()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            with gpu_monitor(tmp, device):
                if which == "old":
                    old_fit(net, X, y, task=task, epochs=a.epochs, batch_size=a.batch_size,
                            lr=1e-3, device=device)
                else:
                    fit(net, X, y, task=task, options=TrainOptions(
                        epochs=a.epochs, batch_size=a.batch_size, lr=1e-3, device=str(device)))
                if device.type == "cuda":
                    torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            g = json.loads((Path(tmp) / "gpu.json").read_text()) \
                if (Path(tmp) / "gpu.json").is_file() else {}
        o = g.get("overall", {})
        out[which] = {"seconds": sec, "seconds_per_epoch": sec / a.epochs,
                      "util_mean": o.get("util_mean"), "util_min": o.get("util_min"),
                      "mem_peak_mib": o.get("mem_peak_mib"), "energy_j": o.get("energy_j"),
                      "loop": g.get("loop"), "advice": g.get("advice")}
        print(f"{which}: {sec / a.epochs:.3f} s/epoch, GPU busy {o.get('util_mean')} % "
              f"(min {o.get('util_min')}), peak {o.get('mem_peak_mib')} MiB, "
              f"{o.get('energy_j')} J; advice: {(g.get('advice') or {}).get('text')}", flush=True)
    if a.finder:
        from calipers.evaluation.train import resolve_amp
        from calipers.gpu.finder import find_batch_size

        with seeded_torch(0):
            net = make().to(device)
        t0 = time.perf_counter()
        choice = find_batch_size(net, torch.as_tensor(X), _targets(y, task), _loss_fn(task),
                                 device=device, amp_dtype=resolve_amp("auto", device))
        out["finder"] = {**choice.to_dict(), "seconds": time.perf_counter() - t0}
        print(f"finder: batch_size {choice.size} (largest {choice.largest}, {choice.method}), "
              f"{out['finder']['seconds']:.1f} s; probes {choice.probes}", flush=True)
    path = a.out or Path(__file__).resolve().parent / "results" / f"gpu_loop_{a.data}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
