"""The verdict's error rates and power by simulation, where the true difference is known.

Generator: two classes (balanced), two groups of ``P`` Gaussian features, G1 and G2, independent
given the class; in group g the class means differ by ``delta_g / sqrt(P)`` in every feature
(Mahalanobis separation ``delta_g``, Bayes accuracy ``Phi(delta_g / 2)``). Network A is a
scikit-learn learner on G1, network B one on G2: different learners, whose errors and training-set
variance differ, while the truth is set by ``delta_1`` and ``delta_2``.

- **Null, same algorithm**: GaussianNB on G1 vs GaussianNB on G2 with ``delta_2 = delta_1``: the
  expected accuracies are equal by symmetry (an exact null with different learners).
- **Null, different algorithms**: LDA on G1 vs GaussianNB on G2 with ``delta_2 = delta_1``; the
  true difference is measured (near 0, reported).
- **Power curve**: GaussianNB on both with ``delta_2`` raised so that B is ahead by 1-6 points.

The true difference of every setting is measured on fresh data: ``N_TRUTH`` training sets of the
CV training size (0.9 n), each scored on its own fresh test set of ``N_TEST`` samples (the same
noise for both groups, so the test-set error nearly cancels in B − A).
Every data set is cross-validated 10×10 (calipers' stratified folds); its first repeat is the
10-fold design. The verdict is :func:`calipers.stats.compare` with the given margin.

Run (a few minutes on one core)::

    OMP_NUM_THREADS=1 nice -n 10 python -m pytest -q -s -m slow validate/test_verdict_simulation.py

It writes ``validate/results/verdict_simulation.{json,md}``. ``CALIPERS_SIM_REPS`` sets the number
of data sets per setting (default 150).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.naive_bayes import GaussianNB

from calipers.evaluation.folds import make_folds
from calipers.stats import compare

N = 500  # samples per data set
P = 5  # features per group
N_REPS = int(os.environ.get("CALIPERS_SIM_REPS", "150"))
N_TRUTH, N_TEST = 200, 5_000
ROPE = 5.0  # margin, accuracy points (n = 500 cannot resolve less: see the detectable column)
ALPHA = 0.05
DELTA_1 = 2 * scipy.stats.norm.ppf(0.80)  # A: Bayes accuracy 80 %
OUT = Path(__file__).parent / "results"

LEARNERS = {"nb": GaussianNB, "lda": LinearDiscriminantAnalysis}
# name: (learner A, learner B, Bayes accuracy of B's features)
SETTINGS = {
    "null (NB on G1 vs NB on G2)": ("nb", "nb", 0.80),
    "null (LDA on G1 vs NB on G2)": ("lda", "nb", 0.80),
    "B ahead ~2 points": ("nb", "nb", 0.82),
    "B ahead ~4 points": ("nb", "nb", 0.84),
    "B ahead ~6 points": ("nb", "nb", 0.86),
    "B ahead ~8 points": ("nb", "nb", 0.88),
    "B ahead ~11 points": ("nb", "nb", 0.91),
}


def _data(rng: np.random.Generator, n: int, delta_2: float, *, common: bool = False
          ) -> tuple[np.ndarray, ...]:  # fmt: skip
    """G1, G2, y; ``common`` gives both groups the same noise (fresh test sets only: the
    test-set error then nearly cancels in B - A)."""
    y = rng.permutation(np.arange(n) % 2)
    shift = (y[:, None] - 0.5) / np.sqrt(P)
    noise = rng.normal(size=(n, P))
    g1 = noise + DELTA_1 * shift
    g2 = (noise if common else rng.normal(size=(n, P))) + delta_2 * shift
    return g1, g2, y


def _acc(learner: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> float:
    return float(np.mean(LEARNERS[learner]().fit(x, y).predict(xt) == yt))


def _truth(rng, la: str, lb: str, delta_2: float) -> tuple[float, float]:
    """E[acc B - acc A] at the CV training size, and its Monte-Carlo standard error."""
    n_train = int(0.9 * N)
    d = []
    for _ in range(N_TRUTH):
        t1, t2, yt = _data(rng, N_TEST, delta_2, common=True)
        g1, g2, y = _data(rng, n_train, delta_2)
        d.append(_acc(lb, g2, y, t2, yt) - _acc(la, g1, y, t1, yt))
    return float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(N_TRUTH))


def _cv_scores(rng, la: str, lb: str, delta_2: float, seed: int) -> tuple[np.ndarray, ...]:
    g1, g2, y = _data(rng, N, delta_2)
    folds = make_folds(y, n_folds=10, n_repeats=10, seed=seed)
    a = np.array([_acc(la, g1[tr], y[tr], g1[te], y[te]) for tr, te in folds])
    b = np.array([_acc(lb, g2[tr], y[tr], g2[te], y[te]) for tr, te in folds])
    return a, b, folds.test_train_ratio


def _verdicts(a: np.ndarray, b: np.ndarray, ratio: float, n_repeats: int) -> tuple[str, float]:
    pair = compare({"A": a, "B": b}, test_train_ratio=ratio, n_repeats=n_repeats, rope=ROPE,
                   alpha=ALPHA).pairs[0]  # fmt: skip
    outcome = pair.outcome if pair.outcome != "better" else f"{pair.chosen} better"
    return outcome, pair.detectable_diff


def simulate(n_reps: int = N_REPS, seed: int = 0) -> dict:
    """Rates of each verdict per setting and design; see the module docstring."""
    rows = []
    for k, (name, (la, lb, acc_b)) in enumerate(SETTINGS.items()):
        rng = np.random.default_rng([seed, k])
        delta_2 = 2 * scipy.stats.norm.ppf(acc_b)
        true, true_se = _truth(rng, la, lb, delta_2)
        res = {"10-fold": [], "10x10-fold": []}
        for rep in range(n_reps):
            a, b, ratio = _cv_scores(rng, la, lb, delta_2, seed=1000 * k + rep)
            res["10-fold"].append(_verdicts(a[:10], b[:10], ratio, 1))
            res["10x10-fold"].append(_verdicts(a, b, ratio, 10))
        for design, out in res.items():
            outcomes = [o for o, _ in out]
            rate = {o: outcomes.count(o) / n_reps
                    for o in ("B better", "A better", "equivalent", "inconclusive")}
            rows.append({"setting": name, "design": design, "true_diff": true,
                         "true_diff_se": true_se, "n": n_reps, **rate,
                         "median_detectable": float(np.median([d for _, d in out]))})
    return {"n_samples": N, "features_per_group": P, "alpha": ALPHA, "rope_points": ROPE,
            "n_truth": N_TRUTH, "n_test_truth": N_TEST, "rows": rows}  # fmt: skip


def _table(result: dict) -> str:
    head = ("| setting | design | true B − A (points) | B better | A better | equivalent "
            "(±{:g}) | inconclusive | median detectable (points) |\n|---|---|---|---|---|---|---|---|"
            ).format(result["rope_points"])  # fmt: skip
    lines = [head]
    for r in result["rows"]:
        lines.append(
            f"| {r['setting']} | {r['design']} | {100 * r['true_diff']:+.2f} ± "
            f"{100 * r['true_diff_se']:.2f} | {r['B better']:.1%} | {r['A better']:.1%} | "
            f"{r['equivalent']:.1%} | {r['inconclusive']:.1%} | "
            f"{100 * r['median_detectable']:.1f} |"
        )
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_verdict_error_rates_and_power():
    t0 = time.perf_counter()
    result = simulate()
    result["seconds"] = time.perf_counter() - t0
    OUT.mkdir(exist_ok=True)
    (OUT / "verdict_simulation.json").write_text(json.dumps(result, indent=2))
    (OUT / "verdict_simulation.md").write_text(_table(result))
    print("\n" + _table(result) + f"\n{result['seconds']:.0f} s")
    n = result["rows"][0]["n"]
    slack = 2 * np.sqrt(ALPHA * (1 - ALPHA) / n)  # two binomial standard errors
    for r in result["rows"]:
        if r["setting"].startswith("null (NB"):  # the exact null
            assert r["B better"] <= ALPHA + slack, r
        if abs(r["true_diff"]) > ROPE / 100:
            assert r["equivalent"] <= ALPHA + slack, r
