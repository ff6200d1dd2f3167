"""Small input checks shared by the public functions (messages: parameter, rule, value, fix)."""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Iterable

import numpy as np

from calipers._options import look_up_option
from calipers.exceptions import CalipersWarning

__all__: list[str] = []

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_CONTEXTLIB = os.path.abspath(contextlib.__file__)  # a ``with calipers_cm():`` passes through it


def _internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR) or path == _CONTEXTLIB


def warn_user(message: str, category: type[Warning] = CalipersWarning) -> None:
    """Issue a warning attributed to the user's line: the first frame outside calipers (and
    ``contextlib``), as nilearn's ``find_stack_level`` computes ``stacklevel``."""
    frame = inspect.currentframe()  # this function: stacklevel 1
    level = 1
    while frame is not None and frame.f_back is not None and _internal(
            frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _look_up_option(value: str, choices: Iterable[str], *, what: str) -> str:
    """Return ``value`` if it is one of ``choices``; else raise with a "did you mean" hint.

    The older spelling of :func:`calipers._options.look_up_option` (``what`` for ``name``).

    >>> _look_up_option("acuracy", ["accuracy", "nll"], what="metric")
    Traceback (most recent call last):
    ...
    ValueError: unknown metric 'acuracy'; did you mean 'accuracy'? Choose from: accuracy, nll.
    """
    return look_up_option(value, choices, name=what)


def _check_finite(x: np.ndarray, *, name: str) -> None:
    """Raise if ``x`` holds NaN or infinity, saying how many and where the first one is."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        return
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN or infinite value(s) (first at index {first}); "
            f"remove or impute them before calling calipers."
        )


def _check_positive_int(value: object, *, name: str, minimum: int = 1, fix: str = "") -> int:
    """Return ``value`` as an int, raising if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum}; got {value!r}." + (f" {fix}" if fix else "")
        )
    return int(value)
