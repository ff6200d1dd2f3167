"""The MONAI-based U-Net: shapes in 2-D and 3-D, dropout modules, argument checks."""

from __future__ import annotations

import pytest
import torch

from calipers.models import UNet, build_network
from calipers.uncertainty.mc import has_dropout


@pytest.mark.parametrize("shape", [(1, 8, 16), (2, 8, 8, 16)])
def test_shapes(shape):
    net = build_network("calipers.models:UNet", {"channels": [4, 8, 16]}, input_shape=shape,
                        n_outputs=3)
    assert net.multiple == 4
    out = net(torch.zeros(2, *shape))
    assert out.shape == (2, 3, *shape[1:])
    assert has_dropout(net)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"input_shape": (8, 8)}, r"input_shape \(C, H, W\)"),
    ({"n_outputs": 1}, "n_outputs must be >= 2"),
    ({"channels": (4,)}, "channels must list >= 2"),
    ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\)"),
    ({"norm": "layer"}, "norm must be one of instance, batch, none"),
])
def test_errors(kwargs, match):
    args = {"input_shape": (1, 8, 8), "n_outputs": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        UNet(args.pop("input_shape"), args.pop("n_outputs"), **args)
