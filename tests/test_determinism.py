"""The determinism switch: seeds, flags set inside, everything restored afterwards."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import pytest
import torch

from calipers.exceptions import CalipersWarning
from calipers.repro.determinism import (
    CUBLAS_WORKSPACE_CONFIG,
    determinism_state,
    deterministic,
    set_deterministic,
)


def _nondeterministic_op() -> None:
    """``Tensor.put_`` without accumulate has no deterministic implementation, even on CPU."""
    torch.zeros(5).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))


def _flags() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_flags_set_inside_and_restored_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    before = _flags()
    assert before == (False, False, False, True, None)
    with deterministic(3) as flags:
        assert _flags() == (True, True, True, False, CUBLAS_WORKSPACE_CONFIG)
        assert flags == {"seed": 3, **determinism_state()}
        assert flags["enabled"] is True
    assert _flags() == before
    assert determinism_state()["enabled"] is False


def test_strict_sets_warn_only_false():
    with deterministic(0, strict=True) as flags:
        assert flags["warn_only"] is False
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


def test_same_seed_same_draws_and_global_rngs_restored():
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    expected_after = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    with deterministic(7):
        first = (random.random(), np.random.random(), torch.rand(4))  # noqa: NPY002
    after = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    assert after == expected_after  # the caller's generators continue as if untouched
    with deterministic(7):
        second = (random.random(), np.random.random(), torch.rand(4))  # noqa: NPY002
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2])
    # independent reference: the draws are those of the generators seeded with 7
    assert first[0] == random.Random(7).random()
    assert first[1] == np.random.RandomState(7).random_sample()
    assert torch.equal(first[2], torch.rand(4, generator=torch.Generator().manual_seed(7)))


def test_set_deterministic_global_and_off(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    prev = torch.are_deterministic_algorithms_enabled()
    try:
        flags = set_deterministic(5)
        assert flags["enabled"] and flags["seed"] == 5
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        off = set_deterministic(5, enabled=False)
        assert off["enabled"] is False and off["deterministic_algorithms"] is False
        assert off["cudnn_deterministic"] is False
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.deterministic = False


def test_existing_cublas_value_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic(0) as flags:
        assert flags["cublas_workspace_config"] == ":16:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_disabled_context_changes_nothing():
    before = _flags()
    torch.manual_seed(1)
    ref = torch.rand(2)
    torch.manual_seed(1)
    with deterministic(9, enabled=False) as flags:
        assert _flags() == before
        assert torch.equal(torch.rand(2), ref)  # not reseeded
    assert flags["enabled"] is False and flags["seed"] == 9


def test_nondeterministic_op_warns_with_op_name_and_fix():
    with pytest.warns(CalipersWarning, match=r"put_ has no deterministic implementation.*Fix:"):
        with deterministic(0):
            _nondeterministic_op()


def test_other_warnings_pass_through_unchanged():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with deterministic(0):
            warnings.warn("unrelated", UserWarning, stacklevel=1)
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, "unrelated")]


def test_strict_raises_with_op_name():
    with pytest.raises(RuntimeError, match=r"put_ has no deterministic implementation.*"
                                           r"strict=False"):
        with deterministic(0, strict=True):
            _nondeterministic_op()
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the error


def test_warns_when_cuda_already_initialised(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.warns(CalipersWarning, match="export CUBLAS_WORKSPACE_CONFIG=:4096:8"):
        with deterministic(0):
            pass


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "0"])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\); got"):
        set_deterministic(seed)
    with pytest.raises(ValueError, match=r"seed must be an integer"):
        with deterministic(seed):
            pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matmul_repeatable_and_nondeterministic_op_warns():
    x = torch.randn(256, 256, device="cuda")
    with deterministic(0):
        a = (x @ x).sum(0)
        b = (x @ x).sum(0)
        with pytest.warns(CalipersWarning, match="has no deterministic implementation"):
            torch.zeros(10, device="cuda").put_(torch.tensor([0, 0], device="cuda"),
                                                torch.ones(2, device="cuda"))
    assert torch.equal(a, b)
