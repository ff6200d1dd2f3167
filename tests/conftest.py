"""Shared fixtures: a seeded rng and small synthetic data sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep torch on the 2 CI cores without oversubscription; restore afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def blobs(rng):
    """A small 3-class tabular problem: X (90, 4), y (90,)."""
    centers = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 0]], dtype=float)
    y = np.repeat(np.arange(3), 30)
    X = centers[y] + rng.normal(size=(90, 4))
    return X.astype(np.float32), y
