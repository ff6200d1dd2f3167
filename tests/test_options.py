"""String options checked in one place: look_up_option, did_you_mean and the StrEnums."""

from __future__ import annotations

import json

import pytest
import torch

from calipers._device import resolve_device
from calipers._options import (
    DataKind,
    DeviceKind,
    PredictionTask,
    Task,
    did_you_mean,
    look_up_option,
)
from calipers.data import load_dataset, make_dataset
from calipers.models import build_network
from calipers.uncertainty import mc_predict


def test_exact_values_and_members_come_back_as_plain_strings():
    assert look_up_option("regression", Task, name="task") == "regression"
    got = look_up_option(Task.SEGMENTATION, Task, name="task")
    assert got == "segmentation" and type(got) is str  # prints and serialises as before
    assert json.dumps(look_up_option(PredictionTask.REGRESSION, PredictionTask, name="task")) \
        == '"regression"'
    assert look_up_option(18, (6, 18, 26), name="connectivity") == 18
    assert look_up_option("nll", {"accuracy": 1, "nll": 2}, name="metric") == "nll"


@pytest.mark.parametrize(("value", "choices", "name", "message"), [
    ("regresion", Task, "task",
     r"^unknown task 'regresion'; did you mean 'regression'\? Choose from: classification, "
     r"regression, segmentation\.$"),
    ("tabel", DataKind, "data kind",
     r"unknown data kind 'tabel'; did you mean 'table'\? Choose from: digits, arrays, images, "
     r"table, uci, pack\."),
    ("xyz", PredictionTask, "task",
     r"^unknown task 'xyz'\. Choose from: classification, regression\.$"),  # nothing close
    (4, (6, 18, 26), "connectivity", r"unknown connectivity 4\. Choose from: 6, 18, 26\."),
    ([1, 2], ("a", "b"), "thing", r"unknown thing \[1, 2\]"),  # unhashable: a ValueError too
])
def test_unknown_values_raise_with_suggestion_and_choices(value, choices, name, message):
    with pytest.raises(ValueError, match=message):
        look_up_option(value, choices, name=name)


def test_did_you_mean():
    assert did_you_mean("cdua", DeviceKind) == "; did you mean 'cuda'?"
    assert did_you_mean("GPU", DeviceKind) == "; did you mean 'cuda'?"  # a synonym, not 'cpu'
    assert did_you_mean("gpu", ["cpu", "mps"]) == "; did you mean 'cpu'?"  # no cuda to offer
    assert did_you_mean("zzz", DeviceKind) == ""


def test_public_boundaries_use_it():
    x = torch.zeros(2, 3)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.1))
    with pytest.raises(ValueError, match="unknown task 'clasification'; did you mean "
                                         "'classification'"):
        mc_predict(net, x, task="clasification")
    assert mc_predict(net, x, task=PredictionTask.CLASSIFICATION, n_mc=2).proba.shape == (2, 2)
    with pytest.raises(ValueError, match="unknown data kind 'digit'; did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(ValueError, match="unknown task 'regressoin'; did you mean 'regression'"):
        make_dataset([[0.0], [1.0]], [0.0, 1.0], task="regressoin")
    with pytest.raises(ValueError, match="got 'cdua'; did you mean 'cuda'"):
        resolve_device("cdua")
    with pytest.raises(ValueError, match="has no callable 'MPL'.*did you mean 'MLP'.*It defines"):
        build_network("calipers.models:MPL", {}, input_shape=(3,), n_outputs=2)
