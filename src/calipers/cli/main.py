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

from calipers.cli._conventions import CONTEXT_SETTINGS, CalipersGroup
from calipers.cli._executor import DETACH_HELP, EXECUTOR_HELP, executor_errors, make_executor
from calipers.cli.bench import bench
from calipers.cli.gpu import gpu
from calipers.cli.pack import pack
from calipers.cli.permute import permute
from calipers.cli.predict import predict
from calipers.cli.progress import LogCVProgress
from calipers.cli.report import report
from calipers.cli.repro import env, repro
from calipers.cli.status import status
from calipers.exceptions import TrainingError
from calipers.tasks import TaskError

__all__ = ["app", "main"]

app = typer.Typer(
    name="calipers", no_args_is_help=True, add_completion=False,
    cls=CalipersGroup, context_settings=CONTEXT_SETTINGS,
    help="Measure your networks with error bars: CV, MC dropout, paired comparison, "
         "permutation inference.",
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _show_version(value: bool) -> None:
    if value:
        from calipers import __version__

        typer.echo(f"calipers {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_show_version, is_eager=True,
        help="Print the calipers version and exit.")] = False,
) -> None:
    """Measure your networks with error bars: CV, MC dropout, paired comparison, permutation
    inference."""


@contextmanager
def _user_errors():
    """Show expected errors (bad input) as one message and exit 2, without a traceback.

    Bad configurations and data raise ValueError subclasses (``calipers.exceptions``); a
    KeyError or TypeError is a bug and keeps its traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except (OSError, TrainingError, TaskError) as exc:  # run-time failures (full disk, NaN loss)
        causes = list(exc.failures.values()) if isinstance(exc, TaskError) else [exc]
        hint = " Finished folds are kept; rerun the same command to resume." if any(
            isinstance(c, OSError) for c in causes) else ""
        code = 2 if all(isinstance(c, (ValueError, FileNotFoundError)) for c in causes) else 1
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}{hint}", highlight=False)
        raise typer.Exit(code) from None


class _RichCVProgress:
    """Rich progress bars for :func:`~calipers.experiment.engine.cross_validate`: folds overall,
    epochs per fold."""

    def __init__(self, progress: Progress, n_total: int) -> None:
        self.p = progress
        self.total = progress.add_task("folds", total=n_total)
        self.fold = progress.add_task("", total=1, visible=False)

    def _show(self) -> None:
        if not self.p.live.is_started:
            self.p.start()

    def fold_start(self, network: str, split: int, n_splits: int, n_epochs: int) -> None:
        self._show()
        self.p.reset(self.fold, total=n_epochs, visible=True,
                     description=f"{network} fold {split + 1}/{n_splits}")

    def phase(self, description: str, n_epochs: int) -> None:
        """A stage that trains many folds at once (batched training)."""
        self._show()
        self.p.reset(self.fold, total=n_epochs, visible=True, description=escape(description))

    def epoch(self, epoch: int, n_epochs: int, loss: float) -> None:
        self.p.update(self.fold, completed=epoch,
                      description=self.p.tasks[self.fold].description.split(" loss")[0]
                      + f" loss {loss:.4f}")

    def fold_end(self, result) -> None:
        self._show()
        self.p.advance(self.total)


def _render_summary(summary) -> None:
    d = summary.to_dict()
    metric = d["metric"]
    from calipers._format import estimate
    from calipers.report.headline import chosen_label, summary_headline
    from calipers.stats.scales import metric_scale

    held = d.get("protocol") == "holdout"
    table = Table(title=f"{metric} over {d['n_splits']} folds (mean ± std; 95% CI corrected for "
                        f"overlapping training sets)" if not held
                  else f"{metric} on one held-out test set (value ± bootstrap SE, 95% CI)")
    table.add_column("network")
    extra = ("nll", "ece", "entropy", "rmse", "gaussian_nll", "log_likelihood")
    for m in (metric, *(m for m in extra
                        if m != metric and m in next(iter(d["networks"].values())))):
        table.add_column(m, justify="right")
    cols = [c.header for c in table.columns[1:]]
    label = chosen_label(d)
    for name, per in d["networks"].items():
        cells = []
        for m in cols:
            s = per[m]
            pct = metric_scale(m).percent  # dice_1, ... as mean_dice
            if held:  # one split: test-set value, bootstrap SE and interval (or a point)
                se = s.get("se")
                est = estimate(s["mean"], s.get("ci_low"), s.get("ci_high"), std=se,
                               percent=pct)
                cells.append(est.pm() + ("" if se is None else f"\n{est.ci()}")
                             if se is not None else est.pm().split(" ±")[0])
                continue
            used = s.get("n_folds", d["n_splits"])
            note = f"\n({used}/{d['n_splits']} folds)" if used != d["n_splits"] else ""
            if s.get("mean") is None:  # undefined on too many folds
                cells.append("—" + note)
                continue
            est = estimate(s["mean"], s["ci_low"], s["ci_high"], std=s["std"], percent=pct)
            cells.append(f"{est.pm()}\n{est.ci()}{note}")
        table.add_row(name + (label if name == d.get("best") else ""), *cells)
    console.print(table)
    if held:
        first = next(iter(d["networks"].values()))[metric]
        console.print(f"Intervals: {first['interval']}.", highlight=False)
    console.print(f"[bold]{escape(summary_headline(d))}[/]", highlight=False)
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


def _run(config, out: Path, report: bool = True, executor=None):
    from calipers.experiment.runner import run_experiment

    n_splits = config.cv.folds * config.cv.repeats
    if config.cv.splits is not None:  # predefined splits: count them (a bad path errors later)
        from calipers.evaluation.splits import read_splits

        try:
            n_splits = len(read_splits(config.cv.splits))
        except (OSError, ValueError):
            pass
    n = len(config.networks) * n_splits
    if executor is not None:  # the executor shows task progress itself
        with executor_errors(err_console):
            res = run_experiment(config, out, report=report, executor=executor)
        _render_summary(res.summary)
        console.print(f"Run folder: {res.run_dir}", highlight=False)
        return res
    p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                 TimeElapsedColumn(), console=console, transient=True)
    progress = _RichCVProgress(p, n) if console.is_terminal else LogCVProgress(sys.stdout, n)
    try:
        res = run_experiment(config, out, progress=progress, report=report)
    finally:
        p.stop()
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
    executor: Annotated[str | None, typer.Option("--executor", help=EXECUTOR_HELP)] = None,
    detach: Annotated[bool, typer.Option("--detach", help=DETACH_HELP)] = False,
) -> None:
    """Cross-validate the networks of CONFIG on identical folds; resumable.

    Example: calipers cv experiment.toml --out runs/exp1   (rerun the same to resume)
    """
    from calipers.config import load_config

    with _user_errors(), executor_errors(err_console):
        cfg = _with_determinism(load_config(config), deterministic)
        run_dir = out or Path("runs") / config.stem
        ex, _ = make_executor(cfg.executor, executor, detach=detach, run_dir=run_dir)
        _run(cfg, run_dir, report=not no_report, executor=ex)


def _check_compare_args(run_dirs: list[Path], a: str | None, b: str | None) -> None:
    """Refuse half a pair, a network compared with itself and a run passed twice."""
    if (a is None) != (b is None):
        given, lacking = ("--a", "--b") if b is None else ("--b", "--a")
        raise ValueError(f"{given} needs {lacking}: name both networks of the pair, e.g. "
                         "--a A --b B (or neither, to compare the first two).")
    if a is not None and a == b:
        raise ValueError(f"--a and --b are both {a!r}; a network cannot be compared with "
                         "itself. Name two different networks.")
    seen: dict[Path, Path] = {}
    for d in run_dirs:
        if not d.exists():
            raise FileNotFoundError(f"{d} does not exist; pass a run folder written by "
                                    "`calipers cv` or `calipers demo`.")
        key = d.resolve()
        if key in seen:
            raise ValueError(f"{d} is passed twice (as {seen[key]} and {d}); a run compared "
                             "with itself says nothing. Pass each run folder once.")
        seen[key] = d


@app.command("compare")
def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folder(s) made on the same folds.")],
    a: Annotated[str | None, typer.Option("--a", help="First network (baseline).")] = None,
    b: Annotated[str | None, typer.Option("--b", help="Second network.")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric to compare on.")] = None,
    alpha: Annotated[float, typer.Option(
        "--alpha", help="Significance level of the corrected t-test.")] = 0.05,
    rope: Annotated[float | None, typer.Option(
        "--rope", help="Margin of practical equivalence in the metric's units (percentage "
        "points for accuracy, ECE, Dice); 0 turns equivalence off. Default: 1 point for rates, "
        "none otherwise.")] = None,
    power: Annotated[bool, typer.Option(
        "--power", help="Print the difference detectable with 80% power for 1, 3, 5 and 10 "
        "repeats (the run is the pilot).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
    allow_different_data: Annotated[bool, typer.Option(
        "--allow-different-data", help="Compare runs whose data fingerprints differ.")] = False,
) -> None:
    """Paired comparison of finished runs: corrected t, equivalence, P(B better), verdict.

    Example: calipers compare runs/demo --a A --b B --metric nll
    """
    import warnings

    from calipers.experiment.summary import compare_runs

    if power:
        with _user_errors():
            _check_compare_args(run_dirs, a, b)
        _power(run_dirs, metric=metric, a=a, b=b, alpha=alpha, as_json=as_json)
        return
    with _user_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check_compare_args(run_dirs, a, b)
        summary = compare_runs(run_dirs, metric=metric, a=a, b=b, alpha=alpha, rope=rope,
                               allow_different_data=allow_different_data)
    for w in caught:
        err_console.print(f"[yellow]Note:[/] {escape(str(w.message))}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    else:
        _render_summary(summary)


def _power(run_dirs, *, metric, a, b, alpha, as_json: bool) -> None:
    from calipers.experiment.plan import plan_power
    from calipers.stats.scales import metric_scale

    with _user_errors():
        plan = plan_power(run_dirs, metric=metric, a=a, b=b, alpha=alpha)
    if as_json:
        sys.stdout.write(json.dumps(plan.to_dict(), indent=2) + "\n")
        return
    an = plan.analysis
    k, unit = (100, " points") if metric_scale(plan.metric).percent else (1, "")
    table = Table(title=f"{plan.b} − {plan.a} on {plan.metric}: smallest difference detected "
                        f"with {an.power:.0%} power (two-sided α = {an.alpha:g})")
    for col in ("repeats", "folds", "detectable difference"):
        table.add_column(col, justify="right")
    for r, det in zip(an.repeats, an.detectable, strict=True):
        table.add_row(str(r), str(r * an.n_folds), f"{k * det:.2f}{unit}" if unit else
                      f"{det:.3g}")
    console.print(table)
    fmt = ".2f" if unit else ".3g"
    diff = format(k * plan.diff_mean, "+" + fmt).replace("-", "−")
    console.print(
        f"Pilot: {plan.n_repeats}×{an.n_folds}-fold, observed {plan.b} − {plan.a} = "
        f"{diff}{unit}, fold-difference std {k * an.std_diff:{fmt}}{unit}. "
        f"Repeats shrink only the 1/J part of the variance ({an.repeat_share:.0%} of it with one "
        f"repeat); with unlimited repeats the detectable difference is still "
        f"{k * an.limit:{fmt}}{unit} — below that, more data is needed, not more repeats.",
        highlight=False)


app.command("env")(env)
app.command("repro")(repro)


app.command("permute")(permute)
app.command("predict")(predict)
app.command("gpu")(gpu)
app.command("bench")(bench)
app.command("pack")(pack)
app.command("report")(report)
app.command("status")(status)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="calipers")
