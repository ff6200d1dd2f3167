"""Wall time of the full `calipers demo` (target: <= 3 minutes on a 2-core CPU).

    python bench/bench_demo.py [--out runs/bench-demo]

Writes bench/results/demo.json with the machine, the wall time, the table and the verdict.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from calipers.experiment.runner import demo_config, run_experiment
from calipers.repro.env import fingerprint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/bench-demo")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)  # time a fresh run, not a resume
    t0 = time.perf_counter()
    res = run_experiment(demo_config(quick=args.quick), args.out)
    wall = time.perf_counter() - t0
    env = fingerprint()
    s = res.summary.to_dict()
    out = {
        "benchmark": "calipers demo" + (" --quick" if args.quick else ""),
        "wall_seconds": round(wall, 1),
        "target_seconds": 180,
        "machine": {"cpu": env.cpu, "cpu_count": env.cpu_count, "torch": env.packages["torch"],
                    "threads": env.torch_threads, "cuda": env.cuda_available},
        "accuracy": {n: {k: v for k, v in m["accuracy"].items() if k != "folds"}
                     for n, m in s["networks"].items()},
        "verdict": s["comparison"]["sentence"],
    }
    dest = Path(__file__).parent / "results" / ("demo-quick.json" if args.quick else "demo.json")
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
