"""Errors of the executors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Detached", "TaskFailure", "TasksFailed"]


@dataclass(frozen=True)
class TaskFailure:
    """One task that failed after its last attempt."""

    key: str
    error: str              # the exception (and traceback tail) as text
    log: Path | None = None  # the task's log file, when it has one
    attempts: int = 1


class TasksFailed(RuntimeError):
    """Raised after every other task finished, when some tasks failed on every attempt."""

    def __init__(self, failures: list[TaskFailure], n_tasks: int) -> None:
        self.failures = failures
        lines = [f"{len(failures)} of {n_tasks} tasks failed:"]
        for f in failures:
            last = f.error.strip().splitlines()[-1] if f.error.strip() else "(no message)"
            lines.append(f"  {f.key} (attempts: {f.attempts}): {last}"
                         + (f"\n    log: {f.log}" if f.log else ""))
        lines.append("Fix the cause and rerun the same command: finished tasks are kept.")
        super().__init__("\n".join(lines))


class Detached(Exception):
    """Raised by an executor with ``detach=True`` once every task is submitted."""

    def __init__(self, run_dir: Path | None, job_ids: list[str]) -> None:
        self.run_dir, self.job_ids = run_dir, job_ids
        where = f"calipers status {run_dir}" if run_dir else "squeue"
        super().__init__(f"submitted {len(job_ids)} tasks ({', '.join(job_ids[:4])}"
                         f"{', ...' if len(job_ids) > 4 else ''}); follow them with: {where}")
