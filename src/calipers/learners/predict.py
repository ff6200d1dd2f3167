"""``calipers predict`` for classification and regression runs: new samples, any learner.

:func:`predict_file` reads samples from a file, predicts them with the folds of one network of
a run (:func:`calipers.learners.saved.load_ensemble`, NOTE [Ensemble prediction]) and writes
``predictions.csv`` atomically. Input files:

=========  ========================================================================
``.npy``   an array ``(N, *input_shape)`` (no pickled objects)
``.npz``   the same under the key ``X``
``.csv``   one sample per row, features in the training order; a first row that is
           not numbers is a header; rows are reshaped to ``input_shape`` when the
           run was trained on images of ``prod(input_shape)`` pixels
=========  ========================================================================

``predictions.csv``: ``sample`` (the row, 0-based), then for classification ``predicted`` (the
class label), ``p_<label>`` per class (rows sum to one), ``entropy`` and ``mutual_info`` (nats);
for regression ``mean`` and ``std`` (target units; ``mean_k``/``std_k`` per target).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calipers.exceptions import DataError
from calipers.runs import atomic_write_text

from .saved import Ensemble, EnsemblePrediction, check_inputs, load_ensemble

__all__ = ["TablePredictResult", "is_table_run", "predict_file", "read_samples"]

OUTPUT = "predictions.csv"


@dataclass(frozen=True)
class TablePredictResult:
    """What :func:`predict_file` wrote: ``path`` (``predictions.csv``), the network, the
    number of samples and fold models, MC passes per fold, and notes for the user."""

    path: Path
    network: str
    n_samples: int
    n_models: int
    n_mc: int
    notes: tuple[str, ...] = ()


def is_table_run(path: str | Path) -> bool:
    """True for a run folder of a classification or regression experiment."""
    import tomllib

    cfg = Path(path) / "config.toml"
    if not (Path(path).is_dir() and cfg.is_file()) or (Path(path) / "segmentation.json").exists():
        return False
    try:
        task = tomllib.loads(cfg.read_text(encoding="utf-8")).get("data", {}).get("task")
    except (tomllib.TOMLDecodeError, OSError, AttributeError):
        return False
    return task in (None, "classification", "regression")


def _read_csv(path: Path) -> np.ndarray:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if rows:
        try:
            [float(c) for c in rows[0]]
        except ValueError:
            rows = rows[1:]  # a header
    try:
        return np.array([[float(c) if c.strip() else np.nan for c in r] for r in rows])
    except ValueError as exc:
        raise DataError(f"{path}: every cell after the header must be a number ({exc}).") \
            from None


def read_samples(path: str | Path, input_shape: Sequence[int]) -> np.ndarray:
    """Samples from ``.npy``, ``.npz`` (key ``X``) or ``.csv`` (module docstring), checked
    against ``input_shape`` (:func:`~calipers.learners.saved.check_inputs`)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"--in {p} is a folder; a classification or regression run predicts "
                        "the samples of one .npy, .npz (key X) or .csv file.")
    if not p.is_file():
        raise FileNotFoundError(f"input file {p} does not exist; give an .npy, .npz (key X) "
                                "or .csv file of samples.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            X = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "X" not in z.files:
                    raise DataError(f"{p} has no array X (it has {', '.join(z.files)}); save "
                                    "the samples with np.savez(path, X=samples).")
                X = z["X"]
        elif suffix == ".csv":
            X = _read_csv(p)
            want = tuple(int(s) for s in input_shape)
            if len(want) > 1 and X.ndim == 2 and X.shape[1] == int(np.prod(want)):
                X = X.reshape(len(X), *want)  # images given as one row of pixels each
        else:
            raise DataError(f"{p}: unknown input format {suffix!r}; give .npy, .npz (key X) "
                            "or .csv.")
    except (ValueError, OSError) as exc:  # pickled object arrays, damaged files
        raise DataError(f"{p} cannot be read as samples ({exc}).") from None
    return check_inputs(X, input_shape, where=f"the run (input {p.name})")


def _write_csv(pred: EnsemblePrediction, path: Path) -> None:
    cols = pred.columns()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sample", *cols])
    n = len(next(iter(cols.values())))
    for i in range(n):
        w.writerow([i, *(v[i] if v.dtype == object else repr(float(v[i]))
                         for v in cols.values())])
    atomic_write_text(path, buf.getvalue())


def predict_file(run_dir: str | Path, in_path: str | Path, out_dir: str | Path, *,
                 network: str | None = None, n_mc: int = 0, seed: int = 0,
                 device: str = "auto", overwrite: bool = False, trusted: Sequence[str] = (),
                 trust_pickle: bool = False,
                 ensemble: Ensemble | None = None) -> TablePredictResult:
    """Predict the samples of ``in_path`` with the folds of ``network`` of ``run_dir``.

    Parameters
    ----------
    run_dir : path
        A classification or regression run folder (``calipers cv --out``).
    in_path : path
        ``.npy``, ``.npz`` (key ``X``) or ``.csv`` of samples ``(N, *input_shape)``.
    out_dir : path
        Folder for ``predictions.csv`` (created); an existing file is replaced only with
        ``overwrite``.
    network : str, optional
        Default the run's chosen network (``summary.json`` ``best``), else the first.
    n_mc : int
        MC-dropout passes per fold (0: deterministic); folds without dropout predict once.
    seed, device, trusted, trust_pickle
        As :func:`~calipers.learners.saved.load_ensemble` and :meth:`Ensemble.predict`.
    ensemble : Ensemble, optional
        An already loaded ensemble (then ``run_dir``/``network`` are not read again).

    Returns
    -------
    TablePredictResult

    Raises
    ------
    DataError
        Unreadable input, wrong sample shape (naming expected and actual), NaN or infinite
        values, missing or damaged model files. Nothing is written then.
    """
    out = Path(out_dir) / OUTPUT
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DataError(f"--out {out_dir} is a file; give a folder (created if needed).")
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; pass overwrite=True (--overwrite) to replace it, or "
                        "choose another output folder.")
    ens = ensemble if ensemble is not None else load_ensemble(
        run_dir, network, device=device, trusted=trusted, trust_pickle=trust_pickle)
    X = read_samples(in_path, ens.input_shape)
    pred = ens.predict(X, n_mc=n_mc, seed=seed)
    notes = []
    if n_mc > 0 and pred.deterministic:
        which = ("its models have" if len(pred.deterministic) == pred.n_models else
                 f"folds {', '.join(map(str, pred.deterministic))} have")
        notes.append(f"network {ens.network!r}: {which} no dropout, so they predicted "
                     "deterministically (one pass each).")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _write_csv(pred, out)
    return TablePredictResult(out, ens.network, len(X), pred.n_models,
                              0 if len(pred.deterministic) == pred.n_models else n_mc,
                              tuple(notes))
