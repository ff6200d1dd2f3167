"""The experiment engine against the task interface: plans, resume, executors."""

import pickle

import numpy as np
import pytest
from sklearn.model_selection import KFold

from calipers.data import make_dataset
from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import ConfigError
from calipers.experiment.engine import check_networks, cross_validate
from calipers.tasks import SerialExecutor, Task, TaskError

OPTS = TrainOptions(epochs=2, batch_size=16, lr=5e-3, device="cpu")
MLP = NetworkSpec("calipers.models:MLP", {"hidden": [8], "dropout": 0.1})
CNN = NetworkSpec("calipers.models:CNN", {"channels": 4, "dropout": 0.1})


@pytest.fixture
def data(rng):
    X = rng.normal(size=(30, 1, 8, 8)).astype(np.float32)
    y = (X.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    return make_dataset(X, y, name="tiny")


class RecordingExecutor:
    """Runs tasks like SerialExecutor, but records every task it was given and pickles each
    one (a process or cluster executor must be able to)."""

    def __init__(self):
        self.keys: list[str] = []

    def map(self, tasks, *, on_done=None):
        out = []
        for t in tasks:
            self.keys.append(t.key)
            t = pickle.loads(pickle.dumps(t))
            res = t.run()
            out.append(res)
            if on_done is not None:
                on_done(t, res)
        return out


def _run(data, run_dir, executor, **kw):
    return cross_validate(data, {"A": MLP, "B": CNN}, 3, options=OPTS, n_mc=2, seed=1,
                          stack=True, run_dir=run_dir, executor=executor, **kw)


def test_every_unfinished_task_runs_exactly_once_and_resume_runs_only_the_missing(data,
                                                                                 tmp_path):
    ex = RecordingExecutor()
    first = _run(data, tmp_path, ex)
    assert ex.keys == ["A/stacked", "B/fold-00", "B/fold-01", "B/fold-02"]
    assert not any(r.resumed for rs in first.results.values() for r in rs)

    again = RecordingExecutor()
    _run(data, tmp_path, again)
    assert again.keys == []  # every marker exists: nothing to run

    (tmp_path / "B/fold-01/metrics.json").unlink()
    (tmp_path / "A/fold-02/metrics.json").unlink()
    third = RecordingExecutor()
    res = _run(data, tmp_path, third)
    assert third.keys == ["A/stacked", "B/fold-01"]
    assert [r.resumed for r in res.results["B"]] == [True, False, True]
    assert [r.resumed for r in res.results["A"]] == [True, True, False]
    for name in ("A", "B"):
        for a, b in zip(first.results[name], res.results[name], strict=True):
            assert a.metrics == pytest.approx(b.metrics, rel=1e-6)


def test_serial_and_recording_executor_give_the_same_run(data, tmp_path):
    a = _run(data, tmp_path / "a", None)
    b = _run(data, tmp_path / "b", RecordingExecutor())
    for name in ("A", "B"):
        for x, y in zip(a.results[name], b.results[name], strict=True):
            assert x.metrics == y.metrics
            np.testing.assert_array_equal(x.predictions["proba"], y.predictions["proba"])


def test_without_run_dir_results_come_from_the_returned_values(data):
    ex = RecordingExecutor()
    res = _run(data, None, ex)
    assert len(ex.keys) == 4
    assert [r.split for r in res.results["B"]] == [0, 1, 2]
    assert res.results["A"][0].state_dict is not None  # not read back from disk


def test_cv_accepts_what_check_cv_accepts(data):
    kf = KFold(3, shuffle=True, random_state=0)
    pairs = list(kf.split(data.X))
    by_splitter = cross_validate(data, {"B": CNN}, kf, options=OPTS, n_mc=0)
    by_pairs = cross_validate(data, {"B": CNN}, pairs, options=OPTS, n_mc=0)
    for (_tr, te), r1, r2 in zip(pairs, by_splitter.results["B"], by_pairs.results["B"],
                                strict=True):
        np.testing.assert_array_equal(r1.predictions["index"], np.sort(te))
        assert r1.metrics == r2.metrics
    assert len(cross_validate(data, {"B": CNN}, 2, options=OPTS, n_mc=0).folds) == 2


def test_tau_zero_is_refused(data):
    reg = make_dataset(data.X.reshape(30, -1), data.X.mean(axis=(1, 2, 3)), task="regression")
    with pytest.raises(ValueError, match="tau must be a positive precision .* got 0"):
        cross_validate(reg, {"A": MLP}, 3, options=OPTS, n_mc=2, tau=0)


def test_check_networks_probes_each_network_once(data, monkeypatch):
    import calipers.experiment.engine as engine

    built = []
    real = engine.build_network

    def counting(*a, **kw):
        built.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(engine, "build_network", counting)
    cross_validate(data, {"B": CNN}, 2, options=OPTS, n_mc=0)
    assert built == ["calipers.models:CNN"]  # the fold tasks build their own
    with pytest.raises(ConfigError, match=r"network 'N' .* has no dropout module"):
        check_networks({"N": NetworkSpec(_no_dropout)}, data, n_mc=3)


def _no_dropout(input_shape, n_outputs):
    import torch

    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, n_outputs))


def _ok(x):
    return x * 2


def _fail(x):
    raise ValueError(f"bad {x}")


def test_serial_executor_runs_all_then_raises(tmp_path):
    seen = []
    tasks = [Task("a", _ok, {"x": 1}), Task("b", _fail, {"x": 2}), Task("c", _ok, {"x": 3})]
    with pytest.raises(ValueError, match="bad 2"):
        SerialExecutor().map(tasks, on_done=lambda t, r: seen.append((t.key, r)))
    assert seen == [("a", 2), ("c", 6)]  # the others still ran
    tasks.append(Task("d", _fail, {"x": 4}))
    with pytest.raises(TaskError, match=r"2 task\(s\) failed:\n  b: ValueError: bad 2\n  d:"):
        SerialExecutor().map(tasks)
    assert SerialExecutor().map(tasks[:1]) == [2]
    marker = tmp_path / "done"
    t = Task("m", _ok, {"x": 1}, marker)
    assert not t.done()
    marker.write_text("")
    assert t.done()
