"""The pip lock rebuilds calipers' environment: a fresh venv from requirements.lock has exactly
the pinned versions, calipers installs into it without resolving anything, and its fingerprint
records the same dependency versions as the lock.

Cost: one venv and ~40 wheels (torch's is the big one), 1–5 minutes depending on the pip cache
and mirror. Run with ``make validate``. Needs the same package index the Makefile uses (PyPI, or
the configured mirror); torch is pinned as ``torch==2.13.0`` and resolves to the CPU wheel there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        m = PIN.match(line.strip())
        if m:
            pins[_canonical(m[1])] = m[2]
    return pins


def _run(*args: str | Path, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert res.returncode == 0, f"{' '.join(map(str, args))} failed:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the lock is made for Python 3.11")
def test_lock_installs_into_fresh_venv(tmp_path):
    lock = _lock()
    assert lock, "requirements.lock holds no pins"
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    _run(py, "-m", "pip", "install", "-q", "--no-input", "-r", ROOT / "requirements.lock")
    # calipers itself, with nothing resolved: every runtime dependency must already be there.
    # Built from a copy, so the build leaves nothing behind in the repository.
    src = tmp_path / "calipers-src"
    for part in ("pyproject.toml", "README.md"):
        (src / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / part, src / part)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info",
                                                                            "__pycache__"))
    _run(py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", src)
    _run(py, "-m", "pip", "check")
    frozen = json.loads(_run(py, "-m", "pip", "list", "--format", "json").stdout)
    installed = {_canonical(d["name"]): d["version"] for d in frozen}
    for name, version in lock.items():
        got = installed.get(name, "missing")
        assert got.partition("+")[0] == version, f"{name}: lock {version}, installed {got}"
    script = ("import json; from calipers.repro.env import fingerprint; "
              "print(json.dumps(fingerprint().dependencies))")
    recorded = json.loads(_run(py, "-c", script).stdout)
    assert {k: v.partition("+")[0] for k, v in recorded.items()} == lock
