"""Segmentation data: pairs, normalisation, padding, label maps, errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calipers.exceptions import DataError
from calipers.segmentation.data import (
    crop_to,
    load_segmentation,
    normalize_intensity,
    pad_multiple,
    pad_to,
    read_image,
)


def test_nifti_set_padded_and_normalised(nifti_set):
    data = load_segmentation(nifti_set, kind="nifti", multiple=8)
    assert data.X.shape == (6, 1, 16, 16, 16) and data.y.shape == (6, 16, 16, 16)
    assert data.label_values == (0, 1, 2) and data.n_outputs == 3
    for i, name in enumerate(data.names):
        raw = nib.load(nifti_set / "images" / f"{name}.nii.gz").get_fdata(dtype=np.float32)
        lab = np.asarray(nib.load(nifti_set / "labels" / f"{name}.nii.gz").dataobj)
        assert tuple(data.shapes[i]) == raw.shape
        inside = crop_to(data.X[i, 0], raw.shape)
        assert_allclose(inside, (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-4)
        assert_array_equal(crop_to(data.y[i], raw.shape), lab)
        assert data.y[i].sum() == lab.sum()  # padding is background


def test_png_set_binary_masks_become_classes(png_set):
    data = load_segmentation(png_set, kind="png", multiple=16)
    assert data.label_values == (0, 255)
    assert data.X.shape == (6, 1, 32, 32)
    assert set(np.unique(data.y)) == {0, 1}


def test_pad_and_crop_round_trip(rng):
    x = rng.normal(size=(2, 5, 7))
    assert pad_multiple((5, 7), 4) == (8, 8)
    p = pad_to(x, (8, 8))
    assert p.shape == (2, 8, 8) and p[:, 5:, :].sum() == 0
    assert_array_equal(crop_to(p, (5, 7)), x)
    with pytest.raises(ValueError, match="cannot pad shape"):
        pad_to(x, (4, 8))


def test_constant_image_is_centred_only():
    assert_array_equal(normalize_intensity(np.full((3, 3), 7.0)), np.zeros((3, 3)))


def test_errors(tmp_path, nifti_set):
    with pytest.raises(DataError, match="images/ and labels/"):
        load_segmentation(tmp_path, kind="nifti")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="bad.nii.gz: cannot read"):
        read_image(bad)
    with pytest.raises(DataError, match="not a NIfTI"):
        read_image(tmp_path / "x.txt")
    lab = nifti_set / "labels" / "case_000.nii.gz"
    img = nib.load(lab)
    nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine).to_filename(lab)
    with pytest.raises(DataError, match="must match voxel for voxel"):
        load_segmentation(nifti_set, kind="nifti")
