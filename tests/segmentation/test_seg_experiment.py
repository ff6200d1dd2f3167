"""Cross-validated segmentation runs: the run folder of design §3, metrics, report, repro."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from numpy.testing import assert_allclose

from calipers.config import parse_config
from calipers.evaluation.metrics import dice_per_class
from calipers.experiment.agreement import compare_runs_repro
from calipers.experiment.runner import run_experiment
from calipers.experiment.summary import load_cv_result


def test_run_folder_layout_and_metrics(seg_run):
    for f in ("config.toml", "env.json", "folds.json", "metrics.csv", "summary.json",
              "report.html", "segmentation.json"):
        assert (seg_run / f).is_file(), f
    cv = load_cv_result(seg_run)
    assert cv.task == "segmentation" and len(cv.results["A"]) == 2
    data_dir = seg_run.parent / "data"
    names = json.loads((seg_run / "segmentation.json").read_text())["names"]
    for res in cv.results["A"]:
        pred = res.predictions
        n = len(pred["index"])
        assert pred["labels"].shape == pred["y_true"].shape == (n, 16, 16, 16)
        assert pred["labels"].dtype == np.uint8 and pred["labels"].max() <= 2
        dice = []
        for k, i in enumerate(pred["index"]):  # recompute Dice from the original label files
            truth = np.asarray(nib.load(data_dir / "labels" / f"{names[i]}.nii.gz").dataobj)
            s = truth.shape
            assert tuple(pred["shape"][k]) == s
            assert pred["labels"][k][s[0]:].sum() == 0  # padding stays background
            dice.append(dice_per_class(truth, pred["labels"][k][:s[0], :s[1], :s[2]],
                                       n_classes=3))
        dice = np.array(dice)
        assert_allclose(res.metrics["dice_1"], dice[:, 0].mean())
        assert_allclose(res.metrics["mean_dice"], dice.mean())
        assert res.metrics["mutual_info"] > 0  # dropout 0.2 with 3 passes
        assert 0 <= res.metrics["entropy_auroc"] <= 1
    summary = json.loads((seg_run / "summary.json").read_text())
    assert summary["metric"] == "mean_dice" and summary["task"] == "segmentation"
    html = (seg_run / "report.html").read_text()
    assert "Segmentation and uncertainty" in html and "validation volumes of A" in html


def test_repro_of_a_run_with_itself(seg_run):
    rep = compare_runs_repro(seg_run, seg_run)
    assert rep.ok and len(rep.segmentation) == 6
    assert all(v.agreement.mean_dice == 1.0 for v in rep.segmentation)


def test_resume_skips_done_folds(seg_run):
    text = (seg_run / "config.toml").read_text()
    import tomllib

    cfg = parse_config(tomllib.loads(text))
    before = (seg_run / "A" / "fold-00" / "model.pt").stat().st_mtime_ns
    res = run_experiment(cfg, seg_run, report=False)
    assert all(r.resumed for r in res.cv.results["A"])
    assert (seg_run / "A" / "fold-00" / "model.pt").stat().st_mtime_ns == before


def test_network_without_dropout_is_refused(nifti_set, tmp_path):
    cfg = parse_config({
        "data": {"kind": "nifti", "path": str(nifti_set), "task": "segmentation"},
        "cv": {"folds": 2}, "mc": {"samples": 2},
        "networks": {"M": {"model": "torch.nn:Conv3d",
                           "args": {"in_channels": 1, "out_channels": 3, "kernel_size": 1}}},
    })
    with pytest.raises(Exception, match="has no dropout module"):
        run_experiment(cfg, tmp_path / "run")


def test_contiguous_and_predefined_folds(png_set, tmp_path):
    """ISBI slices are serial sections: ``shuffle = false`` gives contiguous test blocks, and
    ``[cv] splits`` (a JSON of index lists) is honoured for segmentation too."""
    import json

    base = {
        "data": {"kind": "png", "path": str(png_set), "task": "segmentation"},
        "train": {"epochs": 1, "batch_size": 2, "device": "cpu"}, "mc": {"samples": 0},
        "networks": {"A": {"model": "calipers.models:UNet",
                           "args": {"channels": [4, 8], "dropout": 0.1}}},
    }
    cfg = parse_config({**base, "cv": {"folds": 3, "shuffle": False}})
    res = run_experiment(cfg, tmp_path / "blocks", report=False)
    assert [f.tolist() for f in res.cv.folds.test] == [[0, 1], [2, 3], [4, 5]]
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps([{"train": [2, 3, 4, 5], "test": [0, 1]},
                                  {"train": [0, 1, 4, 5], "test": [2, 3]}]))
    cfg = parse_config({**base, "cv": {"splits": str(splits)}})
    res = run_experiment(cfg, tmp_path / "given", report=False)
    assert [f.tolist() for f in res.cv.folds.test] == [[0, 1], [2, 3]]


def test_undefined_metric_run_completes_and_reports(png_set, tmp_path, monkeypatch):
    """NOTE [Undefined metrics]: a fold whose test volumes have no wrong voxel has no entropy
    AUROC; the run still finishes, stores null with the reason, summarises the folds where the
    metric is defined and says the comparison is based on fewer folds."""
    import json
    import math

    import calipers.segmentation.experiment as seg

    calls = {"n": 0}
    real = seg.uncertainty_auroc

    def first_fold_undefined(wrong, score):
        calls["n"] += 1
        if calls["n"] == 1:  # network A, fold 0: as if every voxel were right
            return float("nan")
        return real(wrong, score)

    monkeypatch.setattr(seg, "uncertainty_auroc", first_fold_undefined)
    net = {"model": "calipers.models:UNet", "args": {"channels": [4, 8], "dropout": 0.1}}
    cfg = parse_config({
        "data": {"kind": "png", "path": str(png_set), "task": "segmentation"},
        "cv": {"folds": 3, "seed": 0}, "train": {"epochs": 1, "batch_size": 2, "device": "cpu"},
        "mc": {"samples": 2}, "compare": {"metric": "entropy_auroc"},
        "networks": {"A": net, "B": {**net, "args": {"channels": [4, 8], "dropout": 0.2}}},
    })
    res = run_experiment(cfg, tmp_path / "run", report=True)
    assert res.report is not None and res.report.is_file()
    html = res.report.read_text()
    assert "<td>2 of 3</td>" in html and "Based on 2 of 3 folds" in html
    saved = json.loads((tmp_path / "run/A/fold-00/metrics.json").read_text())
    assert saved["metrics"]["entropy_auroc"] is None
    assert 0 < saved["metrics"]["voxel_error"] < 1  # so the reason is the generic one
    assert saved["undefined"] == {"entropy_auroc": "the entropy AUROC is not finite"}
    assert "undefined" not in json.loads((tmp_path / "run/A/fold-01/metrics.json").read_text())
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    a = summary["networks"]["A"]["entropy_auroc"]
    assert a["n_folds"] == 2 and a["folds"][0] is None
    assert math.isclose(a["mean"], (a["folds"][1] + a["folds"][2]) / 2)
    assert summary["networks"]["B"]["entropy_auroc"]["n_folds"] == 3
    assert summary["networks"]["A"]["mean_dice"]["n_folds"] == 3
    assert summary["comparison"]["sentence"].startswith("Based on 2 of 3 folds: entropy_auroc is "
                                                        "undefined on the others (the "
                                                        "entropy AUROC is not finite).")
    assert res.summary.comparison.pairs[0].df == 1  # the paired test saw 2 folds
    csv_row = (tmp_path / "run/metrics.csv").read_text().splitlines()[1]
    assert ",nan," in csv_row or csv_row.endswith(",nan")
    from typer.testing import CliRunner

    from calipers.cli import app

    shown = CliRunner().invoke(app, ["compare", str(tmp_path / "run"), "--metric",
                                     "entropy_auroc"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "(2/3 folds)" in shown.output and "Based on 2 of 3 folds" in shown.output
