"""``calipers predict``: segment a folder with uncertainty maps (:func:`predict_folder`).

Registered by ``cli.py`` as ``app.command("predict")(predict)``; ``main()`` runs it alone.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from calipers.cli.progress import LogProgress

__all__ = ["main", "predict"]

_EPILOG = ("Example: calipers predict --model runs/hippo --in new_scans/ --out seg/ --mc 20  "
           "(a run folder's folds form an ensemble; a .pt from export_checkpoint works too)")


def predict(
    model: Path = typer.Option(..., "--model", help="Run folder or checkpoint file (.pt)."),
    in_dir: Path = typer.Option(..., "--in", help="Folder of .nii/.nii.gz/.png images "
                                "(segmentation), or an .npy/.npz/.csv file of samples."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (created if needed)."),
    mc: int = typer.Option(20, "--mc", min=0,
                           help="MC-dropout passes per model (0: deterministic)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:<i>."),
    network: str | None = typer.Option(None, "--network", help="Network of a run folder."),
    seed: int = typer.Option(0, "--seed", help="Seed of the dropout masks."),
    roi: str | None = typer.Option(None, "--roi", help="Sliding-window size, e.g. 48,64,48 "
                                   "(for images larger than the training shape)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace outputs that already exist in --out."),
    executor: str | None = typer.Option(None, "--executor", help="serial, local[:N] or slurm: "
                                        "segment chunks of the files as tasks."),
    chunks: int | None = typer.Option(None, "--chunks", help="Tasks to split the files into "
                                      "(default: the executor's workers; slurm: 1)."),
    detach: bool = typer.Option(False, "--detach", help="With slurm: return after submission; "
                                "follow with calipers status --out, rerun to finish."),
    trust: list[str] = typer.Option([], "--trust", help="scikit-learn runs: a type in "
                                    "model.skops to trust beyond skops' defaults (repeatable)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="scikit-learn runs: load "
                                      "model.pkl files (pickle runs code; your own runs only)."),
    code: Path | None = typer.Option(None, "--code", help="Folder of the modules the run's "
                                     "config names (e.g. the config's folder), if not on "
                                     "PYTHONPATH."),
) -> None:
    """Segment every image in --in with uncertainty maps (NIfTI in, NIfTI out); for a
    classification or regression run, predict the samples of an .npy/.npz/.csv file.

    Writes NAME_seg, NAME_entropy, NAME_mi, NAME_std (NAME_disagreement for an ensemble) and
    summary.csv into --out, which must not be or lie inside --in (nor --in inside --out);
    existing outputs are replaced only with --overwrite. Exits 1 if any file failed (the
    others are written), 2 on bad input.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from calipers.cli._executor import executor_errors, make_executor
    from calipers.exceptions import DataError
    from calipers.gpu.monitor import gpu_monitor
    from calipers.segmentation.predict import load_predictor, predict_folder

    err = Console(stderr=True, soft_wrap=True)
    from calipers.learners.predict import is_table_run

    if code is not None:
        from calipers._paths import add_model_dir

        add_model_dir(code)
    if is_table_run(model):
        _predict_table(err, model, in_dir, out_dir, mc=mc, device=device, network=network,
                       seed=seed, overwrite=overwrite, trust=trust, trust_pickle=trust_pickle,
                       unused={"--roi": roi, "--executor": executor, "--chunks": chunks})
        return
    try:
        ex, spec = make_executor(None, executor, detach=detach, run_dir=out_dir / ".calipers",
                                 chunks=chunks, show_progress=not quiet,
                                 binds=(in_dir, model if model.is_dir() else model.parent, out_dir))
        quiet = quiet or (ex is not None and spec.kind != "serial")
        try:
            roi_size = None if roi is None else tuple(int(v) for v in roi.split(","))
        except ValueError:
            raise ValueError(f"--roi must be sizes separated by commas, e.g. 48,64,48; got "
                             f"{roi!r}.") from None
        pred = load_predictor(model, network=network, device=device)
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       console=err, disable=quiet)
        task = bar.add_task("segmenting", total=None)
        log = LogProgress(sys.stderr, unit="file")

        mon = None

        def step(done: int, total: int, name: str) -> None:
            if mon is not None:
                mon.mark(name)  # one gpu.json segment per file
            if quiet:
                return
            if not err.is_terminal:  # logs: one plain line per file
                log.update(done, total, label=name)
                return
            if not bar.live.is_started:  # drawn from the first file: no bar before an error
                bar.start()
            bar.update(task, completed=done, total=total, description=name)

        try:
            with executor_errors(err), gpu_monitor(out_dir, device) as mon:
                res = predict_folder(pred if ex is None else model, in_dir, out_dir, n_mc=mc,
                                     seed=seed, device=device, progress=step,
                                     roi_size=roi_size, overwrite=overwrite, network=network,
                                     executor=ex, n_chunks=spec.chunks)
        finally:
            bar.stop()
    except (ValueError, FileNotFoundError, DataError, ImportError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    for name, why in res.failed:
        err.print(f"[bold red]skipped[/] {escape(str(name))}: {escape(str(why))}", highlight=False)
    err.print(f"{len(res.done)} segmented ({res.n_models} model(s) × {res.n_mc} passes), "
              f"{len(res.failed)} failed; outputs in {res.out_dir}", highlight=False)
    if res.failed:
        raise typer.Exit(1)


def _predict_table(err: Any, model: Path, in_path: Path, out_dir: Path, *, mc: int,
                   device: str, network: str | None, seed: int, overwrite: bool,
                   trust: list[str], trust_pickle: bool, unused: dict[str, Any]) -> None:
    """A classification or regression run: :func:`calipers.learners.predict.predict_file`."""
    from calipers.exceptions import ConfigError, DataError
    from calipers.learners.predict import predict_file

    try:
        given = [k for k, v in unused.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} are for segmentation runs; {model} is a "
                             "classification or regression run.")
        res = predict_file(model, in_path, out_dir, network=network, n_mc=mc, seed=seed,
                           device=device, overwrite=overwrite, trusted=trust,
                           trust_pickle=trust_pickle)
    except (ValueError, FileNotFoundError, DataError, ConfigError, ImportError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    for note in res.notes:
        err.print(f"note: {escape(note)}", highlight=False)
    passes = f"{res.n_mc} MC passes" if res.n_mc else "deterministic"
    err.print(f"{res.n_samples} samples predicted by network {escape(res.network)} "
              f"({res.n_models} fold model(s), {passes}); wrote {escape(str(res.path))}",
              highlight=False)


predict.__doc__ = inspect.cleandoc(predict.__doc__ or "") + "\n\n" + _EPILOG


def main() -> None:
    """Run ``predict`` as a stand-alone command (``python -m calipers.cli.predict``)."""
    typer.run(predict)


if __name__ == "__main__":
    main()
