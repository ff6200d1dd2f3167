"""``calipers cv`` with ``[cv] splits`` holding one split: classification (a digits subset),
regression and segmentation (tiny NIfTI volumes) end to end; bad splits refused before training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calipers.cli import app
from calipers.experiment.summary import load_cv_result
from calipers.stats import mcnemar_test

runner = CliRunner()
CNN = 'model = "calipers.models:CNN"\n'


def write_single_split(tmp: Path, data: str, split: dict, nets: str, train: str) -> Path:
    (tmp / "split.json").write_text(json.dumps([split]))
    cfg = tmp / "exp.toml"
    cfg.write_text(f'{data}\n[cv]\nsplits = "split.json"\n[train]\n{train}\n[mc]\nsamples = 4\n'
                   f"{nets}")
    return cfg


DIGITS = '[data]\nkind = "digits"\ntask = "classification"'
TWO_CNNS = (f'[networks.A]\n{CNN}args = {{ channels = 8, dropout = 0.1 }}\n'
            f'[networks.B]\n{CNN}args = {{ channels = 16, dropout = 0.2 }}\n')


def test_digits_single_split_end_to_end(tmp_path):
    split = {"train": list(range(300)), "test": list(range(300, 500))}
    cfg = write_single_split(tmp_path, DIGITS, split, TWO_CNNS,
                 'epochs = 2\nbatch_size = 32\nlr = 3e-3\ndevice = "cpu"')
    res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "one held-out test set" in res.output
    assert "percentile bootstrap over 200 test samples" in res.output
    # progress in logs counts the predefined splits (1 per network), not [cv] folds (10)
    assert "fold 2/2 done" in res.output and "/20" not in res.output
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["protocol"] == "holdout" and s["n_splits"] == 1
    cv = load_cv_result(tmp_path / "run")
    right = {n: cv.pooled(n, "proba").argmax(1) == cv.pooled(n, "y_true") for n in "AB"}
    assert s["comparison"]["p_mcnemar"] == pytest.approx(
        mcnemar_test(right["A"], right["B"]).pvalue)
    assert s["networks"]["A"]["accuracy"]["mean"] == pytest.approx(right["A"].mean())
    assert "Verdict:" in res.output and s["comparison"]["chosen"] in ("A", "B")
    html = (tmp_path / "run" / "report.html").read_text()
    assert "one held-out split · 95% percentile bootstrap over 200 test samples" in html
    res = runner.invoke(app, ["compare", str(tmp_path / "run"), "--json"])  # a finished run
    assert res.exit_code == 0 and json.loads(res.output)["comparison"] == s["comparison"]


@pytest.mark.parametrize(("split", "match"), [
    ({"train": [0, 1, 2, 3], "test": [3, 4, 5]}, "train and test share 1 indices"),
    ({"train": [0, 1, 2, 3], "test": []}, "is empty"),
    ({"train": [0, 1, 2, 3], "test": [9]}, "has 1 sample"),
])
def test_bad_single_split_refused_before_training(tmp_path, split, match):
    cfg = write_single_split(tmp_path, DIGITS, split, TWO_CNNS, "epochs = 50")
    res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert match in " ".join(res.output.split())
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_unsummarisable_metric_refused_before_training(tmp_path):
    cfg = write_single_split(tmp_path, DIGITS, {"train": [0, 1, 2], "test": [3, 4, 5]}, TWO_CNNS,
                 "epochs = 50")
    cfg.write_text(cfg.read_text() + '[compare]\nmetric = "rmse"\n')
    res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "unknown classification metric" in res.output
    assert not (tmp_path / "run").exists()


def test_regression_single_split(tmp_path, rng):
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = (2 * X[:, 0] + 0.3 * rng.normal(size=120)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=y)
    data = '[data]\nkind = "arrays"\npath = "reg.npz"\ntask = "regression"'
    nets = ('[networks.small]\nmodel = "calipers.models:MLP"\n'
            'args = { hidden = [8], dropout = 0.05 }\n'
            '[networks.big]\nmodel = "calipers.models:MLP"\n'
            'args = { hidden = [32], dropout = 0.05 }\n')
    cfg = write_single_split(tmp_path, data, {"train": list(range(80)), "test": list(range(80, 120))}, nets,
                 'epochs = 20\nbatch_size = 16\nlr = 1e-2\ndevice = "cpu"')
    res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    cv = load_cv_result(tmp_path / "run")
    err = cv.pooled("small", "mean").reshape(-1) - cv.pooled("small", "y_true").reshape(-1)
    assert s["networks"]["small"]["rmse"]["mean"] == pytest.approx(np.sqrt(np.mean(err**2)),
                                                                   rel=1e-5)
    assert s["comparison"]["test"] == "bootstrap" and s["comparison"]["p_bootstrap"] is not None
    assert "40 test samples" in s["networks"]["small"]["rmse"]["interval"]
