"""``slurm``: tasks as submitit job arrays on a SLURM cluster, optionally inside Apptainer.

Each call of :meth:`SlurmExecutor.map` submits the unfinished tasks as one job array (files in
``RUN/slurm/``: sbatch script, pickles, ``<job>_<task>_log.out/err``), saves the job ids in
``RUN/executor.json`` and waits (or, ``detach=True``, returns at once by raising
:class:`~calipers.executors.Detached`). Job states come from ``squeue`` and from the result
files submitit writes, so no accounting database (``sacct``) is needed.

# NOTE [Requeue and retries]
A pre-empted job is requeued by submitit; a job that hits its time limit is requeued too (up to
``retries`` times), because every task is checkpointable trivially: it reruns from the start and
writes its outputs atomically, marker last. A task that *raises* is resubmitted as a new job, up
to ``retries`` times, after the others of its round finished.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from calipers.executors._errors import Detached, TaskFailure, TasksFailed
from calipers.executors._progress import TaskProgress
from calipers.executors._record import TaskRecorder
from calipers.tasks import Task

__all__ = ["SlurmExecutor", "container_python", "squeue_states"]

_SLURM_EXTRA = "calipers[slurm]"


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError(f"--executor slurm needs submitit, which is not installed; install "
                          f"the extra: pip install '{_SLURM_EXTRA}' (or: pip install submitit)."
                          ) from None
    return submitit


def container_python(image: str | Path, binds: Sequence[str | Path], *,
                     python: str = "python") -> str:
    """The command that starts Python inside ``image``: ``apptainer exec --nv --bind ... python``.

    Raises when the image is missing or ``apptainer`` is not on PATH (checked on the submitting
    machine, which on SLURM sees the same software as the nodes).
    """
    image = Path(image)
    if not image.is_file():
        raise FileNotFoundError(f"executor container image {image} does not exist; build it "
                                f"(apptainer build calipers.sif docker-daemon://calipers:latest) "
                                f"or fix [executor] container.")
    if shutil.which("apptainer") is None:
        raise FileNotFoundError("[executor] container is set, but apptainer is not on PATH; load "
                                "it (module load apptainer) or remove container to run tasks "
                                "with this Python.")
    bind = ",".join(dict.fromkeys(str(Path(b).resolve()) for b in binds))
    return (f"apptainer exec --nv --bind {shlex.quote(bind)} {shlex.quote(str(image.resolve()))} "
            f"{python}")


def squeue_states(job_ids: Sequence[str]) -> dict[str, str]:
    """``{job id: SLURM state}`` of the jobs still known to ``squeue`` (pending, running...)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return {j: states[j] for j in job_ids if j in states}


def _outcome(job: Any) -> tuple[bool, Any]:
    """(True, result) or (False, the task's traceback text) from submitit's result file."""
    import pickle

    try:
        with open(job.paths.result_pickle, "rb") as f:
            outcome, value = pickle.load(f)  # written by submitit for our own job
    except Exception as exc:  # unreadable: fall back on submitit's own message
        try:
            return True, job.result()
        except Exception as exc2:
            return False, f"{exc2}\n(result file: {exc})"
    if outcome == "success":
        return True, value
    return False, str(value)


class _Call:
    """What a SLURM job runs: one task; checkpointable (NOTE [Requeue and retries])."""

    def __call__(self, task: Task) -> Any:
        return task.run()

    def checkpoint(self, task: Task) -> Any:
        return _submitit().helpers.DelayedSubmission(self, task)


class SlurmExecutor:
    """Run tasks as SLURM job arrays with submitit.

    Parameters
    ----------
    run_dir : path
        The run folder (shared file system); submitit's files go in ``run_dir/slurm``.
    partition, account, qos : str, optional
    time : int, default 60
        Time limit per task, minutes.
    gpus_per_task, cpus_per_task : int
    mem : str, optional
        Memory per task, e.g. ``"16G"``.
    additional : mapping, optional
        Extra ``#SBATCH`` options, e.g. ``{"constraint": "a100"}`` (submitit's
        ``slurm_additional_parameters``).
    setup : list of str
        Shell lines run before the task (``module load ...``).
    container : path, optional
        Apptainer image: tasks run under ``apptainer exec --nv`` with the run folder (and
        ``binds``) bound.
    retries : int
        Resubmissions of a failed task; also the number of time-out requeues.
    max_parallel : int, optional
        At most this many array tasks at once (``--array=...%N``).
    detach : bool
        Return after submission (raise :class:`Detached`) instead of waiting.
    """

    name = "slurm"

    def __init__(self, run_dir: str | Path, *, partition: str | None = None, time: int = 60,
                 gpus_per_task: int = 0, cpus_per_task: int = 1, mem: str | None = None,
                 account: str | None = None, qos: str | None = None,
                 additional: Mapping[str, Any] | None = None, setup: Sequence[str] = (),
                 container: str | Path | None = None, binds: Sequence[str | Path] = (),
                 retries: int = 0, max_parallel: int | None = None, detach: bool = False,
                 poll_s: float = 2.0, show_progress: bool = True) -> None:
        submitit = _submitit()
        self.run_dir = Path(run_dir).resolve()
        python = None
        if container is not None:
            python = container_python(container, [self.run_dir, *binds])
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise FileNotFoundError("--executor slurm: sbatch/srun are not on PATH; run calipers "
                                    "on a SLURM login node (or use --executor local).")
        self.folder = self.run_dir / "slurm"
        self._ex = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=retries,
                                          python=python)
        params: dict[str, Any] = {"time": int(time), "cpus_per_task": int(cpus_per_task),
                                  "job_name": f"calipers-{self.run_dir.name}",
                                  "signal_delay_s": 60}
        if gpus_per_task:
            params["gpus_per_task"] = int(gpus_per_task)
        for key, value in (("partition", partition), ("mem", mem), ("account", account),
                           ("qos", qos), ("array_parallelism", max_parallel)):
            if value is not None:
                params[key] = value
        if additional:
            params["additional_parameters"] = dict(additional)
        if setup:
            params["setup"] = list(setup)
        self._ex.update_parameters(**params)
        self.retries, self.detach, self.poll_s = int(retries), detach, poll_s
        self.show_progress = show_progress

    def map(self, tasks: Sequence[Task], *,
            on_done: Callable[[Task, Any], None] | None = None) -> list[Any]:
        """Submit every task as one job array, wait, return results in task order."""
        results: list[Any] = [None] * len(tasks)
        if not tasks:
            return results
        rec = TaskRecorder(self.run_dir, self.name, tasks,
                           extra={"slurm_folder": str(self.folder)})
        attempts = [0] * len(tasks)
        failures: dict[int, TaskFailure] = {}
        progress = TaskProgress([t.key for t in tasks], enabled=self.show_progress)
        jobs = self._adopt(tasks, rec)  # still queued/running from an earlier (detached) session
        jobs.update(self._submit(tasks, [i for i in range(len(tasks)) if i not in jobs],
                                 attempts, rec))
        if self.detach:
            rec.save(detached=True)
            raise Detached(self.run_dir, [j.job_id for j in jobs.values()])
        with progress:
            while jobs:
                states = squeue_states([j.job_id for j in jobs.values()])
                again = []
                for i, job in list(jobs.items()):
                    task = tasks[i]
                    state = states.get(job.job_id)
                    if not job.paths.result_pickle.exists():
                        if state is not None:  # still queued or running
                            now = "running" if state in ("RUNNING", "COMPLETING") else "queued"
                            progress.update(task.key, now)
                            rec.set(task.key, state=now)
                            continue
                        time.sleep(1.0)  # result files land just before squeue forgets the job
                        if not job.paths.result_pickle.exists():
                            err = (f"job {job.job_id} ended without a result (cancelled, killed "
                                   f"or out of memory); see {job.paths.stderr}")
                            again += self._failed(i, task, err, job, attempts, failures, rec,
                                                  progress)
                            del jobs[i]
                            continue
                    del jobs[i]
                    ok, value = _outcome(job)
                    if not ok:
                        again += self._failed(i, task, value, job, attempts, failures, rec,
                                              progress)
                        continue
                    results[i] = value
                    rec.set(task.key, state="done")
                    progress.update(task.key, "done")
                    if on_done is not None:
                        on_done(task, results[i])
                if again:
                    jobs.update(self._submit(tasks, again, attempts, rec))
                rec.save()
                if jobs:
                    time.sleep(self.poll_s)
        rec.save()
        if failures:
            raise TasksFailed([failures[i] for i in sorted(failures)], len(tasks))
        return results

    def _failed(self, i, task, err, job, attempts, failures, rec, progress) -> list[int]:
        last = err.strip().splitlines()[-1] if err.strip() else "failed"
        if attempts[i] <= self.retries:
            progress.update(task.key, "retry", last)
            return [i]
        failures[i] = TaskFailure(task.key, err, Path(job.paths.stderr), attempts[i])
        rec.set(task.key, state="failed", error=err[-2000:])
        progress.update(task.key, "failed", last)
        return []

    def _adopt(self, tasks, rec) -> dict[int, Any]:
        """Jobs of these tasks that an earlier session submitted and SLURM still holds: wait
        for them instead of submitting the tasks twice."""
        old = {k: e.get("job_id") for k, e in rec.previous.items() if e.get("job_id")}
        live = squeue_states(list(old.values()))
        out = {}
        for i, task in enumerate(tasks):
            job_id = old.get(task.key)
            if job_id in live:
                out[i] = _submitit().SlurmJob(folder=self.folder / "%j", job_id=job_id,
                                              tasks=[0])
                rec.set(task.key, state="queued", job_id=job_id)
        return out

    def _submit(self, tasks, which: list[int], attempts, rec) -> dict[int, Any]:
        if not which:
            return {}
        submitit = _submitit()
        try:
            jobs = self._ex.map_array(_Call(), [tasks[i] for i in which])
        except (submitit.core.utils.FailedJobError,
                submitit.core.utils.FailedSubmissionError) as exc:
            raise ValueError(f"SLURM rejected the job array ({self.folder}): {exc}".strip()
                             ) from None
        out = {}
        for i, job in zip(which, jobs, strict=True):
            attempts[i] += 1
            rec.set(tasks[i].key, state="queued", job_id=job.job_id, attempts=attempts[i],
                    log=str(job.paths.stderr), result=str(job.paths.result_pickle))
            out[i] = job
        rec.save()
        return out
