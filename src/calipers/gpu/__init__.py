"""GPU practice: an NVML monitor with advice, a batch-size finder, array packs, a benchmark.

``gpu_monitor(run_dir, device)`` samples utilisation, memory and power at ~10 Hz in the
background and writes ``RUN/gpu.json`` (:mod:`calipers.gpu.monitor`); ``advise`` turns a run's
numbers into one suggestion (:mod:`calipers.gpu.advice`); ``find_batch_size`` picks
``train.batch_size = "auto"`` (:mod:`calipers.gpu.finder`); ``pack`` turns image folders into
one memory-mapped array (:mod:`calipers.tools.pack`); ``run_bench`` measures where a GPU pays off
(:mod:`calipers.tools.bench`).
"""

from calipers.gpu.advice import Advice, Trace, advise
from calipers.gpu.monitor import GpuMonitor, check_device, gpu_monitor, snapshot

__all__ = ["Advice", "GpuMonitor", "Trace", "advise", "check_device", "gpu_monitor", "snapshot"]
