"""``local``: a pool of worker processes on this machine (spawn context).

One worker per visible GPU (each sees only its own: ``CUDA_VISIBLE_DEVICES``), or N CPU workers
with the machine's threads split between them (OMP/MKL/numba/torch threads set in the worker
before the task runs). A failed task is run again up to ``retries`` times; a worker that dies
(killed, out of memory) breaks the pool, which is rebuilt and the tasks it held run again (once
even with ``retries = 0``: all but one were bystanders).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from calipers.executors._errors import TaskFailure, TasksFailed
from calipers.executors._progress import TaskProgress
from calipers.executors._record import TaskRecorder, safe_key
from calipers.tasks import Task

__all__ = ["LocalExecutor", "visible_gpus"]


def visible_gpus() -> list[str]:
    """GPU ids this process may use (``CUDA_VISIBLE_DEVICES`` order), empty without CUDA."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch always present in calipers
        return []


class _RemoteError(Exception):
    """A task's exception, carried back as text (tracebacks do not pickle)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _init_worker(slots: Any, gpus: list[str], threads: int) -> None:
    """Worker initializer: pin a GPU (or none) and the thread counts, before torch starts."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)  # read by torch, numpy's BLAS and numba at import
    if "torch" in sys.modules:  # imported already (it usually is not): set it directly
        sys.modules["torch"].set_num_threads(threads)


def _run_task(task: Task, log: str | None) -> Any:
    """Run one task in a worker; its output goes to ``log`` (appended), errors come back as
    text."""
    sink = open(log, "a", encoding="utf-8") if log else open(os.devnull, "w")
    with sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            return task.run()
        except BaseException:
            text = traceback.format_exc()
            sink.write(text)
            raise _RemoteError(text) from None


class LocalExecutor:
    """Run tasks in ``workers`` processes on this machine.

    Parameters
    ----------
    workers : int, optional
        Number of processes; default one per visible GPU, else one per CPU core.
    retries : int, default 0
        Extra attempts for a task that raised (or whose worker died).
    threads : int, optional
        CPU threads per worker; default ``os.cpu_count() // workers`` (at least 1).
    run_dir : path, optional
        Where ``logs/<task>.log`` and ``executor.json`` go.
    show_progress : bool
        Progress display in the parent (rich on a terminal, log lines otherwise).
    """

    name = "local"

    def __init__(self, workers: int | None = None, *, retries: int = 0,
                 threads: int | None = None, run_dir: str | Path | None = None,
                 show_progress: bool = True) -> None:
        self.gpus = visible_gpus()
        self.workers = int(workers or len(self.gpus) or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"executor workers must be >= 1; got {workers}.")
        if retries < 0:
            raise ValueError(f"executor retries must be >= 0; got {retries}.")
        self.retries = int(retries)
        self.threads = int(threads or max(1, (os.cpu_count() or 1) // self.workers))
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.show_progress = show_progress
        self._live: ProcessPoolExecutor | None = None  # kept between map() calls

    def close(self) -> None:
        """Stop the worker processes (they are also stopped when Python exits)."""
        if self._live is not None:
            self._live.shutdown(wait=True, cancel_futures=True)
            self._live = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _log(self, task: Task) -> Path | None:
        if self.run_dir is None:
            return None
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        return self.run_dir / "logs" / f"{safe_key(task.key)}.log"

    def _pool(self) -> ProcessPoolExecutor:
        """The worker pool, started on first use and kept (workers start in seconds)."""
        if self._live is None:
            ctx = mp.get_context("spawn")
            slots = ctx.Queue()
            for i in range(self.workers):
                slots.put(i)
            self._live = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                             initializer=_init_worker,
                                             initargs=(slots, self.gpus, self.threads))
        return self._live

    def map(self, tasks: Sequence[Task], *,
            on_done: Callable[[Task, Any], None] | None = None) -> list[Any]:
        """Run every task; results in task order; raise :class:`TasksFailed` at the end."""
        results: list[Any] = [None] * len(tasks)
        if not tasks:
            return results
        rec = TaskRecorder(self.run_dir, self.name, tasks,
                           extra={"workers": self.workers, "threads": self.threads})
        attempts = [0] * len(tasks)
        failures: dict[int, TaskFailure] = {}
        progress = TaskProgress([t.key for t in tasks], enabled=self.show_progress)
        pending = list(range(len(tasks)))
        with progress:
            while pending:
                pending = self._round(tasks, pending, attempts, results, failures, rec,
                                      progress, on_done)
        rec.save()
        if failures:
            raise TasksFailed([failures[i] for i in sorted(failures)], len(tasks))
        return results

    def _round(self, tasks, pending, attempts, results, failures, rec, progress, on_done):
        """Run ``pending`` in one pool; returns the tasks to run again (after a broken pool)."""
        again: list[int] = []
        pool = self._pool()
        futures: dict[Future, int] = {}

        def submit(i: int) -> None:
            attempts[i] += 1
            log = self._log(tasks[i])
            futures[pool.submit(_run_task, tasks[i], None if log is None else str(log))] = i
            rec.set(tasks[i].key, attempts=attempts[i], log=None if log is None else str(log))
            promote()

        def promote() -> None:
            """The pool runs tasks in submission order: the first ``workers`` are running."""
            for k, j in enumerate(futures.values()):
                state = "running" if k < self.workers else "queued"
                if progress.state.get(tasks[j].key) != state:
                    rec.set(tasks[j].key, state=state)
                    progress.update(tasks[j].key, state)

        for i in pending:
            submit(i)
        rec.save()
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = futures.pop(fut)
                task = tasks[i]
                try:
                    results[i] = fut.result()
                except BrokenProcessPool:
                    # a worker died (killed, out of memory) and took the pool down: every
                    # task in flight is run again in a new pool, once even with retries = 0
                    # (most were innocent bystanders)
                    if attempts[i] <= max(self.retries, 1):
                        again.append(i)
                        progress.update(task.key, "retry", "worker process died")
                    else:
                        failures[i] = self._failure(task, "worker process died (killed "
                                                    "or out of memory)", attempts[i])
                        rec.set(task.key, state="failed", error="worker process died")
                        progress.update(task.key, "failed", "worker process died")
                    continue
                except _RemoteError as exc:
                    if attempts[i] <= self.retries:
                        progress.update(task.key, "retry", exc.text.strip().splitlines()[-1])
                        submit(i)
                    else:
                        failures[i] = self._failure(task, exc.text, attempts[i])
                        rec.set(task.key, state="failed", error=exc.text[-2000:])
                        progress.update(task.key, "failed", exc.text.strip().splitlines()[-1])
                    continue
                rec.set(task.key, state="done")
                progress.update(task.key, "done")
                if on_done is not None:
                    on_done(task, results[i])
            promote()
            rec.save()
        if again:  # the pool broke: start a new one for the next round
            self.close()
        return sorted(again)

    def _failure(self, task: Task, text: str, attempts: int) -> TaskFailure:
        return TaskFailure(task.key, text, self._log(task), attempts)
