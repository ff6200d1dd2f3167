"""``calipers permute``: randomise's command line over :func:`calipers.permutation.permute_images`.

Registered by ``cli.py`` as ``app.command("permute")(permute)``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer
from rich.markup import escape

from calipers.cli.progress import LogProgress

__all__ = ["permute"]


def permute(
    inputs: list[str] = typer.Option(
        ..., "-i", "--input", help="4-D NIfTI, or 3-D NIfTI/Analyze files or a glob (repeat -i)."
    ),
    output: str = typer.Option(
        ..., "-o", "--output",
        help="Output prefix, e.g. out/grp (out/grp_tstat1.nii.gz ...); out/ writes "
             "out/tstat1.nii.gz ...",
    ),
    design: Path | None = typer.Option(None, "-d", "--design", help="Design (.mat VEST or CSV)."),
    tcon: Path | None = typer.Option(None, "-t", "--tcon", help="t-contrasts (.con or CSV)."),
    fcon: Path | None = typer.Option(None, "-f", "--fcon", help="F-tests (.fts)."),
    mask: Path | None = typer.Option(None, "-m", "--mask", help="Mask image (default: data)."),
    one_sample: bool = typer.Option(
        False, "-1", "--one-sample", help="One-sample test (sign flips)."
    ),
    n_perm: int = typer.Option(5000, "-n", "--num-perm", min=2, help="Number of permutations."),
    vox_corrp: bool = typer.Option(False, "-x", "--corrp", help="Write voxelwise FWE images."),
    uncorrp: bool = typer.Option(False, "--uncorrp", help="Write uncorrected p images."),
    tfce: bool = typer.Option(False, "-T", "--tfce", help="TFCE (H=2, E=0.5, C=6)."),
    cluster_t: float | None = typer.Option(None, "-c", min=0,
                                           help="Cluster-extent threshold (> 0)."),
    cluster_m: float | None = typer.Option(None, "-C", min=0,
                                           help="Cluster-mass threshold (> 0)."),
    groups: Path | None = typer.Option(None, "-e", help="Exchangeability blocks (.grp)."),
    demean: bool = typer.Option(False, "-D", help="Demean data and design."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random permutations."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:<i>."),
    logp: bool = typer.Option(False, "--logp", help="Write -log10 p instead of 1 - p."),
    tfce_h: float = typer.Option(2.0, "--tfce_H", help="TFCE height exponent."),
    tfce_e: float = typer.Option(0.5, "--tfce_E", help="TFCE extent exponent."),
    tfce_c: int = typer.Option(6, "--tfce_C", help="TFCE connectivity (6, 18, 26)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier run's outputs of this prefix."
    ),
    executor: str | None = typer.Option(None, "--executor", help="serial, local[:N] or slurm: "
                                        "run chunks of permutations as tasks."),
    chunks: int | None = typer.Option(None, "--chunks", help="Tasks to split the permutations "
                                      "into (default: the executor's workers; slurm: 1)."),
    detach: bool = typer.Option(False, "--detach", help="With slurm: return after submission; "
                                "follow with calipers status <out>_tasks, rerun to combine."),
) -> None:
    """Permutation inference on images with FSL randomise's flags and output names.

    p-images hold 1 - p (or -log10 p with --logp); <out>_summary.json has the counts of
    significant voxels, the critical values and the max-statistic null distributions.

    With --executor or --chunks the permutations run as chunk tasks whose files go to
    <out>_tasks/ (rerun to finish an interrupted run); p-maps equal a single run's.

    Examples: one-sample test with TFCE, as randomise -1 -T:

        calipers permute -i 'con_*.nii.gz' -o out/grp -1 -T -n 5000

    GLM with nuisance, voxelwise FWE:

        calipers permute -i all.nii.gz -o out/glm -d design.mat -t design.con -m mask.nii.gz -x
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from calipers.cli._executor import executor_errors, make_executor
    from calipers.exceptions import CalipersWarning
    from calipers.gpu.monitor import gpu_monitor
    from calipers.permutation.images import permute_images

    err = Console(stderr=True)
    work_dir = Path(f"{output}_tasks")
    try:
        ex, spec = make_executor(None, executor, detach=detach, run_dir=work_dir, chunks=chunks,
                                 show_progress=not quiet)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        err.print(f"[red]Error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=2) from None
    quiet = quiet or (ex is not None and spec.kind != "serial")  # the executor shows progress
    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err, disable=quiet, transient=False,
    )
    task = progress.add_task("permutations", total=None)
    log = LogProgress(sys.stderr, unit="permutation", every=10.0)

    mon = None

    def _update(done: int, total: int) -> None:
        if mon is not None:  # one gpu.json segment per chunk, quiet or not
            mon.mark(f"permutations to {done} of {total}")
        if quiet:
            return
        if not err.is_terminal:  # logs: a plain line at most every 10 s
            log.update(done, total)
        elif not progress.live.is_started:  # drawn from the first chunk: no bar before an error
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        with executor_errors(err), warnings.catch_warnings(record=True) as caught, \
                gpu_monitor(Path(output).parent, device) as mon:  # its advice: a Note below
            warnings.simplefilter("always", CalipersWarning)
            out = permute_images(
                inputs if len(inputs) > 1 else inputs[0], output,
                design=design, contrasts=tcon, f_tests=fcon, mask=mask, one_sample=one_sample,
                n_permutations=n_perm, tfce=tfce, cluster_extent_threshold=cluster_t,
                cluster_mass_threshold=cluster_m, exchangeability_blocks=groups, demean=demean,
                vox_corrp=vox_corrp, uncorrp=uncorrp, logp=logp, seed=seed, device=device,
                tfce_H=tfce_h, tfce_E=tfce_e, tfce_connectivity=tfce_c, progress=_update,
                overwrite=overwrite,
                executor=ex, n_chunks=spec.chunks, work_dir=work_dir if ex is not None else None,
            )
    except (ValueError, FileNotFoundError, OSError) as exc:
        progress.stop()
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(code=2) from None
    progress.stop()
    for w in caught:
        err.print(f"[yellow]Note:[/yellow] {w.message}", highlight=False)
    _report(err, out)


def _report(console, out) -> None:
    s = out.summary
    console.print(
        f"{s['n_subjects']} images, {s['n_voxels']} voxels"
        + (f" ({s['n_nan_excluded']} NaN voxels excluded)" if s["n_nan_excluded"] else "")
        + f", {s['runtime_s']:.2f} s on {s['device']}",
        highlight=False,
    )
    for i, name in enumerate(s["names"]):
        sig = {k: v[i] for k, v in s["n_significant"].items()}
        console.print(
            f"{name}: max {s['max_statistic'][i]:.3f}, {s['n_permutations'][i]} "
            f"{s['methods'][i]}s{' (exhaustive)' if s['exhaustive'][i] else ''}; "
            f"voxels at p <= 0.05: " + ", ".join(f"{k} {v}" for k, v in sig.items()),
            highlight=False,
        )
    console.print(f"wrote {len(out.files)} files in {out.files[0].parent}", highlight=False)
