"""Command functions ``calipers env`` and ``calipers repro`` (registered by ``calipers.cli``).

Each parses its options, calls one library function and renders the result; exit codes:
0 success (``repro``: the runs agree), 1 ``repro``: the runs differ, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["env", "repro"]

_console = Console()
_err = Console(stderr=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Expected errors (bad input) become one red line and exit code 2, without a traceback."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def env(
    as_json: Annotated[bool, typer.Option("--json", help="Print the fingerprint as JSON.")]
    = False,
    export: Annotated[str | None, typer.Option(
        "--export", metavar="conda|pip|docker|apptainer",
        help="Print (or --out) a recipe that rebuilds the environment with exact versions.")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the recipe to FILE.")] = None,
    from_run: Annotated[Path | None, typer.Option(
        "--from", help="Use RUN_DIR/env.json (a run's recorded environment), not this one.")]
    = None,
    torch_index: Annotated[bool, typer.Option(
        "--torch-index/--no-torch-index",
        help="Pin torch with its wheel tag (+cpu, +cu128) and add PyTorch's index.")] = True,
) -> None:
    """Show the environment fingerprint saved as env.json in every run, or export a recipe.

    Examples: calipers env --json;  calipers env --export docker --out Dockerfile;
    calipers env --from runs/demo --export apptainer --out calipers.def
    """
    from calipers.repro.env import fingerprint, load_env
    from calipers.repro.export import export_environment
    from calipers.runs import atomic_write_text

    with _user_errors():
        if out is not None and export is None:
            raise ValueError("--out needs --export FORMAT (conda, pip, docker or apptainer); "
                             "for the fingerprint use --json > FILE.")
        if out is not None and out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a file name, e.g. {out}/Dockerfile.")
        record = load_env(from_run) if from_run is not None else fingerprint()
        if export is not None:
            source = f"{from_run}/env.json" if from_run is not None else "calipers env"
            text = export_environment(record, export, torch_index=torch_index, source=source)
            if out is None:
                sys.stdout.write(text)
            else:
                atomic_write_text(out, text)
                _err.print(f"wrote {out}", highlight=False)
            return
    if as_json:
        sys.stdout.write(json.dumps(record.to_dict(), indent=2) + "\n")
        return
    table = Table(title="calipers environment", show_header=False)
    for k, v in record.lines():
        table.add_row(k, v)
    _console.print(table)


def _print_diffs(diffs, title: str, fmt, identical: str) -> None:
    """A key / A / B table of differences, or the ``identical`` line when there are none."""
    if not diffs:
        _console.print(identical)
        return
    t = Table(title=title)
    for col in ("key", "A", "B"):
        t.add_column(col)
    for x in diffs:
        t.add_row(x["key"], fmt(x["a"]), fmt(x["b"]))
    _console.print(t)


def _render_repro(report) -> None:
    d = report.to_dict()
    _console.print(f"[bold]A:[/] {d['run_a']}\n[bold]B:[/] {d['run_b']}", highlight=False)
    _print_diffs(d["config_diffs"], "configuration differences", repr, "configs: identical")
    _print_diffs(d["env_diffs"], "environment differences (informational)", str,
                 "environment: identical (creation time not compared)")
    if d["metrics_csv_identical"]:
        csv_state = "bit-identical"
    elif d["ok"]:  # never "differs" above "The runs agree": the values are within tolerance
        csv_state = "not bit-identical, every value within the tolerances (table below)"
    else:
        csv_state = "not bit-identical (table below)"
    _console.print(f"folds: {'identical' if d['folds_match'] else 'DIFFERENT'};  metrics.csv: "
                   f"{csv_state}", highlight=False)
    worst: dict[str, float] = {}
    for m in d["metrics"]:
        worst[m["network"]] = max(worst.get(m["network"], 0.0), m["max_abs_diff"])
    t = Table(title="results, B vs A")
    for col in ("network", "max |Δ metric|", "max |Δ prediction|", "identical", "same class"):
        t.add_column(col, justify="right")
    for p in d["predictions"]:
        same = "" if p["label_agreement"] is None else f"{100 * p['label_agreement']:.2f}%"
        metric = f"{worst[p['network']]:.3g}" if p["network"] in worst else "n/a"
        t.add_row(p["network"], metric, f"{p['max_abs_diff']:.3g}",
                  f"{100 * p['fraction_identical']:.2f}%", same)
    _console.print(t)
    if d["segmentation"]["n_volumes"]:
        t = Table(title=f"lowest Dice of {d['segmentation']['n_volumes']} segmentations")
        for col in ("network", "sample", "mean Dice", "per label"):
            t.add_column(col)
        for v in d["segmentation"]["lowest"]:
            per = ", ".join(f"{c}: {x:.3f}" for c, x in zip(v["classes"], v["dice"], strict=True))
            t.add_row(v["network"], str(v["index"]), f"{v['mean_dice']:.3f}", per)
        _console.print(t)
    colour = "green" if d["ok"] else "red"
    _console.print(f"[bold {colour}]{d['sentence']}[/]", highlight=False, soft_wrap=True)


def repro(
    run_a: Annotated[Path, typer.Argument(help="First run folder (the reference).")],
    run_b: Annotated[Path, typer.Argument(help="Second run folder (the reproduction).")],
    metric_atol: Annotated[float, typer.Option(
        "--metric-atol", help="Allowed |B − A| of any metric on any fold.")] = 0.0,
    proba_atol: Annotated[float, typer.Option(
        "--proba-atol", help="Allowed |B − A| of any out-of-fold probability (or mean).")] = 0.0,
    dice_min: Annotated[float, typer.Option(
        "--dice-min", help="Smallest allowed Dice between the runs' segmentations.")] = 1.0,
    json_out: Annotated[Path | None, typer.Option(
        "--json-out", help="Also write the JSON report to this file (the runs are only read).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report, no tables.")]
    = False,
) -> None:
    """Check that two runs agree: config, environment, per-fold metrics, predictions, Dice.

    Exit code 0 when they agree within the tolerances (default: bit-identical), 1 when they
    differ, 2 on bad input. Both runs are only read; --json-out FILE saves the JSON report.

    Example: calipers repro runs/exp-laptop runs/exp-cluster --metric-atol 1e-6 --proba-atol 1e-5
    """
    from calipers.experiment.agreement import compare_runs_repro
    from calipers.runs import atomic_write_json

    with _user_errors():
        report = compare_runs_repro(run_a, run_b, metric_atol=metric_atol,
                                    proba_atol=proba_atol, dice_min=dice_min)
    if json_out is not None:
        atomic_write_json(json_out, report.to_dict())
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        _render_repro(report)
        if json_out is not None:
            _console.print(f"JSON report: {json_out}", highlight=False)
    raise typer.Exit(0 if report.ok else 1)
