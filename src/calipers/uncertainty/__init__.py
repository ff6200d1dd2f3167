"""Monte Carlo dropout and the uncertainty measures (predictive entropy, mutual information,
regression log likelihood).

``measures`` holds each measure once (NumPy functions for users, torch kernels for the engines),
``streaming`` the one streaming mean/variance accumulator and running logsumexp, ``mc`` the MC
dropout engine (``mc_predict``, ``mc_dropout_mode``).
"""

from calipers.uncertainty.mc import (
    DROPOUT_TYPES,
    TASKS,
    MCClassification,
    MCRegression,
    has_dropout,
    mc_dropout_mode,
    mc_predict,
)
from calipers.uncertainty.measures import (
    gaussian_log_kernel,
    mc_log_likelihood,
    mutual_information,
    predictive_entropy,
    predictive_variance,
    regression_log_likelihood,
    torch_entropy,
    torch_mutual_info,
)
from calipers.uncertainty.streaming import StreamingLogSumExp, StreamingMoments

__all__ = [
    "DROPOUT_TYPES", "TASKS", "MCClassification", "MCRegression", "StreamingLogSumExp",
    "StreamingMoments", "gaussian_log_kernel", "has_dropout", "mc_dropout_mode",
    "mc_log_likelihood", "mc_predict", "mutual_information", "predictive_entropy",
    "predictive_variance", "regression_log_likelihood", "torch_entropy", "torch_mutual_info",
]
