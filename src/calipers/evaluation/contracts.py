"""Shape contracts: a network's output must fit the task before any fold is trained.

# NOTE [Output contract]
A network that returns 7 logits for 3 classes trains without complaint and reports accuracy,
entropy and ECE over classes that do not exist; a regression network returning shape (N,)
against targets (N, 1) is broadcast by the loss into an N×N comparison. So every network is
run once on the first samples (eval mode, no gradients, no random draws) and its output is
checked against the task:

==============  ==========================  ===========================================
task            output shape                meaning
==============  ==========================  ===========================================
classification  (N, n_classes)              one logit per class
regression      (N, n_targets)              one column per target, also for one target
segmentation    (N, n_classes, *S)          per-voxel logits, S the input's spatial shape
==============  ==========================  ===========================================

:func:`check_network` is called by the CV drivers before anything is written (both the table
and the segmentation tasks), with a message naming the network and the expected shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from calipers.exceptions import ConfigError
from calipers.uncertainty.mc import DROPOUT_TYPES

__all__ = ["check_network", "check_output_shape", "has_active_dropout"]


def _shape_text(shape: Sequence[int]) -> str:
    """``(2, 7)`` as ``(N, 7)``: the batch axis by name."""
    rest = [str(int(s)) for s in shape[1:]]
    return "(" + ", ".join(["N", *rest]) + ("," if not rest else "") + ")"


def expected_shape(task: str, n_outputs: int, spatial: Sequence[int] = ()) -> tuple[str, str]:
    """The expected output shape (batch axis ``N``) and what it means, for messages."""
    if task == "classification":
        return f"(N, {n_outputs})", f"{n_outputs} classes (one logit per class)"
    if task == "regression":
        word = "target" if n_outputs == 1 else "targets"
        return f"(N, {n_outputs})", f"{n_outputs} regression {word} (one column per target)"
    dims = ", ".join(str(int(s)) for s in spatial)
    return f"(N, {n_outputs}, {dims})", f"{n_outputs} segmentation classes (per-voxel logits)"


def check_output_shape(
    out: torch.Tensor, *, task: str, n_outputs: int, network: str,
    spatial: Sequence[int] = (),
) -> None:
    """Raise :class:`~calipers.exceptions.ConfigError` unless ``out`` fits the task.

    Parameters
    ----------
    out : tensor of shape (N, ...)
        The network's output on N samples.
    task : {"classification", "regression", "segmentation"}
    n_outputs : int
        Classes (classification, segmentation) or regression targets.
    network : str
        How the network is named in the message, e.g. ``"'A' (mymodels:Net(width=7))"``.
    spatial : sequence of int
        The input's spatial shape (segmentation only).
    """
    shape = tuple(int(s) for s in out.shape)
    want = (n_outputs,) if task != "segmentation" else (n_outputs, *map(int, spatial))
    if len(shape) >= 1 and shape[1:] == want:
        return
    text, meaning = expected_shape(task, n_outputs, spatial)
    raise ConfigError(f"network {network} returns shape {_shape_text(shape)} for a batch of "
                      f"N = {shape[0] if shape else '?'}; this {task} task has {meaning}, so "
                      f"it must return {text}. Fix the network's last layer (or its n_outputs "
                      "argument).")


def has_active_dropout(model: nn.Module) -> bool:
    """Whether ``model`` has a dropout module with ``p > 0`` (MC dropout needs one)."""
    return any(isinstance(m, DROPOUT_TYPES) and float(getattr(m, "p", 0.0)) > 0
               for m in model.modules())


def check_network(
    model: nn.Module, x: np.ndarray, *, task: str, n_outputs: int, network: str,
    n_mc: int = 0,
) -> None:
    """Run ``model`` once on ``x`` (the first samples) and check NOTE [Output contract]; with
    ``n_mc > 0`` also that it has dropout with ``p > 0`` (else MC dropout is deterministic and
    every mutual information is zero).
    """
    if n_mc > 0 and not has_active_dropout(model):
        raise ConfigError(
            f"network {network} has no dropout with p > 0, but MC dropout asks for {n_mc} "
            "samples (all passes would be equal, mutual information 0). Pass dropout > 0 in "
            "args (or add nn.Dropout(p)), or set [mc] samples = 0."
        )
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.tensor(np.asarray(x), dtype=torch.float32))  # a copy: x may be
            # a read-only memory map (data.kind = "pack"), which torch.as_tensor warns about
    except Exception as exc:  # any error of user code on a well-formed batch
        raise ConfigError(f"network {network} fails on a batch of shape "
                          f"{_shape_text(np.shape(x))} (the data's samples): "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"network {network} returns a {type(out).__name__}, not a tensor.")
    check_output_shape(out, task=task, n_outputs=n_outputs, network=network,
                       spatial=np.shape(x)[2:])
