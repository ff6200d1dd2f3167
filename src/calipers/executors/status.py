"""Progress of a run from its files: task markers, ``executor.json`` and SLURM's queue.

Works for a detached SLURM run, a run still going in another terminal, an interrupted run and
a finished one: a task is *done* when its marker exists, whatever ``executor.json`` says.
"""

from __future__ import annotations

import os
import pickle
import socket
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calipers.executors._record import RECORD_NAME
from calipers.runs import fold_done, read_json

__all__ = ["RunStatus", "TaskStatus", "run_status"]

STATES = ("done", "running", "queued", "failed", "stopped")


@dataclass(frozen=True)
class TaskStatus:
    """One task: ``state`` is done, running, queued, failed or stopped (its parent is gone)."""

    key: str
    state: str
    job_id: str | None = None
    log: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands (:func:`run_status`)."""

    run_dir: Path
    executor: str | None
    tasks: tuple[TaskStatus, ...] = field(repr=False)

    def counts(self) -> dict[str, int]:
        c = Counter(t.state for t in self.tasks)
        return {s: c[s] for s in STATES}

    @property
    def complete(self) -> bool:
        return all(t.state == "done" for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "executor": self.executor,
                "counts": self.counts(), "tasks": [t.__dict__ for t in self.tasks]}


def _find_record(run_dir: Path) -> Path | None:
    for p in (run_dir / RECORD_NAME, run_dir / ".calipers" / RECORD_NAME):
        if p.is_file():
            return p
    return None


def _cv_tasks(run_dir: Path) -> dict[str, bool]:
    """``{"NAME/fold-JJ": done}`` of a cross-validation run folder (config.toml + folds.json)."""
    cfg = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    n_splits = int(read_json(run_dir / "folds.json")["n_splits"])
    return {f"{name}/fold-{j:02d}": fold_done(run_dir, name, j)
            for name in cfg.get("networks", {}) for j in range(n_splits)}


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return False  # cannot tell: another machine
    try:
        os.kill(int(record.get("parent_pid", -1)), 0)
    except (OSError, ValueError):
        return False
    return True


def _slurm_error(result: str | None) -> str | None:
    """The error text submitit stored for a job that raised, if any."""
    if not result or not Path(result).is_file():
        return None
    try:
        with open(result, "rb") as f:
            outcome, value = pickle.load(f)  # our own job's result file
    except Exception:  # unreadable or a result object we cannot import here
        return None
    return str(value) if outcome == "error" else None


def run_status(run_dir: str | Path) -> RunStatus:
    """Tasks done / running / queued / failed / stopped of a run folder.

    Parameters
    ----------
    run_dir : path
        A ``calipers cv`` run folder, a ``permute`` task folder (``<prefix>_tasks``) or a
        ``predict`` output folder.

    Raises
    ------
    FileNotFoundError
        ``run_dir`` does not exist.
    ValueError
        ``run_dir`` is not a run folder (no ``executor.json``, nor ``config.toml`` and
        ``folds.json``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} does not exist; give a run folder (calipers cv "
                                "--out, permute's <prefix>_tasks, predict's --out).")
    rec_path = _find_record(run_dir)
    is_cv = (run_dir / "config.toml").is_file() and (run_dir / "folds.json").is_file()
    if rec_path is None and not is_cv:
        raise ValueError(f"{run_dir} is not a calipers run folder: it has no {RECORD_NAME} and "
                         "no config.toml + folds.json. Give the folder a run was written to.")
    record = read_json(rec_path) if rec_path is not None else {}
    kind = record.get("executor")
    tasks: dict[str, TaskStatus] = {}
    if is_cv:
        for key, done in _cv_tasks(run_dir).items():
            tasks[key] = TaskStatus(key, "done" if done else "stopped")
    entries = record.get("tasks", {})
    for key in entries:  # a stacked network is one task that writes all of its folds
        if key.endswith("/stacked"):
            net = key[:-len("/stacked")]
            tasks = {k: v for k, v in tasks.items() if not k.startswith(f"{net}/fold-")}
    live = {}
    if kind == "slurm":
        from calipers.executors.slurm import squeue_states

        live = squeue_states([e["job_id"] for e in entries.values() if e.get("job_id")])
    parent_alive = _alive(record) if record else False
    for key, e in entries.items():
        marker = e.get("marker")
        job, log, err = e.get("job_id"), e.get("log"), e.get("error")
        if marker and Path(marker).exists():
            state = "done"
        elif kind == "slurm" and job:
            sq = live.get(job)
            if sq is not None:
                state = "running" if sq in ("RUNNING", "COMPLETING") else "queued"
            else:
                err = err or _slurm_error(e.get("result")) or (
                    f"job {job} is no longer queued and left no result; see its log")
                state = "failed"
        elif parent_alive:
            state = e.get("state", "queued")
        else:
            state = "failed" if e.get("state") == "failed" else "stopped"
        tasks[key] = TaskStatus(key, state, job, log, err)
    return RunStatus(run_dir, kind, tuple(tasks[k] for k in sorted(tasks)))
