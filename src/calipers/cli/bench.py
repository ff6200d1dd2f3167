"""``calipers bench``: where this machine's GPU pays off (:func:`calipers.tools.bench.run_bench`).
Registered in ``cli/main.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

__all__ = ["bench"]


def bench(
    quick: bool = typer.Option(False, "--quick", help="Small sizes: seconds, a smoke test."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of time against size."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:<i>."),
    only: list[str] | None = typer.Option(None, "--only", help="Run only this workload "
                                          "(repeatable): matmul, fft2, conv2d, conv3d, pdist, "
                                          "cg, permutation, mc_dropout."),
) -> None:
    """Device character (memory bandwidth, matmul fp64/fp32/tf32/bf16), then CPU vs GPU over
    growing sizes with the size where the GPU starts to win. Timings are medians of repeats.

    Example: calipers bench --quick --json bench.json --plot bench.png
    """
    from calipers.runs import atomic_write_json
    from calipers.tools.bench import WORKLOADS, plot_bench, render_bench, run_bench

    names = [w.name for w in WORKLOADS]
    bad = [o for o in only or [] if o not in names]
    if bad:
        sys.stderr.write(f"error: unknown workload(s) {bad}; choose from {', '.join(names)}.\n")
        raise typer.Exit(2)
    tty = sys.stderr.isatty()
    res = run_bench(quick=quick, device=device, only=only or None,
                    progress=(lambda s: sys.stderr.write(f"\r{s:<30}")) if tty else None)
    if tty:
        sys.stderr.write("\r" + " " * 30 + "\r")
    sys.stdout.write(render_bench(res) + "\n")
    if json_out is not None:
        atomic_write_json(json_out, res.to_dict())
    if plot is not None:
        plot_bench(res, str(plot))
