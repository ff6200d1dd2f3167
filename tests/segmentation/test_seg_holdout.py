"""``calipers cv`` on tiny NIfTI volumes with one held-out split (``[cv] splits``): per-volume
intervals, Wilcoxon on per-volume Dice, and a class the training volumes never hold."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from calipers.cli import app
from calipers.experiment.summary import load_cv_result

runner = CliRunner()


def _write(tmp: Path, data: str, split: dict, nets: str, train: str) -> Path:
    (tmp / "split.json").write_text(json.dumps([split]))
    cfg = tmp / "exp.toml"
    cfg.write_text(f'{data}\n[cv]\nsplits = "split.json"\n[train]\n{train}\n[mc]\nsamples = 4\n'
                   f"{nets}")
    return cfg


def test_segmentation_single_split_with_an_unseen_class(tmp_path, nifti_set):
    data = nifti_set
    for i in range(4):  # training volumes lose class 2: only the test volumes hold it
        p = data / "labels" / f"case_{i:03d}.nii.gz"
        img = nib.load(p)
        lab = np.asarray(img.dataobj)
        nib.Nifti1Image(np.where(lab == 2, 0, lab).astype(np.uint8), img.affine).to_filename(p)
    nets = ('[networks.A]\nmodel = "calipers.models:UNet"\n'
            'args = { channels = [4, 8], dropout = 0.2 }\n'
            '[networks.B]\nmodel = "calipers.models:UNet"\n'
            'args = { channels = [8, 16], dropout = 0.1 }\n')
    cfg = _write(tmp_path, f'[data]\nkind = "nifti"\npath = "{data}"\ntask = "segmentation"',
                 {"train": [0, 1, 2, 3], "test": [4, 5]}, nets,
                 'epochs = 2\nbatch_size = 2\nlr = 1e-2\ndevice = "cpu"')
    with pytest.warns(UserWarning, match="class 2 in 2 volume"):
        res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    assert json.loads((run / "segmentation.json").read_text())["unseen_classes"] == \
        {"0": {"2": 2}}
    s = json.loads((run / "summary.json").read_text())
    assert s["protocol"] == "holdout"
    cv = load_cv_result(run)
    vol = {n: cv.results[n][0].predictions["dice"].mean(axis=1) for n in "AB"}
    c = s["comparison"]
    assert c["test"] == "wilcoxon"
    d = vol["B"] - vol["A"]
    ref = 1.0 if not np.any(d) else stats.wilcoxon(vol["B"], vol["A"]).pvalue
    assert c["p_wilcoxon"] == pytest.approx(ref)
    assert c["diff_mean"] == pytest.approx(d.mean())
    auroc = s["networks"]["A"]["entropy_auroc"]
    assert auroc["ci_low"] is None and auroc["interval"].startswith("none: point estimate")
    assert "2 test volumes" in s["networks"]["A"]["mean_dice"]["interval"]
