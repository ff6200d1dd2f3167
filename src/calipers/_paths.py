"""Input and output folders that must not overlap: inputs are never outputs."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["add_model_dir", "check_separate_folders"]

_MODEL_DIRS: list[Path] = []  # folders of loaded configs (NOTE [Config folder imports])


def add_model_dir(path: str | os.PathLike[str]) -> None:
    """Let ``"module:callable"`` names import ``module`` from ``path`` too.

    # NOTE [Config folder imports]
    :func:`calipers.config.load_config` adds the config's folder, so ``model =
    "mymodels:Net"`` finds ``mymodels.py`` beside the config without PYTHONPATH. Installed
    packages and PYTHONPATH come first; the folder is on ``sys.path`` only during the import.
    A config names code that calipers imports and runs: run only configs you trust.
    """
    p = Path(path).resolve()
    if p not in _MODEL_DIRS:
        _MODEL_DIRS.append(p)



def check_separate_folders(
    in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
    in_name: str = "--in", out_name: str = "--out",
) -> tuple[Path, Path]:
    """Refuse an output folder that is, holds or lies inside the input folder, or is a file.

    Returns both paths. Outputs written among the inputs could replace an input of the same
    name and would be read as inputs by the next run (issue 15, case 1).

    Raises
    ------
    ValueError
        With both paths and what to do.
    """
    src, dst = Path(in_dir), Path(out_dir)
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{out_name} {dst} is a file; give a folder (created if needed).")
    a, b = src.resolve(), dst.resolve()
    if a == b:
        raise ValueError(f"{out_name} {dst} is the {in_name} folder; outputs would replace "
                         f"inputs and be read as inputs next time. Choose another {out_name}.")
    if a in b.parents:
        raise ValueError(f"{out_name} {dst} is inside {in_name} {src}; choose an {out_name} "
                         f"outside the input folder.")
    if b in a.parents:
        raise ValueError(f"{in_name} {src} is inside {out_name} {dst}; choose an {out_name} "
                         f"that does not hold the inputs.")
    return src, dst
