"""The task model: independent units of work and the executors that run them.

# NOTE [Tasks and markers]
A :class:`Task` is a module-level function and its picklable keyword arguments: a fold of a
network, all stacked splits of an MLP network, a chunk of permutations. It is a pure function
of its arguments and seed (NOTE [Task seeds] in ``_seeds.py``), so it gives the same result in
any process and in any order. A task that has a run folder writes its own outputs there, each
atomically (NOTE [Atomic writes] in ``runs.py``), and its ``marker`` file last; so
``task.done()`` says whether a finished task left its outputs, whatever executor ran it.
The engine (:mod:`calipers.experiment.engine`) skips done tasks (resume), hands the rest to an
:class:`Executor`, then reads every result back from the run folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Executor", "SerialExecutor", "Task", "TaskError"]


@dataclass(frozen=True)
class Task:
    """One independent unit of work, a pure function of its arguments and seed."""

    key: str                      # unique within a run: "A/fold-03", "B/stacked", "perm/chunk-002"
    fn: Callable[..., Any]        # a module-level function (picklable by reference)
    kwargs: Mapping[str, Any]     # picklable arguments (data, specs, run_dir path, ...)
    marker: Path | None = None    # file the task writes LAST (atomically) when it finished

    def run(self) -> Any:
        return self.fn(**self.kwargs)

    def done(self) -> bool:
        return self.marker is not None and self.marker.exists()


class Executor(Protocol):
    """Runs tasks; see NOTE [Tasks and markers]."""

    def map(self, tasks: Sequence[Task], *,
            on_done: Callable[[Task, Any], None] | None = None) -> list[Any]:
        """Run every task and return the results in task order.

        ``on_done(task, result)`` is called in the parent process as each task finishes (for
        progress). A failed task raises (:class:`TaskError`) after the others finished.
        """
        ...


class TaskError(RuntimeError):
    """One or more tasks failed; ``failures`` maps each failed task's key to its exception."""

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        self.failures = dict(failures)
        lines = [f"  {key}: {type(exc).__name__}: {exc}" for key, exc in self.failures.items()]
        super().__init__(f"{len(self.failures)} task(s) failed:\n" + "\n".join(lines))


class SerialExecutor:
    """Run tasks one after another in this process (the default; works with pdb and with
    in-process progress callbacks).

    A task that raises does not stop the others; after the last one, a single failure is
    re-raised as it is, several as a :class:`TaskError`. ``KeyboardInterrupt`` stops at once.
    """

    def map(self, tasks: Sequence[Task], *,
            on_done: Callable[[Task, Any], None] | None = None) -> list[Any]:
        results: list[Any] = []
        failures: dict[str, Exception] = {}
        for task in tasks:
            try:
                res = task.run()
            except Exception as exc:  # re-raised below, after the other tasks ran
                failures[task.key] = exc
                results.append(None)
                continue
            results.append(res)
            if on_done is not None:
                on_done(task, res)
        if len(failures) == 1:
            raise next(iter(failures.values()))
        if failures:
            raise TaskError(failures)
        return results
