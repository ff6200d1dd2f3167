"""``serial``: tasks in order in this process (:class:`calipers.tasks.SerialExecutor`),
recording them in ``RUN/executor.json`` when given a run folder (for ``calipers status``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from calipers.executors._record import TaskRecorder
from calipers.tasks import SerialExecutor, Task

__all__ = ["RecordedSerialExecutor", "SerialExecutor"]


class RecordedSerialExecutor(SerialExecutor):
    """:class:`SerialExecutor` that keeps ``run_dir/executor.json`` up to date."""

    name = "serial"

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def map(self, tasks: Sequence[Task], *,
            on_done: Callable[[Task, Any], None] | None = None) -> list[Any]:
        rec = TaskRecorder(self.run_dir, self.name, tasks)

        def wrapped(task: Task, result: Any) -> None:
            rec.set(task.key, state="done")
            rec.save()
            if on_done is not None:
                on_done(task, result)

        rec.save()
        try:
            return super().map(tasks, on_done=wrapped)
        finally:
            for t in tasks:
                if not t.done() and rec.data["tasks"][t.key]["state"] != "done":
                    rec.set(t.key, state="failed")
            rec.save()
