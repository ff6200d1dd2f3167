import numpy as np
import pytest

from calipers.data import make_dataset
from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.folds import make_folds
from calipers.evaluation.train import TrainOptions
from calipers.experiment.engine import cross_validate
from calipers.experiment.summary import compare_runs, load_cv_result, summarize, write_summary

OPTS = TrainOptions(epochs=3, batch_size=16, lr=5e-3, device="cpu")
NETS = {"A": NetworkSpec("calipers.models:MLP", {"hidden": [16], "dropout": 0.1}),
        "B": NetworkSpec("calipers.models:MLP", {"hidden": [32], "dropout": 0.3})}


@pytest.fixture
def data(blobs):
    return make_dataset(*blobs, name="blobs")


@pytest.fixture
def folds(data):
    return make_folds(data.y, n_folds=3, seed=0)


class _Interrupt:
    """A progress hook that stops the run when fold ``at`` of network ``net`` starts."""

    def __init__(self, net, at):
        self.net, self.at = net, at

    def fold_start(self, network, split, n_splits, n_epochs):
        if (network, split) == (self.net, self.at):
            raise KeyboardInterrupt

    def epoch(self, *a):
        pass

    def fold_end(self, result):
        pass


def test_every_network_sees_the_same_folds(data, folds):
    res = cross_validate(data, NETS, folds, options=OPTS, n_mc=5)
    for name in NETS:
        idx = [r.predictions["index"] for r in res.results[name]]
        for got, te in zip(idx, folds.test, strict=True):
            np.testing.assert_array_equal(got, te)
    acc = res.scores("accuracy")
    assert set(acc) == {"A", "B"} and acc["A"].shape == (3,)
    # the stored accuracy is the accuracy of the stored out-of-fold predictions
    r = res.results["A"][1]
    assert r.metrics["accuracy"] == pytest.approx(
        np.mean(r.predictions["proba"].argmax(1) == r.predictions["y_true"]))


def test_resume_equals_uninterrupted(tmp_path, data, folds):
    full = cross_validate(data, NETS, folds, options=OPTS, n_mc=5, seed=3,
                          run_dir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        cross_validate(data, NETS, folds, options=OPTS, n_mc=5, seed=3,
                       run_dir=tmp_path / "cut", progress=_Interrupt("B", 1))
    assert (tmp_path / "cut/A/fold-02/metrics.json").is_file()
    assert not (tmp_path / "cut/B/fold-01").exists()
    resumed = cross_validate(data, NETS, folds, options=OPTS, n_mc=5, seed=3,
                             run_dir=tmp_path / "cut")
    assert [r.resumed for r in resumed.results["B"]] == [True, False, False]
    for name in NETS:
        for a, b in zip(full.results[name], resumed.results[name], strict=True):
            assert a.metrics == b.metrics
            np.testing.assert_array_equal(a.predictions["proba"], b.predictions["proba"])
    for d, res in (("full", full), ("cut", resumed)):
        write_summary(tmp_path / d, res, summarize(res))
    assert (tmp_path / "full/metrics.csv").read_bytes() == (tmp_path / "cut/metrics.csv").read_bytes()


def test_no_dropout_with_mc_is_refused(data, folds):
    nets = {"A": NetworkSpec("calipers.models:MLP", {"dropout": 0.0, "hidden": [8]})}
    nets_nodrop = {"A": NetworkSpec(lambda input_shape, n_outputs: __import__("torch").nn.Linear(
        4, n_outputs))}
    with pytest.raises(ValueError, match=r"network 'A' .* has no dropout module.*\[mc\] samples = 0"):
        cross_validate(data, nets_nodrop, folds, options=OPTS, n_mc=5)
    # p = 0 dropout is still a dropout module: accepted, and the MI is exactly zero
    res = cross_validate(data, nets, folds, options=OPTS, n_mc=4)
    assert all(r.metrics["mutual_info"] == 0 for r in res.results["A"])


def test_regression_reports_original_units(rng):
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (100 + 10 * X[:, 0]).astype(np.float32)
    data = make_dataset(X, y, task="regression")
    folds = make_folds(data.y, n_folds=3)
    nets = {"M": NetworkSpec("calipers.models:MLP", {"hidden": [16], "dropout": 0.05})}
    res = cross_validate(data, nets, folds, options=TrainOptions(epochs=40, lr=1e-2,
                         batch_size=16, device="cpu"), n_mc=10, tau=10.0)
    r = res.results["M"][0]
    assert r.predictions["mean"].shape == (20, 1)
    assert abs(r.predictions["mean"].mean() - 100) < 5  # de-standardised
    rmse = np.sqrt(np.mean((r.predictions["mean"][:, 0] - r.predictions["y_true"]) ** 2))
    assert r.metrics["rmse"] == pytest.approx(rmse, rel=1e-5)
    # predictive variance >= the noise term 1/tau, tau in 1/(target units)²
    assert np.all(r.predictions["var"] >= 0.1 * (1 - 1e-6))


def test_tau_is_in_target_units_in_both_engines(rng):
    """Fold-by-fold and stacked training add the same noise variance 1/tau (original units)."""
    from calipers.experiment.engine import cross_validate_batched

    X = rng.normal(size=(45, 3))
    y = 100 * X[:, 0] + rng.normal(size=45)                   # y std ≈ 100
    data = make_dataset(X, y, task="regression")
    folds = make_folds(data.y, n_folds=3, stratify=False)
    nets = {"M": NetworkSpec("calipers.models:MLP", {"hidden": [8], "dropout": 1e-4})}
    opts = TrainOptions(epochs=2, batch_size=16, device="cpu")
    seq = cross_validate(data, nets, folds, options=opts, n_mc=5, tau=4.0)
    bat = cross_validate_batched(data, nets, folds, options=opts, n_mc=5, tau=4.0)
    for res in (seq, bat):  # with p = 1e-4 almost no unit is dropped: var = MC var + 1/tau
        assert np.median(res.pooled("M", "var")) == pytest.approx(0.25, rel=1e-4)


def test_compare_runs_refuses_different_folds(tmp_path, data):
    for name, seed in (("r1", 0), ("r2", 1)):
        f = make_folds(data.y, n_folds=3, seed=seed)
        cross_validate(data, {"A": NETS["A"]}, f, options=OPTS, n_mc=2, run_dir=tmp_path / name)
        (tmp_path / name / "folds.json").write_text(__import__("json").dumps(f.to_dict()))
        (tmp_path / name / "config.toml").write_text(
            '[data]\ntask = "classification"\n[networks.A]\nmodel = "x:y"\n')
        assert len(load_cv_result(tmp_path / name).results["A"]) == 3
    with pytest.raises(ValueError, match=r"(?s)different folds.*r1: folds hash [0-9a-f]{64}\n.*r2: folds hash"):
        compare_runs([tmp_path / "r1", tmp_path / "r2"])
