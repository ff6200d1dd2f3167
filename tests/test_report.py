"""Tests of calipers.report: the self-contained HTML report and its figures."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from numpy.testing import assert_allclose

from calipers._format import estimate, fmt_sig
from calipers.exceptions import DataError
from calipers.report import (
    RunData,
    load_run,
    plot_fold_scores,
    plot_paired_differences,
    plot_reliability,
    plot_std_vs_error,
    render_report,
    write_report,
)
from calipers.runs import atomic_write_json, save_npz

N_FOLDS = 5
PNG_URI = "data:image/png;base64,"


def _stats(folds: list[float]) -> dict:
    f = np.asarray(folds)
    half = scipy.stats.t.ppf(0.975, f.size - 1) * f.std(ddof=1) / np.sqrt(f.size)
    return {"mean": f.mean(), "std": f.std(ddof=1), "ci_low": f.mean() - half,
            "ci_high": f.mean() + half, "folds": f.tolist()}


def _make_run(
    root: Path, *, task: str = "classification", names: tuple[str, str] = ("A", "B"),
    seed: int = 0,
) -> dict:
    """A small valid run directory: two networks, 5 folds, 12 test samples per fold."""
    rng = np.random.default_rng(seed)
    metric = "accuracy" if task == "classification" else "rmse"
    scores = {n: (0.8 + 0.1 * rng.random(N_FOLDS)).round(4).tolist() for n in names}
    for net in names:
        for j in range(N_FOLDS):
            y = rng.integers(0, 3, size=12)
            if task == "classification":
                proba = rng.dirichlet(np.ones(3), size=12)
                ent = -(proba * np.log(proba)).sum(1)
                arrays = {"index": np.arange(12) + 12 * j, "y_true": y, "proba": proba,
                          "entropy": ent, "mutual_info": 0.1 * ent}
            else:
                arrays = {"index": np.arange(12) + 12 * j, "y_true": y.astype(float),
                          "mean": rng.normal(size=(12, 1)), "var": rng.random((12, 1)) + 0.1}
            save_npz(root / net / f"fold-{j:02d}" / "predictions.npz", arrays)
    a, b = names
    d = np.subtract(scores[b], scores[a])
    pair = {"a": a, "b": b, "metric": metric, "diff_mean": float(d.mean()),
            "diff_ci": [float(d.mean()) - 0.05, float(d.mean()) + 0.05],
            "p_corrected_t": 0.4321, "p_holm": 0.8642, "p_mcnemar": 0.0004, "p_b_better": 0.6,
            "p_b_better_ci": [0.2, 1.0], "verdict": "not established", "chosen": b,
            "criterion": "fold std", "sentence": f"No established difference; choose {b}."}
    summary = {"task": task, "metric": metric, "higher_is_better": task == "classification",
               "n_folds": N_FOLDS, "n_repeats": 1,
               "networks": {n: {metric: _stats(scores[n])} for n in names},
               "comparison": pair, "pairs": [pair], "best": b,
               "sentence": f"{b} is the network to use (run sentence)."}
    atomic_write_json(root / "summary.json", summary)
    atomic_write_json(root / "env.json", {"created": "2030-05-06T07:08:09+00:00",
                                          "os": "Linux-test", "python": "3.11.9",
                                          "gpus": [{"name": "Fake GPU", "memory_gb": 80}]})
    atomic_write_json(root / "folds.json", {  # as calipers.evaluation.folds writes it: n_splits, no n_folds
        "hash": "abc123def", "n_samples": 60, "n_splits": N_FOLDS, "n_repeats": 1,
        "folds": [{"repeat": 0, "fold": j, "train": [], "test": []} for j in range(N_FOLDS)]})
    (root / "config.toml").write_text('[data]\nkind = "digits" # <x> & y\n', encoding="utf-8")
    return summary


def _images(text: str) -> list[str]:
    return re.findall(r"<img [^>]*>", text)


@pytest.fixture(scope="module")
def class_run(tmp_path_factory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("run-cls")
    summary = _make_run(root)
    path = write_report(root)
    return root, summary, path.read_text(encoding="utf-8")


def test_report_written_and_self_contained(class_run):
    root, _, text = class_run
    assert (root / "report.html").is_file()
    assert not list(root.glob(".report.html.*"))  # no temporary file left behind
    assert text.startswith("<!DOCTYPE html>")
    assert "src=\"http" not in text and "src='http" not in text
    assert "<link" not in text and "<script" not in text and "url(" not in text
    imgs = _images(text)
    # per-fold plot + pairs plot + (reliability + entropy histogram) per network
    assert len(imgs) == 2 + 2 * 2
    for img in imgs:
        uri = re.search(r'src="([^"]*)"', img).group(1)
        assert uri.startswith(PNG_URI)
        assert base64.b64decode(uri[len(PNG_URI):]).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_content(class_run):
    root, summary, text = class_run
    assert "B is the network to use (run sentence)." in text
    assert "No established difference; choose B." in text
    verdict_box = text.split("class='verdict'")[1].split("</div>")[0]
    assert "run sentence" in verdict_box
    assert f"calipers report: {root.name}" in text
    for net in ("A", "B"):
        m = summary["networks"][net]["accuracy"]
        # accuracy in %, mean ± std and CI with one precision (NOTE [Number formatting])
        est = estimate(m["mean"], m["ci_low"], m["ci_high"], std=m["std"], percent=True)
        assert f"<td>{est.pm()}</td><td>{est.ci()}</td>" in text
        assert est.pm().endswith(f"% ± {est.std}") and "%" not in est.ci()
    pair = summary["comparison"]
    est = estimate(pair["diff_mean"], *pair["diff_ci"], percent=True, diff=True)
    assert f"<td>B − A</td><td>accuracy</td><td>{est.value()}</td><td>{est.ci()}</td>" in text
    assert est.value().endswith(" pp")
    # a single pair: no Holm column; McNemar given
    assert "<td>0.43</td><td>&lt; 0.001</td><td>60% [20%, 100%]</td>" in text
    assert "p Holm" not in text
    assert "<p class='date'>6 May 2030, 07:08 UTC</p>" in text  # env.json's "created"
    assert "<td>abc123def</td><td>60</td><td>5</td><td>1</td><td>5</td>" in text
    assert "fold std" in text and "not established" in text
    for value in ("Linux-test", "3.11.9", "Fake GPU", "abc123def"):
        assert value in text
    # nested env values as JSON text (escaped)
    assert "[{&quot;name&quot;: &quot;Fake GPU&quot;, &quot;memory_gb&quot;: 80}]" in text
    # config verbatim and escaped
    assert '<pre>[data]\nkind = &quot;digits&quot; # &lt;x&gt; &amp; y\n</pre>' in text
    assert "Missing predictions" not in text


def test_pooled_numbers_in_report(class_run):
    root, _, text = class_run
    run = load_run(root)
    folds = run.predictions["A"]
    assert sorted(folds) == list(range(N_FOLDS))
    y = np.concatenate([folds[j]["y_true"] for j in range(N_FOLDS)])
    proba = np.concatenate([folds[j]["proba"] for j in range(N_FOLDS)])
    acc = np.mean(proba.argmax(1) == y)
    ent = np.concatenate([folds[j]["entropy"] for j in range(N_FOLDS)]).mean()
    acc_text = estimate(acc, percent=True).value()
    assert f"<td>A</td><td>5</td><td>60</td><td>{acc_text}</td><td>{fmt_sig(ent)}</td>" in text


def test_regression_report(tmp_path):
    summary = _make_run(tmp_path, task="regression")
    text = write_report(tmp_path).read_text(encoding="utf-8")
    imgs = _images(text)
    # per-fold, pairs, (std-vs-error scatter + residual histogram) per network
    assert len(imgs) == 2 + 2 * 2
    assert all(PNG_URI in img for img in imgs)
    assert "reliability" not in text and "entropy" not in text
    m = summary["networks"]["A"]["rmse"]
    assert estimate(m["mean"], m["ci_low"], m["ci_high"], std=m["std"]).pm() in text
    run = load_run(tmp_path)
    pred = run.predictions["B"]
    res = np.concatenate([pred[j]["y_true"][:, None] - pred[j]["mean"] for j in range(N_FOLDS)])
    std = np.sqrt(np.concatenate([pred[j]["var"] for j in range(N_FOLDS)]))
    cover = np.mean(np.abs(res) <= 1.96 * std)
    row = (f"<td>B</td><td>5</td><td>60</td><td>{fmt_sig(np.sqrt(np.mean(res**2)))}</td>"
           f"<td>{fmt_sig(std.mean())}</td><td>{100 * cover:.1f}%</td>")
    assert row in text


def test_missing_and_broken_predictions_reported(tmp_path):
    _make_run(tmp_path)
    (tmp_path / "A" / "fold-03" / "predictions.npz").unlink()
    (tmp_path / "A" / "fold-01" / "predictions.npz").write_bytes(b"not a zip")
    save_npz(tmp_path / "A" / "fold-02" / "predictions.npz", {"y_true": np.zeros(12)})
    for j in range(N_FOLDS):
        (tmp_path / "B" / f"fold-{j:02d}" / "predictions.npz").unlink()
    run = load_run(tmp_path)
    assert sorted(run.predictions["A"]) == [0, 4]
    assert run.missing["A"][2] == "predictions.npz lacks proba"
    assert run.missing["A"][3] == "predictions.npz not found"
    assert run.missing["A"][1].startswith("predictions.npz unreadable")
    assert run.predictions["B"] == {} and sorted(run.missing["B"]) == list(range(N_FOLDS))
    text = render_report(run)
    assert "Missing predictions" in text
    assert "A fold 03: predictions.npz not found" in text
    assert "A fold 01: predictions.npz unreadable" in text
    assert "B fold 04: predictions.npz not found" in text
    assert "A fold 02: predictions.npz lacks proba" in text
    assert "<td>A</td><td>2</td><td>24</td>" in text  # 2 folds pooled, 24 samples
    assert "<td>B</td>" not in text.split("Calibration")[1].split("<h2>")[0]
    assert len(_images(text)) == 2 + 2  # B has no reliability/entropy figures


def test_invalid_probabilities_reported(class_run):
    run = load_run(class_run[0])
    bad = {**run.predictions["A"][0], "proba": 2 * run.predictions["A"][0]["proba"]}
    preds = {**run.predictions, "A": {**run.predictions["A"], 0: bad}}
    text = render_report(RunData(run.summary, predictions=preds, missing=run.missing))
    assert "<td>A</td><td>5</td><td>60</td><td>invalid predictions: proba" in text
    assert len(_images(text)) == 2 + 2  # only B gets calibration figures


def test_html_escaping_of_names(tmp_path):
    _make_run(tmp_path, names=("<b>", "net&co"))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<b>" not in text
    assert "&lt;b&gt;" in text and "net&amp;co" in text
    assert "net&co" not in text
    assert len(_images(text)) == 6


def test_in_memory_run_data():
    summary = {"task": "classification", "metric": "accuracy", "networks": {
        "x": {"accuracy": {"mean": 0.5, "std": 0.1, "ci_low": 0.4, "ci_high": 0.6,
                           "folds": [0.4, 0.5, 0.6]}}}, "sentence": "One network only."}
    run = RunData(summary, name="mem", date="2024-01-02")
    text = render_report(run)
    assert "calipers report: mem" in text and "2 January 2024" in text
    assert "One network only." in text and "50% ± 10" in text and "[40, 60]" in text
    assert "x: no predictions" in text and "env.json not found" in text
    assert "Paired comparisons" not in text  # one network: nothing to compare
    assert "x: accuracy 50% (95% CI [40, 60])." in text  # the headline
    assert len(_images(text)) == 1
    assert run.to_dict()["n_predictions"] == {}
    json.dumps(run.to_dict())


def test_missing_summary_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a calipers run folder: it has neither"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist"):
        write_report(tmp_path / "nowhere")
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize(
    ("summary", "match"),
    [
        ([1, 2], "must hold a JSON object; got list"),
        ({"task": "classification", "metric": "accuracy", "networks": {}},
         "'networks' must be a non-empty object"),
        ({"metric": "accuracy", "networks": {"A": {}}}, "'task' must be a string; got None"),
        ({"task": "classification", "metric": "accuracy", "networks": {"A": 3}},
         r"networks\['A'\] must map metric names"),
    ],
)
def test_bad_summary_raises(tmp_path, summary, match):
    atomic_write_json(tmp_path / "summary.json", summary)
    with pytest.raises(DataError, match=match):
        load_run(tmp_path)


def test_render_report_argument_checks():
    with pytest.raises(TypeError, match="run must be a RunData; got dict"):
        render_report({"task": "classification"})
    run = RunData({"task": "regression", "metric": "rmse", "networks": {"A": {}}})
    with pytest.raises(ValueError, match=r"dpi must be an integer in \[10, 600\]; got 0"):
        render_report(run, dpi=0)


# ---------------------------------------------------------------- figures, against references


def test_reliability_ece_hand_derived():
    # 10 samples with confidence 0.7 (6 right) and 10 with confidence 0.95 (10 right):
    # ECE = 0.5·|0.6 − 0.7| + 0.5·|1.0 − 0.95| = 0.075.
    proba = np.array([[0.7, 0.3]] * 10 + [[0.05, 0.95]] * 10)
    y = np.array([0] * 6 + [1] * 4 + [1] * 10)
    fig = plot_reliability(y, proba, title="net")
    ax = fig.axes[0]
    assert ax.get_title() == "net: ECE 7.50% (pooled)"
    acc_bars, gap_bars = ax.containers
    assert_allclose([p.get_height() for p in acc_bars], [0.6, 1.0])
    assert_allclose([p.get_x() for p in acc_bars], [10 / 15, 14 / 15])  # (10/15, 11/15], ...
    assert_allclose([p.get_y() + p.get_height() for p in gap_bars], [0.7, 0.95])  # confidence


def test_paired_difference_points_are_b_minus_a():
    a = np.array([0.8, 0.82, 0.85, 0.79])
    b = np.array([0.81, 0.84, 0.84, 0.83])
    fig = plot_paired_differences({"B − A": b - a}, ci={"B − A": (-0.01, 0.04)}, percent=True)
    ax = fig.axes[0]
    points = ax.collections[0].get_offsets()
    assert_allclose(np.sort(points[:, 0]), np.sort(100 * (b - a)))
    # the error bar spans the CI given, in percentage points
    segs = [c for c in ax.collections[1:] if hasattr(c, "get_segments")]
    xs = np.concatenate([np.asarray(s)[:, 0] for c in segs for s in c.get_segments()])
    assert_allclose([xs.min(), xs.max()], [-1.0, 4.0])


def test_fold_scores_default_interval_is_t_interval():
    scores = np.array([0.9, 0.92, 0.88, 0.95, 0.91])
    fig = plot_fold_scores({"A": scores}, metric="accuracy")
    ax = fig.axes[0]
    assert_allclose(np.sort(ax.collections[0].get_offsets()[:, 1]), np.sort(scores))
    ref = scipy.stats.t.interval(0.95, 4, loc=scores.mean(), scale=scipy.stats.sem(scores))
    segs = [c for c in ax.collections[1:] if hasattr(c, "get_segments")]
    ys = np.concatenate([np.asarray(s)[:, 1] for c in segs for s in c.get_segments()])
    assert_allclose([ys.min(), ys.max()], ref, rtol=1e-12)


def test_std_vs_error_spearman_in_title():
    rng = np.random.default_rng(1)
    std = rng.random(50)
    err = np.abs(rng.normal(scale=std))
    fig = plot_std_vs_error(std, err, title="$net$")
    rho = scipy.stats.spearmanr(std, err).statistic
    assert fig.axes[0].get_title() == rf"\$net\$: Spearman ρ = {fmt_sig(rho, 2)}"
