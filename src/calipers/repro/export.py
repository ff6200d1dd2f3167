"""Recipes that rebuild a recorded environment: conda, pip lock, Docker and Apptainer.

:func:`export_environment` turns an :class:`~calipers.repro.env.Environment` (this process's
:func:`~calipers.repro.env.fingerprint`, or a run's ``env.json`` via
:func:`~calipers.repro.env.load_env`)
into the text of one recipe. The versions are the ones recorded, exactly.

# NOTE [Torch wheels and CUDA bases]
PyTorch publishes one wheel per compute platform on ``https://download.pytorch.org/whl/<tag>``
(``cpu``, ``cu128``...), and the tag is the local version label of the installed torch
(``2.13.0+cpu``). Recipes pin ``torch==<version>+<tag>`` and add that index, so a CPU environment
does not pull a multi-GB CUDA build and a CUDA one gets the same CUDA runtime. The CUDA wheels
ship their own CUDA and cuDNN libraries (the ``nvidia-*`` dependencies), so a GPU image needs only
a base that matches the recorded CUDA version (``nvidia/cuda:<X.Y>.0-base-...``) and the host's
driver; the exact Python version is then installed by uv, because the CUDA bases carry none.
CPU images start from ``python:<X.Y.Z>-slim``. calipers itself is installed from its source tree
(the build context), without dependencies, after the pinned ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calipers._checks import _look_up_option
from calipers.repro.env import Environment

__all__ = ["FORMATS", "export_environment", "torch_index_url"]

FORMATS = ("conda", "pip", "docker", "apptainer")
_TORCH_INDEX = "https://download.pytorch.org/whl"
_UV_IMAGE = "ghcr.io/astral-sh/uv:0.12.9"
_UV_INSTALLER = "https://astral.sh/uv/0.12.9/install.sh"
_RUNTIME_ENV = (("CUBLAS_WORKSPACE_CONFIG", ":4096:8"), ("PYTHONHASHSEED", "0"))


@dataclass(frozen=True)
class _Pins:
    """What every recipe needs, derived once from the environment record."""

    python: str                  # "3.11.7"
    calipers: str                # version or "unknown"
    pins: tuple[str, ...]        # "name==version", sorted, torch included
    index_url: str | None        # PyTorch wheel index, or None
    cuda: str | None             # "12.8" when the torch build has CUDA
    header: tuple[str, ...]      # comment lines (without "# ")


def torch_index_url(torch_version: str, cuda: str | None) -> tuple[str, str]:
    """The wheel tag and PyTorch index URL for a recorded torch build.

    Parameters
    ----------
    torch_version : str
        As installed, e.g. ``"2.13.0+cpu"``, ``"2.13.0+cu128"`` or ``"2.13.0"``.
    cuda : str or None
        ``torch.version.cuda`` of that build (``"12.8"``), None for a CPU build.

    Returns
    -------
    (tag, url) : tuple of str
        ``("cu128", "https://download.pytorch.org/whl/cu128")``; the local label wins, then
        ``cuda``, else ``cpu`` (see NOTE [Torch wheels and CUDA bases]).
    """
    local = torch_version.partition("+")[2]
    if local:
        tag = local
    elif cuda:
        tag = "cu" + "".join(cuda.split(".")[:2])
    else:
        tag = "cpu"
    return tag, f"{_TORCH_INDEX}/{tag}"


def _pins(env: Environment, *, torch_index: bool, source: str) -> _Pins:
    versions = dict(env.dependencies) or {k: v for k, v in env.packages.items() if k != "calipers"}
    index = None
    if "torch" in versions:
        tag, url = torch_index_url(versions["torch"], env.cuda)
        base = versions["torch"].partition("+")[0]
        versions["torch"] = f"{base}+{tag}" if torch_index else base
        index = url if torch_index else None
    gpu = "none" if not env.gpus else ", ".join(sorted({g["name"] for g in env.gpus}))
    header = (
        f"calipers environment recorded {env.created or 'at an unknown time'} ({source})",
        f"Python {env.python}, {env.os}, {env.machine}",
        f"CUDA (torch build) {env.cuda or 'none'}, cuDNN {env.cudnn or 'none'}, GPU {gpu}",
        f"calipers {env.packages.get('calipers', 'unknown')} itself is installed from its "
        "source tree, not pinned here",
    )
    return _Pins(env.python, env.packages.get("calipers", "unknown"),
                 tuple(f"{k}=={v}" for k, v in sorted(versions.items())), index,
                 env.cuda, header)


def _export_environment_iv(env: Any, fmt: str) -> tuple[Environment, str]:
    if isinstance(env, Mapping):
        env = Environment.from_dict(env)
    elif not isinstance(env, Environment):
        raise TypeError(f"env must be an Environment or a mapping (env.json's content); got "
                        f"{type(env).__name__}. Pass calipers.repro.env.fingerprint() or "
                        "calipers.repro.env.load_env(RUN_DIR).")
    fmt = _look_up_option(str(fmt).strip().lower(), FORMATS, what="export format")
    if not re.fullmatch(r"\d+\.\d+\.\d+", env.python or ""):
        raise ValueError(f"env.python must be a full Python version such as '3.11.7'; got "
                         f"{env.python!r}. Re-create the record with `calipers env --json`.")
    return env, fmt


def export_environment(
    env: Environment | Mapping[str, Any],
    fmt: str,
    *,
    torch_index: bool = True,
    source: str = "calipers env",
) -> str:
    """Text of a recipe that rebuilds ``env`` with the exact recorded versions.

    Parameters
    ----------
    env : Environment or mapping
        :func:`~calipers.repro.env.fingerprint` or the content of a run's ``env.json``.
    fmt : {"conda", "pip", "docker", "apptainer"}
        ``conda``: an ``environment.yml`` (conda-forge Python, pinned pip section).
        ``pip``: a lock for ``pip install -r`` (``name==version`` lines).
        ``docker``: a Dockerfile; ``apptainer``: an Apptainer definition file. Both install
        calipers from the build context (a calipers source tree) and use a CUDA base image
        matching ``env.cuda`` when the recorded torch build has CUDA.
    torch_index : bool, default True
        Pin torch with its wheel tag (``2.13.0+cpu``) and add the PyTorch index for it. False
        pins ``torch==2.13.0`` and adds no index, for mirrors that serve the right wheel.
    source : str
        Where the record came from, for the header comment (``"RUN/env.json"``).

    Returns
    -------
    str
        The recipe, ending with a newline. The pins hold for the recorded platform (their
        environment markers were evaluated there).

    Notes
    -----
    See NOTE [Torch wheels and CUDA bases] in this module for the choice of index and image.
    """
    env, fmt = _export_environment_iv(env, fmt)
    pins = _pins(env, torch_index=torch_index, source=source)
    return {"conda": _conda, "pip": _pip, "docker": _docker, "apptainer": _apptainer}[fmt](pins)


def _comment(pins: _Pins, usage: str) -> list[str]:
    return [f"# {line}" for line in (*pins.header, usage)]


def _pip(pins: _Pins) -> str:
    lines = _comment(pins, f"Install: python{pins.python.rsplit('.', 1)[0]} -m venv .venv && "
                           ".venv/bin/pip install -r THIS_FILE")
    if pins.index_url:
        lines.append(f"--extra-index-url {pins.index_url}")
    return "\n".join([*lines, *pins.pins]) + "\n"


def _conda(pins: _Pins) -> str:
    lines = _comment(pins, "Create: conda env create -f THIS_FILE")
    lines += ["name: calipers", "channels:", "  - conda-forge", "dependencies:",
              f"  - python={pins.python}", "  - pip", "  - pip:"]
    if pins.index_url:
        lines.append(f"      - --extra-index-url {pins.index_url}")
    lines += [f"      - {p}" for p in pins.pins]
    return "\n".join(lines) + "\n"


def _cuda_base(cuda: str) -> str:
    major, minor = (int(x) for x in cuda.split(".")[:2])
    ubuntu = "24.04" if (major, minor) >= (12, 5) else "22.04"
    return f"nvidia/cuda:{major}.{minor}.0-base-ubuntu{ubuntu}"


def _continued(words: list[str], indent: str, *, first: str | None = None) -> list[str]:
    """Shell words one per line, joined with backslashes; ``first`` prefixes the first line
    instead of ``indent``."""
    prefixes = [indent if first is None else first] + [indent] * (len(words) - 1)
    lines = [f"{p}{w}" for p, w in zip(prefixes, words, strict=True)]
    return [f"{line} \\" for line in lines[:-1]] + [lines[-1]]


def _install_words(pins: _Pins, *, uv: bool) -> list[str]:
    words = (["uv pip install --python /opt/venv/bin/python --index-strategy unsafe-best-match"]
             if uv else ["python -m pip install --no-cache-dir"])
    if pins.index_url:
        words.append(f"--extra-index-url {pins.index_url}")
    return words + list(pins.pins)


def _docker(pins: _Pins) -> str:
    lines = _comment(pins, "Build from a calipers source tree: docker build -f THIS_FILE -t "
                           "calipers .")
    envs = [f"{k}={v}" for k, v in _RUNTIME_ENV]
    if pins.cuda:
        lines += [f"FROM {_cuda_base(pins.cuda)}",
                  f"COPY --from={_UV_IMAGE} /uv /usr/local/bin/uv",
                  "ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CACHE=1 \\",
                  "    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \\",
                  "    " + " ".join(envs),
                  f"RUN uv venv --python {pins.python} /opt/venv \\",
                  *_continued(_install_words(pins, uv=True), "      ", first="    && ")]
        install_self = "RUN uv pip install --python /opt/venv/bin/python --no-deps /opt/calipers"
    else:
        lines += [f"FROM python:{pins.python}-slim",
                  "ENV PIP_DISABLE_PIP_VERSION_CHECK=1 " + " ".join(envs),
                  *_continued(_install_words(pins, uv=False), "    ", first="RUN ")]
        install_self = "RUN python -m pip install --no-cache-dir --no-deps /opt/calipers"
    lines += ["COPY pyproject.toml README.md /opt/calipers/",
              "COPY src /opt/calipers/src",
              install_self,
              "WORKDIR /work",
              'ENTRYPOINT ["calipers"]',
              'CMD ["--help"]']
    return "\n".join(lines) + "\n"


def _apptainer(pins: _Pins) -> str:
    base = _cuda_base(pins.cuda) if pins.cuda else f"python:{pins.python}-slim"
    lines = ["Bootstrap: docker", f"From: {base}", "",
             *_comment(pins, "Build from a calipers source tree: apptainer build calipers.sif "
                             "THIS_FILE"), "",
             "%files", "    pyproject.toml /opt/calipers/pyproject.toml",
             "    README.md /opt/calipers/README.md", "    src /opt/calipers/src", "",
             "%post", "    set -e"]
    if pins.cuda:
        lines += ["    apt-get update",
                  "    apt-get install -y --no-install-recommends ca-certificates curl",
                  "    rm -rf /var/lib/apt/lists/*",
                  f"    curl -LsSf {_UV_INSTALLER} | env UV_INSTALL_DIR=/usr/local/bin sh",
                  "    export UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CACHE=1",
                  f"    uv venv --python {pins.python} /opt/venv",
                  *_continued(_install_words(pins, uv=True), "        ", first="    "),
                  "    uv pip install --python /opt/venv/bin/python --no-deps /opt/calipers"]
        path = ["    export PATH=/opt/venv/bin:$PATH"]
    else:
        lines += [*_continued(_install_words(pins, uv=False), "        ", first="    "),
                  "    python -m pip install --no-cache-dir --no-deps /opt/calipers"]
        path = []
    lines += ["", "%environment", *path, *(f"    export {k}={v}" for k, v in _RUNTIME_ENV),
              "", "%runscript", '    exec calipers "$@"', "", "%test", "    calipers env", "",
              "%labels", f"    calipers.version {pins.calipers}",
              f"    calipers.python {pins.python}", f"    calipers.cuda {pins.cuda or 'none'}"]
    return "\n".join(lines) + "\n"
