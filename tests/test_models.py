import pytest
import torch
from torch import nn

from calipers.models import CNN, MLP, build_network


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 28, 20), (2, 5, 5)])
def test_cnn_adapts_to_input_shape(shape):
    net = build_network("calipers.models:CNN", {"dropout": 0.2}, input_shape=shape, n_outputs=7)
    assert net(torch.zeros(4, *shape)).shape == (4, 7)
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.2 for m in net.modules()) == 2


def test_mlp_flattens_any_shape():
    net = MLP((2, 3, 4), 5, hidden=(16,), dropout=0.0)
    assert net(torch.zeros(3, 2, 3, 4)).shape == (3, 5)
    assert net[1].in_features == 24


def test_cnn_rejects_tabular():
    with pytest.raises(ValueError, match=r"CNN needs images of shape \(C, H, W\).*Use calipers.models:MLP"):
        CNN((13,), 2)


def test_bad_dropout():
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\); got 1.5"):
        MLP((3,), 2, dropout=1.5)


def test_user_factory_gets_only_what_it_takes():
    def factory(width=4):
        return nn.Sequential(nn.Linear(3, width))

    net = build_network(factory, {"width": 6}, input_shape=(3,), n_outputs=2)
    assert net[0].out_features == 6


@pytest.mark.parametrize("spec, match", [
    ("nomodule_xyz:f", "cannot import module 'nomodule_xyz'"),
    ("calipers.models:Nope", "has no callable 'Nope'.*It defines: CNN, MLP"),
    ("calipers.models.CNN", "model must be 'module:callable'"),
])
def test_unknown_module_callable(spec, match):
    with pytest.raises(ValueError, match=match):
        build_network(spec, {}, input_shape=(3,), n_outputs=2)


def test_factory_must_return_module():
    with pytest.raises(ValueError, match="returned a int, not a torch.nn.Module"):
        build_network(lambda: 3, {}, input_shape=(3,), n_outputs=2)
