"""String options, checked in one place (after MONAI's ``look_up_option`` and ``StrEnum``).

Each option set the public functions accept is a :class:`enum.StrEnum` here, so the allowed
values are written once and a member compares equal to its string (``Task.REGRESSION ==
"regression"``): callers pass plain strings or members alike. :func:`look_up_option` checks a
value against a set and raises one message shape, with a "did you mean" suggestion
(``difflib``) and the list of choices.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from typing import Any

__all__ = ["DataKind", "DeviceKind", "LearnerKind", "PredictionTask", "StatKind", "Task",
           "did_you_mean", "look_up_option"]


class Task(enum.StrEnum):
    """What a data set / network predicts (``[data] task``; ``fit``, ``score`` and metrics)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    SEGMENTATION = "segmentation"


class PredictionTask(enum.StrEnum):
    """What a network's output means for ``mc_predict(task=...)`` and a ``Dataset``'s task."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class DataKind(enum.StrEnum):
    """``[data] kind`` of ``load_dataset``."""

    DIGITS = "digits"
    ARRAYS = "arrays"
    IMAGES = "images"
    TABLE = "table"
    UCI = "uci"
    PACK = "pack"


class DeviceKind(enum.StrEnum):
    """Device types a ``device`` argument may name: ``"auto"``, ``"cpu"``, ``"cuda"`` (with an
    optional ``":<index>"``) or ``"mps"``."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


_SYNONYMS = {"gpu": DeviceKind.CUDA.value}


class LearnerKind(enum.StrEnum):
    """``learner`` of a ``[networks.NAME]`` table: who trains the network
    (:mod:`calipers.learners`)."""

    CALIPERS = "calipers"
    FUNCTION = "function"
    SKLEARN = "sklearn"
    KERAS = "keras"
    LIGHTNING = "lightning"


class StatKind(enum.StrEnum):
    """Kinds of statistic in a permutation result: a t-contrast or an F-test."""

    T = "t"
    F = "F"


def look_up_option(value: Any, choices: type[enum.Enum] | Iterable[Any], *, name: str) -> Any:
    """Return ``value`` if it is one of ``choices``; else raise a "did you mean" ``ValueError``.

    Parameters
    ----------
    value : str, enum member or other hashable
        What the user passed.
    choices : Enum class or iterable
        The allowed values (an enum's member values).
    name : str
        What the value is, for the message ("task", "data kind", "metric").

    Returns
    -------
    The matching choice: the plain value for enum choices (a ``str`` for a ``StrEnum``, so it
    prints, compares and serialises as before), else ``value`` itself.

    Raises
    ------
    ValueError
        ``unknown <name> <value>; did you mean <closest>? Choose from: <choices>.`` (the
        suggestion only when ``difflib`` finds a close spelling).

    Examples
    --------
    >>> look_up_option("regresion", Task, name="task")
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'regresion'; did you mean 'regression'? Choose from: \
classification, regression, segmentation.
    >>> look_up_option(PredictionTask.REGRESSION, PredictionTask, name="task")
    'regression'
    """
    if isinstance(choices, type) and issubclass(choices, enum.Enum):
        options = [m.value for m in choices]
    else:
        options = list(choices)
    try:
        hit = value in options
    except (TypeError, ValueError):  # arrays and other values without a plain ==
        hit = False
    if hit:
        return options[options.index(value)]
    shown = value.value if isinstance(value, enum.Enum) else value
    hint = did_you_mean(value, options) or "."
    raise ValueError(f"unknown {name} {shown!r}{hint} Choose from: {', '.join(map(str, options))}.")


def did_you_mean(value: Any, choices: type[enum.Enum] | Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` for the closest spelling among ``choices`` (``difflib``), else
    ``""``: the suggestion part of :func:`look_up_option`'s message, for messages of their own.
    Known synonyms (``_SYNONYMS``: "gpu" is "cuda", not the closer spelling "cpu") come first.

    >>> did_you_mean("cdua", DeviceKind)
    "; did you mean 'cuda'?"
    >>> did_you_mean("gpu", DeviceKind)
    "; did you mean 'cuda'?"
    """
    if isinstance(choices, type) and issubclass(choices, enum.Enum):
        choices = [m.value for m in choices]
    choices = list(choices)
    synonym = _SYNONYMS.get(value.lower()) if isinstance(value, str) else None
    if synonym in choices:
        return f"; did you mean {synonym!r}?"
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
