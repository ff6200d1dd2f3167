"""``calipers pack SRC DST``: an image data set as one memory-mapped array
(:func:`calipers.tools.pack.pack`). Registered in ``cli/main.py``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

__all__ = ["pack"]


def pack(
    src: Path = typer.Argument(..., help="Class-folder image set, or a folder with images/ "
                               "and labels/ (NIfTI or PNG)."),
    dst: Path = typer.Argument(..., help="Pack folder to write (X.npy, y.npy, pack.json)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing DST."),
) -> None:
    """Pack an image data set into one .npy memmap plus labels and an index; train on it with
    [data] kind = "pack", path = "DST".

    Example: calipers pack data/xray data/xray.pack
    """
    from rich.console import Console

    from calipers.exceptions import DataError
    from calipers.tools.pack import pack as _pack

    err = Console(stderr=True, soft_wrap=True)
    try:
        info = _pack(src, dst, force=force)
    except (ValueError, FileNotFoundError, FileExistsError, DataError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"packed {info.n_samples} {'volumes' if info.kind == 'segmentation' else 'images'}"
              f" ({info.nbytes / 2**20:.1f} MiB) into {info.path}", highlight=False)
