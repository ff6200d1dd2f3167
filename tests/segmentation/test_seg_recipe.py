"""The segmentation training recipe: patches (MONAI crops, foreground-centred), augmentation,
LR schedule with warm-up, and the ``[segmentation]`` config section."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calipers.config import parse_config
from calipers.evaluation.train import TrainOptions, fit
from calipers.exceptions import ConfigError
from calipers.models import build_network
from calipers.segmentation.train import (
    SegmentationRecipe,
    _sample,
    _transforms,
    fit_segmentation,
    lr_factor,
)


def test_lr_factor_warmup_cosine_poly():
    assert [lr_factor(e, 10, warmup_epochs=3) for e in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(2, 12, schedule="cosine", warmup_epochs=2) == 1.0  # first after warm-up
    assert lr_factor(7, 12, schedule="cosine", warmup_epochs=2) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert lr_factor(9, 10, schedule="poly") == pytest.approx(0.1 ** 0.9)
    assert lr_factor(5, 10) == 1.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"patch": (0, 8)}, "positive sizes"),
    ({"foreground": 0.5}, "set \\[segmentation\\] patch too"),
    ({"patch": (8, 8), "foreground": 1.5}, "fraction in \\[0, 1\\]"),
    ({"schedule": "linear"}, "constant, cosine, poly"),
])
def test_recipe_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentationRecipe(**kwargs)


def _blob_images(rng, n=4, size=32):
    y = np.zeros((n, size, size), np.int64)
    for i in range(n):
        r, c = rng.integers(2, size - 6, size=2)
        y[i, r:r + 4, c:c + 4] = 1
    X = (y + 0.3 * rng.normal(size=y.shape)).astype(np.float32)[:, None]
    return X, y


def test_foreground_crops_hold_foreground(rng):
    X, y = _blob_images(rng)
    recipe = SegmentationRecipe(patch=(8, 8), foreground=1.0)
    t = _transforms(recipe, 2, seed=0)
    for i in range(4):
        for _ in range(5):
            img, lab = _sample(t, torch.as_tensor(X[i]), torch.as_tensor(y[i])[None])
            assert img.shape == (1, 8, 8) and lab.shape == (1, 8, 8)
            assert lab.sum() > 0  # centred on a foreground voxel
    plain = _transforms(SegmentationRecipe(patch=(8, 8)), 2, seed=0)
    found_background_only = any(
        _sample(plain, torch.as_tensor(X[0]), torch.as_tensor(y[0])[None])[1].sum() == 0
        for _ in range(30))
    assert found_background_only  # uniform crops often miss a 4x4 blob in 32x32


def test_crop_window_is_shared_by_image_and_label(rng):
    y = np.arange(24 * 24).reshape(24, 24) % 3
    X = y.astype(np.float32)[None]
    t = _transforms(SegmentationRecipe(patch=(8, 8)), 2, seed=5)
    img, lab = _sample(t, torch.as_tensor(X), torch.as_tensor(y)[None])
    assert torch.equal(img.round().long(), lab)


def test_augment_keeps_labels_integer_and_changes_images(rng):
    X, y = _blob_images(rng, n=1)
    t = _transforms(SegmentationRecipe(augment=True), 2, seed=1)
    changed = 0
    for _ in range(10):
        img, lab = _sample(t, torch.as_tensor(X[0]), torch.as_tensor(y[0])[None])
        assert set(lab.unique().tolist()) <= {0, 1}
        changed += not torch.allclose(img, torch.as_tensor(X[0]))
    assert changed >= 5


def test_patch_training_sees_patches_and_learns(rng):
    X, y = _blob_images(rng, n=6)
    torch.manual_seed(0)
    model = build_network("calipers.models:UNet", {"channels": [4, 8], "dropout": 0.0},
                          input_shape=(1, 32, 32), n_outputs=2)
    shapes = []
    model.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    res = fit_segmentation(model, X, y, options=TrainOptions(epochs=8, batch_size=3, lr=1e-2,
                           device="cpu"), recipe=SegmentationRecipe(
                               patch=(16, 16), foreground=0.5, schedule="cosine",
                               warmup_epochs=1, augment=True), seed=0)
    assert set(shapes) == {(3, 1, 16, 16)}
    assert len(res.losses) == 8 and res.losses[-1] < res.losses[0]


def test_plain_recipe_is_the_old_training(rng):
    X, y = _blob_images(rng, n=4)
    out = []
    for recipe in (None, SegmentationRecipe()):
        torch.manual_seed(0)
        m = build_network("calipers.models:UNet", {"channels": [4, 8], "dropout": 0.0},
                          input_shape=(1, 32, 32), n_outputs=2)
        out.append(fit_segmentation(m, X, y, options=TrainOptions(epochs=2, device="cpu"),
                                    recipe=recipe).losses)
    torch.manual_seed(0)
    m = build_network("calipers.models:UNet", {"channels": [4, 8], "dropout": 0.0},
                      input_shape=(1, 32, 32), n_outputs=2)
    ref = fit(m, X, y, task="segmentation", options=TrainOptions(epochs=2, device="cpu")).losses
    assert out[0] == out[1] == ref


def _cfg(path, task="segmentation", kind="nifti", **seg):
    return parse_config({"data": {"kind": kind, "path": str(path), "task": task},
                         "segmentation": seg,
                         "networks": {"u": {"model": "calipers.models:UNet"}}})


def test_config_section(tmp_path):
    cfg = _cfg(tmp_path, patch=[16, 16, 16], foreground=0.5, schedule="poly", warmup_epochs=2,
               augment=True)
    assert "[segmentation]\npatch = [16, 16, 16]" in cfg.to_toml()
    with pytest.raises(ConfigError, match="segmentation.schedul: unknown key; did you mean "
                                          "'schedule'"):
        _cfg(tmp_path, schedul="poly")
    with pytest.raises(ConfigError, match="data.task is 'classification'"):
        parse_config({"data": {"kind": "digits"}, "segmentation": {"augment": True},
                      "networks": {"u": {"model": "calipers.models:CNN"}}})


def test_run_with_a_recipe_and_bad_patch_refused(tmp_path, nifti_set):
    from calipers.experiment.runner import run_experiment

    base = {"data": {"kind": "nifti", "path": str(nifti_set), "task": "segmentation"},
            "cv": {"folds": 2}, "train": {"epochs": 2, "batch_size": 2, "device": "cpu"},
            "mc": {"samples": 2},
            "networks": {"u": {"model": "calipers.models:UNet",
                               "args": {"channels": [4, 8], "dropout": 0.1}}}}
    bad = parse_config({**base, "segmentation": {"patch": [12, 16, 16]}})
    with pytest.raises(ConfigError, match="each a multiple of 16"):
        run_experiment(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    cfg = parse_config({**base, "segmentation": {"patch": [16, 16, 16], "foreground": 0.5,
                                                 "augment": True, "schedule": "cosine"}})
    res = run_experiment(cfg, tmp_path / "run", report=False)
    assert 0 <= res.summary.networks["u"]["mean_dice"]["mean"] <= 1
    assert "[segmentation]" in (tmp_path / "run" / "config.toml").read_text()


def _old_recipe_fit(model, X, y, opts, recipe, seed):
    """The recipe loop before issue 13's audit (float(loss) every step), CPU only."""
    from calipers._seeds import torch_generator
    from calipers.evaluation.train import _loss_fn

    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)[:, None]
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda e: lr_factor(
        e, opts.epochs, schedule=recipe.schedule, warmup_epochs=recipe.warmup_epochs))
    loss_fn = _loss_fn("segmentation")
    transform = _transforms(recipe, X.ndim - 2, seed)
    gen = torch_generator(seed)
    n, losses = Xt.shape[0], []
    for _ in range(opts.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, opts.batch_size):
            idx = order[start:start + opts.batch_size]
            pairs = [_sample(transform, Xt[i], yt[i]) for i in idx.tolist()]
            xb, yb = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
            optim.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb).float(), yb)
            loss.backward()
            optim.step()
            total += float(loss.detach()) * idx.numel()
        sched.step()
        losses.append(total / n)
    return losses


def _unet():
    torch.manual_seed(0)
    return build_network("calipers.models:UNet", {"channels": [4, 8], "dropout": 0.1},
                         input_shape=(1, 32, 32), n_outputs=2)


def test_recipe_loop_gives_the_old_cpu_numbers(rng):
    X, y = _blob_images(rng, n=7)  # batches of 3, 3, 1
    recipe = SegmentationRecipe(patch=(16, 16), foreground=0.5, schedule="cosine",
                                warmup_epochs=1, augment=True)
    opts = TrainOptions(epochs=3, batch_size=3, lr=1e-2, weight_decay=1e-4, device="cpu")
    a, b = _unet(), _unet()
    torch.manual_seed(5)
    new = fit_segmentation(a, X, y, options=opts, recipe=recipe, seed=2)
    torch.manual_seed(5)
    old = _old_recipe_fit(b, X, y, opts, recipe, seed=2)
    assert list(new.losses) == old  # bit for bit
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert new.batch_size == 3 and new.amp is False and new.data_on_device is False


def test_recipe_batch_size_auto_probes_patches_and_is_recorded(rng, tmp_path, monkeypatch):
    from calipers.gpu import finder
    from calipers.gpu.monitor import gpu_monitor
    from calipers.runs import read_json

    monkeypatch.setattr(finder, "_PROBE_SECONDS", 0.01)
    monkeypatch.setattr(finder, "_CACHE", {})
    X, y = _blob_images(rng, n=6)
    model = _unet()
    shapes = []
    model.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    with gpu_monitor(tmp_path, "cpu"):
        res = fit_segmentation(model, X, y, options=TrainOptions(
            epochs=2, batch_size="auto", device="cpu"), recipe=SegmentationRecipe(
            patch=(16, 16), augment=True), seed=0)
    g = read_json(tmp_path / "gpu.json")
    (choice,) = g["batch_size"].values()
    assert res.batch_size == choice["size"] and 1 <= res.batch_size <= 6
    assert {s[1:] for s in shapes} == {(1, 16, 16)}  # the finder's probes too saw patches
    assert g["loop"]["epochs"] == 2 and g["loop"]["data_on_device"] is False  # timers wired
