"""Re-export of :mod:`calipers.tasks` (the task contract lives in the lowest layer, so that
every package can build tasks)."""

from calipers.tasks import Executor, SerialExecutor, Task, TaskError

__all__ = ["Executor", "SerialExecutor", "Task", "TaskError"]
