"""The ``calipers`` command line: thin wrappers over the library (one function per command)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from calipers.cli.permute import permute
from calipers.cli.predict import predict
from calipers.cli.repro import env, repro

__all__ = ["app", "main"]

app = typer.Typer(
    name="calipers", no_args_is_help=True, add_completion=False,
    help="Measure your networks with error bars: CV, MC dropout, paired comparison, "
         "permutation inference.",
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@contextmanager
def _user_errors():
    """Show expected errors (bad input) as one message and exit 2, without a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError, KeyError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


class _RichCVProgress:
    """Rich progress bars for :func:`~calipers.evaluation.cv.cross_validate`: folds overall,
    epochs per fold."""

    def __init__(self, progress: Progress, n_total: int) -> None:
        self.p = progress
        self.total = progress.add_task("folds", total=n_total)
        self.fold = progress.add_task("", total=1, visible=False)

    def fold_start(self, network: str, split: int, n_splits: int, n_epochs: int) -> None:
        self.p.reset(self.fold, total=n_epochs, visible=True,
                     description=f"{network} fold {split + 1}/{n_splits}")

    def phase(self, description: str, n_epochs: int) -> None:
        """A stage that trains many folds at once (batched training)."""
        self.p.reset(self.fold, total=n_epochs, visible=True, description=escape(description))

    def epoch(self, epoch: int, n_epochs: int, loss: float) -> None:
        self.p.update(self.fold, completed=epoch,
                      description=self.p.tasks[self.fold].description.split(" loss")[0]
                      + f" loss {loss:.4f}")

    def fold_end(self, result) -> None:
        self.p.advance(self.total)


def _render_summary(summary) -> None:
    d = summary.to_dict()
    metric = d["metric"]
    from calipers.evaluation.metrics import METRICS

    held = d.get("protocol") == "holdout"
    table = Table(title=f"{metric} over {d['n_splits']} folds (mean ± std, 95% CI)" if not held
                  else f"{metric} on one held-out test set (value ± bootstrap SE, 95% CI)")
    table.add_column("network")
    extra = ("nll", "ece", "entropy", "rmse", "gaussian_nll", "log_likelihood")
    for m in (metric, *(m for m in extra
                        if m != metric and m in next(iter(d["networks"].values())))):
        table.add_column(m, justify="right")
    cols = [c.header for c in table.columns[1:]]
    for name, per in d["networks"].items():
        cells = []
        for m in cols:
            s = per[m]
            k = 100 if m in METRICS and METRICS[m].percent_points else 1
            unit = "%" if k == 100 else ""
            if held:  # one split: test-set value, bootstrap SE and interval (or a point)
                se, lo = s.get("se"), s.get("ci_low")
                cells.append(f"{k * s['mean']:.2f}{unit}" + ("" if se is None else
                             f" ± {k * se:.2f} [{k * lo:.2f}, {k * s['ci_high']:.2f}]"))
                continue
            cells.append(f"{k * s['mean']:.2f}{unit} ± {k * s['std']:.2f} "
                         f"[{k * s['ci_low']:.2f}, {k * s['ci_high']:.2f}]")
        table.add_row(name, *cells)
    console.print(table)
    if held:
        first = next(iter(d["networks"].values()))[metric]
        console.print(f"Intervals: {first['interval']}.", highlight=False)
    if "sentence" in d:
        console.print(f"[bold]Verdict:[/] {d['comparison']['sentence']}", highlight=False)
        if len(d["networks"]) > 2:
            console.print(f"[bold]Overall:[/] {d['sentence']}", highlight=False)


_DET_HELP = "Deterministic kernels and seeds (same as [train] deterministic = true)."


def _with_determinism(config, on: bool):
    if not on:
        return config
    return config.model_copy(
        update={"train": config.train.model_copy(update={"deterministic": True})})


def _run(config, out: Path, report: bool = True):
    from calipers.experiment.runner import run_experiment

    n = len(config.networks) * config.cv.folds * config.cv.repeats
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as p:
        res = run_experiment(config, out, progress=_RichCVProgress(p, n), report=report)
    _render_summary(res.summary)
    console.print(f"Run folder: {res.run_dir}" + (f"  report: {res.report}" if res.report else ""),
                  highlight=False)
    return res


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="3 folds, 3 epochs: seconds.")] = False,
    deterministic: Annotated[bool, typer.Option("--deterministic", help=_DET_HELP)] = False,
) -> None:
    """Two CNNs on scikit-learn's digits: 10-fold CV, MC dropout, comparison, verdict, report.

    Example: calipers demo --out runs/demo
    """
    from calipers.experiment.runner import demo_config

    with _user_errors():
        _run(_with_determinism(demo_config(quick=quick), deterministic), out)


@app.command("cv")
def cv_command(
    config: Annotated[Path, typer.Argument(help="Experiment TOML (see README).")],
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: runs/<name>).")]
    = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip report.html.")] = False,
    deterministic: Annotated[bool, typer.Option("--deterministic", help=_DET_HELP)] = False,
) -> None:
    """Cross-validate the networks of CONFIG on identical folds; resumable.

    Example: calipers cv experiment.toml --out runs/exp1   (rerun the same to resume)
    """
    from calipers.config import load_config

    with _user_errors():
        cfg = _with_determinism(load_config(config), deterministic)
        _run(cfg, out or Path("runs") / config.stem, report=not no_report)


@app.command("compare")
def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folder(s) made on the same folds.")],
    a: Annotated[str | None, typer.Option("--a", help="First network (baseline).")] = None,
    b: Annotated[str | None, typer.Option("--b", help="Second network.")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric to compare on.")] = None,
    alpha: Annotated[float, typer.Option("--alpha")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
) -> None:
    """Paired comparison of finished runs: corrected t, McNemar, P(B>A), verdict.

    Example: calipers compare runs/demo --a A --b B --metric nll
    """
    from calipers.experiment.summary import compare_runs

    with _user_errors():
        summary = compare_runs(run_dirs, metric=metric, a=a, b=b, alpha=alpha)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    else:
        _render_summary(summary)


app.command("env")(env)
app.command("repro")(repro)


app.command("permute")(permute)
app.command("predict")(predict)


def main() -> None:
    """Console-script entry point."""
    app()
