"""Tasks and executors: the unit of independent work and the interface that runs it.

A :class:`Task` (one fold, one stacked group, one chunk of permutations or of input files) is a
module-level function of plain, picklable arguments and a seed. It writes its own outputs into
the run folder (atomically, its ``marker`` file last), so any executor in any process leaves the
same run folder; a rerun skips the tasks whose :meth:`Task.done` is True and reads their results
back from the run folder. Executors other than :class:`SerialExecutor` live in
:mod:`calipers.executors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Executor", "SerialExecutor", "Task"]


@dataclass(frozen=True)
class Task:
    """One independent unit of work, a pure function of its arguments and seed."""

    key: str                      # unique within a run: "A/fold-03", "B/stacked", "perm/chunk-002"
    fn: Callable[..., Any]        # a module-level function (picklable by reference)
    kwargs: Mapping[str, Any]     # picklable arguments (data, specs, run_dir path, ...)
    marker: Path | None = None    # file the task writes LAST (atomically) when it finished

    def run(self) -> Any:
        """Run the task here, in this process."""
        return self.fn(**self.kwargs)

    def done(self) -> bool:
        """True when the task's marker file exists (it finished in an earlier session)."""
        return self.marker is not None and self.marker.exists()


class Executor(Protocol):
    """Runs tasks: every task, results in task order, ``on_done(task, result)`` called in the
    parent as each finishes (for progress). Failed tasks raise after the others finish."""

    def map(self, tasks: Sequence[Task], *,
            on_done: Callable[[Task, Any], None] | None = None) -> list[Any]: ...


class SerialExecutor:
    """The default: runs tasks in order in-process."""

    def map(self, tasks: Sequence[Task], *,
            on_done: Callable[[Task, Any], None] | None = None) -> list[Any]:
        """Run ``tasks`` one after the other; a failure is raised after the others ran."""
        results: list[Any] = []
        errors: list[tuple[Task, BaseException]] = []
        for task in tasks:
            try:
                res = task.run()
            except Exception as exc:  # the others still run; raised below
                errors.append((task, exc))
                results.append(None)
                continue
            results.append(res)
            if on_done is not None:
                on_done(task, res)
        if errors:
            task, exc = errors[0]
            keys = ", ".join(t.key for t, _ in errors)
            raise RuntimeError(f"{len(errors)} of {len(tasks)} tasks failed ({keys}); first, "
                               f"{task.key}: {type(exc).__name__}: {exc}") from exc
        return results
