"""``calipers status RUN_DIR``: tasks done / running / queued / failed of a run
(:func:`calipers.executors.status.run_status`).

Registered by ``cli/main.py`` as ``app.command("status")(status)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape

__all__ = ["status"]


def status(
    run_dir: Path = typer.Argument(..., help="Run folder (cv --out, permute's <prefix>_tasks, "
                                   "predict --out)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show how far a run is: tasks done, running, queued, failed (with error and log), stopped.

    Example: calipers status runs/exp1
    """
    from rich.console import Console
    from rich.table import Table

    from calipers.executors.status import run_status

    err = Console(stderr=True, soft_wrap=True)
    try:
        st = run_status(run_dir)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
        return
    out = Console(soft_wrap=True)
    c = st.counts()
    out.print(f"{st.run_dir} ({st.executor or 'serial'}): {len(st.tasks)} tasks: "
              + ", ".join(f"{v} {k}" for k, v in c.items() if v or k == "done"), highlight=False)
    rest = [t for t in st.tasks if t.state != "done"]
    if rest:
        table = Table("task", "state", "job", "error / log")
        for t in rest:
            note = (t.error.strip().splitlines()[-1] if t.error else "") + (
                f"\nlog: {t.log}" if t.log else "")
            table.add_row(t.key, t.state, t.job_id or "", escape(note))
        out.print(table)
    if c["stopped"] or c["failed"]:
        out.print("Rerun the same command to finish the remaining tasks (finished ones are kept).",
                  highlight=False)
