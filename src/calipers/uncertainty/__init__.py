"""Monte Carlo dropout and the uncertainty measures (predictive entropy, mutual information,
regression log likelihood)."""

from calipers.uncertainty.mc import (
    DROPOUT_TYPES,
    TASKS,
    MCClassification,
    MCRegression,
    has_dropout,
    mc_dropout_mode,
    mc_predict,
    mutual_information,
    predictive_entropy,
    regression_log_likelihood,
)

__all__ = [
    "DROPOUT_TYPES", "TASKS", "MCClassification", "MCRegression", "has_dropout",
    "mc_dropout_mode", "mc_predict", "mutual_information", "predictive_entropy",
    "regression_log_likelihood",
]
