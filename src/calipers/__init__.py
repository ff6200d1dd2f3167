"""calipers: measure your networks with error bars.

Cross-validate PyTorch networks on identical folds, estimate their uncertainty with Monte Carlo
dropout, compare them with corrected paired tests and a verdict, and run randomise-compatible
permutation inference on CPU or GPU.

The public names below are imported on first use (PEP 562), so ``import calipers`` and the
command line start fast; ``from calipers import cross_validate`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "CVResult": "calipers.cv",
    "NetworkSpec": "calipers.cv",
    "cross_validate": "calipers.cv",
    "Dataset": "calipers.data",
    "load_dataset": "calipers.data",
    "make_dataset": "calipers.data",
    "Folds": "calipers.folds",
    "check_cv": "calipers.folds",
    "make_folds": "calipers.folds",
    "compare": "calipers.compare",
    "corrected_ttest": "calipers.compare",
    "describe_scores": "calipers.compare",
    "mcnemar_test": "calipers.compare",
    "prob_b_better": "calipers.compare",
    "fingerprint": "calipers.env",
    "demo_config": "calipers.experiment",
    "run_experiment": "calipers.experiment",
    "permutation_test": "calipers.permutation",
    "TrainOptions": "calipers.train",
    "fit": "calipers.train",
    "mc_dropout_mode": "calipers.uncertainty",
    "mc_predict": "calipers.uncertainty",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'calipers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
