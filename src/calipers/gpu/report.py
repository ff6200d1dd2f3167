"""The report's GPU section: utilisation over time, per-epoch figures, advice (from gpu.json)."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from calipers.runs import read_json

__all__ = ["gpu_section", "utilisation_figure"]


def utilisation_figure(gpu: dict[str, Any]) -> Figure:
    """Utilisation (%) and memory in use (MiB) against time, training epochs shaded, the 95 %
    line drawn; from a ``gpu.json`` dict with a ``trace``."""
    tr = gpu["trace"]
    fig = Figure(figsize=(7.5, 2.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(tr["t_s"], tr["util_pct"], lw=0.8, color="C0", label="utilisation")
    ax.axhline(95, color="grey", ls=":", lw=0.8)
    for i, s in enumerate(gpu.get("segments", [])):
        if s.get("label", "run") != "run" and i % 2 == 0:
            ax.axvspan(s["start_s"], s["end_s"], color="C0", alpha=0.06, lw=0)
    ax.set_ylim(0, 105)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("GPU busy (%)")
    mem = ax.twinx()
    mem.plot(tr["t_s"], tr["mem_mib"], lw=0.8, color="C1")
    mem.set_ylabel("memory in use (MiB)", color="C1")
    ax.set_title(f"{gpu.get('name') or 'GPU'}: busy {gpu['overall'].get('util_mean', 0):.0f} % "
                 "on average (dotted: 95 %)", fontsize=9)
    return fig


def gpu_section(run_dir: str | os.PathLike[str] | None,
                img: Callable[[Figure, str], str]) -> str:
    """HTML for the report: ``""`` when the run has no ``gpu.json``; ``img(fig, alt)`` embeds a
    figure (the report's own PNG embedding)."""
    if run_dir is None or not (Path(run_dir) / "gpu.json").is_file():
        return ""
    try:
        g = read_json(Path(run_dir) / "gpu.json")
    except (OSError, ValueError):
        return ""
    e = html.escape
    out = ["<section><h2>GPU</h2>"]
    for net, bs in (g.get("batch_size") or {}).items():
        how = ("largest that fitted" if bs.get("method") == "memory"
               else "largest tried; throughput levelled off")
        out.append(f"<p>Batch size chosen by the finder for {e(str(net))}: {int(bs['size'])} "
                   f"({how}: {int(bs['largest'])}).</p>")
    o = g.get("overall") or {}
    if g.get("sampled") and o.get("n_samples"):
        energy = o.get("energy_j")
        out.append(f"<p>{e(str(g.get('name', '')))}: busy {o['util_mean']:.0f} % on average "
                   f"(minimum {o['util_min']:.0f} %), peak memory {o['mem_peak_mib']:.0f} MiB"
                   + (f", {energy / 1000:.1f} kJ" if energy is not None else "") + ".</p>")
        if g.get("advice"):
            out.append(f"<p><b>Advice:</b> {e(g['advice']['text'])}</p>")
        if g.get("trace"):
            out.append(img(utilisation_figure(g), "GPU utilisation over time"))
        loop = g.get("loop")
        if loop:
            out.append(f"<p>Training loop: {loop['epochs']} epochs, waiting for data "
                       f"{100 * loop['wait_fraction']:.0f} % of the time, batch "
                       f"{loop.get('batch_size')}, data on the device: "
                       f"{e(str(loop.get('data_on_device')))}, mixed precision: "
                       f"{e(str(loop.get('amp') or 'off'))}.</p>")
    out.append("</section>")
    return "\n".join(out)
