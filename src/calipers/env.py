"""Environment fingerprint: what a result was computed with (OS, Python, libraries, CUDA, GPUs)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

__all__ = ["Environment", "fingerprint"]

_PACKAGES = ("calipers", "torch", "numpy", "scipy", "scikit-learn", "pydantic", "nibabel",
             "matplotlib", "monai", "nilearn", "numba")


@dataclass(frozen=True)
class Environment:
    """Facts about the machine and software a run used; saved as ``env.json`` in every run."""

    created: str
    os: str
    machine: str
    hostname: str
    cpu: str
    cpu_count: int
    python: str
    packages: dict[str, str]
    torch_threads: int
    cuda: str | None
    cudnn: int | None
    cuda_available: bool
    driver: str | None
    gpus: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[tuple[str, str]]:
        """(name, value) pairs for display."""
        rows = [("created", self.created), ("os", self.os), ("machine", self.machine),
                ("cpu", f"{self.cpu} ({self.cpu_count} logical cores)"),
                ("python", self.python), ("torch threads", str(self.torch_threads))]
        rows += [(name, ver) for name, ver in self.packages.items()]
        rows += [("CUDA (torch build)", self.cuda or "none"),
                 ("cuDNN", str(self.cudnn) if self.cudnn else "none"),
                 ("CUDA available", str(self.cuda_available)),
                 ("NVIDIA driver", self.driver or "none")]
        rows += [(f"GPU {g['index']}", f"{g['name']} ({g['memory_gib']:.1f} GiB)")
                 for g in self.gpus]
        return rows


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _driver_version() -> str | None:
    try:  # nvidia-ml-py, when installed
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML absent or no driver: fall back to nvidia-smi
        pass
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return res.stdout.strip().splitlines()[0] if res.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint() -> Environment:
    """Collect the environment of this process (cheap: no GPU work beyond device queries)."""
    import torch

    cuda_ok = torch.cuda.is_available()
    gpus = []
    if cuda_ok:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name,
                         "memory_gib": props.total_memory / 2**30,
                         "capability": f"{props.major}.{props.minor}"})
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return Environment(
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        os=platform.platform(),
        machine=platform.machine(),
        hostname=platform.node(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count() or 1,
        python=sys.version.split()[0],
        packages=_versions(),
        torch_threads=torch.get_num_threads(),
        cuda=torch.version.cuda,
        cudnn=cudnn,
        cuda_available=cuda_ok,
        driver=_driver_version() if cuda_ok or shutil.which("nvidia-smi") else None,
        gpus=gpus,
    )
