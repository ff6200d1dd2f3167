"""Progress of long commands in logs: one plain line per completed unit.

On a terminal the commands draw rich progress bars. Under ``nohup``, ``tmux`` logging, SLURM or a
pipe, a bar draws nothing useful, so :class:`LogProgress` prints one line per completed unit
(fold, chunk of permutations, file) with the elapsed time and an estimate of what remains::

    fold 2/6 done (A fold 2) · 0:00:12 elapsed · about 0:00:24 left

and, at most every ``every`` seconds, a line for finer steps (epochs). Used by ``cv``/``demo``,
``permute`` and ``predict``.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from typing import IO, Any

__all__ = ["LogCVProgress", "LogProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` for a duration in seconds.

    >>> format_duration(75.4), format_duration(3725)
    ('0:01:15', '1:02:05')
    """
    return str(_dt.timedelta(seconds=round(max(seconds, 0.0))))


class LogProgress:
    """Plain progress lines for logs.

    Parameters
    ----------
    file : text stream
        Where lines go (flushed after each line).
    unit : str
        What is counted, e.g. "fold", "file", "permutation".
    total : int, optional
        Number of units; may also be given with each :meth:`update`.
    every : float, default 0.0
        Minimum seconds between lines (0: a line per update that completes units). The last
        unit always gets its line.
    clock : callable, default time.monotonic
        Seconds; replaced in tests.
    """

    def __init__(self, file: IO[str], *, unit: str, total: int | None = None,
                 every: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.file, self.unit, self.total, self.every, self.clock = file, unit, total, every, clock
        self.start = clock()
        self.done = 0
        self._last_line = -float("inf")

    def _write(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()
        self._last_line = self.clock()

    def update(self, done: int, total: int | None = None, label: str = "") -> None:
        """``done`` units of ``total`` are finished; print a line if that is news."""
        if total is not None:
            self.total = total
        if done <= self.done:
            return
        self.done = done
        now = self.clock()
        last = self.total is not None and done >= self.total
        if not last and now - self._last_line < self.every:
            return
        elapsed = now - self.start
        count = f"{done}/{self.total}" if self.total else f"{done}"
        parts = [f"{self.unit} {count} done" + (f" ({label})" if label else ""),
                 f"{format_duration(elapsed)} elapsed"]
        if self.total and not last:
            parts.append(f"about {format_duration(elapsed / done * (self.total - done))} left")
        self._write(" · ".join(parts))

    def note(self, text: str) -> None:
        """A line for a finer step (an epoch), at most one per ``every`` seconds."""
        if self.clock() - self._last_line >= self.every:
            self._write(f"{text} · {format_duration(self.clock() - self.start)} elapsed")


class LogCVProgress:
    """The ``progress`` callbacks of :func:`calipers.evaluation.cv.cross_validate`, as log lines:
    one per finished fold, and epoch lines at most every ``every`` seconds."""

    def __init__(self, file: IO[str], n_total: int, *, every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = LogProgress(file, unit="fold", total=n_total, every=0.0, clock=clock)
        self.epochs = LogProgress(file, unit="epoch", every=every, clock=clock)
        self.epochs._last_line = clock()  # first epoch line after `every` seconds
        self.current = ""
        self.n_done = 0

    def fold_start(self, network: str, split: int, n_splits: int, n_epochs: int) -> None:
        self.current = f"{network} fold {split + 1}/{n_splits}"

    def phase(self, description: str, n_epochs: int) -> None:
        self.current = description
        self.log._write(f"{description} ({n_epochs} epochs)")

    def epoch(self, epoch: int, n_epochs: int, loss: float) -> None:
        self.epochs.note(f"{self.current}: epoch {epoch}/{n_epochs}, loss {loss:.4g}")

    def fold_end(self, result: Any) -> None:
        self.n_done += 1
        net, split = getattr(result, "network", None), getattr(result, "split", None)
        label = self.current if net is None or split is None else f"{net} fold {split + 1}"
        if getattr(result, "resumed", False):
            label += ", resumed"
        self.log.update(self.n_done, label=label)
