"""Learners: who trains a network of an experiment (issue 21).

A network's ``learner`` (``[networks.NAME] learner = "..."``) names an adapter that fits it on
the training samples of one fold and predicts the test samples; the engine scores, saves and
compares every learner's predictions the same way, on the same folds. ``calipers`` (the
default) is calipers' own loop (:func:`calipers.evaluation.cv.run_fold`); the others are

- ``function``: ``fit = "pkg.module:fit"``, the user's own loop (:mod:`.function`)
- ``sklearn``: ``estimator = "sklearn.linear_model:LogisticRegression"`` (:mod:`.sklearn`)
- ``keras``: ``model = "pkg.module:build"``, a Keras 3 model on any backend (:mod:`.keras`)
- ``lightning``: ``model = "pkg.module:LitNet"``, a LightningModule (:mod:`.lightning`)

The protocol every adapter implements is in :mod:`calipers.learners.base`; the fold task
that runs any of them is :func:`calipers.learners.fold.learner_fold_task`. A run's trained
folds load back with :func:`load_fold_predictor` and :func:`load_ensemble`
(:mod:`calipers.learners.saved`); ``calipers predict`` on a classification or regression run
is :func:`calipers.learners.predict.predict_file`.
"""

from __future__ import annotations

from .base import (
    FitSettings,
    FoldData,
    Learner,
    Predictor,
    SavedFold,
    get_learner,
    network_options,
)
from .saved import Ensemble, EnsemblePrediction, FoldModel, load_ensemble, load_fold_predictor

__all__ = ["Ensemble", "EnsemblePrediction", "FitSettings", "FoldData", "FoldModel", "Learner",
           "Predictor", "SavedFold", "get_learner", "load_ensemble", "load_fold_predictor",
           "network_options"]
