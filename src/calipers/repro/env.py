"""Environment fingerprint: what a result was computed with (OS, Python, libraries, CUDA, GPUs).

Every run saves :func:`fingerprint` as ``RUN/env.json``; :func:`load_env` reads it back, and
:func:`calipers.repro.export.export_environment` turns it into a conda, pip, Docker or
Apptainer recipe.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Environment", "dependency_versions", "fingerprint", "load_env"]

_PACKAGES = ("calipers", "torch", "numpy", "scipy", "scikit-learn", "pydantic", "nibabel",
             "matplotlib", "monai", "nilearn", "numba",
             # frameworks of calipers.learners
             "keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "lightning")


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
    dependencies: dict[str, str] = field(default_factory=dict)
    determinism: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Environment:
        """Rebuild an environment saved by :meth:`to_dict` (``env.json``).

        Keys this version does not know are ignored; ``dependencies`` and ``determinism``,
        absent from runs made before they were recorded, default to empty.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"an environment must be a mapping (env.json's content); got "
                            f"{type(d).__name__}. Pass json.load(open('RUN/env.json')) or use "
                            "load_env(RUN).")
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"environment record lacks key(s) {', '.join(missing)}; it must "
                             "hold what calipers.repro.env.fingerprint() writes to env.json. "
                             "Re-create "
                             "it with `calipers env --json`.")
        return cls(**{k: d[k] for k in names if k in d})

    def lines(self) -> list[tuple[str, str]]:
        """(name, value) pairs for display."""
        from calipers._format import fmt_datetime

        rows = [("created", fmt_datetime(self.created)), ("os", self.os),
                ("machine", self.machine),
                ("cpu", f"{self.cpu} ({self.cpu_count} logical cores)"),
                ("python", self.python), ("torch threads", str(self.torch_threads))]
        rows += [(name, ver) for name, ver in self.packages.items()]
        rows += [("CUDA (torch build)", self.cuda or "none"),
                 ("cuDNN", str(self.cudnn) if self.cudnn else "none"),
                 ("CUDA available", str(self.cuda_available)),
                 ("NVIDIA driver", self.driver or "none")]
        rows += [(f"GPU {g['index']}", f"{g['name']} ({g['memory_gib']:.1f} GiB)")
                 for g in self.gpus]
        if self.determinism:
            on = self.determinism.get("enabled")
            rows.append(("deterministic", "on" if on else "off"))
        if self.dependencies:
            rows.append(("dependencies", f"{len(self.dependencies)} pinned (--export pip)"))
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
    import calipers

    out = {}
    for name in _PACKAGES:
        if name == "calipers":  # the code that runs, even from a source tree not reinstalled
            out[name] = calipers.__version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _requirements_of(dist: metadata.Distribution, extras: frozenset[str]) -> list[Any]:
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or any(req.marker.evaluate({"extra": e})
                                     for e in (extras or {""})):
            out.append(req)
    return out


def dependency_versions(root: str = "calipers") -> dict[str, str]:
    """Installed versions of every runtime dependency of ``root``, transitively.

    Follows the ``Requires-Dist`` metadata from ``root`` (markers evaluated for this Python
    and platform, no optional extras of ``root``), so the result is the lock of this
    environment: ``{canonical name: version}``, sorted, ``root`` itself excluded. Falls back to
    the versions of calipers' main packages when ``root`` is not installed.
    """
    from packaging.utils import canonicalize_name

    root_key = canonicalize_name(root)
    try:
        metadata.distribution(root)
    except metadata.PackageNotFoundError:
        return {k: v for k, v in _versions().items() if k != root_key}
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    stack: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while stack:
        name, extras = stack.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a dependency for another platform, or a broken install: not pinned
        if key != root_key:
            found[key] = dist.version
        stack += [(req.name, frozenset(req.extras)) for req in _requirements_of(dist, extras)]
    return dict(sorted(found.items()))


def load_env(run_dir: str | os.PathLike[str]) -> Environment:
    """The environment a run recorded: ``RUN/env.json`` (or a path to an env JSON file)."""
    p = Path(run_dir)
    path = p / "env.json" if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; pass a calipers run folder (it holds env.json) or an "
            "env.json file written by `calipers env --json`.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it from the run's "
                         "backup or re-create it with `calipers env --json`.") from None
    return Environment.from_dict(raw)


def _driver_version() -> str | None:
    try:  # nvidia-ml-py, when installed
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                v = pynvml.nvmlSystemGetDriverVersion()
                return v.decode() if isinstance(v, bytes) else str(v)
            finally:
                pynvml.nvmlShutdown()
        except pynvml.NVMLError:  # no driver or no GPU: fall back to nvidia-smi
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
    """Collect the environment of this process (cheap: no GPU work beyond device queries).

    ``dependencies`` holds the exact version of every runtime dependency of calipers
    (:func:`dependency_versions`); ``determinism`` the switches in force now
    (:func:`calipers.repro.determinism.determinism_state`), so a fingerprint taken inside
    ``with deterministic(seed):`` records them as on.
    """
    import torch

    from calipers.repro.determinism import determinism_state

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
        dependencies=dependency_versions(),
        determinism=determinism_state(),
    )
