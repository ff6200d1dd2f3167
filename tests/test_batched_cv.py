"""Cross-validation with batched training: same numbers stacked or one by one, saved weights
that reproduce the predictions, [search] and train.batched wired through the config."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

import calipers.batched.cv as bcv
from calipers.batched.cv import SearchSettings, batched_reason
from calipers.config import parse_config
from calipers.data import load_dataset, make_dataset
from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.folds import make_folds
from calipers.evaluation.splits import read_splits
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import ConfigError
from calipers.experiment.engine import cross_validate_batched
from calipers.experiment.runner import run_experiment
from calipers.models import MLP

OPTS = TrainOptions(epochs=3, batch_size=16, lr=1e-2, weight_decay=1e-3, device="cpu")
MLP_A = NetworkSpec("calipers.models:MLP", {"hidden": [8], "dropout": 0.1})


@pytest.fixture
def reg(rng):
    X = rng.normal(size=(48, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.3 * rng.normal(size=48) + 100.0  # far from 0: units matter
    return make_dataset(X, y, task="regression")


@pytest.fixture
def folds(reg):
    return make_folds(reg.y, n_folds=3, seed=0, stratify=False)


def test_stacked_equals_one_by_one_and_saved_weights_reproduce(reg, folds):
    nets = {"A": MLP_A, "B": NetworkSpec("calipers.models:MLP",
                                          {"hidden": [5, 4], "dropout": 0.2,
                                           "input_dropout": True})}
    a = cross_validate_batched(reg, nets, folds, options=OPTS, n_mc=20, tau=2.0)
    b = cross_validate_batched(reg, nets, folds, options=OPTS, n_mc=20, tau=2.0, batched=False)
    for name in nets:
        for ra, rb in zip(a.results[name], b.results[name], strict=True):
            assert ra.metrics.keys() == rb.metrics.keys()
            for k in ra.metrics:
                assert ra.metrics[k] == pytest.approx(rb.metrics[k], rel=1e-5, abs=1e-6)
            assert_allclose(ra.predictions["mean"], rb.predictions["mean"], rtol=1e-6)
    # original units, and rmse is that of the saved MC mean
    r = a.results["A"][1]
    assert_array_equal(r.predictions["index"], folds.test[1])
    assert abs(r.predictions["mean"].mean() - 100) < 20
    err = r.predictions["y_true"] - r.predictions["mean"][:, 0]
    assert r.metrics["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-10)
    assert r.metrics["chosen_dropout"] == 0.1
    # the saved state dict loads into calipers.models.MLP and gives the weight-scaling RMSE
    for name, spec in nets.items():
        r = a.results[name][2]
        tr, te = folds.train[2], folds.test[2]
        xm, xs = reg.X[tr].mean(0), reg.X[tr].std(0)
        ym, ys = reg.y[tr].mean(), reg.y[tr].std()
        net = MLP((3,), 1, **{k: v for k, v in spec.args.items()})
        net.load_state_dict(r.state_dict)
        with torch.no_grad():
            out = net.eval()(torch.as_tensor((reg.X[te] - xm) / xs, dtype=torch.float32))
        pred = out[:, 0].double().numpy() * ys + ym
        rmse = np.sqrt(np.mean((reg.y[te] - pred) ** 2))
        assert r.metrics["rmse_weight_scaling"] == pytest.approx(rmse, rel=1e-4)


def test_no_tau_gives_mc_variance_only_and_no_log_likelihood(reg, folds):
    res = cross_validate_batched(reg, {"A": MLP_A}, folds, options=OPTS, n_mc=10)
    r = res.results["A"][0]
    assert "log_likelihood" not in r.metrics
    assert np.all(r.predictions["var"] > 0)
    zero = cross_validate_batched(reg, {"A": MLP_A}, folds, options=OPTS, n_mc=0)
    r0 = zero.results["A"][0]
    assert_allclose(r0.predictions["var"], 0.0)
    assert r0.metrics["rmse"] == pytest.approx(r0.metrics["rmse_weight_scaling"], rel=1e-12)


def test_search_chooses_per_split_from_the_grid(reg, folds):
    s = SearchSettings((0.05, 0.2), (1.0, 3.0), mc_samples=10)
    res = cross_validate_batched(reg, {"A": NetworkSpec("calipers.models:MLP", {"hidden": [8]})},
                                 folds, options=OPTS, n_mc=20, search=s)
    for r in res.results["A"]:
        assert r.metrics["chosen_dropout"] in (0.05, 0.2)
        assert r.metrics["chosen_tau"] in (1.0, 3.0)
        assert np.isfinite(r.metrics["log_likelihood"])


def test_batched_reason(reg, blobs):
    assert batched_reason(MLP_A, reg) is None
    cls = make_dataset(*blobs, task="classification")
    assert batched_reason(MLP_A, cls) is None
    assert "is not calipers.models:MLP" in batched_reason(
        NetworkSpec("calipers.models:CNN", {}), reg)
    assert "['bogus']" in batched_reason(NetworkSpec("calipers.models:MLP", {"bogus": 1}), reg)
    two = make_dataset(reg.X, np.stack([reg.y, reg.y], 1), task="regression")
    assert "more than one target" in batched_reason(MLP_A, two)
    cnn = NetworkSpec("calipers.models:CNN", {})
    with pytest.raises(ValueError, match="network 'C' cannot be trained batched: .*CNN"):
        cross_validate_batched(cls, {"C": cnn}, make_folds(cls.y, n_folds=3))


def test_classification_is_batched_with_the_keys_of_fold_by_fold(blobs):
    from calipers.experiment.engine import cross_validate

    cls = make_dataset(*blobs, task="classification")
    folds = make_folds(cls.y, n_folds=3, seed=1)
    nets = {"A": NetworkSpec("calipers.models:MLP", {"hidden": [16], "dropout": 0.2})}
    opts = TrainOptions(epochs=15, batch_size=16, lr=1e-2, device="cpu")
    a = cross_validate_batched(cls, nets, folds, options=opts, n_mc=10)
    b = cross_validate_batched(cls, nets, folds, options=opts, n_mc=10, batched=False)
    seq = cross_validate(cls, nets, folds, options=opts, n_mc=10)
    for ra, rb, rs in zip(a.results["A"], b.results["A"], seq.results["A"], strict=True):
        assert ra.metrics.keys() == rs.metrics.keys()
        assert ra.predictions.keys() == rs.predictions.keys()
        assert_allclose(ra.predictions["proba"], rb.predictions["proba"], atol=1e-6)
        assert_allclose(ra.predictions["proba"].sum(1), 1.0, atol=1e-9)
        assert np.all(ra.predictions["mutual_info"] >= 0)
        assert ra.metrics["accuracy"] > 0.8 and rs.metrics["accuracy"] > 0.8  # 3 easy blobs


_NETS = textwrap.dedent('''
    from torch import nn

    def Net(input_shape, n_outputs, dropout=0.1):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 8), nn.ReLU(),
                             nn.Dropout(dropout), nn.Linear(8, n_outputs))
''')


def _table(tmp_path, rng, n=45):
    X = rng.normal(size=(n, 3))
    y = X @ [1.0, -1.0, 2.0] + 0.2 * rng.normal(size=n) + 10
    rows = ["a,b,c,target"] + [f"{x[0]},{x[1]},{x[2]},{t}" for x, t in zip(X, y, strict=True)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")


def _config(extra: str = "", nets: str = "") -> str:
    return textwrap.dedent('''
        [data]
        kind = "table"
        path = "t.csv"
        task = "regression"
        target = "target"
        [cv]
        folds = 3
        stratify = false
        [train]
        epochs = 2
        batch_size = 16
        device = "cpu"
        [mc]
        samples = 8
    ''') + extra + (nets or textwrap.dedent('''
        [networks.A]
        model = "calipers.models:MLP"
        args = { hidden = [6] }
    '''))


def test_experiment_with_search_resumes_without_training(tmp_path, rng, monkeypatch):
    _table(tmp_path, rng)
    text = _config('[search]\ndropout = [0.05, 0.1]\ntau = [0.5, 2.0]\nmc_samples = 4\n')
    (tmp_path / "c.toml").write_text(text)
    from calipers.config import load_config

    cfg = load_config(tmp_path / "c.toml")
    res = run_experiment(cfg, tmp_path / "run", report=False)
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"rmse", "log_likelihood", "chosen_dropout", "chosen_tau"} <= set(header)
    saved = json.loads((tmp_path / "run" / "A" / "fold-01" / "metrics.json").read_text())
    assert saved["metrics"]["chosen_tau"] in (0.5, 2.0)

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(bcv, "search_regression", boom)
    again = run_experiment(cfg, tmp_path / "run", report=False)
    assert again.cv.scores("rmse")["A"].tolist() == res.cv.scores("rmse")["A"].tolist()


def test_experiment_mixes_batched_and_fold_by_fold(tmp_path, rng, monkeypatch):
    _table(tmp_path, rng)
    (tmp_path / "mynets.py").write_text(_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    nets = textwrap.dedent('''
        [networks.A]
        model = "calipers.models:MLP"
        args = { hidden = [6], dropout = 0.1 }
        [networks.B]
        model = "mynets:Net"
        args = { dropout = 0.1 }
    ''')
    text = _config(nets=nets).replace("samples = 8", "samples = 8\ntau = 1.0")
    cfg = parse_config(__import__("tomllib").loads(text), base_dir=tmp_path)
    res = run_experiment(cfg, tmp_path / "run", report=False)
    assert res.cv.networks == ("A", "B")
    assert "rmse_weight_scaling" in res.cv.results["A"][0].metrics      # stacked engine
    assert "rmse_weight_scaling" not in res.cv.results["B"][0].metrics  # fold by fold
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header == "network,fold,repeat,rmse,gaussian_nll"              # common metrics
    assert res.summary.comparison is not None
    # train.batched = false: the same numbers, trained one by one
    off = parse_config(__import__("tomllib").loads(
        text.replace('device = "cpu"', 'device = "cpu"\nbatched = false')), base_dir=tmp_path)
    res2 = run_experiment(off, tmp_path / "run2", report=False)
    assert_allclose(res2.cv.scores("rmse")["A"], res.cv.scores("rmse")["A"], rtol=1e-5)


@pytest.mark.parametrize(("extra", "message"), [
    ('[search]\ndropout = [1.5]\ntau = [1.0]\n', r"search.dropout: .*in \[0, 1\)"),
    ('[search]\ndropout = [0.1]\ntau = [1.0]\nmc_sample = 3\n',
     r"search.mc_sample: unknown key; did you mean 'mc_samples'\?"),
    ('[search]\ndropout = [0.1]\n', r"search.tau: required key is missing"),
])
def test_search_config_errors(extra, message):
    import tomllib

    raw = tomllib.loads(_config(extra))
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_search_config_conflicts(tmp_path, rng, monkeypatch):
    import tomllib

    grid = '[search]\ndropout = [0.1]\ntau = [1.0]\n'
    raw = tomllib.loads(_config(grid))
    raw["mc"]["tau"] = 2.0
    with pytest.raises(ConfigError, match="mc.tau: with \\[search\\], tau is chosen per split"):
        parse_config(raw)
    raw = tomllib.loads(_config(grid))
    raw["networks"]["A"]["args"]["dropout"] = 0.2
    with pytest.raises(ConfigError, match="networks.A.args.dropout: with \\[search\\]"):
        parse_config(raw)
    raw = tomllib.loads(_config(grid))
    raw["data"]["task"] = "classification"
    with pytest.raises(ConfigError, match="search: the grid search is for regression"):
        parse_config(raw)
    raw = tomllib.loads(_config(grid))
    raw["mc"]["samples"] = 0
    with pytest.raises(ConfigError, match="mc.samples: \\[search\\] scores each split"):
        parse_config(raw)
    _table(tmp_path, rng)
    (tmp_path / "mynets.py").write_text(_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = tomllib.loads(_config(grid))
    raw["networks"]["A"] = {"model": "mynets:Net", "args": {}}
    cfg = parse_config(raw, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="networks.A: \\[search\\] needs calipers.models:MLP"):
        run_experiment(cfg, tmp_path / "run", report=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_uci_folder_and_its_splits(tmp_path):
    data = np.arange(30, dtype=float).reshape(10, 3)
    np.savetxt(tmp_path / "data.txt", data)
    np.savetxt(tmp_path / "index_features.txt", [0, 2], fmt="%d")
    np.savetxt(tmp_path / "index_target.txt", [1], fmt="%d")
    np.savetxt(tmp_path / "index_train_0.txt", np.arange(7.0))  # floats, as the paper's files
    np.savetxt(tmp_path / "index_test_0.txt", np.arange(7.0, 10.0))
    ds = load_dataset("uci", path=tmp_path, task="regression")
    assert_array_equal(ds.X, data[:, [0, 2]])
    assert_array_equal(ds.y, data[:, 1])
    f = read_splits(tmp_path, n_samples=ds.n_samples)
    assert_array_equal(f.test[0], [7, 8, 9])
    (tmp_path / "index_target.txt").unlink()
    with pytest.raises(Exception, match=r"lacks \['index_target.txt'\]"):
        load_dataset("uci", path=tmp_path, task="regression")


def test_partial_resume_keeps_saved_folds(tmp_path, reg, folds):
    run = tmp_path / "run"
    first = cross_validate_batched(reg, {"A": MLP_A}, folds, options=OPTS, n_mc=5, tau=1.0,
                                   run_dir=run)
    (run / "A" / "fold-01" / "metrics.json").unlink()        # an interrupted run
    saved = json.loads((run / "A" / "fold-00" / "metrics.json").read_text())
    saved["metrics"]["rmse"] = 123.0                          # what is on disk wins
    (run / "A" / "fold-00" / "metrics.json").write_text(json.dumps(saved))
    again = cross_validate_batched(reg, {"A": MLP_A}, folds, options=OPTS, n_mc=5, tau=1.0,
                                   run_dir=run)
    assert [r.resumed for r in again.results["A"]] == [True, False, True]
    assert again.results["A"][0].metrics["rmse"] == 123.0
    assert again.results["A"][1].metrics["rmse"] == pytest.approx(
        first.results["A"][1].metrics["rmse"], rel=1e-6)
    assert (run / "A" / "fold-01" / "metrics.json").is_file()


def test_inner_split_is_shuffled_for_sorted_folds(reg, folds):
    from calipers.batched.search import SearchOptions, search_regression

    opts = SearchOptions(grid={"dropout": [0.1], "tau": [1.0]}, hidden=(4,), epochs=1,
                         n_mc=2, device="cpu", inner_shuffle=True)
    res = search_regression(reg.X, reg.y, folds, options=opts)
    for tr, val in zip(folds.train, res.validation_index, strict=True):
        assert set(val) < set(tr)
        assert sorted(val) != sorted(tr)[-len(val):]          # not the tail of sorted indices
    kept = search_regression(reg.X, reg.y, folds, options=SearchOptions(
        **{**opts.__dict__, "inner_shuffle": False}))
    assert_array_equal(kept.validation_index[0], folds.train[0][-len(kept.validation_index[0]):])


def test_uci_kind_defaults_to_regression_and_cv_conflicts():
    import tomllib

    cfg = parse_config({"data": {"kind": "uci", "path": "x"},
                        "networks": {"A": {"model": "calipers.models:MLP"}}})
    assert cfg.data.task == "regression"
    base = tomllib.loads(_config())
    with pytest.raises(ConfigError, match="cv.repeats = 2 with shuffle = false"):
        parse_config({**base, "cv": {"repeats": 2, "shuffle": False}})
    with pytest.raises(ConfigError, match="cv.shuffle: has no effect with cv.splits"):
        parse_config({**base, "cv": {"splits": "s.json", "shuffle": False}})
    raw = tomllib.loads(_config('[search]\ndropout = [0.1]\ntau = [1.0]\n'))
    raw["train"]["weight_decay"] = 1e-4
    with pytest.raises(ConfigError, match="train.weight_decay: with \\[search\\]"):
        parse_config(raw)


def test_metric_that_a_network_cannot_report_is_refused_before_training(tmp_path, rng):
    import tomllib

    _table(tmp_path, rng)
    raw = tomllib.loads(_config())          # no tau: no log likelihood
    raw["compare"] = {"metric": "log_likelihood"}
    cfg = parse_config(raw, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="compare.metric = 'log_likelihood': networks \\['A'\\]"):
        run_experiment(cfg, tmp_path / "run", report=False)
    assert not (tmp_path / "run").exists()


def test_run_from_an_older_calipers_resumes(tmp_path, rng):
    """A config.toml without keys added later (written with their defaults now) is the same
    experiment."""
    import tomllib

    _table(tmp_path, rng)
    cfg = parse_config(tomllib.loads(_config()), base_dir=tmp_path)
    run_experiment(cfg, tmp_path / "run", report=False)
    old = (tmp_path / "run" / "config.toml").read_text()
    assert "shuffle = true\n" in old and "batched = true\n" in old
    (tmp_path / "run" / "config.toml").write_text(
        old.replace("shuffle = true\n", "").replace("batched = true\n", ""))
    res = run_experiment(cfg, tmp_path / "run", report=False)
    assert all(r.resumed for r in res.cv.results["A"])
