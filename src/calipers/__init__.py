"""calipers: measure your networks with error bars.

Cross-validate PyTorch networks on identical folds, estimate their uncertainty with Monte Carlo
dropout, compare them with corrected paired tests and a verdict, and run randomise-compatible
permutation inference on CPU or GPU.
"""

from calipers.compare import compare, corrected_ttest, describe_scores, mcnemar_test, prob_b_better
from calipers.cv import CVResult, NetworkSpec, cross_validate
from calipers.data import Dataset, load_dataset, make_dataset
from calipers.env import fingerprint
from calipers.experiment import demo_config, run_experiment
from calipers.folds import Folds, check_cv, make_folds
from calipers.permutation import permutation_test
from calipers.train import TrainOptions, fit
from calipers.uncertainty import mc_dropout_mode, mc_predict

__version__ = "0.1.0"

__all__ = [
    "CVResult",
    "Dataset",
    "Folds",
    "NetworkSpec",
    "TrainOptions",
    "check_cv",
    "compare",
    "corrected_ttest",
    "cross_validate",
    "demo_config",
    "describe_scores",
    "fingerprint",
    "fit",
    "load_dataset",
    "make_dataset",
    "make_folds",
    "mc_dropout_mode",
    "mc_predict",
    "mcnemar_test",
    "permutation_test",
    "prob_b_better",
    "run_experiment",
]
