import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from calipers.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    res = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_demo_quick_writes_the_run_folder(demo_run):
    out, output = demo_run
    for name in ("config.toml", "env.json", "folds.json", "metrics.csv", "summary.json",
                 "report.html", "A/fold-00/model.pt", "B/fold-02/predictions.npz"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["networks"]) == {"A", "B"}
    keys = {"a", "b", "metric", "diff_mean", "diff_ci", "p_corrected_t", "p_mcnemar",
            "p_b_better", "p_equivalent", "p_a_better", "verdict", "chosen", "outcome",
            "headline", "detectable_diff", "fold_win_rate"}
    assert keys <= set(summary["comparison"])
    cmp = summary["comparison"]
    assert cmp["outcome"] in ("better", "equivalent", "inconclusive")
    lead = {"better": f"{cmp['chosen']} is better than", "inconclusive": "Inconclusive on",
            "equivalent": "A and B are equivalent"}[cmp["outcome"]]
    assert cmp["sentence"].startswith(lead) and cmp["headline"].startswith(f"Use {cmp['chosen']}.")
    assert cmp["p_b_better"] + cmp["p_equivalent"] + cmp["p_a_better"] == pytest.approx(1)
    acc = summary["networks"]["A"]["accuracy"]
    assert len(acc["folds"]) == 3 and acc["mean"] == pytest.approx(np.mean(acc["folds"]))
    assert acc["mean"] > 0.8  # real digits, a real CNN
    assert "Verdict:" in output
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "A" in html


def test_compare_json_matches_summary(demo_run):
    out, _ = demo_run
    res = runner.invoke(app, ["compare", str(out), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    ref = json.loads((out / "summary.json").read_text())
    assert got["comparison"]["p_corrected_t"] == pytest.approx(ref["comparison"]["p_corrected_t"])
    res = runner.invoke(app, ["compare", str(out), "--a", "B", "--b", "A", "--metric", "nll",
                              "--json"])
    got = json.loads(res.output)
    assert (got["comparison"]["a"], got["comparison"]["b"], got["metric"]) == ("B", "A", "nll")
    nll = ref["networks"]
    assert got["comparison"]["diff_mean"] == pytest.approx(
        nll["A"]["nll"]["mean"] - nll["B"]["nll"]["mean"])


def test_compare_power_and_rope(demo_run, tmp_path):
    out, _ = demo_run
    res = runner.invoke(app, ["compare", str(out), "--power"])
    assert res.exit_code == 0, res.output
    assert "detectable difference" in res.output and "more data is needed" in res.output
    res = runner.invoke(app, ["compare", str(out), "--power", "--json"])
    rows = json.loads(res.output)["rows"]
    assert [r["n_repeats"] for r in rows] == [1, 3, 5, 10]
    dets = [r["detectable"] for r in rows]
    assert dets == sorted(dets, reverse=True) and dets[0] > dets[-1] > 0
    res = runner.invoke(app, ["compare", str(out), "--rope", "2.5", "--json"])
    assert json.loads(res.output)["comparison"]["rope"] == pytest.approx(0.025)
    res = runner.invoke(app, ["compare", str(out), "--rope", "0", "--json"])
    cmp = json.loads(res.output)["comparison"]
    assert cmp["rope"] == 0 and cmp["p_equivalent"] == 0 and cmp["outcome"] != "equivalent"
    for bad, msg in (("-1", "rope must be a finite number >= 0"), ("nan", "rope must be a finite"),
                     ("inf", "rope must be a finite")):
        res = runner.invoke(app, ["compare", str(out), "--rope", bad])
        assert res.exit_code == 2 and msg in res.output, res.output
    single = tmp_path / "single"
    shutil.copytree(out, single)
    cfg = (single / "config.toml").read_text()
    (single / "config.toml").write_text(cfg[: cfg.index("[networks.B]")])
    res = runner.invoke(app, ["compare", str(single), "--power"])
    assert res.exit_code == 2 and "--power needs two networks" in res.output, res.output


def test_compare_unknown_metric_suggests(demo_run):
    out, _ = demo_run
    res = runner.invoke(app, ["compare", str(out), "--metric", "acuracy"])
    assert res.exit_code == 2 and "did you mean 'accuracy'" in res.output


def test_cv_bad_config_exit_2_names_key(tmp_path):
    (tmp_path / "e.toml").write_text('[cv]\nfold = 3\n[networks.A]\nmodel = "calipers.models:CNN"\n')
    res = runner.invoke(app, ["cv", str(tmp_path / "e.toml")])
    assert res.exit_code == 2
    assert "cv.fold: unknown key; did you mean 'folds'?" in res.output
    assert not (tmp_path / "runs").exists()


def test_cv_missing_data_file(tmp_path):
    (tmp_path / "e.toml").write_text('[data]\nkind = "arrays"\npath = "x.npz"\n'
                                     '[networks.A]\nmodel = "calipers.models:MLP"\n')
    res = runner.invoke(app, ["cv", str(tmp_path / "e.toml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "x.npz does not exist" in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_cv_resume_refuses_other_config(tmp_path, blobs):
    X, y = blobs
    np.savez(tmp_path / "d.npz", X=X, y=y)
    body = ('[data]\nkind = "arrays"\npath = "d.npz"\n[cv]\nfolds = 2\n[train]\nepochs = 1\n'
            '[mc]\nsamples = 2\n[networks.A]\nmodel = "calipers.models:MLP"\n')
    (tmp_path / "e.toml").write_text(body)
    out = str(tmp_path / "o")
    assert runner.invoke(app, ["cv", str(tmp_path / "e.toml"), "--out", out, "--no-report"]
                         ).exit_code == 0
    (tmp_path / "e.toml").write_text(body.replace("epochs = 1", "epochs = 2"))
    res = runner.invoke(app, ["cv", str(tmp_path / "e.toml"), "--out", out])
    assert res.exit_code == 2 and "holds a run of a different configuration" in res.output


def test_env_json_has_versions():
    import torch

    res = runner.invoke(app, ["env", "--json"])
    env = json.loads(res.output)
    assert env["packages"]["torch"] == torch.__version__
    assert env["cuda_available"] == torch.cuda.is_available()


def test_network_without_dropout_refused_before_anything_is_written(tmp_path):
    (tmp_path / "e.toml").write_text('[cv]\nfolds = 2\n[mc]\nsamples = 5\n'
                                     '[networks.plain]\nmodel = "torch.nn:Identity"\n')
    res = runner.invoke(app, ["cv", str(tmp_path / "e.toml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "network 'plain'" in res.output and "[mc] samples = 0" in res.output
    assert not (tmp_path / "o").exists()


def test_cv_with_search_on_a_uci_folder(tmp_path):
    """`calipers cv` on a folder in the UCI layout with [search]: stacked training behind a
    progress bar, the table shows the log likelihood, folds record their choices."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    data = np.column_stack([X, X @ [2.0, -1.0] + 0.1 * rng.normal(size=40)])
    d = tmp_path / "uci"
    d.mkdir()
    np.savetxt(d / "data.txt", data)
    np.savetxt(d / "index_features.txt", [0, 1], fmt="%d")
    np.savetxt(d / "index_target.txt", [2], fmt="%d")
    for k in range(2):
        test = np.arange(20 * k, 20 * k + 20)
        np.savetxt(d / f"index_train_{k}.txt", np.setdiff1d(np.arange(40), test))
        np.savetxt(d / f"index_test_{k}.txt", test)
    (tmp_path / "e.toml").write_text(
        '[data]\nkind = "uci"\npath = "uci"\n[cv]\nsplits = "uci"\n'
        '[train]\nepochs = 3\nbatch_size = 8\ndevice = "cpu"\n[mc]\nsamples = 5\n'
        '[search]\ndropout = [0.05, 0.1]\ntau = [1.0, 10.0]\nmc_samples = 3\n'
        '[networks.m]\nmodel = "calipers.models:MLP"\nargs = { hidden = [4] }\n')
    out = tmp_path / "o"
    res = runner.invoke(app, ["cv", str(tmp_path / "e.toml"), "--out", str(out), "--no-report"])
    assert res.exit_code == 0, res.output
    assert "log_likelihood" in res.output
    saved = json.loads((out / "m" / "fold-01" / "metrics.json").read_text())
    assert saved["metrics"]["chosen_dropout"] in (0.05, 0.1)
    assert saved["n_test"] == 20
