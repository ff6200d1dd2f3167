"""``calipers gpu``: an ``nvidia-smi``-like snapshot (:func:`calipers.gpu.monitor.snapshot`).

Registered in ``cli/main.py`` as ``app.command("gpu")(gpu)``.
"""

from __future__ import annotations

import json
import sys
import time

import typer

__all__ = ["gpu", "render"]


def render(snap: dict) -> str:
    """The snapshot as text: one header line, then per GPU two lines and its processes."""

    def num(v, fmt: str) -> str:
        return "?" if v is None else format(v, fmt)

    lines = [f"driver {snap['driver']}, CUDA {snap['cuda'] or '?'}, {len(snap['gpus'])} GPU(s)"]
    for g in snap["gpus"]:
        lines.append(f"[{g['index']}] {g['name']}: {num(g['utilization_pct'], '.0f')} % busy, "
                     f"{num(g['memory_used_mib'], '.0f')} / {num(g['memory_total_mib'], '.0f')} "
                     f"MiB, {num(g['temperature_c'], '.0f')} °C, "
                     f"{num(g['power_w'], '.0f')} / {num(g['power_limit_w'], '.0f')} W")
        for p in g["processes"]:
            lines.append(f"    pid {p['pid']}: {p['memory_mib']:.0f} MiB")
        if not g["processes"]:
            lines.append("    no processes")
    return "\n".join(lines)


def gpu(
    watch: float = typer.Option(0.0, "--watch", help="Refresh every SECONDS (Ctrl-C stops)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show the GPUs: name, driver and CUDA version, memory, utilisation, temperature, power,
    processes. Without an NVIDIA driver: one line naming the CPU that will be used (exit 0).

    Example: calipers gpu --watch 1
    """
    from calipers.gpu.monitor import cpu_name, load_nvml, snapshot

    if watch < 0:
        sys.stderr.write(f"error: --watch must be >= 0 seconds; got {watch}.\n")
        raise typer.Exit(2)
    try:
        nvml = load_nvml()
    except RuntimeError as exc:
        msg = f"No NVIDIA GPU ({exc}); calipers will use the CPU: {cpu_name()}."
        sys.stdout.write((json.dumps({"gpus": [], "reason": msg}) if as_json else msg) + "\n")
        return
    try:
        while True:
            snap = snapshot(nvml)
            sys.stdout.write((json.dumps(snap) if as_json else render(snap)) + "\n")
            sys.stdout.flush()
            if not watch:
                return
            time.sleep(watch)
    except KeyboardInterrupt:
        return
