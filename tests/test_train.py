import numpy as np
import pytest
import torch

from calipers._seeds import seeded_torch
from calipers.evaluation.train import TrainOptions, fit
from calipers.models import MLP


def _fit(blobs, seed, **kw):
    X, y = blobs
    with seeded_torch(0):
        net = MLP((4,), 3, hidden=(16,), dropout=0.1)
    with seeded_torch(seed):
        res = fit(net, X, y, options=TrainOptions(epochs=5, batch_size=16, device="cpu", **kw),
                  seed=seed)
    return net, res


def test_training_reduces_loss_and_learns(blobs):
    net, res = _fit(blobs, 0, lr=1e-2)
    assert len(res.losses) == 5 and res.losses[-1] < 0.5 * res.losses[0]
    X, y = blobs
    net.eval()
    acc = (net(torch.as_tensor(X)).argmax(1).numpy() == y).mean()
    assert acc > 0.9


def test_same_seed_same_weights_other_seed_differs(blobs):
    a, ra = _fit(blobs, 1)
    b, rb = _fit(blobs, 1)
    _, rc = _fit(blobs, 2)
    assert ra.losses == rb.losses != rc.losses
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_progress_called_each_epoch(blobs):
    X, y = blobs
    calls = []
    fit(MLP((4,), 3), X, y, options=TrainOptions(epochs=3, device="cpu"),
        progress=lambda e, n, loss: calls.append((e, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_regression_fits_a_line(rng):
    X = rng.normal(size=(200, 1)).astype(np.float32)
    y = (2 * X[:, 0] + 1).astype(np.float32)
    net = MLP((1,), 1, hidden=(32,), dropout=0.0)
    res = fit(net, X, y, task="regression",
              options=TrainOptions(epochs=60, lr=1e-2, batch_size=32, device="cpu"))
    assert res.losses[-1] < 0.05


@pytest.mark.parametrize("kw, match", [
    ({"epochs": 0}, r"epochs must be an integer >= 1; got 0. Set \[train\] epochs"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"weight_decay": -1}, "weight_decay must be >= 0"),
])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainOptions(**kw)


def test_cuda_request_without_cuda_falls_back_with_warning(blobs):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from calipers.exceptions import CalipersWarning

    X, y = blobs
    with pytest.warns(CalipersWarning, match="CUDA is not available; using the CPU"):
        res = fit(MLP((4,), 3), X, y, options=TrainOptions(epochs=1, device="cuda"))
    assert res.device == "cpu" and res.amp is False
