"""Write a run's report (HTML or PDF) and its figures: :func:`write_report`.

The report's folder is checked before any work, so a read-only run folder fails at once with
the fix (``--out`` elsewhere); the run folder itself is only read when ``out`` points elsewhere.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from calipers.report.headline import chosen_label
from calipers.report.html import _estimate, _render, env_lines, headline
from calipers.report.run_data import RunData, load_run

__all__ = ["write_report"]

_FORMATS = ("html", "pdf")


def _report_target(run_dir: Path, out: str | os.PathLike[str] | None,
                   format: str | None) -> tuple[Path, str]:
    """Where the report goes and its format; checked before any work is done."""
    if format is not None and format not in _FORMATS:
        raise ValueError(f"format must be one of {', '.join(_FORMATS)}; got {format!r}.")
    if out is None:
        fmt_ = format or "html"
        return run_dir / f"report.{fmt_}", fmt_
    target = Path(out)
    suffix = target.suffix.lower().lstrip(".")
    if format is None:
        if suffix not in _FORMATS:
            raise ValueError(f"cannot tell the format of {target} from its suffix; name it "
                             ".html or .pdf, or pass format='html' or 'pdf'.")
        format = suffix
    if target.is_dir():
        raise ValueError(f"{target} is a folder; pass a file name such as "
                         f"{target / ('report.' + format)}.")
    return target, format


def _check_writable(folder: Path, *, run_dir: Path, out_given: bool) -> None:
    """Fail before any work when ``folder`` (or the first existing parent) cannot be written."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with _probe_file(probe):
            pass
    except OSError as exc:
        hint = ("write it elsewhere with --out FILE (e.g. --out ~/report.html)" if not out_given
                else "choose a folder you can write")
        raise PermissionError(f"cannot write the report into {folder} ({exc.strerror or exc}); "
                              f"{hint}. The run folder {run_dir} is only read.") from None


@contextmanager
def _probe_file(folder: Path) -> Iterator[None]:
    """Create and remove one temporary file in ``folder`` (raises OSError when read-only)."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=folder, prefix=".calipers-write-test-"):
        yield


def write_report(
    run_dir: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
    format: str | None = None, dpi: int = 200,
) -> Path:
    """Read ``run_dir`` and write its report, and its figures as SVG and PNG, atomically.

    Parameters
    ----------
    run_dir : str or path-like
        A run directory written by ``calipers cv`` (see :func:`load_run`); it is only read
        when ``out`` points elsewhere.
    out : str or path-like, optional
        The report file (default ``run_dir/report.html``). Figures go to ``figures/`` in the
        same folder: ``figures/NAME.svg`` (vector) and ``figures/NAME.png`` (``dpi``).
    format : {"html", "pdf"}, optional
        Default: from the suffix of ``out``, else "html". The PDF is drawn by matplotlib
        (:mod:`calipers.report.pdf`): text pages, then one page per figure.
    dpi : int, default 200
        Resolution of the PNG figures.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` does not exist or is not a run folder.
    PermissionError
        If the report's folder cannot be written (checked before any work).

    Examples
    --------
    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    >>> write_report("runs/demo", out="paper/demo.pdf")  # doctest: +SKIP
    PosixPath('paper/demo.pdf')
    """
    from calipers.runs import atomic_write_bytes, atomic_write_text

    run_dir = Path(run_dir)
    target, format = _report_target(run_dir, out, format)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir} does not exist; pass the folder `calipers cv` or "
                                "`calipers demo` wrote (it holds summary.json).")
    _check_writable(target.parent, run_dir=run_dir, out_given=out is not None)
    run = load_run(run_dir)
    text, figs = _render(run, dpi=dpi)
    fig_dir = target.parent / "figures"
    for name, (fig, png) in figs.figures.items():
        svg = io.BytesIO()
        fig.savefig(svg, format="svg", metadata={"Date": None})
        atomic_write_bytes(fig_dir / f"{name}.svg", svg.getvalue())
        atomic_write_bytes(fig_dir / f"{name}.png", png)
    if format == "pdf":
        from calipers.report.pdf import write_pdf

        write_pdf(target, run, headline=headline(run), networks=_network_rows(run),
                  env=env_lines(run.env) if isinstance(run.env, Mapping) else [],
                  figures=[fig for fig, _ in figs.figures.values()])
        return target
    return atomic_write_text(target, text)


def _network_rows(run: RunData) -> list[tuple[str, str, str, str]]:
    """(network, metric, mean ± std, 95% CI) rows of the networks table, for the PDF."""
    rows = []
    label = chosen_label(run.summary)
    for net in run.networks:
        for metric, m in run.summary["networks"][net].items():
            m = m if isinstance(m, Mapping) else {}
            est = _estimate(m.get("mean"), (m.get("ci_low"), m.get("ci_high")), metric,
                            std=m.get("std"))
            rows.append((net + (label if net == run.summary.get("best") else ""), metric,
                         est.pm(), est.ci()))
    return rows
