"""Loading trained folds of any learner and `calipers predict` on classification and regression
runs (issue 21: "save and load (resume, calipers predict)").

Each test runs a small cross-validation (2 folds, 2 epochs, no MC passes, so the stored test
predictions are deterministic), loads the folds back and checks that they reproduce the
fold's own ``predictions.npz`` on the same samples: the weights, the learner's load and the
per-fold standardisation (NOTE [Fold preprocessing]) must all be right for that.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calipers.cli import app
from calipers.config import parse_config
from calipers.data import load_dataset
from calipers.exceptions import ConfigError, DataError
from calipers.experiment.runner import run_experiment
from calipers.learners.saved import load_ensemble, load_fold_predictor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

USER_CODE = '''
import numpy as np
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, input_shape, n_outputs, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden),
                                 nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, n_outputs))

    def forward(self, x):
        return self.net(x)


def tiny_fit(data, *, seed, hidden=8, steps=30):
    net = TinyNet(data.input_shape, data.n_outputs, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    X, y = torch.as_tensor(data.X), torch.as_tensor(data.y)
    for _ in range(steps):
        opt.zero_grad()
        out = net(X)
        loss = (nn.functional.cross_entropy(out, y) if data.task == "classification"
                else nn.functional.mse_loss(out, y.reshape(out.shape)))
        loss.backward()
        opt.step()
    return net


class Centroids:
    """A nearest-centroid classifier that saves and loads itself (no pickle)."""

    def __init__(self, centres):
        self.centres = centres

    def predict_proba(self, X):
        d = ((X.reshape(len(X), 1, -1) - self.centres[None]) ** 2).sum(axis=2)
        e = np.exp(-(d - d.min(axis=1, keepdims=True)) / 10)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, folder):
        np.save(folder / "centres.npy", self.centres)
        return ["centres.npy"]

    @classmethod
    def load(cls, folder):
        return cls(np.load(folder / "centres.npy"))


def centroid_fit(data):
    X = data.X.reshape(len(data.X), -1)
    return Centroids(np.stack([X[data.y == k].mean(axis=0) for k in range(data.n_outputs)]))
'''


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    d = tmp_path_factory.mktemp("code")
    (d / "predict_user.py").write_text(textwrap.dedent(USER_CODE))
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    sys.modules.pop("predict_user", None)


def _table(path: Path, n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A digits subset as a table whose columns have very different offsets and scales, so
    a model fed unstandardised (or wrongly standardised) features predicts nonsense."""
    d = load_dataset("digits")
    keep = np.random.default_rng(0).permutation(d.n_samples)[:n]
    X = d.X[keep].reshape(n, -1) * np.linspace(1, 50, 64) + np.arange(64) * 3.0
    X = X.astype(np.float32)
    np.savez(path, X=X, y=d.y[keep])
    return X, d.y[keep]


def _run(tmp: Path, data: Path, networks: dict, task: str = "classification") -> Path:
    raw = {"data": {"kind": "arrays", "path": str(data), "task": task},
           "cv": {"folds": 2, "seed": 0, "stratify": task == "classification"},
           "train": {"epochs": 2, "batch_size": 32, "lr": 5e-3, "device": "cpu"},
           "mc": {"samples": 0}, "networks": networks}
    run = tmp / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no dropout, few epochs
        run_experiment(parse_config(raw), run, report=False)
    return run


def _stored(run: Path, net: str, j: int) -> dict:
    with np.load(run / net / f"fold-{j:02d}" / "predictions.npz") as z:
        return {k: z[k] for k in z.files}


CLASSIFIERS = {
    "mlp": {"model": "calipers.models:MLP", "args": {"hidden": [16], "dropout": 0.2}},
    "fn": {"learner": "function", "fit": "predict_user:tiny_fit",
           "model": "predict_user:TinyNet", "args": {"hidden": 8}},
    "obj": {"learner": "function", "fit": "predict_user:centroid_fit"},
    "lr": {"learner": "sklearn", "estimator": "sklearn.linear_model:LogisticRegression",
           "args": {"max_iter": 200}},
}


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, user_code):
    tmp = tmp_path_factory.mktemp("cls")
    X, y = _table(tmp / "digits.npz")
    return _run(tmp, tmp / "digits.npz", CLASSIFIERS), X, y


@pytest.mark.parametrize("net", list(CLASSIFIERS))
def test_loaded_folds_reproduce_their_stored_test_predictions(cls_run, net):
    run, X, _ = cls_run
    for j in (0, 1):
        stored = _stored(run, net, j)
        model = load_fold_predictor(run, net, j, device="cpu")
        p, own = model.passes(X[stored["index"]])
        assert p.shape == (1, len(stored["index"]), 10) and own is None
        np.testing.assert_allclose(p[0], stored["proba"], atol=1e-5)
        # the per-fold statistics matter: raw features give other predictions
        raw = model.predictor.predict(X[stored["index"]])
        assert np.abs(raw - stored["proba"]).max() > 0.05
    assert json.loads((run / net / "fold-00" / "metrics.json").read_text())["metrics"][
        "accuracy"] > 0.3


def test_sklearn_folds_are_saved_with_skops_not_pickle(cls_run):
    run, _, _ = cls_run
    files = {p.name for p in (run / "lr" / "fold-00").iterdir()}
    assert "model.skops" in files and "model.pkl" not in files
    assert json.loads((run / "lr" / "fold-00" / "learner.json").read_text())["files"] == [
        "model.skops"]


def test_ensemble_is_the_mean_over_folds_and_the_cli_writes_it(cls_run, tmp_path):
    run, X, _ = cls_run
    np.save(tmp_path / "new.npy", X[:7])
    res = CliRunner().invoke(app, ["predict", "--model", str(run), "--in",
                                   str(tmp_path / "new.npy"), "--out", str(tmp_path / "o"),
                                   "--network", "fn", "--mc", "0"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "o" / "predictions.csv").open()))
    assert list(rows[0]) == ["sample", "predicted", *[f"p_{k}" for k in range(10)],
                             "entropy", "mutual_info"]
    P = np.array([[float(r[f"p_{k}"]) for k in range(10)] for r in rows])
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-9)
    folds = [load_fold_predictor(run, "fn", j, device="cpu").passes(X[:7])[0][0]
             for j in (0, 1)]
    mean = np.mean(folds, axis=0)
    np.testing.assert_allclose(P, mean, atol=1e-9)
    assert [r["predicted"] for r in rows] == [str(k) for k in mean.argmax(axis=1)]
    ent = -(mean * np.log(mean)).sum(axis=1)
    exp = np.mean([-(f * np.log(f)).sum(axis=1) for f in folds], axis=0)
    np.testing.assert_allclose([float(r["entropy"]) for r in rows], ent, atol=1e-6)
    np.testing.assert_allclose([float(r["mutual_info"]) for r in rows], ent - exp, atol=1e-6)


def test_cli_mc_passes_on_the_chosen_network_and_csv_input(cls_run, tmp_path):
    run, X, _ = cls_run
    head = ",".join(f"f{k}" for k in range(64))
    np.savetxt(tmp_path / "new.csv", X[:5], delimiter=",", header=head, comments="")
    res = CliRunner().invoke(app, ["predict", "--model", str(run), "--in",
                                   str(tmp_path / "new.csv"), "--out", str(tmp_path / "o"),
                                   "--network", "lr", "--mc", "5"])
    assert res.exit_code == 0, res.output
    assert "no dropout" in res.output  # sklearn: deterministic, said in one line
    ens = load_ensemble(run, "mlp", device="cpu")
    a = ens.predict(X[:5], n_mc=5, seed=1)
    b = ens.predict(X[:5], n_mc=5, seed=1)
    np.testing.assert_array_equal(a.proba, b.proba)
    assert np.all(a.mutual_info > 0) and a.deterministic == ()


@pytest.mark.parametrize(("make", "match"), [
    (lambda X: X[:, :60], r"shape \(4, 60\).*expected \(N, 64\)"),
    (lambda X: np.where(np.arange(64) == 3, np.nan, X), "NaN or infinite values in 4 of 4"),
])
def test_cli_bad_inputs_exit_2_and_write_nothing(cls_run, tmp_path, make, match):
    run, X, _ = cls_run
    np.save(tmp_path / "bad.npy", make(X[:4]))
    res = CliRunner().invoke(app, ["predict", "--model", str(run), "--in",
                                   str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o"),
                                   "--network", "mlp"])
    assert res.exit_code == 2
    assert __import__("re").search(match, " ".join(res.output.split())), res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("setup", "match"), [
    (lambda t: (t / "in").mkdir(), "is a folder; a classification or regression run"),
    (lambda t: np.savez(t / "in", Y=np.zeros((2, 64))), "has no array X"),
    (lambda t: (t / "in").write_text("1,2\nx,3\n"), "must be a number"),
])
def test_cli_unreadable_inputs_exit_2(cls_run, tmp_path, setup, match):
    run, _, _ = cls_run
    setup(tmp_path)
    src = next(p for p in tmp_path.iterdir() if p.name.startswith("in"))
    if src.suffix == "" and src.is_file():
        src = src.rename(tmp_path / "in.csv")
    res = CliRunner().invoke(app, ["predict", "--model", str(run), "--in", str(src), "--out",
                                   str(tmp_path / "o"), "--network", "lr"])
    assert res.exit_code == 2 and match in " ".join(res.output.split()), res.output
    assert not (tmp_path / "o").exists()


def test_a_segmentation_network_of_another_learner_is_refused(tmp_path):
    run = tmp_path / "segrun"
    (run / "A" / "fold-00").mkdir(parents=True)
    (run / "config.toml").write_text('[data]\nkind = "nifti"\ntask = "segmentation"\n'
                                     '[networks.A]\nlearner = "function"\nfit = "m:fit"\n')
    (run / "segmentation.json").write_text(json.dumps({
        "kind": "nifti", "n_classes": 2, "label_values": [0, 1], "input_shape": [1, 8, 8, 8],
        "multiple": 2, "normalize": "zscore"}))
    from calipers.segmentation.predict import load_predictor

    with pytest.raises(ValueError, match="has learner 'function'; segmentation prediction"):
        load_predictor(run)


def test_unknown_network_missing_files_and_untrusted_pickle(cls_run, tmp_path):
    run, X, _ = cls_run
    np.save(tmp_path / "x.npy", X[:3])
    res = CliRunner().invoke(app, ["predict", "--model", str(run), "--in",
                                   str(tmp_path / "x.npy"), "--out", str(tmp_path / "o"),
                                   "--network", "mpl"])
    assert res.exit_code == 2 and "did you mean 'mlp'" in res.output
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "fn" / "fold-01" / "model.pt").unlink()
    with pytest.raises(DataError, match=r"fold-01/model.pt is missing"):
        load_ensemble(broken, "fn")
    # a run made before folds saved preprocess.npz: recomputed from its unchanged data ...
    (broken / "mlp" / "fold-00" / "preprocess.npz").unlink()
    stored = _stored(run, "mlp", 0)
    again = load_fold_predictor(broken, "mlp", 0).passes(X[stored["index"]])[0][0]
    np.testing.assert_allclose(again, stored["proba"], atol=1e-5)
    (broken / "data.json").unlink()  # ... but not when the data cannot be vouched for
    with pytest.raises(DataError, match="preprocess.npz is missing"):
        load_fold_predictor(broken, "mlp", 0)
    # a pickled estimator (older runs, or no skops) loads only when the user trusts it
    from sklearn.linear_model import LogisticRegression

    d = broken / "lr" / "fold-00"
    est = LogisticRegression().fit(np.eye(64)[:10], np.arange(10))
    (d / "model.skops").unlink()
    (d / "model.pkl").write_bytes(__import__("pickle").dumps(est))
    info = json.loads((d / "learner.json").read_text())
    (d / "learner.json").write_text(json.dumps({**info, "files": ["model.pkl"]}))
    with pytest.raises(DataError, match="trust_pickle=True"):
        load_fold_predictor(broken, "lr", 0)
    m = load_fold_predictor(broken, "lr", 0, trust_pickle=True)
    assert m.predictor.predict(X[:2]).shape == (2, 10)
    res = CliRunner().invoke(app, ["predict", "--model", str(broken), "--in",
                                   str(tmp_path / "x.npy"), "--out", str(tmp_path / "o"),
                                   "--network", "fn"])
    assert res.exit_code == 2 and "model.pt is missing" in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()


def test_skops_refuses_types_it_does_not_trust_unless_named(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    from calipers.learners.base import SavedFold
    from calipers.learners.sklearn import SklearnLearner, SklearnPredictor

    est = RandomForestClassifier(n_estimators=2, random_state=0).fit(np.eye(4), np.arange(4))
    assert SklearnPredictor(est, "classification", 4).save(tmp_path) == ["model.skops"]
    spec = __import__("calipers.evaluation.cv").evaluation.cv.NetworkSpec(
        "sklearn.ensemble:RandomForestClassifier", learner="sklearn")
    saved = SavedFold(tmp_path, "classification", (4,), 4)
    with pytest.raises(DataError, match=r"--trust sklearn\.tree\._tree\.Tree"):
        SklearnLearner().load(spec, saved)
    ok = SavedFold(tmp_path, "classification", (4,), 4, trusted=("sklearn.tree._tree.Tree",))
    np.testing.assert_allclose(SklearnLearner().load(spec, ok).predict(np.eye(4)),
                               est.predict_proba(np.eye(4)))


def test_function_learner_without_a_builder_says_what_to_add(cls_run, tmp_path):
    run, _, _ = cls_run
    import shutil

    other = tmp_path / "nobuild"
    shutil.copytree(run, other)
    cfg = (other / "config.toml").read_text()
    cfg = cfg.replace('model = "predict_user:TinyNet"\n', "")
    (other / "config.toml").write_text(cfg)
    with pytest.raises(ConfigError, match=r'add model = "pkg.module:build" to \[networks.fn\]'):
        load_fold_predictor(other, "fn", 0)


def test_regression_means_and_variances_come_back_in_target_units(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(np.float32) * [1, 10, 100, 0.1, 5] + 40
    y = (X @ [0.3, 0.05, 0.01, 2.0, -0.2] + rng.normal(size=120) * 0.3 + 500).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=y)
    nets = {"mlp": {"model": "calipers.models:MLP", "args": {"hidden": [8], "dropout": 0.1}},
            "br": {"learner": "sklearn", "estimator": "sklearn.linear_model:BayesianRidge"}}
    run = _run(tmp_path, tmp_path / "reg.npz", nets, task="regression")
    for net in nets:
        for j in (0, 1):
            stored = _stored(run, net, j)
            mean, own = load_fold_predictor(run, net, j).passes(X[stored["index"]])
            np.testing.assert_allclose(mean[0], stored["mean"], rtol=1e-5, atol=1e-3)
            if net == "br":  # the model's own variance, in target units²
                np.testing.assert_allclose(own, stored["var"], rtol=1e-4)
    assert np.abs(_stored(run, "br", 0)["mean"] - y[_stored(run, "br", 0)["index"]
                                                    ].reshape(-1, 1)).mean() < 1.0
    res = CliRunner().invoke(app, ["predict", "--model", str(run), "--in",
                                   str(tmp_path / "reg.npz"), "--out", str(tmp_path / "o"),
                                   "--network", "br"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "o" / "predictions.csv").open()))
    assert list(rows[0]) == ["sample", "mean", "std"] and len(rows) == 120
    assert all(float(r["std"]) > 0 for r in rows)


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")
def test_keras_on_torch_folds_load_in_safe_mode_and_reproduce(tmp_path):
    from calipers._paths import add_model_dir

    add_model_dir(EXAMPLES)
    sys.path.insert(0, str(EXAMPLES))
    X, _ = _table(tmp_path / "digits.npz", n=120)
    nets = {"k": {"learner": "keras", "model": "keras_models:mlp", "backend": "torch",
                  "args": {"hidden": 16, "dropout": 0.2}}}
    run = _run(tmp_path, tmp_path / "digits.npz", nets)
    for j in (0, 1):
        stored = _stored(run, "k", j)
        p, _ = load_fold_predictor(run, "k", j).passes(X[stored["index"]])
        np.testing.assert_allclose(p[0], stored["proba"], atol=1e-5)
    a = load_ensemble(run).predict(X[:4], n_mc=3, seed=0)
    assert a.deterministic == () and np.all(a.mutual_info > 0)


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None,
                    reason="lightning is not installed")
def test_lightning_folds_load_and_reproduce(tmp_path, monkeypatch):
    sys.path.insert(0, str(EXAMPLES))
    monkeypatch.chdir(tmp_path)
    d = load_dataset("digits")
    keep = np.random.default_rng(1).permutation(d.n_samples)[:100]
    np.savez(tmp_path / "img.npz", X=d.X[keep], y=d.y[keep])
    nets = {"L": {"learner": "lightning", "model": "lightning_module:LitCNN",
                  "args": {"channels": 2, "dropout": 0.2}}}
    run = _run(tmp_path, tmp_path / "img.npz", nets)
    for j in (0, 1):
        stored = _stored(run, "L", j)
        p, _ = load_fold_predictor(run, "L", j).passes(d.X[keep][stored["index"]])
        np.testing.assert_allclose(p[0], stored["proba"], atol=1e-5)


def test_grid_searched_folds_load_with_their_float64_statistics(tmp_path):
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(60, 4)) * [1, 20, 0.5, 3] + [0, 100, -5, 7]).astype(np.float32)
    y = (X @ [1.0, 0.02, -2.0, 0.3] + rng.normal(size=60) * 0.2 + 30).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=y)
    raw = {"data": {"kind": "arrays", "path": str(tmp_path / "reg.npz"), "task": "regression"},
           "cv": {"folds": 2, "seed": 0, "stratify": False},
           "train": {"epochs": 2, "batch_size": 16, "device": "cpu"}, "mc": {"samples": 4},
           "search": {"dropout": [0.05, 0.1], "tau": [0.5, 2.0], "mc_samples": 2},
           "networks": {"A": {"model": "calipers.models:MLP", "args": {"hidden": [6]}}}}
    run_experiment(parse_config(raw), tmp_path / "run", report=False)
    for j in (0, 1):
        stored = _stored(tmp_path / "run", "A", j)
        info = json.loads((tmp_path / "run" / "A" / f"fold-{j:02d}" / "metrics.json").read_text())
        mean, _ = load_fold_predictor(tmp_path / "run", "A", j).passes(X[stored["index"]])
        rmse = float(np.sqrt(np.mean((mean[0, :, 0] - stored["y_true"]) ** 2)))
        # dropout off ("weight scaling") is the deterministic prediction the fold scored
        np.testing.assert_allclose(rmse, info["metrics"]["rmse_weight_scaling"], rtol=1e-4)


def test_searched_folds_load_with_their_chosen_dropout_and_tau(tmp_path):
    """A [search] fold is rebuilt with the dropout it chose (not the config's or the MLP
    default) and its variance includes its own 1/tau, as in cross-validation."""
    import torch

    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (X @ [1.0, -2.0, 0.5] + rng.normal(size=60) * 0.3).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=y)
    raw = {"data": {"kind": "arrays", "path": str(tmp_path / "reg.npz"), "task": "regression"},
           "cv": {"folds": 2, "seed": 0, "stratify": False},
           "train": {"epochs": 3, "batch_size": 16, "device": "cpu"}, "mc": {"samples": 8},
           "search": {"dropout": [0.3, 0.4], "tau": [0.5, 0.6], "mc_samples": 4},
           "networks": {"A": {"model": "calipers.models:MLP", "args": {"hidden": [8]}}}}
    run = tmp_path / "run"
    run_experiment(parse_config(raw), run, report=False)
    ens = load_ensemble(run, "A")
    for m in ens.models:
        chosen = json.loads((run / "A" / f"fold-{m.fold:02d}" / "metrics.json").read_text())[
            "metrics"]
        drops = {mod.p for mod in m.predictor.model.modules() if isinstance(mod, torch.nn.Dropout)}
        assert drops == {chosen["chosen_dropout"]}  # not the MLP default 0.1
        assert m.tau == chosen["chosen_tau"]
    # the folds' MC variance with 1/tau, against the variance each fold stored in cv
    pred = ens.predict(X, n_mc=200, seed=0)
    stored = np.mean([_stored(run, "A", j)["var"].mean() for j in (0, 1)])
    assert 1 / 0.6 < np.mean(pred.std**2)  # at least the noise term
    assert np.mean(pred.std**2) == pytest.approx(stored, rel=0.25)
    # one MC pass of a model with dropout is still an MC draw, not "deterministic"
    assert ens.predict(X[:5], n_mc=1).deterministic == ()
