"""The device-resident loop gives the old loop's CPU numbers; packs round-trip; bench runs."""

import json
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from calipers._seeds import seeded_torch, torch_generator
from calipers.cli.main import app
from calipers.evaluation import train
from calipers.evaluation.train import TrainOptions, _loss_fn, _targets, fit
from calipers.exceptions import DataError
from calipers.models import CNN, MLP

runner = CliRunner()


def _old_fit(model, X, y, *, task, options, seed):
    """The training loop before issue 13 (per-step float(loss), host batches), CPU only."""
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    yt = _targets(y, task)
    has_bn = any(isinstance(m, train._BATCHNORMS) for m in model.modules())
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=options.lr)
    loss_fn = _loss_fn(task)
    gen = torch_generator(seed)
    n = Xt.shape[0]
    losses = []
    for _ in range(options.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, options.batch_size):
            idx = order[start:start + options.batch_size]
            if has_bn and idx.numel() < 2 and start > 0:
                continue
            xb, yb = Xt[idx], yt[idx]
            optim.zero_grad(set_to_none=True)
            with nullcontext():
                loss = loss_fn(model(xb).float(), yb)
            loss.backward()
            optim.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / n)
    return losses


@pytest.mark.parametrize("loader", [False, True])
@pytest.mark.parametrize("kind", ["mlp", "cnn-bn", "cnn-bs1"])
def test_loop_gives_the_old_cpu_numbers(kind, loader, monkeypatch):
    rng = np.random.default_rng(0)
    if kind == "mlp":
        X, y = rng.standard_normal((61, 5)).astype(np.float32), rng.integers(0, 3, 61)
        make, bs = (lambda: MLP((5,), 3, hidden=(16,), dropout=0.2)), 16
    else:  # BatchNorm; 33 = 2*16 + 1 leaves a last batch of one (skipped)
        X, y = rng.standard_normal((33, 1, 8, 8)).astype(np.float32), rng.integers(0, 2, 33)
        make, bs = (lambda: CNN((1, 8, 8), 2, channels=4, dropout=0.1)), 16
        if kind == "cnn-bs1":
            X, y, bs = X[:5], y[:5], 1
    if loader:  # the DataLoader path, as for a split too large for the device
        monkeypatch.setattr(train, "_fits_on_device", lambda *a: False)
        monkeypatch.setattr(train, "_LOADER_WORKERS", 0)
    opts = TrainOptions(epochs=3, batch_size=bs, lr=1e-2, device="cpu")
    with seeded_torch(0):
        a = make()
    with seeded_torch(0):
        b = make()
    with seeded_torch(7):
        new = fit(a, X, y, options=opts, seed=7)
    with seeded_torch(7):
        old = _old_fit(b, X, y, task="classification", options=opts, seed=7)
    assert list(new.losses) == old  # bit for bit
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert new.data_on_device is not loader and new.amp is False and new.amp_dtype == ""


def test_split_lives_on_the_device_within_a_quarter_of_its_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4000, 8000))
    cuda = torch.device("cuda")  # only its type is read before the memory query
    y = torch.zeros(50, dtype=torch.int64)  # 400 bytes
    assert train._fits_on_device(torch.zeros(150), y, cuda)  # 600 + 400 = 1000 = 4000 / 4
    assert not train._fits_on_device(torch.zeros(151), y, cuda)
    assert train._fits_on_device(torch.zeros(10**6), y, torch.device("cpu"))  # always


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_session.sh)")
def test_loop_on_cuda_synchronises_once_per_epoch_not_per_step():
    import warnings

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((640, 5)).astype(np.float32), rng.integers(0, 3, 640)
    caught = []

    def watch(epoch, n, loss):  # from the end of epoch 1 on: flag every synchronising call
        if epoch == 1:
            torch.cuda.set_sync_debug_mode("warn")

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = fit(MLP((5,), 3, hidden=(16,)), X, y, progress=watch, options=TrainOptions(
                epochs=4, batch_size=32, device="cuda", amp="bf16"))  # 20 steps an epoch
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message)[:120] for w in caught if "synchroniz" in str(w.message)]
    assert res.data_on_device and res.amp_dtype == "bf16"
    assert 1 <= len(syncs) <= 2 * 3, syncs  # epochs 2-4: the loss read once each, not 20 times


# --- packs --------------------------------------------------------------------------------------

def _png_folder(root, n=8, shape=(8, 8), corrupt=False):
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = (rng.random(shape) * 255).astype(np.uint8)
            if c == "dog":
                a[:4] = 255 - a[:4] // 4  # learnable
            Image.fromarray(a).save(root / c / f"{i:02d}.png")
    if corrupt:
        (root / "dog" / "03.png").write_bytes(b"not a png")
    return root


def test_pack_round_trips_images_bit_exactly(tmp_path):
    from calipers.data import load_images
    from calipers.tools.pack import load_pack, pack

    src = _png_folder(tmp_path / "src")
    info = pack(src, tmp_path / "p.pack")
    assert info.kind == "images" and info.n_samples == 16
    ref, got = load_images(src), load_pack(tmp_path / "p.pack")
    assert isinstance(got.X, np.memmap)  # read on demand, not loaded whole
    assert got.X.dtype == ref.X.dtype and np.array_equal(got.X, ref.X)
    assert np.array_equal(got.y, ref.y) and got.classes == ref.classes == ("cat", "dog")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pack", "src"]  # no temp left


def test_pack_refuses_existing_destination_unless_force(tmp_path):
    src = _png_folder(tmp_path / "src")
    (tmp_path / "dst").mkdir()
    res = runner.invoke(app, ["pack", str(src), str(tmp_path / "dst")])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["pack", str(src), str(tmp_path / "dst"), "--force"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dst" / "pack.json").is_file()


def test_pack_names_an_unreadable_file_and_writes_nothing(tmp_path):
    from calipers.tools.pack import pack

    src = _png_folder(tmp_path / "src", corrupt=True)
    with pytest.raises(DataError, match="03.png"):
        pack(src, tmp_path / "out" / "p.pack")
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written


def test_pack_force_with_an_unreadable_file_keeps_the_old_pack(tmp_path):
    good = _png_folder(tmp_path / "good")
    assert runner.invoke(app, ["pack", str(good), str(tmp_path / "p.pack")]).exit_code == 0
    before = {f.name: f.read_bytes() for f in (tmp_path / "p.pack").iterdir()}
    bad = _png_folder(tmp_path / "bad", corrupt=True)
    res = runner.invoke(app, ["pack", str(bad), str(tmp_path / "p.pack"), "--force"])
    assert res.exit_code == 2 and "03.png" in res.output  # the file is named
    after = {f.name: f.read_bytes() for f in (tmp_path / "p.pack").iterdir()}
    assert after == before  # the old pack is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "p.pack"]  # no temp


def test_pack_kind_gives_the_same_metrics_as_the_folder(tmp_path):
    from calipers.config import parse_config
    from calipers.experiment.runner import run_experiment
    from calipers.tools.pack import pack

    src = _png_folder(tmp_path / "src", n=10)
    pack(src, tmp_path / "p.pack")
    out = {}
    for kind, path in (("images", src), ("pack", tmp_path / "p.pack")):
        cfg = parse_config({
            "data": {"kind": kind, "path": str(path)},
            "cv": {"folds": 2, "seed": 0}, "train": {"epochs": 2, "batch_size": 8, "lr": 1e-2,
                                                     "device": "cpu", "deterministic": True},
            "mc": {"samples": 3},
            "networks": {"A": {"model": "calipers.models:CNN", "args": {"channels": 4}},
                         "B": {"model": "calipers.models:CNN", "args": {"channels": 6}}}})
        run_experiment(cfg, tmp_path / kind, report=False)
        out[kind] = (tmp_path / kind / "metrics.csv").read_bytes()
    assert out["images"] == out["pack"]


def test_pack_round_trips_nifti_segmentation(tmp_path):
    import nibabel as nib

    from calipers.segmentation.data import load_segmentation
    from calipers.tools.pack import load_segmentation_pack, pack

    rng = np.random.default_rng(2)
    for d in ("images", "labels"):
        (tmp_path / "src" / d).mkdir(parents=True)
    for i, shape in enumerate([(9, 10, 7), (12, 8, 6), (10, 10, 10)]):
        aff = np.diag([1.5, 1.0, 2.0, 1.0])
        img = rng.normal(100, 20, shape).astype(np.float32)
        lab = rng.integers(0, 3, shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, aff), tmp_path / "src" / "images" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, aff), tmp_path / "src" / "labels" / f"v{i}.nii.gz")
    info = pack(tmp_path / "src", tmp_path / "seg.pack")
    assert info.kind == "segmentation" and info.n_samples == 3
    ref = load_segmentation(tmp_path / "src", kind="nifti", multiple=4)
    got = load_segmentation_pack(tmp_path / "seg.pack", multiple=4)
    assert np.array_equal(ref.X, got.X) and np.array_equal(ref.y, got.y)
    assert np.array_equal(ref.shapes, got.shapes) and ref.names == got.names
    assert ref.label_values == got.label_values
    index = json.loads((tmp_path / "seg.pack" / "pack.json").read_text())
    assert index["volumes"][1]["shape"] == [12, 8, 6]
    assert index["volumes"][1]["affine"][0][0] == 1.5


# --- bench --------------------------------------------------------------------------------------

def test_bench_quick_runs_on_the_cpu(tmp_path):
    res = runner.invoke(app, ["bench", "--quick", "--only", "matmul", "--only", "pdist",
                              "--only", "cg", "--json", str(tmp_path / "b.json"),
                              "--plot", str(tmp_path / "b.png"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "No CUDA GPU: CPU figures only" in res.stdout
    got = json.loads((tmp_path / "b.json").read_text())
    assert set(got["workloads"]) == {"matmul", "pdist", "cg"}
    w = got["workloads"]["pdist"]
    assert w["sizes"] == [250, 500, 1000] and all(s > 0 for s in w["cpu_s"])
    assert w["gpu_s"] == [None] * 3 and w["crossover"] is None
    assert got["device"]["host_bandwidth_gbs"] > 0
    assert (tmp_path / "b.png").stat().st_size > 1000
    bad = runner.invoke(app, ["bench", "--only", "nope"])
    assert bad.exit_code == 2


def test_bench_cg_matches_scipy():
    from scipy.sparse.linalg import cg

    from calipers.tools.bench import _CG_ITERS, _laplacian, _torch_cg, torch_csr

    A = _laplacian(6)
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    ref, _ = cg(A, b, rtol=0.0, atol=0.0, maxiter=_CG_ITERS)
    got = _torch_cg(torch_csr(A), torch.from_numpy(b), _CG_ITERS).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-8)


def test_crossover_is_where_the_gpu_wins_for_good():
    from calipers.tools.bench import crossover

    sizes = [10, 100, 1000, 10_000]
    assert crossover(sizes, [1, 1, 1, 1], [2, 2, 0.5, 0.1]) == 1000
    assert crossover(sizes, [1, 1, 1, 1], [0.5, 2, 0.5, 0.1]) == 1000  # an early win that fades
    assert crossover(sizes, [1, 1, 1, 1], [0.1, 0.1, 0.1, 2]) is None  # behind at the largest
    assert crossover(sizes, [1, 1, 1, 1], [None] * 4) is None  # no GPU
    assert crossover(sizes, [1, 1, 1, 1], [1, 1, 1, 1]) is None  # a tie is not a win


def test_network_check_copies_read_only_pack_data(tmp_path):
    from calipers.evaluation.contracts import check_network
    from calipers.tools.pack import load_pack, pack

    class Scribbler(torch.nn.Module):  # writes into its input, as in-place layers may
        def forward(self, x):
            x.mul_(0)
            return torch.zeros(x.shape[0], 2, requires_grad=True)

    pack(_png_folder(tmp_path / "src", n=2), tmp_path / "p.pack")
    X = np.array(load_pack(tmp_path / "p.pack").X)  # read-only, like the memory map
    X.flags.writeable = False
    before = X.copy()
    check_network(Scribbler(), X[:2], task="classification", n_outputs=2, network="S")
    assert np.array_equal(X, before)  # the data were not handed over as shared memory


def test_every_bench_workload_runs_on_the_cpu():
    from calipers.tools.bench import WORKLOADS

    assert [w.name for w in WORKLOADS] == ["matmul", "fft2", "conv2d", "conv3d", "pdist", "cg",
                                           "permutation", "mc_dropout"]
    for w in WORKLOADS:
        cpu, gpu = w.make(w.quick[0], None)
        assert gpu is None and cpu() is not None, w.name
        assert list(w.quick) == sorted(w.quick) and list(w.full) == sorted(w.full)
    assert 4500 in WORKLOADS[4].full  # the classic 4,500 x 120 distance matrix
