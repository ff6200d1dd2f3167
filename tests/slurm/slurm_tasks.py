"""Task functions and checks for run_slurm_test.sh (importable by the SLURM jobs)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def fails_once(flag: str, value: int) -> int:
    """Raises the first time it runs (no flag file yet), returns ``value`` afterwards."""
    if not os.path.exists(flag):
        Path(flag).write_text("tried")
        raise RuntimeError("transient failure")
    return value


def always_fails(value: int) -> int:
    raise ValueError(f"bad value {value}")


def slow_counted(log: str, seconds: float) -> int:
    """Appends a line per start (so a requeue shows as 2 lines), sleeps, returns the count."""
    with open(log, "a") as f:
        f.write(f"start {time.time()}\n")
    time.sleep(seconds)
    return len(Path(log).read_text().splitlines())


def main(work: str) -> None:
    from calipers.executors import Task, TasksFailed
    from calipers.executors.slurm import SlurmExecutor, squeue_states

    w = Path(work)
    ex = SlurmExecutor(w / "retry", retries=1, time=5, show_progress=False, poll_s=1.0)
    tasks = [Task("flaky", fails_once, {"flag": str(w / "flag"), "value": 7}),
             Task("bad", always_fails, {"value": 3})]
    try:
        ex.map(tasks)
    except TasksFailed as exc:
        msg = str(exc)
        assert "bad (attempts: 2): ValueError: bad value 3" in msg, msg
        assert "log: " in msg and "_log.err" in msg, msg
        assert "flaky" not in msg.split("\n", 1)[1], msg  # retried once, then done
        print("retry: 'flaky' failed once and was resubmitted; 'bad' reported after 2 attempts:")
        print("  " + msg.splitlines()[1].strip() + " | " + msg.splitlines()[2].strip())
    else:
        raise AssertionError("the always-failing task did not raise")

    # pre-emption: requeue a running job (SIGTERM, which submitit ignores, then SIGKILL after
    # KillWait); SLURM queues it again and the task runs again from the start
    ex = SlurmExecutor(w / "requeue", time=5, show_progress=False, poll_s=1.0)
    log = w / "requeue.log"
    done = {}

    def requeue_when_running() -> None:
        for _ in range(600):
            rec = w / "requeue" / "executor.json"
            if rec.is_file():
                import json

                job = json.loads(rec.read_text())["tasks"]["slow"]["job_id"]
                if squeue_states([job]).get(job) == "RUNNING" and log.is_file():
                    subprocess.run(["scontrol", "requeue", job], check=True)
                    done["job"] = job
                    # SLURM holds a requeued job for 2 minutes (BeginTime); skip the wait
                    for _ in range(100):
                        time.sleep(0.5)
                        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"],
                                       capture_output=True)
                        if len(log.read_text().splitlines()) > 1:
                            return
                    return
            time.sleep(0.2)

    t = threading.Thread(target=requeue_when_running)
    t.start()
    (starts,) = ex.map([Task("slow", slow_counted, {"log": str(log), "seconds": 10.0})])
    t.join()
    assert "job" in done and starts == 2, (done, starts)
    print(f"requeue: job {done['job']} requeued while running; the task ran again and finished "
          f"(started {starts} times)")


if __name__ == "__main__":
    main(sys.argv[1])
