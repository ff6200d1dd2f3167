"""The determinism switch: seeds, deterministic kernels, cuDNN and cuBLAS settings.

``train.deterministic = true`` (or ``--deterministic``) runs an experiment inside
:func:`deterministic`, so two runs of one configuration on one machine give bit-identical
results, and ``env.json`` records the flags (:func:`determinism_state`).

# NOTE [What determinism covers]
PyTorch makes a run repeatable on one machine, with one software stack, when (1) every random
generator is seeded, (2) ``torch.use_deterministic_algorithms(True)`` picks deterministic kernels
(scatter-add, index-add, pooling backward on CUDA...), (3) cuDNN does not benchmark and pick a
different convolution algorithm per run, and (4) cuBLAS has a fixed workspace
(``CUBLAS_WORKSPACE_CONFIG=:4096:8``), read when the first cuBLAS handle is created: set it in the
shell before starting Python if CUDA may already be in use. It does not make runs agree across
GPU models, CUDA/cuDNN versions, CPU instruction sets or torch thread counts: floating-point
sums are then added in another order. ``calipers repro`` measures how far such runs differ.
Ops without a deterministic implementation warn (``warn_only=True``, the default here) with a
:class:`~calipers.exceptions.CalipersWarning` naming the op; ``strict=True`` raises instead.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import torch

from calipers._checks import warn_user
from calipers.exceptions import CalipersWarning

__all__ = ["CUBLAS_WORKSPACE_CONFIG", "determinism_state", "deterministic", "set_deterministic"]

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_VALID_CUBLAS = (":4096:8", ":16:8")
_NONDET = re.compile(r"^(?P<op>.+?) does not have a deterministic implementation, but you set "
                     r"'torch\.use_deterministic_algorithms\(True")


def determinism_state() -> dict[str, Any]:
    """The determinism flags in force now (recorded as ``env.json``'s ``determinism``).

    Returns
    -------
    dict
        ``enabled`` (all switches on), ``deterministic_algorithms``, ``warn_only``,
        ``cudnn_deterministic``, ``cudnn_benchmark``, ``cublas_workspace_config`` (or None) and
        ``pythonhashseed`` (or None; it can only be set before Python starts).
    """
    algorithms = torch.are_deterministic_algorithms_enabled()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    state = {
        "deterministic_algorithms": algorithms,
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled() if algorithms
        else False,
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": cublas,
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }
    enabled = (algorithms and state["cudnn_deterministic"] and not state["cudnn_benchmark"]
               and cublas in _VALID_CUBLAS)
    return {"enabled": bool(enabled), **state}


def _set_deterministic_iv(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32); got {seed!r}. "
                         "Pass a non-negative seed below 4294967296, e.g. seed % 2**32.")
    return int(seed)


def set_deterministic(seed: int, *, enabled: bool = True, strict: bool = False) -> dict[str, Any]:
    """Seed every generator and switch PyTorch's deterministic mode on (or off), globally.

    Prefer :func:`deterministic`, which restores the previous state and turns PyTorch's
    warnings about ops without a deterministic implementation into clear calipers warnings.

    Parameters
    ----------
    seed : int in [0, 2**32)
        Seeds Python's ``random``, NumPy's global generator and torch (CPU and every GPU).
    enabled : bool, default True
        True: ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic with benchmark
        off, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless already ``:4096:8`` or ``:16:8``).
        False: seeds only, and the deterministic switches off.
    strict : bool, default False
        Raise (instead of warn) when an op has no deterministic implementation.

    Returns
    -------
    dict
        ``{"seed": seed, **determinism_state()}``: the flags now in force, for ``env.json``.

    Notes
    -----
    See NOTE [What determinism covers] in this module for what this does not guarantee.
    """
    seed = _set_deterministic_iv(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeding the legacy global generator is the point
    torch.manual_seed(seed)
    if enabled:
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in _VALID_CUBLAS:
            if torch.cuda.is_initialized():
                warn_user(
                    "CUDA was already in use when determinism was switched on, so cuBLAS may "
                    f"ignore CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG}; GPU matrix "
                    "products may then differ between runs. Fix: export "
                    f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG} in the shell before "
                    "starting Python.")
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
        torch.use_deterministic_algorithms(True, warn_only=not strict)
    else:
        torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = bool(enabled)
    torch.backends.cudnn.benchmark = False
    return {"seed": seed, **determinism_state()}


def _nondeterministic_message(op: str, *, strict: bool = False) -> str:
    text = (f"{op} has no deterministic implementation in PyTorch {torch.__version__}, so "
            "results may differ between reruns although determinism is on. Fix: use an "
            "equivalent op that has one (see torch.use_deterministic_algorithms), run this part "
            "on the CPU, or accept the differences and check them with "
            "`calipers repro RUN_A RUN_B --metric-atol X --proba-atol Y`")
    return text + (". Or pass strict=False to warn instead of raising." if strict else ".")


def _translating_showwarning(original):
    """Wrap ``warnings.showwarning``: PyTorch's non-determinism alert becomes a CalipersWarning."""

    def show(message, category, filename, lineno, file=None, line=None):
        m = _NONDET.match(str(message))
        if m is not None and not issubclass(category, CalipersWarning):
            warnings.warn_explicit(_nondeterministic_message(m["op"]), CalipersWarning,
                                   filename, lineno)
            return
        original(message, category, filename, lineno, file, line)

    return show


@contextmanager
def _restore_global_state() -> Iterator[None]:
    """Put back every global that :func:`set_deterministic` changes, in ``finally``."""
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - saving the global generator to restore it
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    show = warnings.showwarning
    # GPUs whose generators exist now; initialising CUDA only to save its state would cost a
    # context on machines that run on the CPU.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            warnings.showwarning = show
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002
            torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
            if cublas is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
            else:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


@contextmanager
def deterministic(seed: int, *, enabled: bool = True,
                  strict: bool = False) -> Iterator[dict[str, Any]]:
    """Run a block with :func:`set_deterministic` in force; restore every global afterwards.

    Parameters
    ----------
    seed, enabled, strict
        As in :func:`set_deterministic`. ``enabled=False`` makes the block a no-op (the flags
        in force are still yielded), so callers can write ``with deterministic(s, enabled=flag)``.

    Yields
    ------
    dict
        The flags in force inside the block (``seed`` plus :func:`determinism_state`).

    Warns
    -----
    CalipersWarning
        When an op without a deterministic implementation runs inside the block (PyTorch's own
        alert, re-said with the op's name and a fix). With ``strict=True`` a RuntimeError
        carrying the same text is raised instead.

    Examples
    --------
    >>> from calipers.repro.determinism import deterministic
    >>> with deterministic(0) as flags:
    ...     a = torch.rand(3)
    >>> with deterministic(0):
    ...     b = torch.rand(3)
    >>> bool((a == b).all()), flags["enabled"]
    (True, True)
    """
    seed = _set_deterministic_iv(seed)
    if not enabled:
        yield {"seed": seed, **determinism_state()}
        return
    with ExitStack() as stack:
        stack.enter_context(_restore_global_state())
        flags = set_deterministic(seed, enabled=True, strict=strict)
        warnings.showwarning = _translating_showwarning(warnings.showwarning)
        try:
            yield flags
        except RuntimeError as exc:
            m = _NONDET.match(str(exc))
            if m is None:
                raise
            raise RuntimeError(_nondeterministic_message(m["op"], strict=True)) from exc
