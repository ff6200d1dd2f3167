"""How hard the GPU worked: a background NVML sampler, the loop's timers, ``RUN/gpu.json``.

``with gpu_monitor(run_dir, device):`` around a run samples the GPU's utilisation, memory in use
and power draw about ten times a second in a daemon thread; training loops inside it report
each epoch through :class:`LoopTimers` (time waiting for data vs computing). On leaving, the
monitor writes ``gpu.json``: per epoch (or, without epochs, for the whole run) the mean and
minimum utilisation (%), peak memory (MiB), mean power (W) and energy (J), the overall figures,
a trace for the report's figure, and one piece of advice (:func:`calipers.gpu.advice.advise`).

# NOTE [The monitor never stops training]
NVML missing (no driver, no ``nvidia-ml-py``) or refused (no permission): one
:class:`~calipers.exceptions.CalipersWarning`, and the monitor is off. Every NVML call of the
sampler is guarded; an error stops the sampling, never the run; the JSON is written after the
run, and a failure to write it is a warning. A CPU run samples nothing and writes ``gpu.json``
only when something was recorded (a batch size the finder chose).
"""

from __future__ import annotations

import os
import platform
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calipers.exceptions import CalipersWarning, ConfigError
from calipers.gpu.advice import Trace, advise
from calipers.runs import atomic_write_json

__all__ = ["GpuMonitor", "LoopTimers", "check_device", "cpu_name", "gpu_monitor", "load_nvml",
           "record", "snapshot"]

_MAX_TRACE = 3000  # points of the utilisation trace kept in gpu.json
_ACTIVE: list[GpuMonitor] = []


def load_nvml() -> Any:
    """The ``pynvml`` module (from ``nvidia-ml-py``), initialised; raises RuntimeError with the
    reason when it or the NVIDIA driver is missing."""
    try:
        import pynvml
    except ImportError as exc:
        raise RuntimeError("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise RuntimeError(f"no NVIDIA driver (NVML: {exc})") from exc
    return pynvml


def cpu_name() -> str:
    """The CPU's model name and core count, e.g. ``"AMD EPYC 7B13, 2 cores"``."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def snapshot(nvml: Any | None = None) -> dict[str, Any]:
    """What ``nvidia-smi`` shows, as a dict: driver and CUDA version, then per GPU its name,
    memory used/total (MiB), utilisation (%), temperature (°C), power draw/limit (W) and the
    processes on it (pid, MiB). Raises RuntimeError when there is no NVML."""
    nv = nvml if nvml is not None else load_nvml()

    def opt(fn: str, *args: Any) -> Any:
        try:
            return getattr(nv, fn)(*args)
        except Exception:
            return None

    cuda = opt("nvmlSystemGetCudaDriverVersion")
    out: dict[str, Any] = {
        "driver": _text(opt("nvmlSystemGetDriverVersion")),
        "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None,
        "gpus": [],
    }
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mem, util = opt("nvmlDeviceGetMemoryInfo", h), opt("nvmlDeviceGetUtilizationRates", h)
        power, limit = opt("nvmlDeviceGetPowerUsage", h), opt("nvmlDeviceGetEnforcedPowerLimit", h)
        procs = opt("nvmlDeviceGetComputeRunningProcesses", h) or []
        out["gpus"].append({
            "index": i, "name": _text(nv.nvmlDeviceGetName(h)),
            "memory_used_mib": None if mem is None else mem.used / 2**20,
            "memory_total_mib": None if mem is None else mem.total / 2**20,
            "utilization_pct": None if util is None else util.gpu,
            "temperature_c": opt("nvmlDeviceGetTemperature", h, 0),
            "power_w": None if power is None else power / 1000,
            "power_limit_w": None if limit is None else limit / 1000,
            "processes": [{"pid": p.pid, "memory_mib": (p.usedGpuMemory or 0) / 2**20}
                          for p in procs],
        })
    return out


def check_device(device: str, *, key: str = "train.device") -> None:
    """Refuse an explicit CUDA device on a machine without CUDA (a ConfigError that suggests
    ``device = "auto"``); ``auto`` and ``cpu`` always pass."""
    text = str(device).strip().lower()
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key} = {device!r} but this machine has no CUDA GPU (torch "
                          f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}); "
                          "set device = \"auto\" to use a GPU when there is one and the CPU "
                          "otherwise.")


def _nvml_index(device: str | torch.device) -> int | None:
    """The NVML index of ``device``, or None for a CPU run."""
    text = str(device).strip().lower()
    if text == "auto":
        if not torch.cuda.is_available():
            return None
        text = "cuda"
    if not text.startswith("cuda"):
        return None
    idx = int(text[5:]) if text[5:].isdigit() else (
        torch.cuda.current_device() if torch.cuda.is_available() else 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if idx < len(visible) and visible[idx].strip().isdigit():
        return int(visible[idx])  # NVML counts all GPUs; CUDA only the visible ones
    return idx


class LoopTimers:
    """A training loop's own clock: per epoch, time waiting for the next batch and time
    computing (CUDA events on the GPU, read once per epoch; ``perf_counter`` on the CPU).
    Epochs are reported to the innermost active :class:`GpuMonitor`, if any."""

    def __init__(self, device: torch.device, *, batch_size: int, data_on_device: bool,
                 amp: str, workers: int, reads_files: bool = False) -> None:
        self.cuda = device.type == "cuda"
        self.monitor = _ACTIVE[-1] if _ACTIVE else None
        self.info = {"batch_size": batch_size, "data_on_device": data_on_device, "amp": amp,
                     "workers": workers, "reads_files": reads_files}
        if self.monitor is not None:
            self.monitor._fit_start(self.info)
        self._events: list[tuple[Any, Any]] = []

    def epoch_start(self) -> None:
        self.t_epoch = time.perf_counter()
        self.wait = self.compute = 0.0
        self.steps = 0
        self._events.clear()

    def wrap(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Yield from ``batches``, timing how long each one took to arrive."""
        it = iter(batches)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            now = time.perf_counter()
            self.wait += now - t
            self.t_step = now
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
                self._start = start
            yield item

    def step_end(self) -> None:
        self.steps += 1
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start, end))
        else:
            self.compute += time.perf_counter() - self.t_step

    def epoch_end(self) -> None:
        """Close the epoch (after the loop's one synchronisation) and report it."""
        if self.cuda and self._events:
            self._events[-1][1].synchronize()
            self.compute = sum(a.elapsed_time(b) for a, b in self._events) / 1000
        if self.monitor is not None:
            self.monitor._epoch(time.perf_counter() - self.t_epoch, self.wait, self.compute,
                                self.steps)


def record(key: str, value: Any, *, merge: bool = False) -> None:
    """Keep ``value`` under ``key`` in the active monitor's ``gpu.json`` (no monitor: dropped);
    ``merge``: update the dict already there with the dict ``value``."""
    if _ACTIVE:
        rec = _ACTIVE[-1].records
        rec[key] = {**rec.get(key, {}), **value} if merge else value


class GpuMonitor:
    """Samples one GPU through NVML in a daemon thread (see the module docstring).

    Parameters
    ----------
    run_dir : path
        Where ``gpu.json`` goes.
    device : str or torch.device
        The run's device; a CPU device samples nothing.
    interval : float
        Seconds between samples (0.1: ~10 Hz).
    nvml : module-like, optional
        An NVML binding (tests pass a fake); default ``pynvml``.
    """

    def __init__(self, run_dir: str | os.PathLike[str], device: str | torch.device = "auto", *,
                 interval: float = 0.1, nvml: Any | None = None,
                 filename: str = "gpu.json") -> None:
        self.path = Path(run_dir) / filename
        self.device = str(device)
        self.interval = interval
        self.records: dict[str, Any] = {}
        self.samples: list[tuple[float, float, float, float]] = []  # t, util %, MiB, W
        self.epochs: list[dict[str, Any]] = []
        self.chunks: list[dict[str, Any]] = []
        self.loop: dict[str, Any] = {}
        self.name = ""
        self.total_mib = None
        self._nv = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fits = 0
        index = _nvml_index(device)
        if index is None:
            return
        try:
            nv = nvml if nvml is not None else load_nvml()
            self._handle = nv.nvmlDeviceGetHandleByIndex(index)
            self.name = _text(nv.nvmlDeviceGetName(self._handle))
            self.total_mib = nv.nvmlDeviceGetMemoryInfo(self._handle).total / 2**20
            self._nv = nv
        except Exception as exc:  # missing, no permission, odd binding: monitor off
            warnings.warn(f"GPU monitor off ({exc}); the run goes on without gpu.json figures.",
                          CalipersWarning, stacklevel=3)

    @property
    def sampling(self) -> bool:
        return self._nv is not None

    def start(self) -> GpuMonitor:
        self.t0 = time.monotonic()
        self._mark = self.t0
        _ACTIVE.append(self)
        if self.sampling:
            self._thread = threading.Thread(target=self._run, name="calipers-gpu-monitor",
                                            daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        nv, h = self._nv, self._handle
        util = nv.nvmlDeviceGetUtilizationRates(h).gpu
        mem = nv.nvmlDeviceGetMemoryInfo(h).used / 2**20
        try:
            power = nv.nvmlDeviceGetPowerUsage(h) / 1000
        except Exception:
            power = float("nan")
        self.samples.append((time.monotonic() - self.t0, float(util), float(mem), float(power)))

    def _run(self) -> None:
        try:
            while True:
                self._sample()
                if self._stop.wait(self.interval):
                    self._sample()  # the last moment of the run
                    return
        except Exception as exc:
            warnings.warn(f"GPU monitor stopped sampling ({exc}); training goes on.",
                          CalipersWarning, stacklevel=1)

    def _fit_start(self, info: dict[str, Any]) -> None:
        self._fits += 1
        self.loop = {**info}
        self._mark = time.monotonic()

    def _epoch(self, wall: float, wait: float, compute: float, steps: int) -> None:
        now = time.monotonic()
        self.epochs.append({"label": f"fit {self._fits} epoch "
                            f"{sum(e['fit'] == self._fits for e in self.epochs) + 1}",
                            "fit": self._fits, "start_s": self._mark - self.t0,
                            "end_s": now - self.t0, "wall_s": wall, "data_wait_s": wait,
                            "compute_s": compute, "steps": steps})
        self._mark = now

    def mark(self, label: str) -> None:
        """Close a chunk of work (one predicted file, one chunk of permutations) named
        ``label``; it becomes a segment of ``gpu.json`` like an epoch."""
        now = time.monotonic()
        self.chunks.append({"label": str(label), "start_s": self._mark - self.t0,
                            "end_s": now - self.t0})
        self._mark = now

    def stop(self) -> dict[str, Any] | None:
        """Stop sampling and write ``gpu.json``; returns what was written (None: nothing)."""
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2)
        if not self.sampling and not self.records:
            return None
        out = self.summary()
        try:
            atomic_write_json(self.path, out)
        except OSError as exc:
            warnings.warn(f"could not write {self.path}: {exc}", CalipersWarning, stacklevel=2)
        advice = out.get("advice")
        if advice and advice["code"] != "ok":
            warnings.warn(f"GPU: {advice['text']}", CalipersWarning, stacklevel=2)
        return out

    def _stats(self, a: float, b: float) -> dict[str, Any]:
        s = np.array([x for x in self.samples if a <= x[0] <= b]).reshape(-1, 4)
        if len(s) == 0:
            return {"start_s": a, "end_s": b, "n_samples": 0}
        power = s[:, 3]
        ok = np.isfinite(power)
        energy = (float(np.trapezoid(power[ok], s[ok, 0])) if ok.sum() > 1
                  else float(power[ok].mean() * (b - a)) if ok.any() else None)
        return {"start_s": a, "end_s": b, "n_samples": len(s),
                "util_mean": float(s[:, 1].mean()), "util_min": float(s[:, 1].min()),
                "mem_peak_mib": float(s[:, 2].max()),
                "power_mean_w": float(power[ok].mean()) if ok.any() else None,
                "energy_j": energy}

    def summary(self) -> dict[str, Any]:
        """The ``gpu.json`` content (see the module docstring)."""
        end = time.monotonic() - self.t0
        out: dict[str, Any] = {"device": self.device, "name": self.name,
                               "sampled": self.sampling, "interval_s": self.interval,
                               "memory_total_mib": self.total_mib, **self.records}
        if self.sampling:
            out["overall"] = self._stats(0.0, end)
            parts = sorted(self.epochs + self.chunks, key=lambda e: e["start_s"])
            segs = ([{"label": e["label"], **self._stats(e["start_s"], e["end_s"])}
                     for e in parts] if parts else [{"label": "run", **out["overall"]}])
            out["segments"] = segs
            s = np.array(self.samples).reshape(-1, 4)
            step = max(1, len(s) // _MAX_TRACE)
            out["trace"] = {"t_s": s[::step, 0].round(3).tolist(),
                            "util_pct": s[::step, 1].tolist(),
                            "mem_mib": s[::step, 2].round(1).tolist(),
                            "power_w": [None if not np.isfinite(p) else round(p, 2)
                                        for p in s[::step, 3]]}
        if self.epochs:
            wall = sum(e["wall_s"] for e in self.epochs)
            wait = sum(e["data_wait_s"] for e in self.epochs)
            comp = sum(e["compute_s"] for e in self.epochs)
            steps = sum(e["steps"] for e in self.epochs)
            out["loop"] = {**self.loop, "epochs": len(self.epochs), "wall_s": wall,
                           "data_wait_s": wait, "compute_s": comp,
                           "wait_fraction": wait / wall if wall > 0 else 0.0,
                           "step_ms": 1000 * comp / steps if steps else None}
        if self.sampling and out["overall"]["n_samples"]:
            out["advice"] = advise(self.trace(out)).to_dict()
        return out

    def trace(self, out: dict[str, Any]) -> Trace:
        """The :class:`Trace` that the advice reads, from a ``gpu.json`` dict."""
        loop = out.get("loop", {})
        train = [s for s in out.get("segments", []) if s.get("n_samples")]
        util = (float(np.mean([s["util_mean"] for s in train])) if self.epochs and train
                else out["overall"]["util_mean"])
        peak = out["overall"].get("mem_peak_mib")
        found = [c["size"] for c in out.get("batch_size", {}).values()  # with the margin
                 if c.get("method") == "memory"]
        return Trace(
            util_mean=util, wait_fraction=loop.get("wait_fraction"), step_ms=loop.get("step_ms"),
            data_on_device=loop.get("data_on_device"), workers=loop.get("workers"),
            reads_files=loop.get("reads_files"), amp=loop.get("amp"),
            batch_size=loop.get("batch_size"),
            finder_batch_size=min(found) if found else None,
            mem_peak_fraction=peak / self.total_mib if peak and self.total_mib else None)


@contextmanager
def gpu_monitor(run_dir: str | os.PathLike[str], device: str | torch.device = "auto", *,
                interval: float = 0.1, nvml: Any | None = None) -> Iterator[GpuMonitor]:
    """Monitor the GPU of ``device`` while the block runs and write ``RUN_DIR/gpu.json``.

    Examples
    --------
    >>> with gpu_monitor(run_dir, "auto"):          # doctest: +SKIP
    ...     train()
    """
    mon = GpuMonitor(run_dir, device, interval=interval, nvml=nvml).start()
    try:
        yield mon
    finally:
        mon.stop()
