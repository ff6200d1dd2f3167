"""The self-contained HTML report of a cross-validation run, and the figures in it.

>>> from calipers.report import write_report
>>> write_report("runs/demo")  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from calipers.report.html import headline, render_report
from calipers.report.plots import (
    plot_entropy_histogram,
    plot_fold_scores,
    plot_paired_differences,
    plot_reliability,
    plot_residual_histogram,
    plot_std_vs_error,
)
from calipers.report.run_data import RunData, load_run
from calipers.report.write import write_report

__all__ = [
    "RunData",
    "headline",
    "load_run",
    "plot_entropy_histogram",
    "plot_fold_scores",
    "plot_paired_differences",
    "plot_reliability",
    "plot_residual_histogram",
    "plot_std_vs_error",
    "render_report",
    "write_report",
]
