"""What the parent shows while it waits: a rich display on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter

__all__ = ["TaskProgress"]


class TaskProgress:
    """Counts of tasks done / running / failed / queued.

    On a terminal a rich progress bar; otherwise (SLURM logs, pipes) one plain line per change,
    at most every ``interval`` seconds plus every completion and failure.
    """

    def __init__(self, keys: list[str], *, label: str = "tasks", enabled: bool = True,
                 interval: float = 30.0) -> None:
        self.state = dict.fromkeys(keys, "queued")
        self.label, self.enabled, self.interval = label, enabled and bool(keys), interval
        self._tty = sys.stdout.isatty()
        self._last = 0.0
        self._bar = None
        if self.enabled and self._tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
                                 transient=True)
            self._id = self._bar.add_task(label, total=len(keys), counts="")

    def __enter__(self) -> TaskProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def counts(self) -> Counter:
        return Counter(self.state.values())

    def text(self) -> str:
        c = self.counts()
        return (f"{c['done']}/{len(self.state)} done, {c['running']} running, "
                f"{c['failed']} failed, {c['queued']} queued")

    def update(self, key: str, state: str, note: str = "") -> None:
        """Set one task's state (``queued``, ``running``, ``done``, ``failed``, ``retry``)."""
        if self.state.get(key) == state and not note:
            return
        self.state[key] = "queued" if state == "retry" else state
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._id, completed=self.counts()["done"], counts=self.text())
            if state in ("failed", "retry") and note:
                self._bar.console.print(f"{key}: {state}: {note}", highlight=False, markup=False)
            return
        now = time.monotonic()
        if state in ("done", "failed", "retry") or now - self._last >= self.interval:
            self._last = now
            stamp = time.strftime("%H:%M:%S")
            tail = f" ({key} {state}{': ' + note if note else ''})"
            print(f"[{stamp}] {self.label}: {self.text()}{tail}", flush=True)
