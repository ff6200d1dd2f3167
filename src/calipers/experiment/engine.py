"""The experiment engine: one driver that plans a cross-validation as tasks, resumes, runs them.

Every network is cross-validated on the same folds. The engine turns the work into
:class:`~calipers.tasks.Task` s — one per fold of a network
(:func:`calipers.evaluation.cv.fold_task`), or one per stacked MLP network
(:func:`calipers.batched.cv.stacked_task`, key ``"NAME/stacked"``) — skips those whose marker
exists (resume; NOTE [Tasks and markers] in ``tasks.py``), hands the rest to an executor and
reads every fold back from the run folder. What a fold does depends on the task of the data,
looked up in :data:`RUNNERS`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calipers._checks import _look_up_option
from calipers.batched.cv import SearchSettings, batched_reason, stacked_task
from calipers.evaluation.contracts import check_network
from calipers.evaluation.cv import (
    CVProgress,
    CVResult,
    FoldResult,
    FoldSpec,
    NetworkSpec,
    fold_task,
    load_fold,
    run_fold,
)
from calipers.evaluation.folds import Folds, check_cv
from calipers.evaluation.train import TrainOptions
from calipers.exceptions import ConfigError
from calipers.learners.base import get_learner, network_options
from calipers.learners.fold import check_learner_network, learner_fold_task
from calipers.models import build_network
from calipers.runs import fold_dir
from calipers.segmentation.experiment import check_segmentation_network, run_segmentation_fold
from calipers.tasks import Executor, SerialExecutor, Task
from calipers.uncertainty.mc import has_dropout

__all__ = ["RUNNERS", "Runner", "check_networks", "cross_validate", "cross_validate_batched",
           "plan_tasks"]


@dataclass(frozen=True)
class Runner:
    """How the engine runs the folds of one kind of task.

    fold_fn : ``fold_fn(spec: FoldSpec, data, *, progress) -> FoldResult``, module-level
    check_network : ``check_network(name, probe, data)`` raises :class:`ConfigError` for a
        network this task cannot train (beyond the dropout check every task makes)
    stackable : MLP networks may be trained with all splits stacked (``stack=True``)
    """

    fold_fn: Callable[..., FoldResult]
    check_network: Callable[[str, torch.nn.Module, Any], None] | None = None
    stackable: bool = False


#: The runner of each ``[data] task``; a new task adds a row here (docs/architecture.md).
RUNNERS: dict[str, Runner] = {
    "classification": Runner(run_fold, stackable=True),
    "regression": Runner(run_fold, stackable=True),
    "segmentation": Runner(run_segmentation_fold, check_segmentation_network),
}


def check_networks(networks: Mapping[str, NetworkSpec], data: Any, *, n_mc: int,
                   active_dropout: bool = False) -> None:
    """Build each network once on ``data``'s shapes and refuse, before any training, one that
    cannot run: no dropout module while ``n_mc > 0``, an output that does not fit the task
    (NOTE [Output contract]), dropout that is off (p = 0) while ``n_mc > 0`` and
    ``active_dropout`` (experiments ask for it), or what the task's runner refuses."""
    if not networks:
        raise ConfigError("no networks given; add at least one [networks.NAME] table.")
    runner = RUNNERS[_look_up_option(data.task, RUNNERS, what="task")]
    for name, spec in networks.items():
        if spec.learner != "calipers":  # another framework trains it (calipers.learners)
            check_learner_network(name, spec, data, n_mc=n_mc)
            continue
        if spec.train:
            get_learner("calipers").check(name, spec, data, n_mc=n_mc)
        probe = build_network(spec.model, spec.args, input_shape=data.input_shape,
                              n_outputs=data.n_outputs)
        if n_mc > 0 and not has_dropout(probe):
            raise ConfigError(
                f"network {name!r} ({spec.describe()}) has no dropout module, but MC dropout "
                f"asks for {n_mc} samples. Add nn.Dropout(p) before its last layer (or pass "
                f"dropout > 0 in args; p = 0 keeps the modules), or set [mc] samples = 0 to "
                "skip MC dropout."
            )
        if runner.check_network is not None:
            runner.check_network(name, probe, data)
        probe_rows = 1 if data.task == "segmentation" else 2
        check_network(probe, data.X[:probe_rows], task=data.task, n_outputs=data.n_outputs,
                      network=f"{name!r} ({spec.describe()})",
                      n_mc=n_mc if (active_dropout or data.task == "segmentation") else 0)


@dataclass(frozen=True)
class _Planned:
    task: Task
    writes: tuple[tuple[str, int], ...]   # (network, split) folds the task saves


def plan_tasks(
    data: Any,
    networks: Mapping[str, NetworkSpec],
    folds: Folds,
    *,
    options: TrainOptions,
    n_mc: int,
    tau: float | None,
    seed: int,
    stack: bool = False,
    search: SearchSettings | None = None,
    batched: bool = True,
    run_dir: Path | None = None,
    progress: CVProgress | None = None,
    fold_fn: Callable[..., FoldResult] | None = None,
) -> list[Task]:
    """The tasks of a cross-validation, stacked groups first, then folds by network and split.

    Every task is listed, done or not (:meth:`Task.done`); ``progress`` goes into the task
    arguments (in-process executors only).
    """
    return [p.task for p in _plan(data, networks, folds, options=options, n_mc=n_mc, tau=tau,
                                  seed=seed, stack=stack, search=search, batched=batched,
                                  run_dir=run_dir, progress=progress, fold_fn=fold_fn)]


def _plan(data: Any, networks: Mapping[str, NetworkSpec], folds: Folds, *,
          options: TrainOptions, n_mc: int, tau: float | None, seed: int, stack: bool,
          search: SearchSettings | None, batched: bool, run_dir: Path | None,
          progress: CVProgress | None,
          fold_fn: Callable[..., FoldResult] | None = None) -> list[_Planned]:
    runner = RUNNERS[data.task]
    fold_fn = fold_fn or runner.fold_fn
    det = torch.are_deterministic_algorithms_enabled()  # carried into worker processes
    stacked = [n for n, s in networks.items()
               if stack and runner.stackable and batched_reason(s, data) is None]
    planned = []
    for name in stacked:
        todo = tuple(j for j in range(len(folds))
                     if run_dir is None or not _marker(run_dir, name, j).exists())
        last = todo[-1] if todo else len(folds) - 1  # written last: the task's marker
        kwargs = dict(name=name, spec=networks[name], data=data, folds=folds,
                      options=network_options(options, networks[name]),
                      n_mc=n_mc, tau=tau, seed=seed, search=search, batched=batched,
                      run_dir=run_dir, todo=todo, progress=progress)
        planned.append(_Planned(
            Task(f"{name}/stacked", stacked_task, kwargs,
                 None if run_dir is None else _marker(run_dir, name, last)),
            tuple((name, j) for j in todo)))
    for name, spec in networks.items():
        if name in stacked:
            continue
        opts = network_options(options, spec)  # [networks.NAME.train]
        for j, (tr, te) in enumerate(folds):
            fs = FoldSpec(name, spec, j, tr, te, seed, opts, n_mc, tau)
            kwargs = dict(spec=fs, data=data, n_splits=len(folds), run_dir=run_dir,
                          progress=progress)
            fn: Callable[..., Any] = learner_fold_task  # another framework (calipers.learners)
            if spec.learner == "calipers":
                fn, kwargs = fold_task, dict(kwargs, fold_fn=fold_fn, deterministic=det)
            planned.append(_Planned(
                Task(f"{name}/fold-{j:02d}", fn, kwargs,
                     None if run_dir is None else _marker(run_dir, name, j)),
                ((name, j),)))
    return planned


def _marker(run_dir: Path, network: str, split: int) -> Path:
    return fold_dir(run_dir, network, split) / "metrics.json"  # NOTE [Atomic writes]


def _check_tau(tau: float | None) -> float | None:
    if tau is None:
        return None
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not (
            math.isfinite(float(tau)) and tau > 0):
        raise ValueError(f"tau must be a positive precision in 1/(target units)^2 or None; got "
                         f"{tau!r}. Leave it unset to report the MC variance only.")
    return float(tau)


def cross_validate(
    data: Any,
    networks: Mapping[str, NetworkSpec],
    cv: int | Any | Iterable[tuple[np.ndarray, np.ndarray]] | Folds,
    *,
    options: TrainOptions | None = None,
    n_mc: int = 30,
    tau: float | None = None,
    seed: int = 0,
    stack: bool = False,
    search: SearchSettings | None = None,
    batched: bool = True,
    run_dir: str | Path | None = None,
    progress: CVProgress | None = None,
    executor: Executor | None = None,
    checked: bool = False,
    fold_fn: Callable[..., FoldResult] | None = None,
) -> CVResult:
    """Train and evaluate every network on every split of ``cv`` (the same for all).

    Parameters
    ----------
    data : Dataset or SegmentationData
        The data set; ``data.task`` picks the runner (:data:`RUNNERS`).
    networks : mapping of str to NetworkSpec
    cv : int, splitter, iterable of (train, test) index pairs, or Folds
        As scikit-learn's ``check_cv`` accepts (:func:`calipers.evaluation.folds.check_cv`).
    options, n_mc, tau, seed
        Training options, MC dropout passes, the noise precision tau (1/(target units)²,
        regression), the seed every task's seed is spawned from.
    stack : bool
        Train each ``calipers.models:MLP`` network with all splits stacked (one task,
        :func:`calipers.batched.cv.stacked_task`); other networks fold by fold.
    search, batched
        Grid search of the stacked networks; ``batched=False`` trains stacked members one by
        one (same numbers).
    run_dir : path, optional
        Each finished fold is saved there (atomically, ``metrics.json`` last) and finished
        folds are read back instead of recomputed, so an interrupted run resumes.
    progress : CVProgress, optional
        ``fold_end`` is called for every fold; epoch bars (``fold_start``, ``epoch``) only when
        the tasks run in this process (the default executor).
    executor : Executor, optional
        Runs the tasks (:class:`~calipers.tasks.SerialExecutor` by default).
    checked : bool
        The networks were already checked with :func:`check_networks` (skip probing again).
    fold_fn : callable, optional
        ``fold_fn(spec, data, *, progress) -> FoldResult`` instead of the task's runner
        (:data:`RUNNERS`); module-level, so that other processes can run it.

    Returns
    -------
    CVResult
        Per network, one :class:`FoldResult` per split; ``resumed`` is True for folds read
        from ``run_dir`` that this call did not compute.
    """
    folds = check_cv(cv, data.y, groups=getattr(data, "groups", None), seed=seed)
    tau = _check_tau(tau)
    if not checked:
        check_networks(networks, data, n_mc=n_mc)
    if search is not None:
        refused = {n: batched_reason(s, data) for n, s in networks.items()}
        refused = {n: why for n, why in refused.items() if why is not None}
        if refused or not stack:
            raise ValueError(f"search needs stack=True and calipers.models:MLP regression "
                             f"networks; not so: {refused or 'stack=False'}.")
    options = options or TrainOptions()
    executor = executor if executor is not None else SerialExecutor()
    in_process = isinstance(executor, SerialExecutor)
    run_path = Path(run_dir) if run_dir is not None else None
    t0 = time.perf_counter()
    planned = _plan(data, networks, folds, options=options, n_mc=n_mc, tau=tau, seed=seed,
                    stack=stack, search=search, batched=batched, run_dir=run_path,
                    progress=progress if in_process else None, fold_fn=fold_fn)
    todo = [p for p in planned if not p.task.done()]
    written = {w for p in todo for w in p.writes}
    if progress is not None:  # folds finished by an earlier session
        for name in networks:
            for j in range(len(folds)):
                if (name, j) not in written:
                    progress.fold_end(load_fold(run_path, name, j))  # type: ignore[arg-type]

    def on_done(task: Task, result: Any) -> None:
        if progress is not None:
            for r in result if isinstance(result, tuple) else (result,):
                progress.fold_end(r)

    returned = executor.map([p.task for p in todo], on_done=on_done)
    results: dict[str, list[FoldResult]] = {name: [] for name in networks}
    if run_path is None:  # the returned values are the results
        by_fold = {}
        for res in returned:
            for r in res if isinstance(res, tuple) else (res,):
                by_fold[(r.network, r.split)] = r
        for name in networks:
            results[name] = [by_fold[(name, j)] for j in range(len(folds))]
    else:  # the run folder is the single truth
        for name in networks:
            results[name] = [replace(load_fold(run_path, name, j),
                                     resumed=(name, j) not in written)
                             for j in range(len(folds))]
    return CVResult(folds, data.task, {k: tuple(v) for k, v in results.items()},
                    time.perf_counter() - t0)


def cross_validate_batched(
    data: Any,
    networks: Mapping[str, NetworkSpec],
    cv: int | Any | Iterable[tuple[np.ndarray, np.ndarray]] | Folds,
    **kwargs: Any,
) -> CVResult:
    """:func:`cross_validate` with ``stack=True`` for networks that must all be stacked MLPs
    (:func:`calipers.batched.cv.batched_reason` is None for each; else ValueError)."""
    for name, spec in networks.items():
        why = batched_reason(spec, data)
        if why is not None:
            raise ValueError(f"network {name!r} cannot be trained batched: {why}. "
                             "Cross-validate it with stack=False.")
    return cross_validate(data, networks, cv, stack=True, **kwargs)
