"""MC dropout on a 3-D U-Net: chunked, reduce-on-the-fly maps against the naive approach.

T = 20 passes of ``calipers.models:UNet`` (channels 16-32-64-128, dropout 0.1) on one
48×64×48 volume, batch 1, CPU. Both methods compute the same maps (mean, entropy, MI, std of
the winning class):

* ``naive``: ``torch.stack([net(x) for t in range(T)])`` → softmax → reductions (all T
  outputs held at once).
* ``chunked``: ``calipers.segmentation.mc_segment(net, x, n_mc=T, chunk_size=1)`` (2C + 1
  running maps, NOTE [Voxel maps reduced on the fly]).

Memory: each method runs in its own fresh process with ``MALLOC_MMAP_THRESHOLD_=65536`` (large
blocks are mmap'ed and returned to the OS on free, so RSS follows live memory). A warm-up pass
measures the network's own activation peak; the *outputs* peak is the run's peak RSS above the
idle baseline minus that activation peak (noisy on a shared CPU; the whole-run peak above
baseline, activations included, is reported too), and the output state counted from the code.
On CUDA (``--device cuda``), ``torch.cuda.max_memory_allocated`` gives exact figures: the run's
peak above the allocated baseline, minus the peak of one plain forward pass (the network's
activations), is what the *outputs* need. (The CPU profiler's ``profile_memory`` was tried as a
CPU counterpart and rejected: it reported a 7 MB activation peak for a network whose first
feature map alone is 9.4 MB, so it misses oneDNN's allocations.) Time: median of 3.

Run::

    .venv/bin/python bench/bench_seg_mc.py            # writes bench/results/seg_mc.json
    .venv/bin/python bench/bench_seg_mc.py --quick    # T = 4, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPE = (48, 64, 48)


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _naive(net, x, n_mc: int):
    import torch

    from calipers.uncertainty.mc import mc_dropout_mode

    with torch.inference_mode(), mc_dropout_mode(net):
        logits = torch.stack([net(x) for _ in range(n_mc)])          # (T, 1, C, *S)
        p = torch.softmax(logits, dim=2)
        mean = p.mean(0)
        ent = -torch.special.xlogy(mean, mean).sum(1)
        exp_ent = -torch.special.xlogy(p, p).sum(2).mean(0)
        seg = mean.argmax(1, keepdim=True)
        std = p.std(0, unbiased=False).gather(1, seg)
    return mean, ent, ent - exp_ent, std


def _worker(method: str, n_mc: int, repeats: int, device: str = "cpu") -> dict:
    import numpy as np
    import torch

    from calipers.models import UNet
    from calipers.segmentation import mc_segment

    torch.manual_seed(0)
    net = UNet((1, *SHAPE), 3, channels=(16, 32, 64, 128), dropout=0.1).eval().to(device)
    x = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32)
    xt = torch.from_numpy(x)[None].to(device)

    def run():
        if method == "naive":
            _naive(net, xt, n_mc)
        else:
            mc_segment(net, x, n_mc=n_mc, chunk_size=1, device=device)

    def one_pass():
        with torch.inference_mode():
            net(xt)

    exact_mb = {}
    if device.startswith("cuda"):
        exact = {}
        run()  # warm-up (cuDNN autotuning, allocator)
        for name, fn in (("activation", one_pass), ("run", run)):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            exact[name] = torch.cuda.max_memory_allocated() - base
        exact_mb = {"exact_activation_peak_mb": exact["activation"] / 2**20,
                    "exact_run_peak_mb": exact["run"] / 2**20,
                    "exact_outputs_peak_mb": (exact["run"] - exact["activation"]) / 2**20}
    base = _rss_now()
    with torch.inference_mode():
        net(xt)  # warm-up: the activation peak of one pass
    act_peak = _peak() - base
    base = _rss_now()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    run_peak = _peak() - base
    voxels = int(np.prod(SHAPE))
    return {"method": method, "n_mc": n_mc, "device": device, **exact_mb,
            "seconds_median": statistics.median(times),
            "seconds_all": times, "activation_peak_mb": act_peak / 2**20,
            "run_peak_above_baseline_mb": run_peak / 2**20,
            "outputs_peak_mb": (run_peak - act_peak) / 2**20,  # noisy; may come out < 0
            "one_output_mb": 3 * voxels * 4 / 2**20,
            # Output state held at the peak, counted from the code (float32, C = 3 classes):
            # naive: T logits + T probabilities; chunked: 2C + 1 running maps + one pass's
            # logits, probabilities, delta and entropy temporaries (~4C + 1).
            "outputs_counted_mb": (2 * n_mc * 3 if method == "naive" else 2 * 3 + 1 + 4 * 3 + 1)
            * voxels * 4 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", choices=("naive", "chunked"))
    ap.add_argument("--n-mc", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.n_mc, args.repeats, args.device)))
        return
    n_mc, repeats = (4, 1) if args.quick else (args.n_mc, args.repeats)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    res = {}
    for method in ("naive", "chunked"):
        cmd = [sys.executable, __file__, "--worker", method, "--n-mc", str(n_mc),
               "--repeats", str(repeats), "--device", args.device]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        res[method] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = res["chunked"]["outputs_counted_mb"] / res["naive"]["outputs_counted_mb"]
    import torch

    report = {"shape": SHAPE, "n_mc": n_mc, "device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
              "exact_outputs_ratio_chunked_over_naive":
                  res["chunked"]["exact_outputs_peak_mb"] / res["naive"]["exact_outputs_peak_mb"]
                  if args.device.startswith("cuda") else None,
              "threads": torch.get_num_threads(), "machine": platform.processor() or
              platform.machine(), "cpu_count": os.cpu_count(), **res,
              "outputs_counted_ratio_chunked_over_naive": ratio,
              "run_peak_ratio_chunked_over_naive": res["chunked"]["run_peak_above_baseline_mb"]
              / res["naive"]["run_peak_above_baseline_mb"],
              "time_ratio_chunked_over_naive": res["chunked"]["seconds_median"]
              / res["naive"]["seconds_median"]}
    print(json.dumps(report, indent=2))
    if not args.quick:
        suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
        path = Path(__file__).parent / "results" / f"seg_mc{suffix}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
