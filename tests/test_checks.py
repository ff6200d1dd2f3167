"""Shared checks: warnings attributed to the user's line."""

import inspect
import warnings

import torch

from calipers._device import resolve_device
from calipers.exceptions import CalipersWarning
from calipers.repro.determinism import deterministic


def test_cpu_fallback_warning_points_at_the_callers_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        dev = resolve_device("cuda")
    assert dev == torch.device("cpu")
    (w,) = got
    assert issubclass(w.category, CalipersWarning)
    assert "not bit-identical with a GPU run" in str(w.message)
    assert (w.filename, w.lineno) == (__file__, line)


def test_warning_from_a_context_manager_points_at_the_with_line(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        with deterministic(0):
            pass
    w = next(w for w in got if "CUDA was already in use" in str(w.message))
    assert (w.filename, w.lineno) == (__file__, line)


def test_seeded_torch_forks_the_device_in_use(monkeypatch):
    from calipers._seeds import _rng_devices, seeded_torch

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert _rng_devices(torch.device("cuda")) == [1]      # the current GPU, not cuda:0
    assert _rng_devices(torch.device("cuda:0")) == [0]
    assert _rng_devices(torch.device("cuda:2")) == [2]
    assert _rng_devices(torch.device("cpu")) == []
    before = torch.random.get_rng_state()
    with seeded_torch(5):
        a = torch.rand(3)
    with seeded_torch(5):
        b = torch.rand(3)
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), before)  # restored
