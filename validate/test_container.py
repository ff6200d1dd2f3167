"""The container built and run for real (``make validate``; also ``make test-container``).

Runs ``docker/test_container.sh``: podman builds ``docker/Dockerfile`` on a local Debian base
made with debootstrap (no registry), a small U-Net is trained on generated NIfTI volumes, and
the image segments new volumes with ``podman run --network none``; the outputs' shapes and
affines are checked, and a root-owned ``/out`` must fail with a message naming ``--user``.
Takes minutes. Skipped without root, podman, runc or debootstrap (Debian: apt-get install
podman runc debootstrap).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                       reason="building images with podman here needs root"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("podman", "runc", "debootstrap")),
                       reason="podman, runc and debootstrap are needed (apt-get install ...)"),
]


def test_container_builds_and_segments():
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(ROOT / "docker" / "test_container.sh")],
                       env={**os.environ, "PY": sys.executable}, capture_output=True,
                       text=True, timeout=3600)
    print(r.stdout + r.stderr)
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PASS" in r.stdout
    assert "message names --user, nothing written" in r.stdout
