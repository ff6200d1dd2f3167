"""`calipers repro`: two deterministic runs agree bit for bit; changed runs are caught, with the
differences measured exactly; `calipers env --from RUN` rebuilds the recorded versions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
from numpy.testing import assert_allclose
from scipy.spatial.distance import dice as scipy_dice_dissimilarity
from typer.testing import CliRunner

from calipers.cli.repro import env as env_command
from calipers.cli.repro import repro as repro_command
from calipers.config import parse_config
from calipers.experiment.agreement import Difference, compare_runs_repro, segmentation_agreement
from calipers.experiment.runner import run_experiment
from calipers.repro.determinism import deterministic
from calipers.runs import read_json

app = typer.Typer()
app.command("env")(env_command)
app.command("repro")(repro_command)
runner = CliRunner()


def _config(path, *, seed=0, task="classification"):
    return parse_config({
        "data": {"kind": "arrays", "path": str(path), "task": task},
        "cv": {"folds": 2, "seed": seed, "stratify": task == "classification"},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu"},
        "mc": {"samples": 3},
        "networks": {"A": {"model": "calipers.models:MLP",
                           "args": {"hidden": [8], "dropout": 0.2}}},
    })


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs a and b (same config, determinism on), c (cv.seed 1) and r (regression)."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 16)
    X = (rng.normal(size=(48, 4)) + y[:, None]).astype(np.float32)
    np.savez(root / "cls.npz", X=X, y=y)
    np.savez(root / "reg.npz", X=X, y=(X @ np.array([1.0, -1.0, 0.5, 0.0])).astype(np.float32))
    out = {}
    for name, seed, task in (("a", 0, "classification"), ("b", 0, "classification"),
                             ("c", 1, "classification"), ("r", 0, "regression")):
        data = root / ("cls.npz" if task == "classification" else "reg.npz")
        with deterministic(seed):
            run_experiment(_config(data, seed=seed, task=task), root / name, report=False)
        out[name] = root / name
    return out


def _copy(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


# -- the CI checks -----------------------------------------------------------------------

def test_deterministic_runs_are_bit_identical_and_repro_says_so(runs, tmp_path):
    a, b = runs["a"], runs["b"]
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    assert read_json(a / "env.json")["determinism"]["enabled"] is True
    res = runner.invoke(app, ["repro", str(a), str(b), "--json-out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "bit-identical metrics and predictions" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is True and report["problems"] == []
    assert report["metrics_csv_identical"] is True and report["folds_match"] is True
    assert report["config_diffs"] == []
    # only the creation time differs between the two env.json files, and it is not compared
    assert report["env_diffs"] == []
    pred = report["predictions"][0]
    assert (pred["n_samples"], pred["max_abs_diff"], pred["fraction_identical"],
            pred["label_agreement"]) == (48, 0.0, 1.0, 1.0)
    assert all(m["max_abs_diff"] == 0.0 for m in report["metrics"])


def test_changed_seed_is_reported_with_the_differences(runs, tmp_path):
    a, c = runs["a"], runs["c"]
    res = runner.invoke(app, ["repro", str(a), str(c), "--json-out", str(tmp_path / "r.json")])
    assert res.exit_code == 1, res.output
    assert "The runs differ" in res.output and "cv.seed" in res.output
    report = compare_runs_repro(a, c)
    assert not report.ok
    assert report.config_diffs == (Difference("cv.seed", 0, 1),)
    assert not report.folds_match and report.metrics == ()
    assert report.problems[0] == "configs differ in cv.seed (0 → 1)"
    assert report.problems[1].startswith("folds differ")
    # predictions are still matched sample by sample; check against a direct computation
    pa = _pooled(a, "proba")
    pc = _pooled(c, "proba")
    p = report.predictions[0]
    assert p.max_abs_diff == np.abs(pa - pc).max() > 0
    assert p.label_agreement == np.mean(pa.argmax(1) == pc.argmax(1))


def _pooled(run, key, network="A"):
    """Pooled out-of-fold ``key`` sorted by sample index (independent of calipers.experiment.agreement)."""
    idx, vals = [], []
    for fold in sorted((run / network).glob("fold-*")):
        with np.load(fold / "predictions.npz") as z:
            idx.append(z["index"])
            vals.append(z[key])
    idx = np.concatenate(idx)
    return np.concatenate(vals)[np.argsort(idx)]


# -- known differences, measured exactly ---------------------------------------------------------

def _edit_npz(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for key, fn in changes.items():
        arrays[key] = fn(arrays)
    np.savez(path, **arrays)


def test_perturbed_probability_gives_exact_difference(runs, tmp_path):
    d = _copy(runs["a"], tmp_path)
    fold = d / "A" / "fold-01" / "predictions.npz"

    def bump(arrays):
        p = arrays["proba"].copy()
        p[4, 0] += 0.0625
        return p

    _edit_npz(fold, proba=bump)
    report = compare_runs_repro(runs["a"], d)
    p = report.predictions[0]
    assert p.max_abs_diff == 0.0625
    assert p.fraction_identical == 47 / 48
    assert report.metrics_csv_identical and all(m.max_abs_diff == 0 for m in report.metrics)
    assert report.problems == ("A probabilities differ by up to 0.0625 (tolerance 0)",)
    assert compare_runs_repro(runs["a"], d, proba_atol=0.0625).ok
    res = runner.invoke(app, ["repro", str(runs["a"]), str(d), "--proba-atol", "0.07"])
    assert res.exit_code == 0, res.output
    assert not (d / "repro.json").exists()  # the runs are only read; no --json-out: no file
    assert "differs" not in res.output and "within the tolerances" in res.output


def test_perturbed_metric_gives_exact_fold_differences(runs, tmp_path):
    d = _copy(runs["a"], tmp_path)
    path = d / "A" / "fold-01" / "metrics.json"
    info = json.loads(path.read_text())
    info["metrics"]["nll"] += 0.25
    path.write_text(json.dumps(info))
    report = compare_runs_repro(runs["a"], d)
    nll = next(m for m in report.metrics if m.metric == "nll")
    assert nll.diffs == (0.0, pytest.approx(0.25, abs=1e-12))
    assert [m.metric for m in report.metrics if m.max_abs_diff > 0] == ["nll"]
    assert not report.ok and report.problems == ("A metrics differ by more than 0: nll up to 0.25",)
    assert compare_runs_repro(runs["a"], d, metric_atol=0.3).ok


def test_regression_means_and_variances_compared(runs, tmp_path):
    d = _copy(runs["r"], tmp_path)
    _edit_npz(d / "A" / "fold-00" / "predictions.npz",
              mean=lambda z: z["mean"] + 0.5, var=lambda z: z["var"] * 2)
    report = compare_runs_repro(runs["r"], d)
    p = report.predictions[0]
    with np.load(runs["r"] / "A" / "fold-00" / "predictions.npz") as z:
        var_max = float(np.abs(z["var"]).max())
    assert p.label_agreement is None
    assert p.max_abs_diff == pytest.approx(0.5, abs=1e-6)
    assert p.fraction_identical == 24 / 48
    assert p.var_max_abs_diff == pytest.approx(var_max, rel=1e-12)
    assert "A predicted means differ" in report.problems[0]


def test_environment_differences_are_listed_but_do_not_fail(runs, tmp_path):
    d = _copy(runs["a"], tmp_path)
    env = json.loads((d / "env.json").read_text())
    env["python"], env["hostname"] = "3.12.1", "cluster-node-7"
    env["dependencies"]["numpy"] = "9.9.9"
    env["gpus"] = [{"index": 0, "name": "NVIDIA H100", "memory_gib": 79.2}]
    env["determinism"]["enabled"] = False
    (d / "env.json").write_text(json.dumps(env))
    report = compare_runs_repro(runs["a"], d)
    a_env = read_json(runs["a"] / "env.json")
    assert {x.key: (x.a, x.b) for x in report.env_diffs} == {
        "python": (a_env["python"], "3.12.1"),
        "hostname": (a_env["hostname"], "cluster-node-7"),
        "packages.numpy": (a_env["dependencies"]["numpy"], "9.9.9"),
        "gpus": (None, "NVIDIA H100"),
        "determinism.enabled": (True, False)}
    assert report.ok


def test_segmentation_dice_per_volume_lowest_listed(runs, tmp_path):
    rng = np.random.default_rng(1)
    vols = rng.integers(0, 3, size=(48, 6, 6))
    a = _copy(runs["a"], tmp_path, "seg-a")
    b = _copy(runs["a"], tmp_path, "seg-b")
    changed = vols.copy()
    changed[7][:3] = 0           # sample 7 loses half its foreground in run B
    for run, v in ((a, vols), (b, changed)):
        for fold in (run / "A").glob("fold-*"):
            _edit_npz(fold / "predictions.npz", labels=lambda z, v=v: v[z["index"]])
    report = compare_runs_repro(a, b)
    worst = report.lowest_dice(1)[0]
    assert (worst.network, worst.index) == ("A", 7)
    ref = [1 - scipy_dice_dissimilarity((vols[7] == c).ravel(), (changed[7] == c).ravel())
           for c in (1, 2)]
    assert_allclose(worst.agreement.dice, ref, rtol=1e-12)
    assert len(report.segmentation) == 48
    assert all(v.agreement.mean_dice == 1.0 for v in report.segmentation[1:])
    assert not report.ok and "1 segmentation(s) with Dice below 1" in report.problems[-1]
    assert compare_runs_repro(a, b, dice_min=worst.agreement.mean_dice).ok
    res = runner.invoke(app, ["repro", str(a), str(b), "--json"])
    assert res.exit_code == 1
    lowest = json.loads(res.output)["segmentation"]["lowest"][0]
    assert lowest["index"] == 7 and lowest["dice"] == list(worst.agreement.dice)


# -- segmentation_agreement against SciPy --------------------------------------------------------

@pytest.mark.parametrize("shape", [(50,), (7, 9), (4, 5, 6)])
def test_segmentation_agreement_matches_scipy(rng, shape):
    a = rng.integers(0, 4, size=shape)
    b = np.where(rng.random(shape) < 0.3, rng.integers(0, 4, size=shape), a)
    res = segmentation_agreement(a, b, include_background=True)
    assert res.classes == (0, 1, 2, 3)
    ref = [1 - scipy_dice_dissimilarity((a == c).ravel(), (b == c).ravel()) for c in range(4)]
    assert_allclose(res.dice, ref, rtol=1e-12)
    fg = segmentation_agreement(a, b)
    assert fg.classes == (1, 2, 3) and fg.dice == res.dice[1:]
    assert fg.mean_dice == pytest.approx(np.mean(ref[1:]), rel=1e-12)


def test_segmentation_agreement_known_answers():
    a = np.array([0, 1, 1, 2])
    b = np.array([0, 1, 2, 2])
    assert segmentation_agreement(a, b).dice == (2 / 3, 2 / 3)   # 2·1/(2+1) each
    assert segmentation_agreement(a, a).dice == (1.0, 1.0)
    empty = segmentation_agreement(np.zeros(5, int), np.zeros(5, int))
    assert empty.classes == () and empty.mean_dice == 1.0
    # a label present in only one run has Dice 0
    assert segmentation_agreement(np.array([3, 0]), np.array([0, 0])).dice == (0.0,)


def test_segmentation_agreement_errors():
    with pytest.raises(ValueError, match=r"same shape; got \(3,\) and \(4,\)"):
        segmentation_agreement(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"labels_b must hold integer labels; got dtype float64"):
        segmentation_agreement(np.zeros(3, int), np.zeros(3))


# -- bad input -----------------------------------------------------------------------------------

def test_repro_bad_input(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run_b: .* is not a finished calipers run"):
        compare_runs_repro(runs["a"], tmp_path)
    with pytest.raises(ValueError, match=r"proba_atol must be a finite number >= 0; got -1"):
        compare_runs_repro(runs["a"], runs["b"], proba_atol=-1)
    with pytest.raises(ValueError, match=r"dice_min must lie in \[0, 1\]; got 2"):
        compare_runs_repro(runs["a"], runs["b"], dice_min=2)
    res = runner.invoke(app, ["repro", str(runs["a"]), str(tmp_path)])
    assert res.exit_code == 2 and "not a finished calipers run folder" in res.output


# -- calipers env ----------------------------------------------------------------------------------

def test_env_from_run_reproduces_recorded_versions(runs, tmp_path):
    recorded = read_json(runs["a"] / "env.json")
    res = runner.invoke(app, ["env", "--from", str(runs["a"]), "--export", "pip"])
    assert res.exit_code == 0, res.output
    pins = dict(line.split("==") for line in res.output.splitlines()
                if line and not line.startswith(("#", "--")))
    base, _, label = recorded["dependencies"]["torch"].partition("+")
    if not label:  # hand-derived wheel tag: the local label, else cu<major><minor>, else cpu
        label = "cpu" if recorded["cuda"] is None else "cu" + "".join(
            recorded["cuda"].split(".")[:2])
    expected = {**recorded["dependencies"], "torch": f"{base}+{label}"}
    assert pins == expected
    assert f"Python {recorded['python']}" in res.output
    out = tmp_path / "Dockerfile"
    res = runner.invoke(app, ["env", "--from", str(runs["a"]), "--export", "docker", "--out",
                              str(out)])
    assert res.exit_code == 0, res.output
    assert f"FROM python:{recorded['python']}-slim" in out.read_text()


def test_env_json_and_errors(tmp_path):
    res = runner.invoke(app, ["env", "--json"])
    assert res.exit_code == 0
    import platform

    assert json.loads(res.output)["python"] == platform.python_version()
    res = runner.invoke(app, ["env", "--export", "dokcer"])
    assert res.exit_code == 2 and "did you mean 'docker'" in res.output
    res = runner.invoke(app, ["env", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--out needs --export" in res.output
    res = runner.invoke(app, ["env", "--from", str(tmp_path), "--export", "pip"])
    assert res.exit_code == 2 and "env.json does not exist" in res.output


def test_an_undefined_metric_in_one_run_is_a_difference(runs, tmp_path):
    """NaN must not slip through max(): defined in A, undefined (null) in B is infinitely
    different; undefined in both agrees."""
    d = _copy(runs["a"], tmp_path)
    path = d / "A" / "fold-01" / "metrics.json"
    info = json.loads(path.read_text())
    info["metrics"]["nll"] = None
    info["undefined"] = {"nll": "test"}
    path.write_text(json.dumps(info))
    report = compare_runs_repro(runs["a"], d)
    nll = next(m for m in report.metrics if m.metric == "nll")
    assert nll.diffs[0] == 0.0 and np.isinf(nll.diffs[1])
    assert nll.max_abs_diff == np.inf and not report.ok
    assert compare_runs_repro(d, d).ok  # NaN in both runs: they agree


def test_cli_says_within_tolerance_when_csv_bytes_change(runs, tmp_path):
    # metrics.csv not byte-identical (one more digit), every value within the tolerances
    d = _copy(runs["a"], tmp_path)
    csv_path = d / "metrics.csv"
    csv_path.write_text(csv_path.read_text().replace("\n", " \n", 1))
    res = runner.invoke(app, ["repro", str(runs["a"]), str(d), "--metric-atol", "1e-9"])
    report = compare_runs_repro(runs["a"], d, metric_atol=1e-9)
    assert not report.metrics_csv_identical and report.ok
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    out = out.split("folds:", 1)[1]  # after the paths, which hold the test name
    assert "differ" not in out and "not bit-identical, every value within the tolerances" in out
    assert not (d / "repro.json").exists() and not (runs["a"] / "repro.json").exists()
