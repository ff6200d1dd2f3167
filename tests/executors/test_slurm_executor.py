"""The SLURM executor without a cluster: the sbatch script it writes, and sbatch's refusal.

A real one-node cluster runs in ``tests/slurm/run_slurm_test.sh`` (make test-slurm).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from calipers.executors import Task, get_executor


def _tool(folder: Path, name: str, body: str) -> None:
    p = folder / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch that refuses the job with SLURM's message, srun, squeue and apptainer stubs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "sbatch", 'echo "sbatch: error: invalid partition specified: nosuch" >&2\n'
                             'echo "sbatch: error: Batch job submission failed: Invalid '
                             'partition name specified" >&2\nexit 1\n')
    for name in ("srun", "squeue", "apptainer"):
        _tool(bin_dir, name, "exit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_sbatch_script_has_the_options_and_the_container(fake_slurm):
    image = fake_slurm / "calipers.sif"
    image.write_bytes(b"")
    run = fake_slurm / "run"
    ex = get_executor({"kind": "slurm", "partition": "gpu", "time": 90, "gpus_per_task": 1,
                       "cpus_per_task": 8, "mem": "32G", "account": "proj", "qos": "high",
                       "additional": {"constraint": "a100"}, "setup": ["module load cuda"],
                       "container": str(image), "binds": [str(fake_slurm / "data")],
                       "max_parallel": 4}, run_dir=run)
    text = ex._ex._make_submission_file_text(ex._ex._submitit_command_str, "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --account=proj",
                 "#SBATCH --qos=high", "#SBATCH --constraint=a100", "module load cuda",
                 f"#SBATCH --job-name=calipers-{run.name}"):
        assert line in text.splitlines(), (line, text)
    bind = f"{run.resolve()},{(fake_slurm / 'data').resolve()}"
    assert (f"apptainer exec --nv --bind {bind} {image.resolve()} python -u -m "
            f"submitit.core._submit") in text


def test_sbatch_refusal_is_shown(fake_slurm):
    ex = get_executor({"kind": "slurm", "partition": "nosuch"}, run_dir=fake_slurm / "run",
                      show_progress=False)
    with pytest.raises(ValueError, match="SLURM rejected the job array.*invalid partition "
                                         "specified: nosuch"):
        ex.map([Task("t", print, {})])


def test_slurm_needs_sbatch_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="sbatch/srun are not on PATH"):
        get_executor("slurm", run_dir=tmp_path)
