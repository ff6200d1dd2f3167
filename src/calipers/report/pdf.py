"""The report as a PDF, drawn by matplotlib's PDF backend (:class:`PdfPages`).

Text pages on A4 (title, headline, verdict, the networks table, what is missing, the
environment), then one page per figure, each at the size it was drawn for print (NOTE
[Figure style] in :mod:`calipers.report.plots`), so the figures stay vector graphics.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from calipers._format import fmt_datetime
from calipers.report.run_data import RunData
from calipers.runs import atomic_path

__all__ = ["write_pdf"]

_A4 = (8.27, 11.69)  # inches
_MARGIN = 0.8  # inches
_LINE = 0.19  # inches between 10-pt lines
_WRAP = 92  # characters per line of 10-pt text on A4 with these margins


def _lines(run: RunData, headline: str, networks: Sequence[Sequence[str]],
           env: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(style, text) lines of the text pages; style is "title", "h", "b", "" or "mono"."""
    out: list[tuple[str, str]] = [("title", f"calipers report: {run.name}")]
    if run.date:
        out.append(("", fmt_datetime(run.date)))
    out += [("", ""), ("h", "Verdict")]
    out += [("b", t) for t in textwrap.wrap(headline, _WRAP - 8)]
    sentences = [run.summary.get("sentence"), (run.summary.get("comparison") or {}).get("sentence")]
    for i, s in enumerate(sentences):
        if isinstance(s, str) and s not in sentences[:i]:
            out += [("", t) for t in textwrap.wrap(s, _WRAP)]
    for item in run.incomplete:
        out += [("", t) for t in textwrap.wrap(f"Missing: {item}", _WRAP)]
    out += [("", ""), ("h", "Networks (mean ± std over folds, 95% CI)")]
    widths = [max(len(str(r[i])) for r in [("network", "metric", "mean ± std", "95% CI"),
                                           *networks]) for i in range(4)]
    for row in [("network", "metric", "mean ± std", "95% CI"), *networks]:
        out.append(("mono", "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))))
    out += [("", ""), ("h", "Environment")]
    for key, value in env:
        out += [("mono", t) for t in textwrap.wrap(f"{key:<22} {value}", _WRAP,
                                                      subsequent_indent=" " * 23)]
    out += [("", ""), ("", "Figures follow, one per page.")]
    return out


def _text_pages(lines: list[tuple[str, str]]) -> list[Figure]:
    pages, fig, y = [], None, 0.0
    for style, text in lines:
        if fig is None or y < _MARGIN:
            fig = Figure(figsize=_A4)
            FigureCanvasAgg(fig)
            pages.append(fig)
            y = _A4[1] - _MARGIN
        size = {"title": 16, "h": 12}.get(style, 10)
        fig.text(_MARGIN / _A4[0], y / _A4[1], text, fontsize=size, va="top",
                 family="monospace" if style == "mono" else "sans-serif",
                 weight="bold" if style in ("title", "h", "b") else "normal")
        y -= _LINE * (size / 10) * (1.6 if style in ("title", "h") else 1.0)
    return pages


def write_pdf(path: str | Path, run: RunData, *, headline: str,
              networks: Sequence[Sequence[str]], env: Sequence[tuple[str, str]],
              figures: Sequence[Figure]) -> Path:
    """Write the PDF report atomically.

    Parameters
    ----------
    path : str or Path
        The PDF file.
    run : RunData
        The run (title, date, sentences, what is missing).
    headline : str
        The sentence the report opens with.
    networks : sequence of (network, metric, mean ± std, 95% CI) rows
        Already formatted (NOTE [Number formatting]).
    env : sequence of (name, value)
        The environment rows ``calipers env`` prints.
    figures : sequence of Figure
        One page each, in order.

    Returns
    -------
    Path
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with PdfPages(tmp, metadata={"Title": f"calipers report: {run.name}",
                                     "Creator": "calipers", "CreationDate": None}) as pdf:
            for page in _text_pages(_lines(run, headline, networks, env)):
                pdf.savefig(page)
            for fig in figures:
                pdf.savefig(fig)
    return path
