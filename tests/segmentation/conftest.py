"""Tiny synthetic segmentation data sets written to ``tmp_path`` (NIfTI 3-D, PNG 2-D)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

AFFINE = np.array([[-1.5, 0, 0, 10.0], [0, 2.0, 0, -4.0], [0, 0, 1.0, 7.0], [0, 0, 0, 1]])


def _volume(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A bright ball (label 1) and a dimmer box (label 2) in noise; any number of axes."""
    grid = np.indices(shape).astype(float)
    centre = np.array([s / 2 for s in shape]).reshape(-1, *([1] * len(shape)))
    centre = centre + rng.uniform(-1.5, 1.5, size=centre.shape)
    ball = ((grid - centre) ** 2).sum(0) < (min(shape) / 4) ** 2
    box = np.zeros(shape, bool)
    box[(slice(1, 4),) * len(shape)] = True
    y = np.where(ball, 1, np.where(box, 2, 0)).astype(np.uint8)
    x = 100 + 30 * rng.normal(size=shape) + 300 * ball + 150 * box
    return x.astype(np.float32), y


def make_nifti_set(root: Path, n: int = 6, seed: int = 0) -> Path:
    """``root/images`` and ``root/labels`` with n volumes of shapes 14..16 per axis."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers(14, 17, size=3))
        x, y = _volume(rng, shape)
        nib.Nifti1Image(x, AFFINE).to_filename(root / "images" / f"case_{i:03d}.nii.gz")
        nib.Nifti1Image(y, AFFINE).to_filename(root / "labels" / f"case_{i:03d}.nii.gz")
    return root


def make_png_set(root: Path, n: int = 6, seed: int = 0) -> Path:
    """``root/image`` and ``root/label`` (the ISBI layout): 8-bit images, {0, 255} masks."""
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir()
    for i in range(n):
        x, y = _volume(rng, (20, 24))
        img = np.clip(x / 2, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "image" / f"{i}.png")
        Image.fromarray(np.where(y == 1, 255, 0).astype(np.uint8)).save(root / "label" / f"{i}.png")
    return root


@pytest.fixture
def nifti_set(tmp_path) -> Path:
    return make_nifti_set(tmp_path / "data")


@pytest.fixture
def png_set(tmp_path) -> Path:
    return make_png_set(tmp_path / "data2d")


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory) -> Path:
    """One tiny finished 3-D segmentation run (2 folds, 2 epochs, 3 MC passes), shared."""
    import torch

    from calipers.config import parse_config
    from calipers.experiment.runner import run_experiment

    root = tmp_path_factory.mktemp("segrun")
    data = make_nifti_set(root / "data")
    cfg = parse_config({
        "data": {"kind": "nifti", "path": str(data), "task": "segmentation"},
        "cv": {"folds": 2, "seed": 0},
        "train": {"epochs": 2, "batch_size": 2, "lr": 1e-2, "device": "cpu"},
        "mc": {"samples": 3},
        "networks": {"A": {"model": "calipers.models:UNet",
                           "args": {"channels": [4, 8], "dropout": 0.2}}},
    })
    n = torch.get_num_threads()
    try:
        run_experiment(cfg, root / "run")
    finally:
        torch.set_num_threads(n)
    return root / "run"


@pytest.fixture
def seg_affine() -> np.ndarray:
    """The affine of every synthetic NIfTI file."""
    return AFFINE


@pytest.fixture
def png_factory():
    """``make_png_set`` as a fixture (tests/ is not a package)."""
    return make_png_set
