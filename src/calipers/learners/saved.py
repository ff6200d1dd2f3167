"""Load the trained folds of a classification or regression run, whatever trained them.

A run folder holds, per network and fold, the files its learner saved (``model.pt``,
``model.skops``, ``model.keras``, ...), ``learner.json`` and ``preprocess.npz`` (NOTE [Fold
preprocessing]); ``config.toml`` names each network's learner, code and ``args``.
:func:`load_fold_predictor` rebuilds one fold's model with its learner's ``load``
(NOTE [Learner protocol]); :func:`load_ensemble` loads every fold of a network, and
:meth:`Ensemble.predict` averages them over folds and MC-dropout passes.

Loading imports and calls the code the run's ``config.toml`` names (the network builders, as
``calipers cv`` did); the model files themselves are read without running code (state dicts
with ``weights_only=True``, Keras ``safe_mode``, skops with trusted types). Load only run
folders you made or trust, as you would run their config.

# NOTE [Ensemble prediction]
Fold m gives T_m passes p_mt (T_m = 1 when ``n_mc = 0`` or its model has no dropout). Each fold
counts once, however many passes it drew: the predictive mean is p̄ = mean_m mean_t p_mt, the
predictive entropy H[p̄], the expected entropy E = mean_m mean_t H[p_mt] and the mutual
information H[p̄] − E (so it includes the folds' disagreement). Regression: per fold the mean
μ_m and variance v_m (MC variance plus the model's own, in target units); the ensemble is their
equal mixture, mean μ = mean_m μ_m and variance mean_m (v_m + μ_m²) − μ² (+ 1/τ with
``[mc] tau``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from calipers._device import resolve_device
from calipers._options import did_you_mean
from calipers._seeds import child_seed
from calipers.config import parse_config
from calipers.evaluation.cv import NetworkSpec
from calipers.evaluation.preprocess import (
    PREPROCESS_FILE,
    FoldPreprocess,
    fold_preprocess,
    load_preprocess,
)
from calipers.exceptions import ConfigError, DataError
from calipers.runs import fold_dir, read_json
from calipers.uncertainty.measures import predictive_entropy

from .base import Predictor, SavedFold, get_learner, network_spec

__all__ = ["Ensemble", "EnsemblePrediction", "FoldModel", "check_inputs", "load_ensemble",
           "load_fold_predictor", "run_networks"]


@dataclass(frozen=True)
class FoldModel:
    """One trained fold: its learner's predictor and the fold's preprocessing."""

    network: str
    fold: int
    learner: str
    task: str
    predictor: Predictor = field(repr=False)
    preprocess: FoldPreprocess = field(repr=False)
    tau: float | None = None  # regression: the fold's observation precision (1/tau is added)

    def passes(self, X: np.ndarray, *, n_mc: int = 0, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for raw samples ``X`` (preprocessed here as in training).

        Returns
        -------
        passes : ndarray of shape (T, N, n_classes) or (T, N, n_targets)
            Probabilities, or means in target units; T = ``n_mc`` MC-dropout passes, or 1 when
            ``n_mc == 0`` or the model has no dropout.
        variance : ndarray of shape (N, n_targets) or None
            The model's own predictive variance in target units (regression models that give
            one), else None.
        """
        out, own, _ = self.draws(X, n_mc=n_mc, seed=seed)
        return out, own

    def draws(self, X: np.ndarray, *, n_mc: int = 0, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """:meth:`passes` and whether they are MC-dropout draws (False: the model has no
        dropout, or ``n_mc == 0``)."""
        x = self.preprocess.transform(X)
        out = self.predictor.predict_mc(x, n_mc, seed=seed) if n_mc > 0 else None
        stochastic = out is not None
        out = self.predictor.predict(x)[None] if out is None else np.asarray(out)
        if self.task == "classification":
            return out.astype(np.float64), None, stochastic
        own = self.predictor.variance(x)
        means = np.stack([self.preprocess.to_target_units(o)[0] for o in out])
        if own is not None:
            own = self.preprocess.to_target_units(np.zeros_like(own), own)[1]
        return means, own, stochastic


@dataclass(frozen=True)
class EnsemblePrediction:
    """Predictions of an :class:`Ensemble` for N samples (NOTE [Ensemble prediction]).

    Classification: ``proba`` ``(N, C)`` (rows sum to one), ``entropy`` and ``mutual_info``
    ``(N,)`` in nats, ``classes`` the labels of the columns. Regression: ``mean`` and ``std``
    ``(N, n_targets)`` in target units. ``n_mc`` is the passes per fold that were drawn (0:
    deterministic); ``deterministic`` names the folds whose model has no dropout.
    """

    task: str
    n_models: int
    n_mc: int
    classes: tuple[str, ...] = ()
    proba: np.ndarray | None = field(default=None, repr=False)
    entropy: np.ndarray | None = field(default=None, repr=False)
    mutual_info: np.ndarray | None = field(default=None, repr=False)
    mean: np.ndarray | None = field(default=None, repr=False)
    std: np.ndarray | None = field(default=None, repr=False)
    deterministic: tuple[int, ...] = ()

    @property
    def predicted(self) -> np.ndarray:
        """The most probable class label of each sample (classification)."""
        if self.proba is None:
            raise ValueError("predicted classes are for classification; this is regression.")
        return np.asarray(self.classes, dtype=object)[self.proba.argmax(axis=1)]

    def columns(self) -> dict[str, np.ndarray]:
        """The table ``predictions.csv`` holds, as ``{column: (N,) array}``."""
        if self.proba is not None and self.entropy is not None and self.mutual_info is not None:
            cols: dict[str, np.ndarray] = {"predicted": self.predicted}
            cols.update({f"p_{c}": self.proba[:, k] for k, c in enumerate(self.classes)})
            return {**cols, "entropy": self.entropy, "mutual_info": self.mutual_info}
        if self.mean is None or self.std is None:
            raise ValueError("this prediction holds neither probabilities nor means.")
        if self.mean.shape[1] == 1:
            return {"mean": self.mean[:, 0], "std": self.std[:, 0]}
        cols = {}
        for k in range(self.mean.shape[1]):
            cols[f"mean_{k}"], cols[f"std_{k}"] = self.mean[:, k], self.std[:, k]
        return cols


@dataclass(frozen=True)
class Ensemble:
    """The trained folds of one network of a run, predicting together."""

    run_dir: Path
    network: str
    task: str
    models: tuple[FoldModel, ...] = field(repr=False)
    tau: float | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.models[0].preprocess.input_shape

    @property
    def classes(self) -> tuple[str, ...]:
        return self.models[0].preprocess.classes

    def predict(self, X: np.ndarray, *, n_mc: int = 0, seed: int = 0) -> EnsemblePrediction:
        """Predict raw samples ``X`` of shape ``(N, *input_shape)`` with every fold.

        ``n_mc`` MC-dropout passes per fold (0: deterministic); fold m's masks come from
        ``child_seed(seed, "predict", network, m)``. See NOTE [Ensemble prediction].
        """
        X = check_inputs(X, self.input_shape, where=f"network {self.network!r} of {self.run_dir}")
        drawn = [m.draws(X, n_mc=n_mc, seed=child_seed(seed, "predict", self.network, m.fold))
                 for m in self.models]
        got = [(p, own) for p, own, _ in drawn]
        det = tuple(m.fold for m, (_, _, mc) in zip(self.models, drawn, strict=True)
                    if n_mc > 0 and not mc)
        if self.task == "classification":
            p_bar = np.mean([p.mean(axis=0) for p, _ in got], axis=0)
            p_bar = p_bar / p_bar.sum(axis=1, keepdims=True)
            ent = predictive_entropy(p_bar, axis=1)
            exp = np.mean([predictive_entropy(p, axis=2).mean(axis=0) for p, _ in got], axis=0)
            return EnsemblePrediction("classification", len(got), n_mc, self.classes,
                                      proba=p_bar, entropy=ent,
                                      mutual_info=np.maximum(ent - exp, 0.0), deterministic=det)
        mus = np.stack([p.mean(axis=0) for p, _ in got])
        taus = [m.tau if m.tau is not None else self.tau for m in self.models]
        vs = np.stack([p.var(axis=0) + (0 if own is None else own)
                       + (0 if tau is None else 1.0 / tau)  # fold m's own noise (its tau)
                       for (p, own), tau in zip(got, taus, strict=True)])
        mu = mus.mean(axis=0)
        var = np.maximum((vs + mus**2).mean(axis=0) - mu**2, 0.0)
        return EnsemblePrediction("regression", len(got), n_mc, mean=mu, std=np.sqrt(var),
                                  deterministic=det)


def check_inputs(X: Any, input_shape: Sequence[int], *, where: str = "the model") -> np.ndarray:
    """``X`` as a float array of shape ``(N, *input_shape)``; :class:`DataError` otherwise.

    Refuses another sample shape (naming both), an empty array and NaN or infinite values.
    """
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise DataError(f"inputs must be numbers; got an array of dtype {X.dtype}.")
    want = tuple(int(s) for s in input_shape)
    if X.ndim != len(want) + 1 or tuple(X.shape[1:]) != want:
        raise DataError(f"inputs have shape {tuple(X.shape)}, but {where} was trained on samples "
                        f"of shape {want}: expected (N, {', '.join(map(str, want))}). Give the "
                        "same features (columns) in the same order as in training.")
    if len(X) == 0:
        raise DataError("inputs hold no samples (N = 0).")
    bad = ~np.isfinite(X.reshape(len(X), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(f"inputs hold NaN or infinite values in {int(bad.sum())} of {len(X)} "
                        f"samples (rows {', '.join(map(str, rows[:5]))}"
                        f"{' ...' if len(rows) > 5 else ''}); impute or drop them first, as "
                        "training did not see missing values.")
    return X


# --------------------------------------------------------------------------- run folders


@dataclass(frozen=True)
class _Run:
    task: str
    networks: dict[str, NetworkSpec]
    tau: float | None
    best: str | None
    config: Any = None


def _read_run(run_dir: Path) -> _Run:
    cfg_path = run_dir / "config.toml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.toml); give the "
                                "--out folder of `calipers cv`.")
    try:
        cfg = parse_config(tomllib.loads(cfg_path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{cfg_path} is not valid TOML: {exc}") from None
    summary = run_dir / "summary.json"
    best = read_json(summary).get("best") if summary.is_file() else None
    return _Run(cfg.data.task, {n: network_spec(c) for n, c in cfg.networks.items()},
                cfg.mc.tau, best, cfg)


def run_networks(run_dir: str | Path) -> tuple[str, ...]:
    """The networks of a run folder, in config order."""
    return tuple(_read_run(Path(run_dir)).networks)


def _pick(run: _Run, run_dir: Path, network: str | None) -> str:
    nets = list(run.networks)
    if network is None:
        return run.best if run.best in nets else nets[0]
    if network not in nets:
        hint = did_you_mean(network, nets)
        raise ValueError(f"unknown network {network!r} in {run_dir}{hint or '.'} It has "
                         f"{', '.join(nets)}.")
    return network


def _load(run: _Run, run_dir: Path, network: str, fold: int, device: str,
          trusted: Sequence[str], trust_pickle: bool) -> FoldModel:
    if run.task not in ("classification", "regression"):
        raise ValueError(f"{run_dir} is a {run.task} run; load segmentation models with "
                         "calipers.segmentation.predict.load_predictor.")
    spec = run.networks[network]
    d = fold_dir(run_dir, network, fold)
    if not (d / "metrics.json").is_file():
        raise DataError(f"{d} holds no finished fold (no metrics.json); finish the run with "
                        "`calipers cv` (same config and --out) first.")
    prep = _preprocess(run, run_dir, d, fold)
    n_outputs = len(prep.classes) if run.task == "classification" else None
    if n_outputs is None:
        y_mean = prep.y_mean
        n_outputs = 1 if y_mean is None or np.ndim(y_mean) == 0 else int(np.size(y_mean))
    saved = SavedFold(d, run.task, prep.input_shape, n_outputs, device,
                      tuple(trusted), trust_pickle)
    if (d / "learner.json").is_file():  # every file the learner saved must be there
        for name in read_json(d / "learner.json").get("files", []):
            saved.file(name)
    learner = get_learner(spec.learner)
    learner.require(network, spec)
    # a [search] fold trained with its own dropout and tau (metrics.json chosen_*): the
    # network is rebuilt with that dropout, and its noise 1/tau joins its variance
    chosen = read_json(d / "metrics.json").get("metrics") or {}
    if chosen.get("chosen_dropout") is not None:
        spec = replace(spec, args={**dict(spec.args), "dropout": float(chosen["chosen_dropout"])})
    tau = chosen.get("chosen_tau")
    return FoldModel(network, fold, spec.learner, run.task, learner.load(spec, saved), prep,
                     tau=None if tau is None else float(tau))


def _preprocess(run: _Run, run_dir: Path, d: Path, fold: int) -> FoldPreprocess:
    """The fold's ``preprocess.npz``; for a run made before folds saved it, recomputed from
    the run's data and ``folds.json`` when ``data.json`` proves the data unchanged."""
    try:
        return load_preprocess(d)
    except DataError as exc:
        if (d / PREPROCESS_FILE).is_file():
            raise  # damaged: say so
        missing = exc
    from calipers.data import load_dataset
    from calipers.evaluation.folds import Folds
    from calipers.repro.data_fingerprint import DATA_FILE, data_fingerprint

    cfg = run.config
    if not ((run_dir / DATA_FILE).is_file() and (run_dir / "folds.json").is_file()):
        raise missing
    try:
        data = load_dataset(cfg.data.kind, path=cfg.data.path, task=cfg.data.task,
                            target=cfg.data.target, group=cfg.data.group)
    except (OSError, ValueError, DataError):
        raise missing from None
    fp = data_fingerprint([data.X, data.y, data.groups], path=cfg.data.path)
    if read_json(run_dir / DATA_FILE).get("sha256") != fp["sha256"]:
        raise missing
    train = Folds.from_dict(read_json(run_dir / "folds.json")).train[fold]
    dtype = np.float64 if cfg.search is not None else None  # NOTE [Fold preprocessing]
    a = fold_preprocess(data, train, dtype=dtype)
    return FoldPreprocess(tuple(int(s) for s in a["input_shape"]),
                          tuple(str(c) for c in a.get("classes", ())), a.get("x_mean"),
                          a.get("x_std"), a.get("y_mean"), a.get("y_std"))


def load_fold_predictor(run_dir: str | Path, network: str | None = None, fold: int = 0, *,
                        device: str = "auto", trusted: Sequence[str] = (),
                        trust_pickle: bool = False) -> FoldModel:
    """Load fold ``fold`` of ``network`` from a classification or regression run folder.

    Parameters
    ----------
    run_dir : path
        The ``--out`` folder of ``calipers cv``.
    network : str, optional
        Which network; default the run's chosen one (``summary.json`` ``best``), else the first.
    fold : int
        The split index (the ``fold-XX`` folder).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<i>"`` (torch-based learners).
    trusted : sequence of str
        scikit-learn: types to trust in ``model.skops`` beyond skops' defaults (NOTE [Saving
        estimators without pickle]).
    trust_pickle : bool
        scikit-learn: allow loading a ``model.pkl`` (pickle runs code; only your own folders).

    Raises
    ------
    ValueError
        Unknown network (with a suggestion), or a segmentation run.
    DataError
        Missing or damaged fold files (names the file and what to do).
    ConfigError
        The learner cannot rebuild the model (e.g. a function learner without a builder).
    """
    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    name = _pick(run, run_dir, network)
    return _load(run, run_dir, name, int(fold), str(resolve_device(device)), trusted,
                 trust_pickle)


def load_ensemble(run_dir: str | Path, network: str | None = None,
                  folds: Sequence[int] | None = None, *, device: str = "auto",
                  trusted: Sequence[str] = (), trust_pickle: bool = False) -> Ensemble:
    """Load the folds of ``network`` (default: every finished fold) as an :class:`Ensemble`.

    Parameters as :func:`load_fold_predictor`; ``folds`` the split indices to use.
    """
    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    name = _pick(run, run_dir, network)
    if folds is None:
        folds = sorted(int(p.parent.name.removeprefix("fold-"))
                       for p in (run_dir / name).glob("fold-*/metrics.json"))
        if not folds:
            raise DataError(f"{run_dir / name} holds no finished fold (fold-XX/metrics.json); "
                            "finish the run with `calipers cv` (same config and --out) first.")
    dev = str(resolve_device(device))
    models = tuple(_load(run, run_dir, name, int(j), dev, trusted, trust_pickle) for j in folds)
    shapes = {m.preprocess.input_shape for m in models}
    if len(shapes) > 1:
        raise ConfigError(f"the folds of {name!r} were trained on different input shapes "
                          f"{sorted(shapes)}; load them one by one.")
    return Ensemble(run_dir, name, run.task, models, run.tau)
