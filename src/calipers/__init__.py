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
    "CVResult": "calipers.evaluation.cv",
    "NetworkSpec": "calipers.evaluation.cv",
    "cross_validate": "calipers.experiment.engine",
    "Dataset": "calipers.data",
    "load_dataset": "calipers.data",
    "make_dataset": "calipers.data",
    "Folds": "calipers.evaluation.folds",
    "check_cv": "calipers.evaluation.folds",
    "make_folds": "calipers.evaluation.folds",
    "compare": "calipers.stats.compare",
    "corrected_ttest": "calipers.stats.compare",
    "describe_scores": "calipers.stats.compare",
    "mcnemar_test": "calipers.stats.compare",
    "fold_win_rate": "calipers.stats.compare",
    "correlated_posterior": "calipers.stats.posterior",
    "equivalence_test": "calipers.stats.posterior",
    "power_analysis": "calipers.stats.power",
    "fingerprint": "calipers.repro.env",
    "demo_config": "calipers.experiment.runner",
    "run_experiment": "calipers.experiment.runner",
    "permutation_test": "calipers.permutation",
    "TrainOptions": "calipers.evaluation.train",
    "fit": "calipers.evaluation.train",
    "mc_dropout_mode": "calipers.uncertainty.mc",
    "mc_predict": "calipers.uncertainty.mc",
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
