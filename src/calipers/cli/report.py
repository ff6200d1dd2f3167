"""``calipers report``: rebuild the report of a run folder (:func:`calipers.report.write_report`).

Registered by ``cli/main.py`` as ``app.command("report")(report)``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from calipers.cli._conventions import print_error

__all__ = ["report"]


class _Format(StrEnum):
    html = "html"
    pdf = "pdf"


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (holds summary.json).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Report file (default: RUN_DIR/report.html); figures/ goes beside it.")]
    = None,
    format: Annotated[_Format | None, typer.Option(
        "--format", help="html or pdf (default: from the suffix of --out, else html).")]
    = None,
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution of the PNG figures.")] = 200,
) -> None:
    """Rebuild the report and its figures from a run folder.

    Useful after cv --no-report, or on a folder synced from a cluster. Writes the report and
    figures/NAME.svg and figures/NAME.png beside it. A read-only run folder is only read: pass
    --out to write elsewhere.

    Example: calipers report runs/demo --out paper/demo.pdf
    """
    from calipers.exceptions import DataError
    from calipers.report import write_report

    try:
        path = write_report(run_dir, out=out, format=None if format is None else format.value,
                            dpi=dpi)
    except (ValueError, FileNotFoundError, PermissionError, DataError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path} (figures in {path.parent / 'figures'})")
