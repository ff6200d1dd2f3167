"""False-positive rate of the corrected resampled t-test (issue: at most 0.08 at alpha = 0.05).

A and B are the *same* network trained with different seeds on the same folds; the folds change
between repetitions. A valid test rejects in about 5% of repetitions or fewer; the uncorrected
paired t-test is known to reject far more often because folds overlap (Nadeau & Bengio 2003), and
we report its rate beside ours.

Run for both training engines: fold by fold (``calipers.evaluation.cv.cross_validate``) and all splits
stacked (``calipers.batched.cv.cross_validate_batched``, what ``calipers cv`` uses for MLPs).

Cost: 100 repetitions × 10 folds × 2 networks of a small MLP on the 8×8 digits (~3 minutes
fold by fold on 2 cores, well under a minute stacked). Run with ``make validate``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from calipers.batched.cv import cross_validate_batched
from calipers.data import load_digits, make_dataset
from calipers.evaluation.cv import NetworkSpec, cross_validate
from calipers.evaluation.folds import make_folds
from calipers.evaluation.train import TrainOptions
from calipers.stats.compare import corrected_ttest

N_REPS = 100
OUT = Path(__file__).parent / "results"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fold_by_fold", "stacked"])
def test_corrected_t_false_positive_rate_at_most_0_08(engine):
    torch.set_num_threads(int(os.environ.get("CALIPERS_THREADS", "2")))
    digits = load_digits()
    data = make_dataset(digits.X.reshape(len(digits.y), -1), digits.y, name="digits (flat)")
    spec = NetworkSpec("calipers.models:MLP", {"hidden": [32], "dropout": 0.1})
    nets = {"A": spec, "B": spec}  # same network; names give different seeds
    opts = TrainOptions(epochs=5, batch_size=128, lr=3e-3, device="cpu")
    p_corr, p_naive = [], []
    t0 = time.perf_counter()
    for rep in range(N_REPS):
        folds = make_folds(data.y, n_folds=10, seed=1000 + rep)
        cv = cross_validate if engine == "fold_by_fold" else cross_validate_batched
        res = cv(data, nets, folds, options=opts, n_mc=0, seed=rep)
        acc = res.scores("accuracy")
        r = corrected_ttest(acc["A"], acc["B"], test_train_ratio=folds.test_train_ratio)
        p_corr.append(r.pvalue)
        p_naive.append(scipy.stats.ttest_rel(acc["B"], acc["A"]).pvalue)
    p_corr, p_naive = np.array(p_corr), np.nan_to_num(np.array(p_naive), nan=1.0)
    fpr, fpr_naive = float(np.mean(p_corr < 0.05)), float(np.mean(p_naive < 0.05))
    lo, hi = scipy.stats.binomtest(int(np.sum(p_corr < 0.05)), N_REPS).proportion_ci()
    OUT.mkdir(exist_ok=True)
    name = "false_positives.json" if engine == "fold_by_fold" else f"false_positives_{engine}.json"
    (OUT / name).write_text(json.dumps({
        "engine": engine, "repetitions": N_REPS, "alpha": 0.05, "fpr_corrected_t": fpr,
        "fpr_corrected_t_ci95": [lo, hi], "fpr_uncorrected_t": fpr_naive,
        "seconds": time.perf_counter() - t0,
    }, indent=2))
    print(f"\n{engine}: FPR corrected t = {fpr:.3f} (95% CI {lo:.3f}-{hi:.3f}); uncorrected t = "
          f"{fpr_naive:.3f}; {N_REPS} repetitions in {time.perf_counter() - t0:.0f} s")
    assert fpr <= 0.08
