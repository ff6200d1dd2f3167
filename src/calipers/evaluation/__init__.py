"""Folds, predefined splits, the fold task, training one network, and the metrics."""
