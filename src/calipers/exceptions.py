"""Warnings and errors raised by calipers."""

from __future__ import annotations

__all__ = ["CalipersWarning", "ConfigError", "DataError", "FoldMismatchError", "TrainingError"]


class CalipersWarning(UserWarning):
    """calipers acted for the user (a fallback, a dropped column); the result is still right."""


class ConfigError(ValueError):
    """An experiment configuration is invalid; the message names the key path."""


class DataError(ValueError):
    """Input data are missing, malformed or inconsistent."""


class FoldMismatchError(ValueError):
    """Two runs were made on different folds and cannot be compared pairwise."""


class TrainingError(RuntimeError):
    """Training failed at run time (the loss became NaN or infinite); not a data error."""
