"""The ``keras`` learner: a Keras 3 model on the JAX, PyTorch or TensorFlow backend.

A network with ``learner = "keras"`` names a build function, ``model = "pkg.module:build"``,
called as ``build(input_shape, n_outputs, **args)`` like calipers' own networks; it returns a
``keras.Model`` whose last layer gives logits (``output = "logits"``, the default) or
probabilities (``output = "probabilities"``). A model that comes compiled keeps its optimizer
and loss; else calipers compiles it with Adam (``lr``, ``weight_decay``) and cross-entropy (or
mean squared error). Keys of ``[networks.NAME.train]`` that calipers does not know pass
through to ``model.fit``.

# NOTE [Keras backends]
Keras fixes its backend when it is first imported, once per process. So each Keras network
runs in a worker process of its own backend (``backend = "jax" | "torch" | "tensorflow"``,
default ``"torch"``, which needs nothing beyond Keras): a single-process pool per backend,
started with the ``spawn`` method and ``KERAS_BACKEND`` set before Keras is imported, reused
for every fold and every network of that backend in this process. The parent never imports
Keras or the build module. MC dropout runs the model with ``training=False`` (BatchNorm in
inference mode, its statistics unchanged) while every dropout layer is called with
``training=True``; the dropout layers' seed generators are reset from the fold's MC seed, so
the passes are the same in any process.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from calipers._paths import _MODEL_DIRS, add_model_dir
from calipers.evaluation.contracts import check_output_shape
from calipers.evaluation.cv import NetworkSpec
from calipers.exceptions import ConfigError, DataError
from calipers.runs import atomic_write_bytes

from .base import FitSettings, FoldData, Predictor, SavedFold, require

__all__ = ["BACKENDS", "KerasLearner", "KerasPredictor", "shutdown_workers"]

BACKENDS = ("torch", "jax", "tensorflow")
_EXTRA = {"torch": "keras", "jax": "keras", "tensorflow": "tensorflow"}

# --------------------------------------------------------------------------- parent side

_POOLS: dict[str, ProcessPoolExecutor] = {}
_POOL_DIRS: dict[str, tuple[str, ...]] = {}  # the config folders each worker can import from


def _pool(backend: str) -> ProcessPoolExecutor:
    dirs = tuple(str(d) for d in _MODEL_DIRS)
    if backend in _POOLS and _POOL_DIRS[backend] != dirs:  # a config from a new folder
        _POOLS.pop(backend).shutdown(wait=True)
    if backend not in _POOLS:
        _POOLS[backend] = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(backend, list(dirs)))
        _POOL_DIRS[backend] = dirs
    return _POOLS[backend]


def _call(backend: str, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in the worker of ``backend`` (NOTE [Keras backends])."""
    try:
        return _pool(backend).submit(fn, *args).result()
    except BrokenProcessPool:
        _POOLS.pop(backend, None)
        raise RuntimeError(f"the Keras worker process ({backend} backend) died (out of memory, "
                           "or a crash in the backend); see its output above.") from None


def shutdown_workers() -> None:
    """Stop the Keras worker processes of this process (also done at exit)."""
    for pool in _POOLS.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


atexit.register(shutdown_workers)


def _backend(spec: NetworkSpec) -> str:
    return str(spec.options.get("backend") or "torch")


def _output(spec: NetworkSpec) -> str:
    return str(spec.options.get("output") or "logits")


class KerasLearner:
    """Trains a Keras 3 model in a worker process of its backend (NOTE [Keras backends])."""

    name = "keras"

    def require(self, name: str, spec: NetworkSpec) -> None:
        backend = _backend(spec)
        if backend not in BACKENDS:
            raise ConfigError(f"networks.{name}.backend: {backend!r} is not a Keras backend; "
                              f"choose one of {', '.join(BACKENDS)}.")
        require("keras", learner="keras", network=name, extra=_EXTRA[backend])
        major = importlib.metadata.version("keras").split(".")[0]
        if int(major) < 3:
            raise ConfigError(f"network {name!r}: learner 'keras' needs Keras 3; Keras "
                              f"{importlib.metadata.version('keras')} is installed. Install "
                              "it with: pip install 'calipers[keras]'")
        module = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}[backend]
        require(module, learner=f"keras ({backend} backend)", network=name,
                extra=_EXTRA[backend])

    def check(self, name: str, spec: NetworkSpec, data: Any, *, n_mc: int) -> bool | None:
        x = np.asarray(data.X[:2], dtype=np.float32)
        got = _call(_backend(spec), _probe, spec.model, dict(spec.args),
                    tuple(data.input_shape), int(data.n_outputs), x)
        where = f"{name!r} ({spec.describe()}, {_backend(spec)} backend)"
        if "error" in got:
            raise ConfigError(f"network {where}: {got['error']}")
        check_output_shape(np.empty(got["shape"]), task=data.task, n_outputs=data.n_outputs,
                           network=where)
        return bool(got["dropout"])

    def fit(self, spec: NetworkSpec, fold: FoldData, *, seed: int,
            settings: FitSettings) -> Predictor:
        backend = _backend(spec)
        got = _call(backend, _fit, spec.model, dict(spec.args), fold, seed, asdict(settings),
                    _output(spec))
        return KerasPredictor(backend, got["key"], got["bytes"], fold.task, _output(spec),
                              got["info"], got["seconds"])

    def load(self, spec: NetworkSpec, saved: SavedFold) -> Predictor:
        """The fold's ``model.keras``, loaded in the worker of the network's backend with
        ``safe_mode=True`` (no Python code from the file runs; custom layers come from the
        build module, imported first)."""
        path = saved.file("model.keras")
        pred = load_predictor(path, backend=_backend(spec), task=saved.task,
                              output=_output(spec))
        got = _call(pred.backend, _load, pred.key, pred.data, spec.model)
        if "error" in got:
            raise DataError(f"{path}: Keras cannot load it ({got['error']}).")
        pred.info = got["info"]
        return pred


class KerasPredictor(Predictor):
    """A trained Keras model, kept in its backend's worker and as ``.keras`` bytes."""

    framework = "keras"

    def __init__(self, backend: str, key: str, data: bytes, task: str, output: str,
                 info: dict[str, Any], seconds: float) -> None:
        self.backend, self.key, self.data = backend, key, data
        self.task, self.output, self.info, self.seconds = task, output, info, seconds

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _call(self.backend, _predict, self.key, self.data, np.asarray(X), self.task,
                     self.output, 0, 0)

    def predict_mc(self, X: np.ndarray, n_mc: int, *, seed: int) -> np.ndarray | None:
        return _call(self.backend, _predict, self.key, self.data, np.asarray(X), self.task,
                     self.output, n_mc, seed)

    def save(self, folder: Path) -> list[str]:
        atomic_write_bytes(Path(folder) / "model.keras", self.data)
        return ["model.keras"]

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


def load_predictor(path: str | Path, *, backend: str = "torch", task: str = "classification",
                   output: str = "logits") -> KerasPredictor:
    """A :class:`KerasPredictor` from a saved ``model.keras`` (e.g. ``RUN/K/fold-00``)."""
    data = Path(path).read_bytes()
    key = hashlib.sha1(data).hexdigest()
    return KerasPredictor(backend, key, data, task, output, {"framework": "keras",
                                                             "backend": backend}, 0.0)


# --------------------------------------------------------------------------- worker side
# These run in the worker process, where KERAS_BACKEND was set before Keras was imported.

_MODELS: dict[str, Any] = {}


def _init_worker(backend: str, model_dirs: list[str]) -> None:
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:  # a shared machine: keep every backend to the threads asked for
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", threads)
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", threads)
        if threads == "1":
            os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                               "intra_op_parallelism_threads=1")
    for d in model_dirs:
        add_model_dir(d)


def _build(build: Any, args: dict[str, Any], input_shape: tuple[int, ...],
           n_outputs: int) -> Any:
    import keras

    from calipers.models import resolve_callable

    model = resolve_callable(build)(tuple(input_shape), int(n_outputs), **args)
    if not isinstance(model, keras.Model):
        raise ConfigError(f"the build function returned a {type(model).__name__}, not a Keras "
                          "model; return keras.Model(inputs, outputs) or keras.Sequential.")
    return model


def _probe(build: Any, args: dict[str, Any], input_shape: tuple[int, ...], n_outputs: int,
           x: np.ndarray) -> dict[str, Any]:
    import keras

    try:
        model = _build(build, args, input_shape, n_outputs)
        out = keras.ops.convert_to_numpy(model(x, training=False))
    except Exception as exc:  # reported by the parent as a ConfigError
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"shape": tuple(int(s) for s in np.shape(out)), "dropout": bool(_dropouts(model))}


def _describe(model: Any) -> dict[str, Any]:
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        version, device = torch.__version__, "cuda" if torch.cuda.is_available() else "cpu"
    elif backend == "jax":
        import jax

        version, device = jax.__version__, jax.devices()[0].platform
    else:
        import tensorflow as tf

        version = tf.__version__
        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return {"framework": "keras", "version": keras.__version__, "backend": backend,
            "backend_version": version, "device": device, "n_params": int(model.count_params())}


def _fit(build: Any, args: dict[str, Any], fold: FoldData, seed: int,
         settings: dict[str, Any], output: str) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(int(seed) % 2**32)
    model = _build(build, args, fold.input_shape, fold.n_outputs)
    if not getattr(model, "compiled", False):
        wd = float(settings["weight_decay"])
        opt = keras.optimizers.Adam(learning_rate=float(settings["lr"]),
                                    weight_decay=wd if wd > 0 else None)
        loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=output == "logits")
                if fold.task == "classification" else keras.losses.MeanSquaredError())
        model.compile(optimizer=opt, loss=loss, jit_compile="auto")
    y = fold.y if fold.task == "classification" or fold.y.ndim == 2 else fold.y[:, None]
    kwargs = {"epochs": int(settings["epochs"]), "batch_size": int(settings["batch_size"]),
              "verbose": 0, "shuffle": True, **dict(settings["extra"])}
    t0 = time.perf_counter()
    model.fit(fold.X, y, **kwargs)
    seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        data = path.read_bytes()
    key = hashlib.sha1(data).hexdigest()
    _MODELS.clear()  # one model at a time: folds run one after another
    _MODELS[key] = model
    return {"key": key, "bytes": data, "seconds": seconds, "info": _describe(model)}


def _dropouts(model: Any) -> list[Any]:
    import keras

    kinds = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
             keras.layers.SpatialDropout3D, keras.layers.GaussianDropout,
             keras.layers.AlphaDropout)
    return [la for la in model._flatten_layers(include_self=False) if isinstance(la, kinds)]


def _load(key: str, data: bytes, build: Any) -> dict[str, Any]:
    """Load a saved model into this worker (the build module first: its custom layers)."""
    from calipers.models import resolve_callable

    try:
        resolve_callable(build)
        return {"info": _describe(_model(key, data))}
    except Exception as exc:  # reported by the parent as a DataError
        return {"error": f"{type(exc).__name__}: {exc}"}


def _model(key: str, data: bytes) -> Any:
    if key not in _MODELS:
        import keras

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(data)
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        _MODELS.clear()
        _MODELS[key] = model
    return _MODELS[key]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _predict(key: str, data: bytes, X: np.ndarray, task: str, output: str, n_mc: int,
             seed: int) -> np.ndarray | None:
    import keras

    model = _model(key, data)

    def finish(out: Any) -> np.ndarray:
        out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
        if task == "classification" and output == "logits":
            return _softmax(out)
        return out.reshape(len(X), -1) if task == "regression" else out

    if n_mc == 0:
        return finish(model.predict(X, verbose=0, batch_size=1024))
    drops = _dropouts(model)
    if not drops:
        return None
    keras.utils.set_random_seed(int(seed) % 2**32)
    for i, layer in enumerate(drops):  # the same passes in any process (NOTE [Keras backends])
        sg = getattr(layer, "seed_generator", None)
        if sg is not None:
            sg.state.assign(np.array([int(seed) % 2**31, i], dtype=sg.state.dtype))
        orig = layer.call
        layer.call = (lambda o: lambda inputs, training=None, **kw: o(inputs, training=True,
                                                                        **kw))(orig)
    try:
        return np.stack([finish(model(X, training=False)) for _ in range(n_mc)])
    finally:
        for layer in drops:
            del layer.call


def _batchnorm_stats(key: str, data: bytes) -> list[np.ndarray]:
    """The moving means and variances of every BatchNormalization layer (for the tests)."""
    import keras

    model = _model(key, data)
    return [keras.ops.convert_to_numpy(v).copy()
            for la in model._flatten_layers(include_self=False)
            if isinstance(la, keras.layers.BatchNormalization)
            for v in (la.moving_mean, la.moving_variance)]
