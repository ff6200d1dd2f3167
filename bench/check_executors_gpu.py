"""GPU check of issue 12: do executors and permutation chunks give one run's numbers on CUDA?

1. A 3-fold cv of two small CNNs on digits with --deterministic: serial in-process vs
   ``--executor local`` (one worker per visible GPU): summary.json / metrics.csv byte-equal?
2. ``permutation_test`` on CUDA (sign flips + TFCE): one run vs 3 chunks (serial executor):
   p-maps bit-equal? And CUDA vs CPU: how many voxels' p-values differ?

Prints one JSON line; run by ``bench/gpu_checks.sh d``.
"""

from __future__ import annotations

import filecmp
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    from calipers.config import parse_config
    from calipers.executors import get_executor
    from calipers.experiment.runner import run_experiment
    from calipers.permutation import permutation_test

    raw = {"data": {"kind": "digits"}, "cv": {"folds": 3}, "mc": {"samples": 10},
           "train": {"epochs": 3, "device": "cuda", "deterministic": True},
           "networks": {"A": {"model": "calipers.models:CNN", "args": {"channels": 16}},
                        "B": {"model": "calipers.models:CNN", "args": {"channels": 32}}}}
    cfg = parse_config(raw)
    res: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        run_experiment(cfg, t / "serial", report=False)
        ex = get_executor("local", run_dir=t / "local", show_progress=False)
        res["local_workers"] = ex.workers
        run_experiment(cfg, t / "local", report=False, executor=ex)
        for name in ("summary.json", "metrics.csv"):
            res[f"cv_{name}_equal"] = filecmp.cmp(t / "serial" / name, t / "local" / name,
                                                  shallow=False)
    rng = np.random.default_rng(0)
    y = rng.normal(0.3, 1.0, size=(20, 40, 48, 40))
    kw = {"n_permutations": 2000, "tfce": True, "seed": 1}
    one = permutation_test(y, device="cuda", **kw)
    three = permutation_test(y, device="cuda", n_chunks=3, **kw)
    cpu = permutation_test(y, device="cpu", **kw)
    for f in ("p_fwe", "p_uncorrected", "p_tfce_fwe"):
        res[f"perm_cuda_chunks_{f}_equal"] = bool(np.array_equal(getattr(one, f),
                                                                 getattr(three, f)))
        res[f"perm_cuda_vs_cpu_{f}_n_differ"] = int((getattr(one, f) != getattr(cpu, f)).sum())
    print(json.dumps(res))
    (out / "executors_gpu.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results"))
