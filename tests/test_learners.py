"""Learners (issue 21): the function, sklearn and Keras-on-torch adapters on small digits
subsets, through the engine, with the bad inputs the issue lists."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from calipers.config import parse_config
from calipers.data import load_dataset, make_dataset
from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import ConfigError, TrainingError
from calipers.experiment.engine import check_networks, cross_validate
from calipers.learners import get_learner
from calipers.tasks import TaskError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import torch_recipe  # noqa: E402

OPTS = TrainOptions(epochs=2, batch_size=32, lr=5e-3, device="cpu")


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    keep = np.random.default_rng(0).permutation(d.n_samples)[:200]
    return make_dataset(d.X[keep], d.y[keep], name="digits-200")


def _causes(excinfo) -> list[BaseException]:
    """Every fold fails alike: the causes the engine gathered (TaskError.failures)."""
    assert isinstance(excinfo.value, TaskError)
    return list(excinfo.value.failures.values())


def _cv(data, networks, run_dir=None, n_mc=3, folds=2, **kw):
    return cross_validate(data, networks, folds, options=OPTS, n_mc=n_mc, seed=3,
                          run_dir=run_dir, **kw)


# ----------------------------------------------------------------- user code for the tests


def linear_fit(data, *, seed, n_out=None):
    """A fit that returns an nn.Module with a chosen output width (untrained)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(data.input_shape)),
                                                 n_out or data.n_outputs))


class Unnormalised:
    def __init__(self, n, nan=False):
        self.n, self.nan = n, nan

    def predict_proba(self, X):
        p = np.full((len(X), self.n), 0.5)
        if self.nan:
            p[0] = np.nan
        return p


def unnormalised_fit(data):
    return Unnormalised(data.n_outputs)


def nan_fit(data):
    return Unnormalised(data.n_outputs, nan=True)


def returns_none(data):
    return None


def fails_on_fold_one(data, *, seed):
    if data.split == 1 and FAIL["on"]:
        raise RuntimeError("boom in the user's loop")
    return linear_fit(data, seed=seed)


FAIL = {"on": True}


# ----------------------------------------------------------------- sklearn


def test_sklearn_logistic_regression_cross_validates_reproducibly_and_saves(digits, tmp_path):
    spec = NetworkSpec("sklearn.linear_model:LogisticRegression", {"max_iter": 300},
                       learner="sklearn")
    with pytest.warns(UserWarning, match="no dropout") as rec:
        a = _cv(digits, {"lr": spec}, tmp_path / "a")
    assert len([w for w in rec if "no dropout" in str(w.message)]) == 1  # once per network
    with pytest.warns(UserWarning, match="no dropout"):  # again for another experiment
        b = _cv(digits, {"lr": spec}, tmp_path / "b")
    assert a.scores("nll")["lr"].tolist() == b.scores("nll")["lr"].tolist()
    assert a.scores("accuracy")["lr"].mean() > 0.85
    assert a.scores("mutual_info")["lr"].tolist() == [0.0, 0.0]
    fold = tmp_path / "a" / "lr" / "fold-00"
    assert {p.name for p in fold.iterdir()} >= {"model.skops", "learner.json", "metrics.json",
                                                "predictions.npz", "preprocess.npz"}
    assert not (fold / "model.pt").exists()
    from calipers.report.html import RunData, _section_learners

    summary = {"networks": {"lr": {}}, "task": "classification", "metric": "accuracy"}
    html = _section_learners(RunData(summary=summary, run_dir=tmp_path / "a"))
    assert "<td>lr</td><td>sklearn</td><td>scikit-learn</td>" in html


def test_sklearn_takes_an_estimator_object_and_seeds_its_random_state(digits):
    from sklearn.ensemble import RandomForestClassifier

    est = RandomForestClassifier(n_estimators=5)
    spec = NetworkSpec(est, learner="sklearn")
    assert spec.describe() == "sklearn RandomForestClassifier()"
    a = _cv(digits, {"rf": spec}, n_mc=0)
    b = _cv(digits, {"rf": spec}, n_mc=0)
    assert a.scores("nll")["rf"].tolist() == b.scores("nll")["rf"].tolist()
    assert est.random_state is None  # the user's object is cloned, not changed
    from calipers.learners.base import FitSettings, FoldData

    fold = FoldData(digits.X[:50], digits.y[:50], "classification", 10, (1, 8, 8))
    fitted = get_learner("sklearn").fit(spec, fold, seed=2**40 + 7, settings=FitSettings())
    assert fitted.est.random_state == 7  # the fold's seed, mod 2**32
    fixed = NetworkSpec(est, {"random_state": 1}, learner="sklearn")
    assert get_learner("sklearn").fit(fixed, fold, seed=5,
                                      settings=FitSettings()).est.random_state == 1


def test_sklearn_regression_reports_its_own_variance(rng):
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=60)).astype(np.float32)
    data = make_dataset(X, y, task="regression")
    spec = NetworkSpec("sklearn.linear_model:BayesianRidge", learner="sklearn")
    res = _cv(data, {"br": spec}, n_mc=0, folds=3)
    var = res.pooled("br", "var")
    assert np.all(var > 0)
    assert res.scores("rmse")["br"].mean() < 0.3


# ----------------------------------------------------------------- function


def test_function_learner_runs_the_hand_written_recipe_reproducibly(digits, tmp_path):
    spec = NetworkSpec(torch_recipe.fit, {"width": 4, "dropout": 0.3}, learner="function",
                       train={"epochs": 3, "lr": 0.05, "momentum": 0.9})
    a = _cv(digits, {"recipe": spec}, tmp_path / "a")
    b = _cv(digits, {"recipe": spec}, tmp_path / "b")
    for m in ("accuracy", "nll", "mutual_info"):
        assert a.scores(m)["recipe"].tolist() == b.scores(m)["recipe"].tolist()
    assert np.all(a.scores("mutual_info")["recipe"] > 0)  # MC dropout ran
    assert (tmp_path / "a" / "recipe" / "fold-01" / "model.pt").is_file()


def test_function_returning_a_module_of_the_wrong_width_names_network_fold_and_shapes(digits):
    spec = NetworkSpec(linear_fit, {"n_out": 3}, learner="function")
    with pytest.raises(TaskError) as exc:
        _cv(digits, {"w": spec}, n_mc=0)
    first = _causes(exc)[0]
    assert isinstance(first, ConfigError)
    assert "'w' (function linear_fit(n_out=3)) on fold 0 returns shape (N, 3)" in str(first)
    assert "must return (N, 10)" in str(first)


def test_function_probabilities_must_sum_to_one_and_be_finite(digits):
    with pytest.raises(TaskError) as exc:
        _cv(digits, {"u": NetworkSpec(unnormalised_fit, learner="function")}, n_mc=0)
    assert all(isinstance(c, ConfigError) and "sum to 5 .. 5" in str(c) for c in _causes(exc))
    with pytest.raises(TaskError) as exc:
        _cv(digits, {"n": NetworkSpec(nan_fit, learner="function")}, n_mc=0)
    assert all(isinstance(c, TrainingError) and "NaN or infinite probabilities for 1 of"
               in str(c) for c in _causes(exc))


def test_function_returning_no_model_is_refused(digits):
    with pytest.raises(TaskError) as exc:
        _cv(digits, {"x": NetworkSpec(returns_none, learner="function")}, n_mc=0)
    assert "returned a NoneType, not a model" in str(_causes(exc)[1])


def test_a_failing_fold_saves_its_traceback_the_others_finish_and_resume_retries(digits,
                                                                                 tmp_path):
    spec = NetworkSpec(fails_on_fold_one, learner="function")
    FAIL["on"] = True
    with pytest.raises(RuntimeError, match="boom"):
        _cv(digits, {"f": spec}, tmp_path, n_mc=0, folds=3)
    err = tmp_path / "f" / "fold-01" / "error.txt"
    assert "Traceback" in err.read_text() and "boom in the user's loop" in err.read_text()
    assert (tmp_path / "f" / "fold-00" / "metrics.json").is_file()
    assert (tmp_path / "f" / "fold-02" / "metrics.json").is_file()
    assert not (tmp_path / "f" / "fold-01" / "metrics.json").exists()
    FAIL["on"] = False
    res = _cv(digits, {"f": spec}, tmp_path, n_mc=0, folds=3)
    assert [r.resumed for r in res.results["f"]] == [True, False, True]
    assert not err.exists()


def test_the_calipers_learner_gives_the_protocol_face_of_calipers_loop(digits, tmp_path):
    from calipers.learners.base import FitSettings, FoldData

    spec = NetworkSpec("calipers.models:CNN", {"channels": 4, "dropout": 0.2})
    fold = FoldData(digits.X[:120], digits.y[:120], "classification", 10, (1, 8, 8))
    pred = get_learner("calipers").fit(spec, fold, seed=0,
                                       settings=FitSettings(epochs=1, device="cpu"))
    X = digits.X[120:150]
    p = pred.predict(X)
    assert p.shape == (30, 10) and np.allclose(p.sum(axis=1), 1)
    mc = pred.predict_mc(X, 3, seed=1)
    assert mc.shape == (3, 30, 10) and not np.allclose(mc[0], mc[1])
    np.testing.assert_array_equal(pred.predict(X), p)
    assert pred.save(tmp_path) == ["model.pt"]
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state.keys() == pred.model.state_dict().keys()
    assert pred.describe()["n_params"] == sum(v.numel() for v in pred.model.parameters())


# ----------------------------------------------------------------- config and checks


def test_config_learner_keys_backend_and_unknown_names():
    base = {"data": {"kind": "digits"}}
    cfg = parse_config({**base, "networks": {
        "s": {"learner": "sklearn", "estimator": "sklearn.linear_model:LogisticRegression"},
        "k": {"learner": "keras", "model": "keras_models:cnn", "backend": "jax",
              "train": {"epochs": 3, "shuffle": False}}}})
    assert cfg.networks["k"].train.epochs == 3
    assert cfg.networks["k"].train.model_dump(exclude_none=True) == {"epochs": 3,
                                                                     "shuffle": False}
    assert parse_config(__import__("tomllib").loads(cfg.to_toml())) == cfg
    with pytest.raises(ConfigError, match="unknown learner 'sklaern'; did you mean 'sklearn'"):
        parse_config({**base, "networks": {"s": {"learner": "sklaern", "estimator": "a:b"}}})
    with pytest.raises(ConfigError, match="backend is for learner = 'keras' only"):
        parse_config({**base, "networks": {"s": {"learner": "sklearn", "estimator": "a:b",
                                                 "backend": "jax"}}})
    with pytest.raises(ConfigError, match="learner = 'function' needs fit"):
        parse_config({**base, "networks": {"f": {"learner": "function"}}})
    with pytest.raises(ConfigError, match="unknown learner"):
        get_learner("lightening")


def test_cli_unknown_learner_exits_2(tmp_path):
    from typer.testing import CliRunner

    from calipers.cli import app

    cfg = tmp_path / "c.toml"
    cfg.write_text('[networks.A]\nlearner = "keras3"\nmodel = "m:b"\n')
    res = CliRunner().invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "networks.A.learner" in res.output and "did you mean 'keras'" in res.output
    assert not (tmp_path / "run").exists()


def test_per_network_train_overrides_the_calipers_loop(digits):
    spec = NetworkSpec("calipers.models:CNN", {"channels": 4, "dropout": 0.1},
                       train={"epochs": 1})
    res = _cv(digits, {"c": spec}, n_mc=2)
    assert [len(r.losses) for r in res.results["c"]] == [1, 1]  # [train] says 2
    bad = NetworkSpec("calipers.models:CNN", {"channels": 4}, train={"momentum": 0.9})
    with pytest.raises(ConfigError, match="not settings of calipers' own loop"):
        check_networks({"c": bad}, digits, n_mc=0)


def test_a_missing_framework_is_refused_with_the_pip_line(digits, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("keras", "tensorflow")
                        else real(name, *a))
    spec = NetworkSpec("keras_models:cnn", learner="keras", options={"backend": "tensorflow"})
    with pytest.raises(ConfigError, match=r"pip install 'calipers\[tensorflow\]'"):
        check_networks({"k": spec}, digits, n_mc=0)


# ----------------------------------------------------------------- keras (torch backend)

keras_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("keras") is None, reason="keras is not installed")


@keras_missing
def test_keras_on_torch_cross_validates_reproducibly(digits, tmp_path):
    spec = NetworkSpec("keras_models:cnn", {"channels": 4, "dropout": 0.3}, learner="keras",
                       options={"backend": "torch"})
    from calipers._paths import add_model_dir

    add_model_dir(EXAMPLES)
    a = _cv(digits, {"k": spec}, tmp_path / "a")
    b = _cv(digits, {"k": spec}, tmp_path / "b")
    for m in ("accuracy", "nll", "mutual_info"):
        assert a.scores(m)["k"].tolist() == b.scores(m)["k"].tolist()
    assert np.all(a.scores("mutual_info")["k"] > 0)
    info = __import__("json").loads((tmp_path / "a" / "k" / "fold-00" / "learner.json")
                                    .read_text())
    assert info["backend"] == "torch" and info["framework"] == "keras"
    assert info["n_params"] > 0 and info["train_seconds"] > 0
    assert (tmp_path / "a" / "k" / "fold-00" / "model.keras").stat().st_size > 0


@keras_missing
def test_keras_output_probabilities_is_taken_as_said_and_checked(digits):
    from calipers._paths import add_model_dir

    add_model_dir(EXAMPLES)
    probs = NetworkSpec("keras_models:mlp", {"softmax": True}, learner="keras",
                        options={"output": "probabilities"}, train={"epochs": 15})
    res = _cv(digits, {"p": probs}, n_mc=0)
    assert res.scores("accuracy")["p"].mean() > 0.6
    assert res.scores("entropy")["p"].mean() < 0.8 * np.log(10)  # no second softmax
    logits = NetworkSpec("keras_models:mlp", learner="keras", options={"output": "probabilities"})
    with pytest.raises(TaskError) as exc:
        _cv(digits, {"l": logits}, n_mc=0)
    assert all(isinstance(c, ConfigError) and "say output = 'logits'" in str(c)
               for c in _causes(exc))


@keras_missing
def test_keras_mc_dropout_leaves_batchnorm_statistics_unchanged(digits):
    from calipers._paths import add_model_dir
    from calipers.learners import keras as kl
    from calipers.learners.base import FitSettings, FoldData

    add_model_dir(EXAMPLES)
    spec = NetworkSpec("keras_models:cnn", {"channels": 4, "dropout": 0.5, "batch_norm": True},
                       learner="keras")
    fold = FoldData(digits.X[:100], digits.y[:100], "classification", 10, (1, 8, 8))
    pred = get_learner("keras").fit(spec, fold, seed=1, settings=FitSettings(epochs=1))
    before = kl._call("torch", kl._batchnorm_stats, pred.key, pred.data)
    X = digits.X[100:140]
    p0 = pred.predict(X)
    samples = pred.predict_mc(X, 4, seed=7)
    after = kl._call("torch", kl._batchnorm_stats, pred.key, pred.data)
    assert len(before) == 2
    for u, v in zip(before, after, strict=True):
        np.testing.assert_array_equal(u, v)
    assert samples.shape == (4, 40, 10)
    assert not np.allclose(samples[0], samples[1])  # dropout on
    np.testing.assert_array_equal(pred.predict(X), p0)  # dropout off again
    np.testing.assert_array_equal(pred.predict_mc(X, 4, seed=7), samples)


@keras_missing
def test_keras_builder_that_returns_no_model_is_refused_before_training(digits):
    from calipers._paths import add_model_dir

    add_model_dir(EXAMPLES)
    spec = NetworkSpec("keras_models:not_a_model", learner="keras")
    with pytest.raises(ConfigError, match="returned a Dense, not a Keras model"):
        check_networks({"k": spec}, digits, n_mc=0)
    wide = NetworkSpec("keras_models:seven_outputs", learner="keras")
    with pytest.raises(ConfigError, match=r"'k' \(keras keras_models:seven_outputs\(\), torch "
                                          r"backend\) returns shape \(N, 7\).*\(N, 10\)"):
        check_networks({"k": wide}, digits, n_mc=0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_keras_on_jax_and_tensorflow_is_reproducible(digits, backend):
    import importlib.util

    if importlib.util.find_spec("keras") is None or importlib.util.find_spec(backend) is None:
        pytest.skip(f"keras or {backend} is not installed")
    from calipers._paths import add_model_dir

    add_model_dir(EXAMPLES)
    spec = NetworkSpec("keras_models:cnn", {"channels": 4, "dropout": 0.3}, learner="keras",
                       options={"backend": backend})
    a = _cv(digits, {"k": spec})
    b = _cv(digits, {"k": spec})
    for m in ("accuracy", "nll", "mutual_info"):
        assert a.scores(m)["k"].tolist() == b.scores(m)["k"].tolist()
    assert np.all(a.scores("mutual_info")["k"] > 0)


# ----------------------------------------------------------------- lightning


@pytest.mark.skipif(__import__("importlib").util.find_spec("lightning") is None,
                    reason="lightning is not installed")
def test_lightning_module_cross_validates_reproducibly_writing_only_the_run_folder(
        digits, tmp_path, monkeypatch):
    import lightning_module

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    spec = NetworkSpec(lightning_module.LitCNN, {"channels": 4, "dropout": 0.3},
                       learner="lightning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on num_workers
        a = _cv(digits, {"L": spec}, tmp_path / "a")
        b = _cv(digits, {"L": spec}, tmp_path / "b")
    for m in ("accuracy", "nll", "mutual_info"):
        assert a.scores(m)["L"].tolist() == b.scores(m)["L"].tolist()
    assert np.all(a.scores("mutual_info")["L"] > 0)
    assert list(cwd.iterdir()) == []  # no lightning_logs, no checkpoints
    info = __import__("json").loads((tmp_path / "a" / "L" / "fold-00" / "learner.json")
                                    .read_text())
    assert info["framework"] == "lightning" and info["n_params"] > 0
    with pytest.raises(ConfigError, match="not a lightning.LightningModule"):
        check_networks({"x": NetworkSpec("calipers.models:CNN", learner="lightning")}, digits,
                       n_mc=0)
