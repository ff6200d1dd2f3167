"""Advice from recorded traces; the batch-size finder against simulated limits."""

import numpy as np
import pytest
import torch

from calipers.evaluation.train import TrainOptions, fit
from calipers.gpu import monitor
from calipers.gpu.advice import Trace, advise
from calipers.gpu.finder import (
    BatchSizeError,
    no_fit_message,
    plateau_batch_size,
    search_batch_size,
)
from calipers.models import MLP
from calipers.runs import read_json


@pytest.mark.parametrize("trace, code", [
    # the case: 40 % busy, 60 % of each epoch waiting for batches from a loader
    (Trace(util_mean=40, wait_fraction=0.6, data_on_device=False, workers=4), "loader"),
    (Trace(util_mean=40, wait_fraction=0.6, data_on_device=False, workers=8), "device"),
    (Trace(util_mean=40, wait_fraction=0.6, data_on_device=False, workers=0), "loader"),
    (Trace(util_mean=40, wait_fraction=0.6, reads_files=True, data_on_device=False), "pack"),
    (Trace(util_mean=97, wait_fraction=0.6), "ok"),
    (Trace(util_mean=39), "host"),  # predict/permute: no loop timers
    (Trace(util_mean=39, wait_fraction=0.05, step_ms=3, data_on_device=True, amp="bf16",
           batch_size=8, finder_batch_size=512), "batch"),
    (Trace(util_mean=39, wait_fraction=0.05, step_ms=3, data_on_device=True, amp="bf16",
           batch_size=8, mem_peak_fraction=0.01), "batch"),
    (Trace(util_mean=60, wait_fraction=0.05, step_ms=30, amp="", batch_size=512,
           finder_batch_size=512, mem_peak_fraction=0.9), "amp"),
    (Trace(util_mean=39, wait_fraction=0.05, step_ms=1.5, amp="bf16", batch_size=512,
           finder_batch_size=512, mem_peak_fraction=0.01), "small"),
])
def test_advice_rules(trace, code):
    a = advise(trace)
    assert a.code == code
    assert f"{trace.util_mean:.0f} %" in a.text


def test_host_advice_names_what_predict_and_permute_can_change():
    text = advise(Trace(util_mean=39)).text  # neither reads packs: no pack advice there
    assert "--roi" in text and "--chunks" in text and "pack" not in text


def test_recipe_loop_advice_names_its_host_work():
    text = advise(Trace(util_mean=40, wait_fraction=0.6, data_on_device=False, workers=0)).text
    assert "augmented on the CPU" in text and "augment = false" in text
    assert "now 0 workers" not in text  # the recipe's loop has no workers to raise


def test_batch_advice_names_the_size_that_fits():
    a = advise(Trace(util_mean=39, wait_fraction=0.1, step_ms=3, amp="bf16", batch_size=8,
                     finder_batch_size=1234))
    assert "batch_size = 1234" in a.text and "now 8" in a.text


@pytest.mark.parametrize("threshold", [1, 2, 3, 100, 300, 511, 512, 513, 4096])
def test_search_against_simulated_oom(threshold):
    calls = []

    def fits(b):
        calls.append(b)
        return b <= threshold  # out of memory above the threshold

    res = search_batch_size(fits, limit=100_000)
    assert res.largest == threshold
    assert res.size == max(1, int(threshold * 0.9))
    assert len(calls) <= 2 * np.log2(threshold + 1) + 2  # doubling then bisection


def test_search_stops_at_the_data_size():
    res = search_batch_size(lambda b: True, limit=600)
    assert res.largest == res.size == 600


def test_search_nothing_fits():
    with pytest.raises(BatchSizeError, match="one sample"):
        search_batch_size(lambda b: False, limit=64)


def test_no_fit_message_names_the_memory():
    msg = no_fit_message((1, 512, 512, 512), "cuda:0", "CUDA out of memory. Tried to allocate "
                         "3.50 GiB. GPU 0 has a total capacity of 8.00 GiB", 2 * 2**30, 8 * 2**30,
                         10**6)
    assert "3.50 GiB" in msg and "2.00 GiB of 8.00 GiB free" in msg and "(1, 512, 512, 512)" in msg


def test_plateau_on_a_simulated_throughput_curve():
    # 1000 b / (b + 16): doubling 128 -> 256 gains 5.9 %, 256 -> 512 gains 3.0 %
    res = plateau_batch_size(lambda b: 1000 * b / (b + 16), limit=10_000)
    assert res.size == 256 and res.method == "throughput"
    assert plateau_batch_size(lambda b: b, limit=100).size == 64  # always gaining: the limit


def test_fit_auto_batch_size_on_cpu_records_the_choice(tmp_path, blobs):
    X, y = blobs
    net = MLP((4,), 3, hidden=(8,))
    with monitor.gpu_monitor(tmp_path, "cpu"):
        res = fit(net, X, y, options=TrainOptions(epochs=1, batch_size="auto", device="cpu"))
    got = read_json(tmp_path / "gpu.json")
    assert got["sampled"] is False
    (name, choice), = got["batch_size"].items()
    assert name.startswith("MLP (") and choice["method"] == "throughput"
    assert res.batch_size == choice["size"] >= 1
    assert 1 <= res.batch_size <= len(X)


def test_bad_amp_and_batch_size():
    with pytest.raises(ValueError, match="amp must be"):
        TrainOptions(amp="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        TrainOptions(batch_size="big")
    from calipers.evaluation.train import resolve_amp

    for mode in (True, False, "auto", "bf16", "fp16", "off"):
        assert resolve_amp(mode, torch.device("cpu")) is None  # the CPU never autocasts


def test_plateau_survives_one_noisy_timing():
    tp = {1: 100, 2: 104, 4: 300, 8: 310, 16: 312, 32: 2000}
    res = plateau_batch_size(tp.__getitem__, limit=32)
    assert res.size == 4 and 32 not in res.probes  # two misses after 4 end the search


@pytest.mark.parametrize("amp, bf16_ok, want", [
    (True, True, torch.bfloat16), (True, False, torch.float16),  # the old boolean: "auto"
    ("auto", True, torch.bfloat16), ("auto", False, torch.float16),
    ("bf16", False, torch.bfloat16), ("fp16", True, torch.float16),
    ("off", True, None), (False, True, None)])
def test_resolve_amp_on_cuda(amp, bf16_ok, want, monkeypatch):
    from calipers.evaluation.train import resolve_amp

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert resolve_amp(amp, torch.device("cuda")) is want  # only the device's type is read


@pytest.mark.parametrize("amp", [True, False, "auto", "bf16", "fp16", "off"])
def test_config_amp_modes_and_the_old_boolean(amp):
    from calipers.config import parse_config
    from calipers.exceptions import ConfigError

    raw = {"networks": {"A": {"model": "calipers.models:MLP"}}}
    cfg = parse_config({**raw, "train": {"amp": amp}})
    assert cfg.train.amp == amp and TrainOptions(amp=cfg.train.amp).amp == amp
    text = cfg.to_toml()
    assert parse_config(__import__("tomllib").loads(text)).train.amp == amp  # round trip
    with pytest.raises(ConfigError, match="amp"):
        parse_config({**raw, "train": {"amp": "fp8"}})


@pytest.mark.parametrize("deterministic", [False, True])
def test_cudnn_benchmark_only_on_cuda_without_determinism(deterministic, blobs):
    X, y = blobs
    cuda = torch.cuda.is_available()
    old, old_det = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.benchmark = False
    seen = []
    try:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        fit(MLP((4,), 3, hidden=(8,)), X, y, progress=lambda *a: seen.append(
            torch.backends.cudnn.benchmark), options=TrainOptions(epochs=2, device="auto"))
        assert seen == [cuda and not deterministic] * 2  # on during the loop, GPU only
        assert torch.backends.cudnn.benchmark is False  # and restored afterwards
    finally:
        torch.backends.cudnn.benchmark = old
        torch.use_deterministic_algorithms(old_det)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_session.sh)")
def test_finder_on_cuda_names_the_memory_when_not_one_sample_fits(blobs):
    class Hog(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):  # asks for 16 TiB whatever the batch
            return self.lin(x) + 0 * torch.empty(2**42, device=x.device).sum()

    X, y = blobs
    with pytest.raises(BatchSizeError, match=r"asked for 16\.00 TiB with .* GiB free"):
        fit(Hog(), X, y, options=TrainOptions(epochs=1, batch_size="auto", device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_session.sh)")
def test_finder_on_cuda_against_a_real_memory_limit(blobs):
    from calipers.gpu.finder import find_batch_size

    X, y = blobs
    free, _ = torch.cuda.mem_get_info()
    per_sample = free // 64 // 4  # float32 elements: about 1/64 of the free memory per sample

    class Grows(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x) + 0 * torch.empty(x.shape[0] * per_sample, device=x.device).sum()

    Xb = torch.as_tensor(np.tile(X, (20, 1)))  # 2,000+ samples: the limit is memory
    yb = torch.as_tensor(np.tile(y, 20))
    choice = find_batch_size(Grows(), Xb, yb, torch.nn.CrossEntropyLoss(),
                             device=torch.device("cuda"))
    assert choice.method == "memory" and 16 <= choice.largest <= 64
    assert choice.size == max(1, int(choice.largest * 0.9))
