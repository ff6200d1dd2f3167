"""calipers' overhead per fold over each framework's own fit + predict (issue 21: <= 5 %).

    OMP_NUM_THREADS=1 python bench/bench_learners.py [--reps 3] [--epochs 5]

For one fold of digits (split 0 of 10-fold CV: 1,617 training, 180 test images), no MC
passes, each adapter is timed two ways, ``reps`` times each, and the medians compared:

- own: the framework's own fit and one predict on the same arrays, in the same process as the
  model lives in (scikit-learn and the PyTorch recipe here; Keras inside the backend's worker
  process, as a user's script would run it);
- calipers: :func:`calipers.learners.fold.run_learner_fold` (preprocessing, fit, predict,
  shape and probability checks, metrics), with the Keras worker already started.

Writes bench/results/learners.json with the machine. Overhead = calipers / own − 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
sys.path.insert(0, str(EXAMPLES))


def _own_keras(X, y, Xte, epochs: int, seed: int) -> float:
    """Runs in the Keras worker: the user's own Keras fit + predict; returns seconds."""
    import keras
    import keras_models

    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    model = keras_models.cnn(X.shape[1:], 10)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, y, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    model.predict(Xte, verbose=0, batch_size=1024)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()

    import torch
    import torch_recipe
    from sklearn.linear_model import LogisticRegression

    from calipers._paths import add_model_dir
    from calipers.data import load_dataset
    from calipers.evaluation.cv import FoldSpec, NetworkSpec
    from calipers.evaluation.folds import make_folds
    from calipers.evaluation.train import TrainOptions
    from calipers.learners import FitSettings, FoldData
    from calipers.learners import keras as kl
    from calipers.learners.fold import run_learner_fold
    from calipers.repro.env import fingerprint

    add_model_dir(EXAMPLES)
    data = load_dataset("digits")
    tr, te = next(iter(make_folds(data.y, n_folds=10, seed=0)))
    X, y, Xte = data.X[tr], data.y[tr], data.X[te]
    opts = TrainOptions(epochs=args.epochs, batch_size=64, lr=2e-3, device="cpu")

    def own_sklearn() -> float:
        t0 = time.perf_counter()
        est = LogisticRegression(C=0.1, max_iter=2000, random_state=0)
        est.fit(X.reshape(len(X), -1), y)
        est.predict_proba(Xte.reshape(len(Xte), -1))
        return time.perf_counter() - t0

    def own_recipe() -> float:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        fold = FoldData(X, y, "classification", 10, (1, 8, 8))
        model = torch_recipe.fit(fold, seed=0, device="cpu",
                                 settings=FitSettings(epochs=args.epochs, batch_size=64,
                                                      lr=0.05))
        model.eval()
        with torch.inference_mode():
            torch.softmax(model(torch.as_tensor(Xte)), dim=1)
        return time.perf_counter() - t0

    def own_keras() -> float:
        return kl._call("torch", _own_keras, X, y, Xte, args.epochs, 0)

    specs = {
        "sklearn": NetworkSpec("sklearn.linear_model:LogisticRegression",
                               {"C": 0.1, "max_iter": 2000}, learner="sklearn"),
        "function": NetworkSpec(torch_recipe.fit, learner="function", train={"lr": 0.05}),
        "keras (torch backend)": NetworkSpec("keras_models:cnn", learner="keras"),
    }
    own = {"sklearn": own_sklearn, "function": own_recipe, "keras (torch backend)": own_keras}

    def ours(name: str) -> float:
        spec = FoldSpec(name, specs[name], 0, tr, te, 0, opts, 0, None)
        t0 = time.perf_counter()
        run_learner_fold(spec, data)
        return time.perf_counter() - t0

    ours("keras (torch backend)")  # start the worker (a user's script imports Keras too)
    own_keras()
    rows = {}
    for name in specs:
        a, b = [], []
        for _ in range(args.reps):  # interleaved, so drifts in machine load hit both
            a.append(own[name]())
            b.append(ours(name))
        ma, mb = statistics.median(a), statistics.median(b)
        rows[name] = {"own_s": [round(x, 3) for x in a], "calipers_s": [round(x, 3) for x in b],
                      "own_median_s": round(ma, 3), "calipers_median_s": round(mb, 3),
                      "overhead": round(mb / ma - 1, 3)}
        print(f"{name:24s} own {ma:7.3f} s  calipers {mb:7.3f} s  overhead "
              f"{100 * (mb / ma - 1):+.1f} %", flush=True)
    env = fingerprint()
    out = {"benchmark": "calipers.learners overhead per fold (no MC passes)",
           "epochs": args.epochs, "reps": args.reps,
           "machine": {"cpu": env.cpu, "cpu_count": env.cpu_count,
                       "threads": env.torch_threads,
                       "note": "shared 2-core machine, busy with other jobs"},
           "results": rows}
    kl.shutdown_workers()
    (HERE / "results" / "learners.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
