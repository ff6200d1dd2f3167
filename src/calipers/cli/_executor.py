"""``--executor`` / ``--detach`` / ``--chunks`` shared by ``cv``, ``permute`` and ``predict``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

__all__ = ["DETACH_HELP", "EXECUTOR_HELP", "executor_errors", "make_executor"]

EXECUTOR_HELP = ("Where tasks run: serial, local (local:N for N workers) or slurm; overrides "
                 "the config's \\[executor] kind.")
DETACH_HELP = "With slurm: return after submission; follow with calipers status RUN_DIR."


def make_executor(table: Any, flag: str | None, *, detach: bool, run_dir: Path,
                  chunks: int | None = None, show_progress: bool = True,
                  binds: tuple[Path, ...] = ()):
    """The executor a config ``[executor]`` table and the command-line flags ask for, and its
    spec; ``(None, spec)`` for a plain serial run (today's in-process path)."""
    from calipers.executors import ExecutorSpec, get_executor

    spec = ExecutorSpec.parse(None if table is None else table.model_dump())
    if flag is not None:
        flagged = ExecutorSpec.parse(flag)
        spec = spec.with_overrides(kind=flagged.kind, workers=flagged.workers)
    spec = spec.with_overrides(detach=detach or None, chunks=chunks,
                               binds=(*spec.binds, *map(str, binds)) or None)
    if spec.kind == "serial" and spec.chunks is None:
        return None, spec
    return get_executor(spec, run_dir=run_dir, show_progress=show_progress), spec


@contextmanager
def executor_errors(console) -> Iterator[None]:
    """Detached: say where to follow the jobs (exit 0); failed tasks: list them (exit 1);
    a missing extra or tool: exit 2."""
    from calipers.executors import Detached, TasksFailed

    try:
        yield
    except Detached as exc:
        console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(0) from None
    except TasksFailed as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except ImportError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
