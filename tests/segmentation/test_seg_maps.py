"""MC-dropout voxel maps against a naive loop; zero uncertainty at p = 0; Dice and AUROC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import xlogy
from sklearn.metrics import roc_auc_score

from calipers._seeds import child_seed, seeded_torch
from calipers.evaluation.metrics import dice_per_class, uncertainty_auroc
from calipers.models import UNet
from calipers.segmentation.maps import mc_segment
from calipers.uncertainty.mc import mc_dropout_mode


def _net(p: float, seed: int = 0, dims: int = 3) -> UNet:
    torch.manual_seed(seed)
    return UNet((1,) + (8,) * dims, 3, channels=(4, 8), dropout=p)


def _entropy(p):
    return -xlogy(p, p).sum(0)


def test_maps_equal_naive_loop(rng):
    net = _net(0.3)
    x = rng.normal(size=(1, 7, 8, 6)).astype(np.float32)
    maps = mc_segment(net, x, n_mc=5, seed=3, chunk_size=2)
    xp = torch.from_numpy(np.pad(x, [(0, 0), (0, 1), (0, 0), (0, 0)]))  # multiple of 2
    ps = []
    for c, k in enumerate((2, 2, 1)):  # chunks of NOTE [Voxel maps reduced on the fly]
        with torch.no_grad(), seeded_torch(child_seed(3, 0, c)), mc_dropout_mode(net):
            out = torch.softmax(net(xp[None].expand(k, *xp.shape)), 1)
        ps += list(out[:, :, :7].double().numpy())
    ps = np.array(ps)
    mean = ps.mean(0)
    assert_allclose(maps.proba, mean, atol=1e-6)
    assert_array_equal(maps.segmentation, mean.argmax(0))
    assert_allclose(maps.entropy, _entropy(mean), atol=1e-5)
    assert_allclose(maps.mutual_info, _entropy(mean) - np.mean([_entropy(p) for p in ps], 0),
                    atol=1e-5)
    std = np.take_along_axis(ps.std(0), mean.argmax(0)[None], 0)[0]
    assert_allclose(maps.std, std, atol=1e-5)
    assert maps.mutual_info.mean() > 1e-4 and maps.std.mean() > 1e-3
    assert net.training  # left as found


def test_zero_dropout_gives_exactly_zero_epistemic_maps(rng):
    x = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
    maps = mc_segment(_net(0.0), x, n_mc=6, chunk_size=4)
    assert maps.mutual_info.max() == 0.0 and maps.std.max() == 0.0
    assert maps.entropy.min() > 0  # softmax of a real network is never one-hot


def test_ensemble_disagreement(rng):
    x = rng.normal(size=(1, 8, 8)).astype(np.float32)
    same = mc_segment([_net(0.0, 1, 2), _net(0.0, 1, 2)], x, n_mc=2)
    assert same.disagreement.max() == 0.0 and same.n_models == 2
    a, b = _net(0.0, 1, 2), _net(0.0, 2, 2)
    both = mc_segment([a, b], x, n_mc=2)
    pa, pb = (mc_segment(m, x, n_mc=0).proba.astype(np.float64) for m in (a, b))
    ref = _entropy((pa + pb) / 2) - (_entropy(pa) + _entropy(pb)) / 2
    assert_allclose(both.disagreement, ref, atol=1e-5)
    assert_allclose(both.mutual_info, ref, atol=1e-5)  # passes within a model are identical
    assert both.summary()["mean_disagreement_fg"] > 0 or not (both.segmentation > 0).any()


def test_mc_segment_errors(rng):
    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\)"):
        mc_segment(_net(0.1), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="n_mc must be an integer >= 0"):
        mc_segment(_net(0.1), np.zeros((1, 8, 8, 8)), n_mc=-1)
    with pytest.raises(TypeError, match="models must be an nn.Module"):
        mc_segment([], np.zeros((1, 8, 8, 8)))


def test_dice_per_class_hand_computed():
    t = np.array([0, 1, 1, 2, 2, 0])
    p = np.array([0, 1, 2, 2, 2, 1])
    # class 1: |T|=2, |P|=2, overlap 1 -> 0.5; class 2: |T|=2, |P|=3, overlap 2 -> 0.8
    assert_allclose(dice_per_class(t, p, n_classes=3), [0.5, 0.8])
    assert_allclose(dice_per_class(t, p, n_classes=4), [0.5, 0.8, 1.0])  # absent in both
    with pytest.raises(ValueError, match="same shape"):
        dice_per_class(t, p[:3], n_classes=3)


def test_uncertainty_auroc_matches_sklearn(rng):
    wrong = rng.random(500) < 0.2
    score = np.round(rng.normal(size=500) + wrong, 1)  # ties on purpose
    assert_allclose(uncertainty_auroc(wrong, score), roc_auc_score(wrong, score), rtol=1e-12)
    assert np.isnan(uncertainty_auroc(np.zeros(4, bool), np.arange(4.0)))


def test_sliding_window_one_window_equals_whole_and_small_windows_work(rng):
    from monai.inferers import sliding_window_inference

    net = _net(0.3)
    x = rng.normal(size=(1, 12, 10, 14)).astype(np.float32)
    whole = mc_segment(net, x, n_mc=3, seed=2, multiple=2)
    one = mc_segment(net, x, n_mc=3, seed=2, multiple=2, roi_size=(12, 10, 14))
    assert_allclose(one.proba, whole.proba, atol=1e-5)       # one window covers the image
    small = mc_segment(net, x, n_mc=3, seed=2, multiple=2, roi_size=(8, 8, 8))
    assert small.segmentation.shape == x.shape[1:] and small.mutual_info.max() > 0
    # the first pass is MONAI's sliding window with the same dropout draws
    with torch.no_grad(), seeded_torch(child_seed(2, 0, 0)), mc_dropout_mode(net):
        ref = sliding_window_inference(torch.from_numpy(x)[None], (8, 8, 8), 1, net,
                                       overlap=0.25, mode="gaussian")
    p0 = torch.softmax(ref[0], 0).double().numpy()
    assert_allclose(mc_segment(net, x, n_mc=1, seed=2, multiple=2, roi_size=(8, 8, 8)).proba,
                    p0, atol=1e-5)
    with pytest.raises(ValueError, match=r"roi_size must give 3 positive sizes, each a multiple "
                                         r"of 2"):
        mc_segment(net, x, n_mc=1, multiple=2, roi_size=(7, 8, 8))
