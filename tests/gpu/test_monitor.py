"""The NVML monitor with a fake NVML; `calipers gpu` without a driver; device checks."""

import json
import time
import types
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from calipers.cli.main import app
from calipers.exceptions import CalipersWarning, ConfigError
from calipers.gpu import monitor
from calipers.runs import read_json

runner = CliRunner()


class _NVMLError(Exception):
    pass


def fake_nvml(util=(30, 50), power_mw=100_000, fail_init=False):
    """A stand-in for pynvml: utilisation alternating over ``util``, constant power."""
    state = {"i": 0}

    def get_util(h):
        state["i"] += 1
        return types.SimpleNamespace(gpu=util[state["i"] % len(util)], memory=5)

    def handle(i):
        if fail_init:
            raise _NVMLError("Insufficient Permissions")
        return f"h{i}"

    return types.SimpleNamespace(
        NVMLError=_NVMLError, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=handle, nvmlDeviceGetName=lambda h: b"Fake H200",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=2**30, total=8 * 2**30),
        nvmlDeviceGetUtilizationRates=get_util, nvmlDeviceGetPowerUsage=lambda h: power_mw,
        nvmlSystemGetDriverVersion=lambda: "580.1", nvmlSystemGetCudaDriverVersion=lambda: 13000,
        nvmlDeviceGetTemperature=lambda h, s: 41, nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            types.SimpleNamespace(pid=123, usedGpuMemory=2**29)],
    )


def _slow_batches(wait):
    time.sleep(wait)  # the batch took `wait` to arrive
    yield "batch"


def _train_like(epochs=2, fits=2, wait=0.03, compute=0.03):
    for _ in range(fits):
        t = monitor.LoopTimers(torch.device("cpu"), batch_size=8, data_on_device=False,
                               amp="", workers=4)
        for _ in range(epochs):
            t.epoch_start()
            for _ in t.wrap(_slow_batches(wait)):
                time.sleep(compute)
                t.step_end()
            t.epoch_end()


def test_monitor_with_fake_nvml_writes_gpu_json(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with monitor.gpu_monitor(tmp_path, "cuda:0", interval=0.005, nvml=fake_nvml()) as mon:
            assert mon.sampling
            _train_like()
    g = read_json(tmp_path / "gpu.json")
    assert g["name"] == "Fake H200" and g["sampled"] is True and g["memory_total_mib"] == 8192
    assert [s["label"] for s in g["segments"]] == [
        "fit 1 epoch 1", "fit 1 epoch 2", "fit 2 epoch 1", "fit 2 epoch 2"]
    for s in g["segments"]:
        assert s["n_samples"] >= 1  # a busy shared CPU may starve the sampler thread
        assert 30 <= s["util_min"] <= s["util_mean"] <= 50
        assert s["mem_peak_mib"] == 1024 and s["power_mean_w"] == 100
        dur = s["end_s"] - s["start_s"]
        assert s["energy_j"] == pytest.approx(100 * dur, rel=0.5)  # 100 W over the epoch
    o = g["overall"]
    assert o["energy_j"] == pytest.approx(100 * (o["end_s"] - o["start_s"]), rel=0.3)
    assert len(g["trace"]["t_s"]) == len(g["trace"]["util_pct"]) > 10
    loop = g["loop"]
    assert loop["epochs"] == 4 and loop["workers"] == 4 and loop["data_on_device"] is False
    assert 0.3 < loop["wait_fraction"] < 0.7  # half the time waiting for data
    assert g["advice"]["code"] == "loader"  # ~40 % busy, ~50 % waiting: the loader advice
    assert any("GPU:" in str(w.message) for w in caught)


def test_monitor_without_permission_warns_once_and_stays_off(tmp_path):
    with pytest.warns(CalipersWarning, match="GPU monitor off.*Permissions") as rec:
        with monitor.gpu_monitor(tmp_path, "cuda", nvml=fake_nvml(fail_init=True)) as mon:
            _train_like(epochs=1, fits=1, wait=0, compute=0)
    assert len([w for w in rec if "monitor off" in str(w.message)]) == 1
    assert not mon.sampling and not (tmp_path / "gpu.json").exists()


def test_monitor_sampling_error_does_not_stop_training(tmp_path):
    nv = fake_nvml()
    nv.nvmlDeviceGetUtilizationRates = lambda h: (_ for _ in ()).throw(_NVMLError("GPU lost"))
    with pytest.warns(CalipersWarning, match="stopped sampling"):
        with monitor.gpu_monitor(tmp_path, "cuda:0", interval=0.001, nvml=nv):
            _train_like(epochs=1, fits=1, wait=0, compute=0.01)
    assert read_json(tmp_path / "gpu.json")["loop"]["epochs"] == 1


def test_cpu_run_writes_nothing(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with monitor.gpu_monitor(tmp_path, "cpu"):
            _train_like(epochs=1, fits=1, wait=0, compute=0)
    assert not (tmp_path / "gpu.json").exists()


def test_snapshot_and_render_with_fake_nvml():
    from calipers.cli.gpu import render

    snap = monitor.snapshot(fake_nvml())
    assert snap["driver"] == "580.1" and snap["cuda"] == "13.0"
    g = snap["gpus"][0]
    assert g["memory_total_mib"] == 8192 and g["power_w"] == 100 and g["temperature_c"] == 41
    text = render(snap)
    assert "Fake H200" in text and "1024 / 8192 MiB" in text and "pid 123: 512 MiB" in text


def test_calipers_gpu_without_a_driver_prints_one_line_and_exits_0():
    try:
        monitor.load_nvml()
        pytest.skip("an NVIDIA driver is present")
    except RuntimeError:
        pass
    res = runner.invoke(app, ["gpu"])
    assert res.exit_code == 0
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and "calipers will use the CPU" in lines[0]
    assert monitor.cpu_name() in lines[0]
    res = runner.invoke(app, ["gpu", "--json"])
    assert res.exit_code == 0 and '"gpus": []' in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_requested_without_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match='set device = "auto"'):
        monitor.check_device("cuda")
    monitor.check_device("auto")
    from calipers.experiment.runner import demo_config, run_experiment

    cfg = demo_config(quick=True)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "cuda"})})
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written


def test_energy_integrates_power():
    mon = monitor.GpuMonitor(".", "cpu")
    mon.samples = [(t, 50.0, 10.0, 200.0) for t in np.linspace(0, 2, 21)]
    s = mon._stats(0.0, 2.0)
    assert s["energy_j"] == pytest.approx(400.0) and s["power_mean_w"] == 200


def test_report_section_from_gpu_json(tmp_path):
    from calipers.gpu.report import gpu_section

    assert gpu_section(tmp_path, lambda fig, alt: "IMG") == ""  # no gpu.json: no section
    with pytest.warns(CalipersWarning, match="GPU: "), \
            monitor.gpu_monitor(tmp_path, "cuda:0", interval=0.005, nvml=fake_nvml()):
        _train_like(epochs=1, fits=1)
    figs = []
    html = gpu_section(tmp_path, lambda fig, alt: figs.append(fig) or f"<img alt='{alt}'>")
    assert "<h2>GPU</h2>" in html and "Advice:" in html and "utilisation over time" in html
    assert len(figs) == 1 and figs[0].axes[0].get_ylabel() == "GPU busy (%)"


@pytest.mark.parametrize("batch, code", [(8, "batch"), (460, "small")])
def test_advice_uses_the_finders_size(tmp_path, batch, code):
    with pytest.warns(CalipersWarning, match="GPU: "), \
            monitor.gpu_monitor(tmp_path, "cuda:0", interval=0.005, nvml=fake_nvml()):
        monitor.record("batch_size", {"UNet (1 parameters)": {
            "size": 460, "largest": 512, "method": "memory", "probes": {}}}, merge=True)
        t = monitor.LoopTimers(torch.device("cpu"), batch_size=batch, data_on_device=True,
                               amp="bf16", workers=0)
        t.epoch_start()
        for _ in t.wrap(iter(["batch"])):
            time.sleep(0.002)  # a short step: a small network for this GPU
            t.step_end()
        t.epoch_end()
    g = read_json(tmp_path / "gpu.json")
    assert g["advice"]["code"] == code
    if code == "batch":  # the size with the finder's safety margin, not the largest that fitted
        assert "batch_size = 460" in g["advice"]["text"]
    # batch_size = "auto" trained at the finder's size: no advice to go beyond its margin


def test_chunks_become_segments(tmp_path):
    with monitor.gpu_monitor(tmp_path, "cuda:0", interval=0.002, nvml=fake_nvml(util=(99,))) as m:
        for name in ("a.nii.gz", "b.nii.gz"):
            time.sleep(0.03)
            m.mark(name)
    g = read_json(tmp_path / "gpu.json")
    assert [s["label"] for s in g["segments"]] == ["a.nii.gz", "b.nii.gz"]
    assert g["segments"][0]["end_s"] == g["segments"][1]["start_s"]
    assert g["advice"]["code"] == "ok" and "loop" not in g


def test_calipers_gpu_watch_refreshes_until_interrupted(monkeypatch):
    import calipers.cli.gpu as cli_gpu

    monkeypatch.setattr(monitor, "load_nvml", fake_nvml)
    naps = []

    def sleep(s):
        naps.append(s)
        if len(naps) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second wait

    monkeypatch.setattr(cli_gpu, "time", types.SimpleNamespace(sleep=sleep))
    res = runner.invoke(app, ["gpu", "--watch", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    snaps = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert naps == [0.5, 0.5] and len(snaps) == 2
    assert snaps[0]["gpus"][0]["name"] == "Fake H200" and snaps[0]["cuda"] == "13.0"
    res = runner.invoke(app, ["gpu", "--watch", "-1"])  # checked with or without a driver
    assert res.exit_code == 2 and "--watch must be >= 0" in res.stderr


@pytest.fixture
def fake_gpu(monkeypatch):
    """Every monitor in the test samples a fake GPU (NVML index 0 whatever the device)."""
    monkeypatch.setattr(monitor, "_nvml_index", lambda device: 0)
    monkeypatch.setattr(monitor, "load_nvml", fake_nvml)


def _cv_config(batch_size=64):
    from calipers.config import parse_config

    return parse_config({
        "data": {"kind": "digits"}, "cv": {"folds": 2, "seed": 0}, "mc": {"samples": 2},
        "train": {"epochs": 2, "batch_size": batch_size, "device": "cpu"},
        "networks": {"A": {"model": "calipers.models:CNN", "args": {"channels": 4}},
                     "B": {"model": "calipers.models:CNN", "args": {"channels": 6}}}})


def test_cv_run_writes_gpu_json_and_the_report_shows_it(fake_gpu, tmp_path):
    from calipers.experiment.runner import run_experiment

    with pytest.warns(CalipersWarning, match="GPU: "):  # the advice, printed
        run_experiment(_cv_config(), tmp_path / "run")
    g = read_json(tmp_path / "run" / "gpu.json")
    assert g["name"] == "Fake H200" and g["overall"]["n_samples"] >= 1
    assert g["loop"]["epochs"] == 8  # 2 networks x 2 folds x 2 epochs, each timed
    assert [s["label"] for s in g["segments"]][:3] == ["fit 1 epoch 1", "fit 1 epoch 2",
                                                       "fit 2 epoch 1"]
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "<h2>GPU</h2>" in html and f"<b>Advice:</b> {g['advice']['text'][:30]}" in html
    assert 'alt="GPU utilisation over time"' in html or "GPU utilisation over time" in html


def test_cv_batch_size_auto_is_recorded_in_the_run_and_the_report(tmp_path, monkeypatch):
    from calipers.experiment.runner import run_experiment
    from calipers.gpu import finder

    monkeypatch.setattr(finder, "_PROBE_SECONDS", 0.01)  # timings need not be good here
    monkeypatch.setattr(finder, "_CACHE", {})
    run_experiment(_cv_config(batch_size="auto"), tmp_path / "run")
    g = read_json(tmp_path / "run" / "gpu.json")  # a CPU run: written for the finder only
    assert g["sampled"] is False and len(g["batch_size"]) == 2  # one per network shape
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    for net, choice in g["batch_size"].items():
        assert choice["method"] == "throughput" and 1 <= choice["size"] <= choice["largest"]
        assert (f"Batch size chosen by the finder for {net}: {choice['size']} "
                in html)


def test_permute_marks_every_chunk_even_when_quiet(fake_gpu, tmp_path):
    import nibabel as nib

    y = np.random.default_rng(0).normal(0.4, 1.0, size=(8, 5, 6, 4))
    nib.save(nib.Nifti1Image(np.moveaxis(y, 0, -1).astype(np.float32), np.eye(4)),
             tmp_path / "all.nii.gz")
    res = runner.invoke(app, ["permute", "-i", str(tmp_path / "all.nii.gz"), "-1", "-n", "200",
                              "--device", "cpu", "-q", "--chunks", "2",
                              "-o", str(tmp_path / "out" / "r")])
    assert res.exit_code == 0, res.output
    g = read_json(tmp_path / "out" / "gpu.json")
    labels = [s["label"] for s in g["segments"]]
    assert len(labels) >= 2 and all(la.startswith("permutations to ") for la in labels)
    assert f"Note: GPU: {g['advice']['text'][:40]}" in " ".join(res.stderr.split())


def test_nvml_index_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert monitor._nvml_index("cuda:1") == 5  # NVML counts every GPU, CUDA the visible ones
    assert monitor._nvml_index("cuda:0") == 3
    assert monitor._nvml_index("cpu") is None
    if not torch.cuda.is_available():
        assert monitor._nvml_index("auto") is None  # a CPU run samples nothing
