"""Run directories: layout, atomic writes and resume.

Layout (design §3)::

    RUN/config.toml            resolved configuration
    RUN/env.json               environment fingerprint (calipers.repro.env)
    RUN/folds.json             fold indices and their hash
    RUN/<network>/fold-XX/metrics.json, predictions.npz, model.pt
    RUN/metrics.csv            one row per network and fold
    RUN/summary.json           per-network summaries and the comparison
    RUN/report.html            self-contained report

# NOTE [Atomic writes]
Every file is written to a temporary file in the same folder and renamed into place, so an
interrupted run never leaves a half-written file behind. A fold counts as finished when its
``metrics.json`` exists; it is written last, after ``predictions.npz`` and ``model.pt``.
``tempfile.mkstemp`` creates the temporary file with mode 0600; before the rename it gets the
mode ``open()`` would have given it (0666 minus the umask: 0644 under the usual 022), so
co-workers, web servers and a container's host user can read the results.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fold_dir",
    "fold_done",
    "read_json",
    "save_npz",
]


def _umask() -> int:
    """The process umask: from /proc on Linux (thread-safe), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; NOTE [Atomic writes]
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see NOTE [Atomic writes])."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NumPy values and result objects allowed)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_to_jsonable) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, saying which file is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it and rerun.") from exc


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Save arrays to a compressed ``.npz`` atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def fold_dir(run_dir: str | os.PathLike[str], network: str, fold: int) -> Path:
    """``RUN/<network>/fold-XX`` for the global fold index ``fold`` (0-based)."""
    return Path(run_dir) / network / f"fold-{fold:02d}"


def fold_done(run_dir: str | os.PathLike[str], network: str, fold: int) -> bool:
    """True when the fold's ``metrics.json`` exists (written last; NOTE [Atomic writes])."""
    return (fold_dir(run_dir, network, fold) / "metrics.json").is_file()
