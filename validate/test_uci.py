"""Gal & Ghahramani's UCI regression table, reproduced with the 2018 grid-search protocol.

Runs the documented configs ``examples/uci/<name>.toml`` through :func:`run_experiment` (the
same as ``calipers cv examples/uci/<name>.toml --out runs/uci-<name>``): the paper's 20 splits,
per split a 4 × 3 grid (dropout × tau) trained on the first 80 % of the training split and chosen
by validation MC log likelihood, a refit on the whole training split, T = 10,000 MC test passes;
1 hidden layer of 50 units, batch 128, Adam, 4000 epochs; every split and grid point trained at
once (``calipers.batched.engine``).

    make validate-uci                                 # full protocol, all five data sets
    CALIPERS_UCI_EPOCHS=400 CALIPERS_UCI_DATASETS=yacht,bostonHousing make validate-uci

Run folders go to ``runs/uci-<name>[-e<epochs>-mc<T>-sel<T_select>]`` (resumable); the table row to
``bench/results/batched_uci_<name>.json``. The published-number check (within 2 standard
errors, or better) is asserted only for the full protocol (epochs ≥ 4000, T = 10,000).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from calipers.config import load_config
from calipers.experiment.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]
UCI = Path(os.environ.get("CALIPERS_UCI", ROOT.parent / "shared" / "data" / "uci"))

# Grid-search results from the paper repository's readme (see ../shared/data/uci/SOURCE.md):
# test RMSE ± s.e. and test log likelihood ± s.e. over the 20 splits.
PUBLISHED = {
    "bostonHousing": (2.90, 0.18, -2.40, 0.04),
    "concrete": (4.82, 0.16, -2.93, 0.02),
    "energy": (0.54, 0.06, -1.21, 0.01),
    "kin8nm": (0.08, 0.00, 1.14, 0.01),
    "yacht": (0.67, 0.05, -1.25, 0.01),
}
EPOCHS = int(os.environ.get("CALIPERS_UCI_EPOCHS", "4000"))
N_MC = int(os.environ.get("CALIPERS_UCI_NMC", "10000"))
N_MC_SELECT = os.environ.get("CALIPERS_UCI_NMC_SELECT")  # default: the config's (1000)
DATASETS = os.environ.get("CALIPERS_UCI_DATASETS", ",".join(PUBLISHED)).split(",")
DEVICE = os.environ.get("CALIPERS_DEVICE", "auto")


def _config(name: str):
    cfg = load_config(ROOT / "examples" / "uci" / f"{name}.toml")
    data = cfg.data.model_copy(update={"path": str(UCI / name)})
    cv = cfg.cv.model_copy(update={"splits": str(UCI / name)})
    train = cfg.train.model_copy(update={"epochs": EPOCHS, "device": DEVICE})
    mc = cfg.mc.model_copy(update={"samples": N_MC})
    search = cfg.search
    if N_MC_SELECT is not None:
        search = search.model_copy(update={"mc_samples": int(N_MC_SELECT)})
    return cfg.model_copy(update={"data": data, "cv": cv, "train": train, "mc": mc,
                                  "search": search})


def run_dataset(name: str) -> dict:
    cfg = _config(name)
    t0 = time.perf_counter()
    tag = "" if (EPOCHS, N_MC, N_MC_SELECT) == (4000, 10000, None) else \
        f"-e{EPOCHS}-mc{N_MC}-sel{N_MC_SELECT or 'cfg'}"
    res = run_experiment(cfg, ROOT / "runs" / f"uci-{name}{tag}", report=True)
    seconds = time.perf_counter() - t0
    folds = res.cv.results["mc_dropout"]

    def mean_se(key: str) -> dict:
        v = np.array([r.metrics[key] for r in folds])
        return {"mean": float(v.mean()), "se": float(v.std() / math.sqrt(len(v)))}  # as the paper

    out = {
        "dataset": name, "config": cfg.to_toml(), "seconds": seconds,
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "device": DEVICE,
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "summary": {"test_mc_rmse": mean_se("rmse"), "test_ll": mean_se("log_likelihood"),
                    "test_rmse_weight_scaling": mean_se("rmse_weight_scaling")},
        "chosen": [{"dropout": r.metrics["chosen_dropout"], "tau": r.metrics["chosen_tau"]}
                   for r in folds],
        "per_split": {k: [r.metrics[k] for r in folds]
                      for k in ("rmse", "log_likelihood", "rmse_weight_scaling")},
        "published": dict(zip(("rmse", "rmse_se", "ll", "ll_se"), PUBLISHED[name], strict=True)),
    }
    path = ROOT / "bench" / "results" / f"batched_uci_{name}{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
def test_uci_table(name):
    if not (UCI / name).is_dir():
        pytest.skip(f"{UCI / name} not present (the UCI data live in ../shared/data/uci)")
    out = run_dataset(name)
    rmse, ll = out["summary"]["test_mc_rmse"], out["summary"]["test_ll"]
    print(f"\n{name}: MC RMSE {rmse['mean']:.3f} ± {rmse['se']:.3f}, LL {ll['mean']:.3f} ± "
          f"{ll['se']:.3f} in {out['seconds']:.0f} s (published {PUBLISHED[name]})")
    assert np.isfinite(rmse["mean"]) and np.isfinite(ll["mean"])
    if EPOCHS >= 4000 and N_MC >= 10000:
        p_rmse, p_rmse_se, p_ll, p_ll_se = PUBLISHED[name]
        se_r = max(np.hypot(rmse["se"], p_rmse_se), 1e-3)
        se_l = max(np.hypot(ll["se"], p_ll_se), 1e-3)
        assert rmse["mean"] <= p_rmse + 2 * se_r, (rmse, PUBLISHED[name])
        assert ll["mean"] >= p_ll - 2 * se_l, (ll, PUBLISHED[name])
