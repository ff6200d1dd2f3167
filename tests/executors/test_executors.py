"""Executors: serial and local give the same run folder, retries, resume, bad input, status."""

from __future__ import annotations

import filecmp
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calipers.cli import app
from calipers.config import parse_config
from calipers.evaluation.cv import NetworkSpec, run_fold
from calipers.evaluation.folds import make_folds
from calipers.executors import (
    ExecutorSpec,
    LocalExecutor,
    SerialExecutor,
    Task,
    TasksFailed,
    get_executor,
)
from calipers.executors.status import run_status
from calipers.experiment.engine import cross_validate
from calipers.experiment.runner import run_experiment
from calipers.runs import fold_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def pool2():
    """Two spawned workers, one thread each, shared by this module's tests (workers start
    slowly on a busy machine); each test sets its own run_dir and retries."""
    with LocalExecutor(2, threads=1, show_progress=False) as ex:
        yield ex

_RAW = {
    "data": {"kind": "digits", "task": "classification"},
    "cv": {"folds": 2, "seed": 0},
    "train": {"epochs": 1, "batch_size": 64},
    "mc": {"samples": 3},
    "networks": {
        "A": {"model": "calipers.models:CNN", "args": {"channels": 4, "dropout": 0.1}},
        "M": {"model": "calipers.models:MLP", "args": {"hidden": [16], "dropout": 0.1}},
    },
}


# --- task functions (module level: the spawned workers import them by reference) -------------

def _square(x: int, out: str | None = None) -> int:
    if out:
        Path(out).write_text(str(x * x))
    return x * x


def _fails_once(flag: str, value: int) -> int:
    """Raises the first time (no flag file yet), returns ``value`` the second time."""
    if not os.path.exists(flag):
        Path(flag).write_text("tried")
        raise RuntimeError("transient failure")
    return value


def _always_fails(value: int) -> int:
    raise ValueError(f"bad value {value}")


def _dies_once_on_split_2(spec, data, *, progress=None):
    """A fold task whose worker process is killed (os._exit) the first time it runs split 2."""
    flag = _kill_flag(os.getppid())  # the worker's parent is the test process
    if spec.split == 2 and not flag.exists():
        flag.write_text("killed")
        os._exit(9)
    return run_fold(spec, data, progress=progress)


def _kill_flag(pid: int) -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"calipers-test-killed-{pid}"


def _interrupted_at_split_2(spec, data, *, progress=None):
    if spec.split == 2:
        raise KeyboardInterrupt  # the whole run stops here, as with Ctrl-C or a kill
    return run_fold(spec, data, progress=progress)


# --- serial vs local ----------------------------------------------------------------------------

def test_serial_and_local_cv_write_identical_results(tmp_path, pool2):
    """A CNN and an MLP, 2 folds: serial in-process vs 2 spawned workers (one thread each)."""
    import torch

    torch.set_num_threads(1)  # as the workers (bit-identical needs the same thread count)
    cfg = parse_config(_RAW)
    run_experiment(cfg, tmp_path / "serial", report=False)
    ex = get_executor("local:2", run_dir=tmp_path / "local", show_progress=False)
    assert isinstance(ex, LocalExecutor) and ex.workers == 2 and ex.threads >= 1
    pool2.run_dir, pool2.retries = tmp_path / "local", 0  # same settings, workers already up
    run_experiment(cfg, tmp_path / "local", report=False, executor=pool2)
    for name in ("summary.json", "metrics.csv"):
        assert filecmp.cmp(tmp_path / "serial" / name, tmp_path / "local" / name, shallow=False)
    with np.load(fold_dir(tmp_path / "serial", "A", 1) / "predictions.npz") as a, \
            np.load(fold_dir(tmp_path / "local", "A", 1) / "predictions.npz") as b:
        assert np.array_equal(a["proba"], b["proba"])
    st = run_status(tmp_path / "local")
    # A (a CNN): one task per fold; B (an MLP): one stacked task for both folds
    assert st.executor == "local" and st.counts()["done"] == 3 and st.complete
    assert (tmp_path / "local" / "logs" / "A__fold-00.log").is_file()


def test_run_killed_half_way_then_rerun_gives_the_uninterrupted_results(tmp_path, blobs, pool2):
    """Serial run stopped after 2 of 3 folds; the rerun (2 local workers, one of which is killed
    once) finishes fold 3 only and gives the uninterrupted run's numbers."""
    X, y = blobs
    from calipers.data import make_dataset
    from calipers.evaluation.train import TrainOptions

    data = make_dataset(X, y, task="classification")
    folds = make_folds(y, n_folds=3, seed=0)
    nets = {"mlp": NetworkSpec("calipers.models:MLP", {"hidden": [8], "dropout": 0.2})}
    kw = {"options": TrainOptions(epochs=2, batch_size=32), "n_mc": 4, "seed": 1}
    import torch

    torch.set_num_threads(1)  # as the workers
    ref = cross_validate(data, nets, folds, **kw)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        cross_validate(data, nets, folds, run_dir=run, fold_fn=_interrupted_at_split_2, **kw)
    assert [(fold_dir(run, "mlp", j) / "metrics.json").is_file() for j in range(3)] == \
        [True, True, False]
    first = (fold_dir(run, "mlp", 0) / "metrics.json").stat().st_mtime_ns
    flag = _kill_flag(os.getpid())
    flag.unlink(missing_ok=True)
    ex = pool2
    ex.run_dir, ex.retries = run, 0
    again = cross_validate(data, nets, folds, run_dir=run, executor=ex,
                           fold_fn=_dies_once_on_split_2, **kw)
    assert flag.exists()  # the worker did die once; its task ran again in a new pool
    flag.unlink()
    assert (fold_dir(run, "mlp", 0) / "metrics.json").stat().st_mtime_ns == first  # kept
    for metric in ("accuracy", "nll"):
        assert np.array_equal(again.scores(metric)["mlp"], ref.scores(metric)["mlp"])
    assert np.array_equal(again.pooled("mlp", "proba"), ref.pooled("mlp", "proba"))
    st = run_status(run)
    assert st.complete and [t.key for t in st.tasks] == ["mlp/fold-02"]  # the one task run


def test_local_retries_a_task_that_raises_once(tmp_path, pool2):
    tasks = [Task(f"t/{i}", _fails_once, {"flag": str(tmp_path / f"flag{i}"), "value": i})
             for i in range(3)]
    seen = []
    ex = pool2
    ex.run_dir, ex.retries = tmp_path, 1
    assert ex.map(tasks, on_done=lambda t, r: seen.append((t.key, r))) == [0, 1, 2]
    assert sorted(seen) == [("t/0", 0), ("t/1", 1), ("t/2", 2)]
    log = (tmp_path / "logs" / "t__0.log").read_text()
    assert "RuntimeError: transient failure" in log  # the first attempt's traceback is kept


def test_failed_task_raises_after_the_others_with_error_and_log(tmp_path, pool2):
    tasks = [Task("ok", _square, {"x": 3, "out": str(tmp_path / "ok.txt")}),
             Task("bad", _always_fails, {"value": 7})]
    ex = pool2
    ex.run_dir, ex.retries = tmp_path, 1
    with pytest.raises(TasksFailed) as info:
        ex.map(tasks)
    msg = str(info.value)
    assert "1 of 2 tasks failed" in msg and "bad (attempts: 2): ValueError: bad value 7" in msg
    assert f"log: {tmp_path / 'logs' / 'bad.log'}" in msg
    assert (tmp_path / "ok.txt").read_text() == "9"  # the other task still finished
    with pytest.raises(ValueError, match="bad value 7"):  # one failure: raised as it is
        SerialExecutor().map(tasks)


def test_task_done_follows_its_marker(tmp_path):
    t = Task("k", _square, {"x": 2}, tmp_path / "m")
    assert not t.done() and t.run() == 4
    (tmp_path / "m").write_text("")
    assert t.done()


# --- bad input ------------------------------------------------------------------------------------

def test_unknown_executor_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown executor 'lcoal'; did you mean 'local'\? "
                                         r"Choose from: serial, local, slurm"):
        get_executor("lcoal")
    with pytest.raises(ValueError, match=r"executor.worker: unknown key; did you mean 'workers'"):
        ExecutorSpec.parse({"kind": "local", "worker": 2})
    with pytest.raises(ValueError, match="workers after ':' must be a positive integer"):
        ExecutorSpec.parse("local:0")
    with pytest.raises(ValueError, match="--detach needs --executor slurm"):
        ExecutorSpec.parse({"kind": "local", "detach": True})


def test_slurm_without_submitit_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'calipers\[slurm\]'"):
        get_executor("slurm", run_dir=tmp_path)


def test_container_image_missing_and_apptainer_missing(tmp_path, monkeypatch):
    from calipers.executors.slurm import container_python

    with pytest.raises(FileNotFoundError, match="container image .*nope.sif does not exist"):
        container_python(tmp_path / "nope.sif", [tmp_path])
    image = tmp_path / "calipers.sif"
    image.write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="apptainer is not on PATH"):
        container_python(image, [tmp_path])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apptainer").write_text("#!/bin/sh\n")
    (fake / "apptainer").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    cmd = container_python(image, [tmp_path, tmp_path / "data"], python="python3")
    assert cmd == (f"apptainer exec --nv --bind {tmp_path},{tmp_path / 'data'} {image} python3")


def test_status_refuses_a_folder_that_is_not_a_run(tmp_path):
    res = runner.invoke(app, ["status", str(tmp_path)])
    assert res.exit_code == 2 and "is not a calipers run folder" in res.output
    res = runner.invoke(app, ["status", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_cli_bad_executor_exits_2(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[networks.A]\nmodel = "calipers.models:CNN"\n')
    res = runner.invoke(app, ["cv", str(cfg), "--out", str(tmp_path / "r"), "--executor", "slurn"])
    assert res.exit_code == 2 and "did you mean 'slurm'" in res.output


def test_executor_table_is_validated_and_not_part_of_the_experiment(tmp_path):
    raw = {**_RAW, "executor": {"kind": "slurm", "partition": "gpu", "time": 120,
                                "additional": {"constraint": "a100"}, "container": "c.sif"}}
    cfg = parse_config(raw, base_dir=tmp_path)
    assert cfg.executor.partition == "gpu" and cfg.executor.container == str(tmp_path / "c.sif")
    assert "[executor]" not in cfg.to_toml() and cfg.to_toml() == parse_config(_RAW).to_toml()
    spec = ExecutorSpec.parse(cfg.executor.model_dump())
    assert spec.additional == {"constraint": "a100"} and spec.time == 120
    from calipers.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"executor.partion: unknown key; did you mean "
                                          r"'partition'"):
        parse_config({**_RAW, "executor": {"partion": "gpu"}})


def test_one_worker_per_visible_gpu_each_sees_only_its_own(monkeypatch):
    import queue

    from calipers.executors.local import _init_worker

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    ex = LocalExecutor(show_progress=False)
    assert ex.gpus == ["3", "5"] and ex.workers == 2
    assert ex.threads == max(1, (os.cpu_count() or 1) // 2)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # restored after the test
    slots = queue.Queue()
    slots.put(1)
    import torch

    threads = torch.get_num_threads()
    try:
        _init_worker(slots, ex.gpus, 3)  # what the second spawned worker runs first
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5" and os.environ["OMP_NUM_THREADS"] == "3"
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert LocalExecutor(3, show_progress=False).gpus == []
