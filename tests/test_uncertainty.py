"""Tests for calipers.uncertainty.mc: MC dropout against hand computations and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.modules.dropout as torch_dropout
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp
from scipy.stats import entropy as scipy_entropy
from scipy.stats import norm
from torch import nn

from calipers._seeds import child_seed, seeded_torch
from calipers.models import CNN, MLP
from calipers.uncertainty import (
    DROPOUT_TYPES,
    MCClassification,
    MCRegression,
    has_dropout,
    mc_dropout_mode,
    mc_predict,
    mutual_information,
    predictive_entropy,
    regression_log_likelihood,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _cnn(p: float = 0.1, *, n_out: int = 4, seed: int = 0) -> CNN:
    """A small CNN with non-trivial BatchNorm running statistics, left in train mode."""
    with seeded_torch(seed):
        net = CNN((1, 8, 8), n_out, channels=4, dropout=p)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return net


def _mlp(p: float = 0.3, *, n_in: int = 4, n_out: int = 3, seed: int = 0) -> MLP:
    with seeded_torch(seed):
        return MLP((n_in,), n_out, hidden=(16,), dropout=p)


def _images(rng, n: int = 12) -> np.ndarray:
    return rng.uniform(0, 1, size=(n, 1, 8, 8))


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


class _CountCalls:
    """Forward hook that records the number of rows each call sees."""

    def __init__(self, module: nn.Module) -> None:
        self.rows: list[int] = []
        module.register_forward_hook(lambda m, args, out: self.rows.append(args[0].shape[0]))


# --------------------------------------------------------------------------- modes


def test_dropout_types_are_torch_public_classes():
    assert sorted(t.__name__ for t in DROPOUT_TYPES) == sorted(torch_dropout.__all__)
    assert all(getattr(nn, t.__name__) is t for t in DROPOUT_TYPES)


def test_has_dropout():
    class MyDropout(nn.Dropout):
        pass

    assert has_dropout(_mlp())
    assert has_dropout(nn.Sequential(nn.Linear(2, 2), nn.Sequential(MyDropout(0.2))))
    assert not has_dropout(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


@pytest.mark.parametrize("kind", DROPOUT_TYPES)
def test_mc_dropout_mode_sets_only_dropout_to_train_and_restores(kind):
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Sequential(kind(0.2), nn.ReLU()))
    net.train()
    net[1].eval()  # a mixed state must come back exactly
    net[2][1].eval()
    before = _flags(net)
    with mc_dropout_mode(net):
        for m in net.modules():
            assert m.training is isinstance(m, DROPOUT_TYPES)
    assert _flags(net) == before
    with pytest.raises(RuntimeError, match="boom"), mc_dropout_mode(net):
        raise RuntimeError("boom")
    assert _flags(net) == before


def test_mc_predict_leaves_model_as_found(rng):
    net = _cnn(0.3)
    net.train()
    net[1].eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = _flags(net)
    mc_predict(net, _images(rng), n_mc=5)
    assert _flags(net) == flags
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm running stats untouched


def test_flags_restored_when_forward_raises(rng):
    net = _cnn(0.3)
    flags = _flags(net)
    with pytest.raises(RuntimeError):  # 3 channels into a 1-channel convolution
        mc_predict(net, rng.uniform(size=(4, 3, 8, 8)), n_mc=3)
    assert _flags(net) == flags and net.training


# --------------------------------------------------------------------------- known answers


def test_p0_equals_deterministic_eval_forward(rng):
    net = _cnn(0.0)
    x = _images(rng, 20)
    res = mc_predict(net, x, n_mc=6, batch_size=7, chunk_size=4)  # 3 batches, 2 chunks
    net.eval()
    with torch.no_grad():
        ref = torch.softmax(net(torch.as_tensor(x, dtype=torch.float32)).double(), 1).numpy()
    assert_allclose(res.proba, ref, rtol=1e-5, atol=1e-7)  # BatchNorm used running stats
    assert_allclose(res.std, 0.0, atol=1e-6)
    assert_allclose(res.mutual_info, 0.0, atol=1e-9)
    assert_allclose(res.entropy, scipy_entropy(ref, axis=1), rtol=1e-5)


def test_identical_passes_give_exactly_zero_spread(rng):
    logits = rng.normal(size=(9, 5))
    res = mc_predict(nn.Sequential(nn.Dropout(0.0)), logits, n_mc=7, chunk_size=3)
    ref = torch.softmax(torch.as_tensor(logits, dtype=torch.float32).double(), 1).numpy()
    assert_array_equal(res.std, 0.0)
    assert_array_equal(res.mutual_info, 0.0)
    assert_array_equal(res.entropy, res.expected_entropy)
    assert_allclose(res.proba, ref, rtol=1e-12)


def test_positive_dropout_gives_spread(rng):
    res = mc_predict(_cnn(0.5), _images(rng), n_mc=20)
    assert (res.std > 1e-4).mean() > 0.9
    assert (res.mutual_info > 0).all()
    assert (res.entropy <= math.log(4) + 1e-12).all()


def test_entropy_and_mutual_information_by_hand():
    # passes x samples x classes
    s = np.array([[[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]],
                  [[0.0, 1.0], [0.5, 0.5], [0.5, 0.5]]])
    h = lambda *p: -sum(q * math.log(q) for q in p if q > 0)  # noqa: E731
    want_h = [math.log(2), math.log(2), h(0.7, 0.3)]
    want_mi = [math.log(2), 0.0, h(0.7, 0.3) - 0.5 * (h(0.9, 0.1) + math.log(2))]
    assert_allclose(predictive_entropy(s.mean(0)), want_h, rtol=1e-14)
    assert_allclose(mutual_information(s), want_mi, rtol=1e-14, atol=1e-15)
    assert_allclose(mutual_information(np.moveaxis(s, 2, 1), axis=1), want_mi, rtol=1e-14)
    assert_allclose(predictive_entropy(s.mean(0).T, axis=0), want_h, rtol=1e-14)


def test_statistics_match_kept_samples(rng):
    res = mc_predict(_mlp(0.5), rng.normal(size=(15, 4)), n_mc=11, batch_size=6, chunk_size=4,
                     keep_samples=True)
    s = res.samples
    assert isinstance(res, MCClassification) and s.shape == (11, 15, 3)
    assert_allclose(s.sum(-1), 1.0, rtol=1e-12)
    assert_allclose(res.proba, s.mean(0), rtol=1e-12)
    assert_allclose(res.std, s.std(0), rtol=1e-9, atol=1e-12)
    assert_allclose(res.entropy, scipy_entropy(s.mean(0), axis=1), rtol=1e-12)
    assert_allclose(res.expected_entropy, scipy_entropy(s, axis=2).mean(0), rtol=1e-12)
    assert_allclose(res.mutual_info, mutual_information(s), rtol=1e-9, atol=1e-12)
    assert (res.mutual_info > 0).all()
    assert_array_equal(res.prediction, s.mean(0).argmax(1))
    assert res.summary() == {
        "n_mc": 11,
        "mean_entropy": pytest.approx(res.entropy.mean()),
        "mean_expected_entropy": pytest.approx(res.expected_entropy.mean()),
        "mean_mutual_info": pytest.approx(res.mutual_info.mean()),
        "mean_std": pytest.approx(res.std.mean()),
    }


def test_per_pixel_classification(rng):
    with seeded_torch(1):
        net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Dropout2d(0.5))
    res = mc_predict(net, _images(rng, 5), n_mc=9, chunk_size=4, keep_samples=True)
    assert res.samples.shape == (9, 5, 3, 8, 8) and res.prediction.shape == (5, 8, 8)
    assert_allclose(res.proba, res.samples.mean(0), rtol=1e-12)
    assert_allclose(res.entropy, scipy_entropy(res.proba, axis=1), rtol=1e-12)
    assert_allclose(res.mutual_info, mutual_information(res.samples, axis=2), atol=1e-12)


# --------------------------------------------------------------------------- seeds, chunks, cache


def test_samples_follow_the_seed_contract(rng):
    """Each chunk is model(x_b repeated k times) under seeded_torch(child_seed(seed, b, c))."""
    net, x = _mlp(0.5), torch.as_tensor(rng.normal(size=(12, 4)), dtype=torch.float32)
    res = mc_predict(net, x, n_mc=7, batch_size=5, chunk_size=3, seed=11, keep_samples=True)
    want = np.empty((7, 12, 3))
    with mc_dropout_mode(net), torch.no_grad():
        for b, lo in enumerate(range(0, 12, 5)):
            xb = x[lo:lo + 5]
            for c, t0 in enumerate(range(0, 7, 3)):
                k = min(3, 7 - t0)
                with seeded_torch(child_seed(11, b, c)):
                    out = net(xb.repeat(k, 1)).double()
                want[t0:t0 + k, lo:lo + 5] = torch.softmax(out, 1).reshape(k, -1, 3).numpy()
    assert_allclose(res.samples, want, rtol=1e-6, atol=1e-9)


def test_same_seed_same_result_and_global_rng_untouched(rng):
    net, x = _cnn(0.3), _images(rng)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = mc_predict(net, x, n_mc=8, seed=3)
    b = mc_predict(net, x, n_mc=8, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert_array_equal(a.proba, b.proba)
    assert_array_equal(a.mutual_info, b.mutual_info)
    c = mc_predict(net, x, n_mc=8, seed=4)
    assert np.abs(c.proba - a.proba).max() > 1e-4


def test_cached_trunk_equals_full_forward(rng):
    net, x = _cnn(0.3), _images(rng, 10)
    first_conv = _CountCalls(net[0])
    kw = dict(n_mc=9, batch_size=4, chunk_size=4, seed=5, keep_samples=True)
    cached = mc_predict(net, x, cache_trunk=True, **kw)
    assert first_conv.rows == [4, 4, 2]  # trunk once per batch
    full = mc_predict(net, x, cache_trunk=False, **kw)
    assert first_conv.rows[3:] == [16, 16, 4, 16, 16, 4, 8, 8, 2]  # every chunk, whole net
    assert_allclose(cached.samples, full.samples, rtol=1e-5, atol=1e-7)
    assert_allclose(cached.mutual_info, full.mutual_info, rtol=1e-4, atol=1e-8)


def test_nested_sequential_is_split_and_custom_forward_is_not(rng):
    with seeded_torch(0):
        trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        net = nn.Sequential(nn.Sequential(trunk), nn.Sequential(nn.Dropout(0.4), nn.Linear(8, 3)))
    calls = _CountCalls(trunk[0])
    x = rng.normal(size=(6, 4))
    a = mc_predict(net, x, n_mc=10, chunk_size=5, keep_samples=True)
    assert calls.rows == [6]

    class Shifted(nn.Sequential):  # forward overridden: must be called whole
        def forward(self, x):
            return super().forward(x) + 1.0

    shifted = Shifted(*net)
    b = mc_predict(shifted, x, n_mc=10, chunk_size=5, keep_samples=True)
    assert calls.rows[1:] == [30, 30]
    assert_allclose(b.samples, a.samples, rtol=1e-6)  # softmax ignores the shift


def test_default_chunk_keeps_rows_per_call_bounded(rng):
    net = MLP((2,), 2, hidden=(4,), dropout=0.2)
    last = _CountCalls(net[-1])
    mc_predict(net, rng.normal(size=(3000, 2)), n_mc=30)  # batch 1024 -> 8 passes per call
    assert max(last.rows) == 8192 and sum(last.rows) == 3000 * 30
    last.rows.clear()
    mc_predict(net, rng.normal(size=(50, 2)), n_mc=30)  # small N: all passes in one call
    assert last.rows == [1500]
    last.rows.clear()
    mc_predict(net, rng.normal(size=(25, 2)), n_mc=7, batch_size=10, chunk_size=3)
    assert last.rows == [30, 30, 10, 30, 30, 10, 15, 15, 5]


def test_numpy_and_tensor_inputs_agree(rng):
    net, x = _cnn(0.3), _images(rng)
    a = mc_predict(net, x, n_mc=4)
    b = mc_predict(net, torch.as_tensor(x, dtype=torch.float32), n_mc=4)
    assert_array_equal(a.proba, b.proba)


# --------------------------------------------------------------------------- regression


def _reg_net(p: float = 0.3, n_out: int = 2, *, flat: bool = False) -> nn.Module:
    with seeded_torch(2):
        layers = [nn.Linear(3, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, n_out)]
    return nn.Sequential(*layers, *([nn.Flatten(0)] if flat else []))


def _hand_log_likelihood(samples, y, tau):
    """Gal & Ghahramani's test LL as a mixture of Gaussians, via scipy.stats.norm."""
    s = samples.reshape(samples.shape[0], samples.shape[1], -1)
    t = y.reshape(y.shape[0], -1)
    per_pass = norm.logpdf(t[None], loc=s, scale=1 / math.sqrt(tau)).sum(-1)  # (T, N)
    return logsumexp(per_pass, axis=0) - math.log(samples.shape[0])


def test_regression_variance_includes_inverse_tau(rng):
    x = rng.normal(size=(13, 3))
    plain = mc_predict(_reg_net(), x, n_mc=12, task="regression", keep_samples=True)
    tuned = mc_predict(_reg_net(), x, n_mc=12, task="regression", tau=4.0)
    assert isinstance(plain, MCRegression) and plain.tau is None and plain.mean.shape == (13, 2)
    assert_allclose(plain.mean, plain.samples.mean(0), rtol=1e-12)
    assert_allclose(plain.var, plain.samples.var(0), rtol=1e-9, atol=1e-14)
    assert_allclose(plain.std_mc, plain.samples.std(0), rtol=1e-9, atol=1e-14)
    assert_array_equal(tuned.mean, plain.mean)
    assert_allclose(tuned.var - plain.var, 0.25, rtol=1e-12)
    assert (plain.std_mc > 0).all()


def test_streamed_log_likelihood_matches_hand_computation(rng):
    x, y = rng.normal(size=(11, 3)), rng.normal(size=(11, 2))
    res = mc_predict(_reg_net(), x, n_mc=10, task="regression", tau=2.5, y=y, chunk_size=3,
                     batch_size=4, keep_samples=True)
    want = _hand_log_likelihood(res.samples, y, 2.5)
    assert_allclose(res.log_likelihood, want, rtol=1e-10)
    assert_allclose(regression_log_likelihood(res.samples, y, 2.5), want, rtol=1e-12)
    assert res.summary()["mean_log_likelihood"] == pytest.approx(want.mean())


def test_one_dimensional_outputs_keep_their_shape(rng):
    x, y = rng.normal(size=(9, 3)), rng.normal(size=9)
    res = mc_predict(_reg_net(n_out=1, flat=True), x, n_mc=6, task="regression", tau=1.0, y=y,
                     keep_samples=True)
    assert res.mean.shape == (9,) and res.samples.shape == (6, 9)
    assert_allclose(res.log_likelihood, _hand_log_likelihood(res.samples, y, 1.0), rtol=1e-10)
    col = mc_predict(_reg_net(n_out=1), x, n_mc=6, task="regression", tau=1.0, y=y)  # (N, 1)
    assert col.mean.shape == (9, 1)
    assert_allclose(col.log_likelihood, res.log_likelihood, rtol=1e-6)


def test_log_likelihood_without_dropout_is_gaussian(rng):
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    res = mc_predict(_reg_net(0.0), x, n_mc=5, task="regression", tau=3.0, y=y)
    want = norm.logpdf(y, loc=res.mean, scale=1 / math.sqrt(3.0)).sum(1)
    assert_allclose(res.log_likelihood, want, rtol=1e-9)
    assert_allclose(res.var, 1 / 3.0, rtol=1e-9)


def test_regression_log_likelihood_on_one_output(rng):
    s, y = rng.normal(size=(7, 5)), rng.normal(size=5)
    assert_allclose(regression_log_likelihood(s, y, 0.7), _hand_log_likelihood(s, y, 0.7),
                    rtol=1e-12)


# --------------------------------------------------------------------------- errors


class _NoBatch(nn.Module):
    def __init__(self, what: str) -> None:
        super().__init__()
        self.drop, self.what = nn.Dropout(0.1), what

    def forward(self, x):
        h = self.drop(x)
        return {"out": h} if self.what == "dict" else h.mean(0, keepdim=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n_mc=0), ValueError, r"n_mc must be an integer >= 1; got 0\. Use n_mc = 30"),
        (dict(task="regresion"), ValueError, r"unknown task 'regresion'; did you mean 'regr"),
        (dict(batch_size=0), ValueError, r"batch_size must be an integer >= 1; got 0"),
        (dict(chunk_size=0), ValueError, r"chunk_size must be an integer >= 1; got 0"),
        (dict(seed=-1), ValueError, r"seed must be an integer >= 0; got -1"),
        (dict(task="regression", tau=0.0), ValueError, r"tau must be a positive finite"),
        (dict(tau=1.0), ValueError, r"tau and y apply to task='regression' only"),
        (dict(task="regression", y=np.zeros(6)), ValueError, r"y was given but tau is None"),
        (dict(task="regression", tau=1.0, y=np.zeros(5)), ValueError,
         r"x has 6 rows, y has 5"),
        (dict(task="regression", tau=1.0, y=np.zeros((6, 3))), ValueError,
         r"model outputs \(2,\) per sample but y has \(3,\)"),
    ],
)
def test_mc_predict_errors(rng, kwargs, error, match):
    task = kwargs.get("task", "classification")
    net = _reg_net() if task == "regression" else _mlp(n_in=3)
    with pytest.raises(error, match=match):
        mc_predict(net, rng.normal(size=(6, 3)), **kwargs)


def test_model_without_dropout_is_refused(rng):
    msg = (r"^model has no dropout module; MC dropout needs one: add nn\.Dropout\(p\) before the "
           r"last layer or set \[mc\] samples = 0$")
    with pytest.raises(ValueError, match=msg):
        mc_predict(nn.Sequential(nn.Linear(3, 2)), rng.normal(size=(4, 3)))


def test_bad_inputs_are_refused(rng):
    x = rng.normal(size=(4, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x holds 1 NaN or infinite value\(s\) \(first at index"
                                         r" \(2, 1\)\)"):
        mc_predict(_mlp(n_in=3), x)
    with pytest.raises(ValueError, match=r"x must have shape \(N, \*sample_shape\) with N >= 1; "
                                         r"got shape \(0, 3\)"):
        mc_predict(_mlp(n_in=3), np.zeros((0, 3)))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module; got function"):
        mc_predict(lambda v: v, x)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor or a NumPy array"):
        mc_predict(_mlp(n_in=3), [object(), object()])


def test_bad_model_outputs_are_refused(rng):
    x = rng.normal(size=(4, 3))
    with pytest.raises(TypeError, match=r"the model's output must return a tensor; got dict"):
        mc_predict(_NoBatch("dict"), x)
    with pytest.raises(ValueError, match=r"returned shape \(1, 3\) for 120 input rows"):
        mc_predict(_NoBatch("mean"), x)
    with pytest.raises(ValueError, match=r"classification needs logits of shape \(N, C\)"):
        mc_predict(_reg_net(n_out=1, flat=True), x)


def test_measure_errors():
    with pytest.raises(ValueError, match=r"proba must hold probabilities in \[0, 1\]; got values"
                                         r" from -1 to 2\. Pass softmax\(logits\)"):
        predictive_entropy([[-1.0, 2.0]])
    with pytest.raises(ValueError, match=r"axis must name the class axis of samples"):
        mutual_information(np.full((2, 3, 2), 0.5), axis=0)
    with pytest.raises(ValueError, match=r"samples must have shape \(T, \.\.\., C\)"):
        mutual_information([0.5, 0.5])
    with pytest.raises(ValueError, match=r"samples must have shape \(T, \*y\.shape\) = \(T, 4\)"):
        regression_log_likelihood(np.zeros((3, 5)), np.zeros(4), 1.0)
    with pytest.raises(ValueError, match=r"tau must be a positive finite precision"):
        regression_log_likelihood(np.zeros((3, 4)), np.zeros(4), None)


# --------------------------------------------------------------------------- devices


@pytest.mark.gpu
@needs_cuda
def test_explicit_cuda_device_leaves_cpu_model_in_place(rng):
    net, x = _cnn(0.0), _images(rng)
    cpu = mc_predict(net, x, n_mc=4, device="cpu")
    gpu = mc_predict(net, x, n_mc=4, device="cuda")
    assert next(net.parameters()).device.type == "cpu"
    assert_allclose(gpu.proba, cpu.proba, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_auto_device_runs_where_the_model_is(rng):
    net, x = _cnn(0.3).cuda(), _images(rng)
    torch.cuda.manual_seed(5)
    state = torch.cuda.get_rng_state()
    a = mc_predict(net, x, n_mc=6, seed=2)
    b = mc_predict(net, torch.as_tensor(x).cuda(), n_mc=6, seed=2, cache_trunk=False)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert_allclose(a.proba, b.proba, rtol=1e-5, atol=1e-7)
