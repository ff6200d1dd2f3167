"""Executors: where the independent tasks of a run (folds, stacked groups, permutation chunks,
chunks of input files) are computed. Every executor runs the same task functions, which write
the same run folder, so results do not depend on where they ran.

- ``serial`` (default): in this process, in order (:class:`SerialExecutor`).
- ``local``: a pool of processes, one per GPU or N CPU workers (:class:`LocalExecutor`).
- ``slurm``: submitit job arrays, optionally inside Apptainer (:class:`SlurmExecutor`).

Choose one with :func:`get_executor` from a name or a config ``[executor]`` table.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from calipers.executors._errors import Detached, TaskFailure, TasksFailed
from calipers.executors.local import LocalExecutor
from calipers.tasks import Executor, SerialExecutor, Task

__all__ = [
    "EXECUTORS",
    "Detached",
    "Executor",
    "ExecutorSpec",
    "LocalExecutor",
    "SerialExecutor",
    "Task",
    "TaskFailure",
    "TasksFailed",
    "get_executor",
]

EXECUTORS = ("serial", "local", "slurm")


@dataclass(frozen=True)
class ExecutorSpec:
    """An ``[executor]`` table: which executor and its options (see README, "Scale out").

    ``kind`` is serial, local or slurm; ``workers``/``threads`` are for local; the SLURM keys
    follow sbatch (``time`` in minutes, ``mem`` like ``"16G"``, ``additional`` extra #SBATCH
    options, ``setup`` shell lines); ``container`` an Apptainer image; ``retries`` extra attempts
    of a failed task; ``chunks`` how many tasks ``permute``/``predict`` split their work into.
    """

    kind: str = "serial"
    workers: int | None = None
    threads: int | None = None
    retries: int = 0
    chunks: int | None = None
    partition: str | None = None
    time: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    additional: Mapping[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    container: str | None = None
    binds: tuple[str, ...] = ()
    max_parallel: int | None = None
    detach: bool = False

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | ExecutorSpec | None) -> ExecutorSpec:
        """From a name (``"local"``, ``"local:4"`` = 4 workers), a mapping or a spec."""
        if spec is None:
            return cls()
        if isinstance(spec, ExecutorSpec):
            out = spec
        elif isinstance(spec, str):
            kind, _, n = spec.partition(":")
            out = cls(kind=kind.strip().lower(),
                      workers=_positive_int(n, "workers", spec) if n else None)
        elif isinstance(spec, Mapping):
            known = {f.name for f in fields(cls)}
            for key in spec:
                if key not in known:
                    close = difflib.get_close_matches(key, sorted(known), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else "."
                    raise ValueError(f"executor.{key}: unknown key{hint} Valid keys: "
                                     f"{', '.join(sorted(known))}.")
            values = dict(spec)
            for key in ("setup", "binds"):
                if key in values:
                    values[key] = tuple(values[key])
            out = cls(**values)
        else:
            raise TypeError(f"executor must be a name, a table or an ExecutorSpec; got "
                            f"{type(spec).__name__}.")
        if out.kind not in EXECUTORS:
            close = difflib.get_close_matches(out.kind, EXECUTORS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ValueError(f"unknown executor {out.kind!r}{hint} Choose from: "
                             f"{', '.join(EXECUTORS)}.")
        if out.retries < 0:
            raise ValueError(f"executor.retries must be >= 0; got {out.retries}.")
        if out.chunks is not None and out.chunks < 1:
            raise ValueError(f"executor.chunks must be >= 1; got {out.chunks}.")
        if out.detach and out.kind != "slurm":
            raise ValueError(f"--detach needs --executor slurm (a {out.kind} run stops with "
                             "this process); drop --detach or submit to SLURM.")
        return out

    def with_overrides(self, **changes: Any) -> ExecutorSpec:
        """A copy with the non-None ``changes`` applied (command-line flags over the config)."""
        return ExecutorSpec.parse(replace(self, **{k: v for k, v in changes.items()
                                                   if v is not None}))


def _positive_int(text: str, what: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"executor {spec!r}: {what} after ':' must be a positive integer.")
    return value


def get_executor(spec: str | Mapping[str, Any] | ExecutorSpec | None = None, *,
                 run_dir: str | Path | None = None, show_progress: bool = True) -> Executor:
    """The executor a name or ``[executor]`` table asks for.

    Parameters
    ----------
    spec : "serial", "local", "local:N", "slurm", a mapping of :class:`ExecutorSpec` keys, or a
        spec. None means serial.
    run_dir : path, optional
        The run folder: logs, ``executor.json`` and SLURM files go there (required for slurm).
    show_progress : bool
        Let the executor show progress while it waits (rich on a terminal, log lines otherwise).

    Examples
    --------
    >>> get_executor("local:2").workers
    2
    """
    s = ExecutorSpec.parse(spec)
    if s.kind == "serial":
        if run_dir is None:
            return SerialExecutor()
        from calipers.executors.serial import RecordedSerialExecutor

        return RecordedSerialExecutor(run_dir)
    if s.kind == "local":
        return LocalExecutor(s.workers, retries=s.retries, threads=s.threads, run_dir=run_dir,
                             show_progress=show_progress)
    from calipers.executors.slurm import SlurmExecutor

    if run_dir is None:
        raise ValueError("the slurm executor needs a run folder on a shared file system "
                         "(run_dir); pass --out.")
    return SlurmExecutor(run_dir, partition=s.partition, time=s.time,
                         gpus_per_task=s.gpus_per_task, cpus_per_task=s.cpus_per_task,
                         mem=s.mem, account=s.account, qos=s.qos, additional=s.additional,
                         setup=s.setup, container=s.container, binds=s.binds,
                         retries=s.retries, max_parallel=s.max_parallel, detach=s.detach,
                         show_progress=show_progress)
