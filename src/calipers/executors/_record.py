"""``RUN/executor.json``: which tasks a run has, where they run, and how they ended.

Written (atomically) by the parent as it submits and waits, read by ``calipers status``. A
task's marker file is the truth about completion; this file adds what markers cannot say
(queued, running, failed with which error and log, which SLURM job).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calipers.runs import atomic_write_json, read_json
from calipers.tasks import Task

__all__ = ["RECORD_NAME", "TaskRecorder", "safe_key"]

RECORD_NAME = "executor.json"


def safe_key(key: str) -> str:
    """A task key as a file name: ``"A/fold-03"`` -> ``"A__fold-03"``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key.replace("/", "__"))


class TaskRecorder:
    """Keeps ``RUN/executor.json`` up to date (no-op without a run folder)."""

    def __init__(self, run_dir: str | Path | None, executor: str, tasks: Sequence[Task],
                 *, extra: dict[str, Any] | None = None) -> None:
        self.path = None if run_dir is None else Path(run_dir) / RECORD_NAME
        self.data: dict[str, Any] = {"executor": executor, "host": socket.gethostname(),
                                     "parent_pid": os.getpid(), "detached": False,
                                     **(extra or {}), "tasks": {}}
        if self.path is not None and self.path.is_file():
            try:  # keep the tasks of earlier sessions and of other task groups of this run
                self.data["tasks"] = dict(read_json(self.path).get("tasks", {}))
            except (OSError, ValueError):
                pass
        self.previous = {k: dict(v) for k, v in self.data["tasks"].items()}
        for t in tasks:
            self.data["tasks"][t.key] = {"marker": None if t.marker is None else str(t.marker),
                                         "state": "done" if t.done() else "queued",
                                         "job_id": None, "log": None, "error": None,
                                         "attempts": 0}

    def set(self, key: str, **fields: Any) -> None:
        self.data["tasks"].setdefault(key, {}).update(fields)

    def save(self, **top: Any) -> None:
        self.data.update(top)
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if self.path is not None:
            atomic_write_json(self.path, self.data)
