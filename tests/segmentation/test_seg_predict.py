"""``calipers predict``: NIfTI/PNG outputs, checkpoints, corrupt inputs, exit codes."""

from __future__ import annotations

import csv
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
import typer
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image
from typer.testing import CliRunner

from calipers.cli.predict import predict
from calipers.exceptions import DataError
from calipers.models import UNet
from calipers.segmentation import export_checkpoint, load_predictor, predict_folder
from calipers.segmentation.data import normalize_intensity
from calipers.segmentation.maps import mc_segment
from calipers.segmentation.predict import Predictor


@pytest.fixture
def in_dir(seg_run, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("case_000.nii.gz", "case_003.nii.gz"):
        shutil.copy(seg_run.parent / "data" / "images" / name, d / name)
    return d


def test_nifti_outputs_keep_geometry(seg_run, in_dir, tmp_path, seg_affine):
    res = predict_folder(seg_run, in_dir, tmp_path / "out", n_mc=3)
    assert res.ok and res.n_models == 2 and res.done == ("case_000.nii.gz", "case_003.nii.gz")
    for name in res.done:
        src = nib.load(in_dir / name)
        stem = name[:-7]
        seg = nib.load(tmp_path / "out" / f"{stem}_seg.nii.gz")
        assert seg.shape == src.shape
        assert_allclose(seg.affine, seg_affine)
        assert_allclose(seg.header.get_zooms(), src.header.get_zooms())
        labels = np.asarray(seg.dataobj)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
        for key in ("entropy", "mi", "std", "disagreement"):
            m = nib.load(tmp_path / "out" / f"{stem}_{key}.nii.gz")
            assert m.shape == src.shape and m.get_data_dtype() == np.float32
            v = m.get_fdata()
            assert v.min() >= 0 and v.max() <= np.log(3) + 1e-6
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert float(rows[0]["mean_mutual_info_fg"]) > 0


def test_maps_equal_mc_segment_of_the_ensemble(seg_run, in_dir, tmp_path):
    pred = load_predictor(seg_run)
    res = predict_folder(pred, in_dir, tmp_path / "out", n_mc=2, seed=5)
    x = nib.load(in_dir / "case_000.nii.gz").get_fdata(dtype=np.float32)
    from calipers._seeds import child_seed

    ref = mc_segment(pred.models, normalize_intensity(x)[None], n_mc=2,
                     seed=child_seed(5, "case_000.nii.gz"), multiple=16,
                     min_shape=pred.meta["input_shape"][1:])
    got = nib.load(res.out_dir / "case_000_entropy.nii.gz").get_fdata()
    assert_allclose(got, ref.entropy, atol=1e-6)
    assert_array_equal(np.asarray(nib.load(res.out_dir / "case_000_seg.nii.gz").dataobj),
                       ref.segmentation)


def test_checkpoint_round_trip(seg_run, in_dir, tmp_path):
    path = export_checkpoint(seg_run, 1, tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == "calipers-segmentation-checkpoint" and len(ckpt["state_dicts"]) == 1
    a = predict_folder(path, in_dir, tmp_path / "a", n_mc=2)
    run_state = torch.load(seg_run / "A" / "fold-01" / "model.pt", weights_only=True)
    one = load_predictor(seg_run, folds=[1])
    for k, v in one.models[0].state_dict().items():
        assert torch.equal(v, run_state[k])
    b = predict_folder(one, in_dir, tmp_path / "b", n_mc=2)
    assert a.n_models == b.n_models == 1
    assert not (tmp_path / "a" / "case_000_disagreement.nii.gz").exists()
    for f in ("case_000_mi.nii.gz", "case_000_seg.nii.gz"):
        assert_array_equal(nib.load(a.out_dir / f).get_fdata(), nib.load(b.out_dir / f).get_fdata())


def test_corrupt_file_is_skipped_and_exit_is_nonzero(seg_run, in_dir, tmp_path):
    (in_dir / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    (in_dir / "notes.txt").write_text("ignored")
    app = typer.Typer()
    app.command()(predict)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["--model", str(seg_run), "--in", str(in_dir), "--out",
                                 str(out), "--mc", "2", "-q"])
    assert r.exit_code == 1, r.output
    assert "skipped broken.nii.gz" in r.output and "2 segmented" in r.output
    assert (out / "case_003_seg.nii.gz").is_file() and not list(out.glob("broken*"))
    rows = {row["file"]: row["status"] for row in csv.DictReader(open(out / "summary.csv"))}
    assert rows["broken.nii.gz"].startswith("failed: ") and rows["case_000.nii.gz"] == "ok"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    r = CliRunner().invoke(app, ["--model", str(tmp_path / "none"), "--in", str(in_dir),
                                 "--out", str(out)])
    assert r.exit_code == 2 and "neither a run folder nor a checkpoint" in r.output


def test_sliding_window_option(seg_run, in_dir, tmp_path):
    app = typer.Typer()
    app.command()(predict)
    m = load_predictor(seg_run).meta["multiple"]
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["--model", str(seg_run), "--in", str(in_dir), "--out", str(out),
                                 "--mc", "2", "-q", "--roi", f"{m},{m},{m}"])
    assert r.exit_code == 0, r.output
    src = nib.load(in_dir / "case_000.nii.gz")
    assert nib.load(out / "case_000_seg.nii.gz").shape == src.shape
    for bad, msg in ((f"{m + 1},{m},{m}", "roi_size must give 3 positive sizes"),
                     ("8x8x8", "--roi must be sizes separated by commas")):
        r = CliRunner().invoke(app, ["--model", str(seg_run), "--in", str(in_dir), "--out",
                                     str(tmp_path / "bad"), "-q", "--roi", bad])
        assert r.exit_code == 2 and msg in r.output, r.output
        assert not (tmp_path / "bad").exists()  # refused before any output


def test_png_in_png_out(tmp_path, png_factory):
    data = png_factory(tmp_path / "d", n=2)
    torch.manual_seed(0)
    net = UNet((1, 32, 32), 2, channels=(4, 8), dropout=0.3)
    meta = {"model": "calipers.models:UNet", "args": {"channels": [4, 8], "dropout": 0.3},
            "n_classes": 2, "label_values": [0, 255], "input_shape": [1, 32, 32],
            "multiple": 16, "normalize": "zscore", "kind": "png"}
    res = predict_folder(Predictor((net,), meta, {}), data / "image", tmp_path / "out", n_mc=3)
    assert res.ok
    seg = np.array(Image.open(tmp_path / "out" / "0_seg.png"))
    assert seg.shape == (20, 24) and set(np.unique(seg)) <= {0, 255}
    ent = Image.open(tmp_path / "out" / "0_entropy.png")
    assert ent.mode == "I;16" and ent.size == (24, 20)


def test_bad_checkpoint(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(DataError, match="not a calipers segmentation checkpoint"):
        load_predictor(p)


def test_progress_in_logs_one_line_per_file(seg_run, in_dir, tmp_path):
    # CliRunner's streams are not terminals: plain lines, no bar (calipers.cli.progress)
    app = typer.Typer()
    app.command()(predict)
    r = CliRunner().invoke(app, ["--model", str(seg_run), "--in", str(in_dir), "--out",
                                 str(tmp_path / "o"), "--mc", "1"])
    assert r.exit_code == 0, r.output
    n = len(list(in_dir.glob("*.nii.gz")))
    lines = [ln for ln in r.output.splitlines() if ln.startswith("file ")]
    assert len(lines) == n, r.output
    assert lines[0].startswith(f"file 1/{n} done (case_000.nii.gz) · ")
    assert lines[-1].startswith(f"file {n}/{n} done") and "left" not in lines[-1]
    assert "━" not in r.output


def test_predict_writes_gpu_json_with_one_segment_per_file(seg_run, in_dir, tmp_path,
                                                           monkeypatch):
    """The monitor of issue 13 around predict, with a fake NVML: one segment per image."""
    import json
    from types import SimpleNamespace as NS

    from calipers.gpu import monitor

    fake = NS(nvmlDeviceGetHandleByIndex=lambda i: "h", nvmlDeviceGetName=lambda h: b"Fake GPU",
              nvmlDeviceGetMemoryInfo=lambda h: NS(used=2**30, total=8 * 2**30),
              nvmlDeviceGetUtilizationRates=lambda h: NS(gpu=99),
              nvmlDeviceGetPowerUsage=lambda h: 50_000)
    monkeypatch.setattr(monitor, "_nvml_index", lambda device: 0)
    monkeypatch.setattr(monitor, "load_nvml", lambda: fake)
    app = typer.Typer()
    app.command()(predict)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["--model", str(seg_run), "--in", str(in_dir), "--out",
                                 str(out), "--mc", "2", "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    g = json.loads((out / "gpu.json").read_text())
    assert g["name"] == "Fake GPU" and g["advice"]["code"] == "ok"
    assert sorted(s["label"] for s in g["segments"]) == ["case_000.nii.gz", "case_003.nii.gz"]
