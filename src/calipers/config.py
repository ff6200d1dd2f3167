"""Experiment configuration: TOML → validated objects; every error names its key path.

Keys follow design §3::

    [data]     kind (digits|arrays|images|table|uci|nifti|png|pack), path, task, target, group,
               missing_labels (segmentation: "error", the default, or "skip" with a warning)
    [cv]       folds, repeats, seed, stratify, shuffle, splits (predefined splits instead of a
               splitter)
    [train]    epochs, batch_size, lr, weight_decay, device, amp, deterministic, batched
    [mc]       samples, tau
    [search]   dropout, tau, inner_fraction, criterion, mc_samples, lengthscale (optional)
    [compare]  metric, alpha, a, b, rope (margin of equivalence; points for rates)
    [networks.NAME]  model, args, learner (calipers|function|sklearn|keras|lightning), fit,
                     estimator, backend, output; [networks.NAME.train] overrides [train] for
                     one network
    [executor] kind (serial|local|slurm), workers, threads, retries, chunks, partition, time,
               gpus_per_task, cpus_per_task, mem, account, qos, additional, setup, container,
               binds, max_parallel (optional; where tasks run, not part of the experiment)
    [segmentation]  patch, foreground, schedule, warmup_epochs, augment (optional; task
               segmentation: random patches, MONAI augmentation, LR schedule)
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from calipers._options import DeviceKind, LearnerKind, did_you_mean, look_up_option
from calipers._paths import add_model_dir
from calipers.exceptions import ConfigError

__all__ = ["ExperimentConfig", "load_config", "parse_config"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_RUN_FILES = frozenset({"config.toml", "env.json", "folds.json", "metrics.csv", "summary.json",
                        "report.html", "segmentation.json", "data.json"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    kind: Literal["digits", "arrays", "images", "table", "uci", "nifti", "png",
                  "pack"] = "digits"
    path: str | None = None
    task: Literal["classification", "regression", "segmentation"] = "classification"
    target: str | None = None
    group: str | None = None
    missing_labels: Literal["error", "skip"] | None = None  # segmentation; None means "error"


class CVConfig(_Section):
    folds: int = Field(10, ge=2)
    repeats: int = Field(1, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)
    stratify: bool = True
    shuffle: bool = True  # false: contiguous test blocks in data order (serial sections)
    splits: str | None = None  # folder of index_train_<k>.txt / index_test_<k>.txt, or JSON


class TrainConfig(_Section):
    epochs: int = Field(20, ge=1)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 64  # "auto": gpu.finder
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    device: str = "auto"
    amp: bool | Literal["auto", "bf16", "fp16", "off"] = True  # true = "auto", false = "off"
    deterministic: bool = False
    batched: bool = True  # stack MLP networks' splits into one model (calipers.batched.engine)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = v.strip().lower()
        if v == "mps":
            import torch

            if not torch.backends.mps.is_available():
                raise ValueError("'mps' (an Apple GPU) is not available on this machine; use "
                                 "'auto' (CUDA when present, else the CPU) or 'cpu'")
            return v
        if v in tuple(DeviceKind) or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        hint = did_you_mean(v.partition(":")[0], DeviceKind)
        raise ValueError(f"must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {v!r}{hint}")


class MCConfig(_Section):
    samples: int = Field(30, ge=0)
    tau: float | None = Field(None, gt=0, allow_inf_nan=False)


class SearchConfig(_Section):
    """Per-split grid search (Gal & Ghahramani): dropout × tau on an inner split, then refit."""

    dropout: list[float] = Field(min_length=1)
    tau: list[float] = Field(min_length=1)
    inner_fraction: float = Field(0.8, gt=0, lt=1)
    criterion: Literal["ll", "rmse"] = "ll"
    mc_samples: int | None = Field(None, ge=1)  # validation passes; default [mc] samples
    lengthscale: float = Field(1e-2, gt=0)

    @field_validator("dropout")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        if not all(0 <= p < 1 for p in v):
            raise ValueError(f"every dropout rate must be in [0, 1), got {v}")
        return v

    @field_validator("tau")
    @classmethod
    def _taus(cls, v: list[float]) -> list[float]:
        if not all(t > 0 for t in v):
            raise ValueError(f"every tau must be > 0, got {v}")
        return v


class CompareConfig(_Section):
    metric: str | None = None
    alpha: float = Field(0.05, gt=0, lt=1)
    rope: float | None = Field(None, ge=0, allow_inf_nan=False)  # None: the metric's default
    a: str | None = None
    b: str | None = None


class ExecutorConfig(_Section):
    """Where the run's tasks are computed (:class:`calipers.executors.ExecutorSpec`)."""

    kind: Literal["serial", "local", "slurm"] = "serial"
    workers: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    retries: int = Field(0, ge=0)
    chunks: int | None = Field(None, ge=1)
    partition: str | None = None
    time: int = Field(60, ge=1)  # minutes per task
    gpus_per_task: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    additional: dict[str, Any] = Field(default_factory=dict)  # extra #SBATCH options
    setup: list[str] = Field(default_factory=list)  # shell lines before each task
    container: str | None = None  # Apptainer image
    binds: list[str] = Field(default_factory=list)
    max_parallel: int | None = Field(None, ge=1)


class NetworkTrainConfig(BaseModel):
    """``[networks.NAME.train]``: overrides ``[train]`` for one network; other keys pass
    through to the framework's own fit (docs/frameworks.md)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0, allow_inf_nan=False)
    weight_decay: float | None = Field(None, ge=0, allow_inf_nan=False)


#: The key naming what each learner trains (calipers.learners).
_LEARNER_KEY = {"calipers": "model", "keras": "model", "lightning": "model", "function": "fit",
                "sklearn": "estimator"}


class SegmentationConfig(_Section):
    """Segmentation training recipe (:class:`calipers.segmentation.train.SegmentationRecipe`)."""

    patch: list[int] | None = None  # random crops of this size instead of whole images
    foreground: float = Field(0.0, ge=0, le=1)  # fraction of crops centred on foreground
    schedule: Literal["constant", "cosine", "poly"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    augment: bool = False  # MONAI flips, small affine, gamma


class NetworkConfig(_Section):
    model: str | None = None        # learner calipers (the default), keras and lightning;
    #                                 function: optional builder of its module (for loading)
    args: dict[str, Any] = Field(default_factory=dict)
    learner: str | None = None      # None: "calipers"
    fit: str | None = None          # learner "function": "pkg.module:fit"
    estimator: str | None = None    # learner "sklearn": "sklearn.linear_model:LogisticRegression"
    backend: Literal["jax", "torch", "tensorflow"] | None = None   # learner "keras"
    output: Literal["logits", "probabilities"] | None = None       # learner "keras"
    train: NetworkTrainConfig | None = None

    @field_validator("learner")
    @classmethod
    def _learner(cls, v: str | None) -> str | None:
        return None if v is None else look_up_option(v, LearnerKind, name="learner")

    @model_validator(mode="after")
    def _learner_keys(self) -> NetworkConfig:
        kind = self.learner or "calipers"
        need = _LEARNER_KEY[kind]
        if getattr(self, need) is None:
            raise ValueError(f"learner = {kind!r} needs {need} = \"module:callable\"")
        for key in ("model", "fit", "estimator"):
            if kind == "function" and key == "model":
                continue  # optional: builds the module its fit returns, to load it later
            if key != need and getattr(self, key) is not None:
                owners = [k for k, v in _LEARNER_KEY.items() if v == key]
                raise ValueError(f"{key} is for learner = {' or '.join(map(repr, owners))}; this "
                                 f"network's learner is {kind!r} (it reads {need})")
        for key in ("backend", "output"):
            if getattr(self, key) is not None and kind != "keras":
                raise ValueError(f"{key} is for learner = 'keras' only (Keras 3 chooses its "
                                 f"backend per process); this network's learner is {kind!r}")
        return self


class ExperimentConfig(_Section):
    """A whole experiment; see the module docstring for the keys."""

    data: DataConfig = Field(default_factory=DataConfig)
    cv: CVConfig = Field(default_factory=CVConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    mc: MCConfig = Field(default_factory=MCConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    search: SearchConfig | None = None
    executor: ExecutorConfig | None = None
    segmentation: SegmentationConfig | None = None
    networks: dict[str, NetworkConfig] = Field(min_length=1)

    @field_validator("networks")
    @classmethod
    def _names(cls, v: dict[str, NetworkConfig]) -> dict[str, NetworkConfig]:
        bad = [n for n in v if not _NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"network names become folder names: use letters, digits, '_', '-' "
                             f"or '.' only, got {bad}")
        taken = [n for n in v if n.lower() in _RUN_FILES]
        if taken:
            raise ValueError(f"{taken} would be the folder of a file the run folder holds "
                             f"({', '.join(sorted(_RUN_FILES))}); rename the network")
        return v

    def to_toml(self) -> str:
        """The resolved configuration as TOML text (written to ``RUN/config.toml``); without
        ``[executor]``: where a run is computed does not change it (resume anywhere)."""
        return _dump_toml(self.model_dump(exclude_none=True, exclude={"executor"}))


_SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig, "cv": CVConfig, "train": TrainConfig, "mc": MCConfig,
    "compare": CompareConfig, "search": SearchConfig, "executor": ExecutorConfig,
    "segmentation": SegmentationConfig,
}


def _known_keys(loc: tuple) -> list[str]:
    if len(loc) == 2 and loc[0] in _SECTIONS:
        return list(_SECTIONS[loc[0]].model_fields)
    if len(loc) == 3 and loc[0] == "networks":
        return list(NetworkConfig.model_fields)
    if len(loc) == 1:
        return list(ExperimentConfig.model_fields)
    return []


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    path = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc)
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        return f"{path}: unknown key{hint} Valid keys here: {', '.join(known)}."
    if err["type"] == "missing":
        return f"{path}: required key is missing."
    got = err.get("input")
    return f"{path}: {err['msg']} (got {got!r})."


def parse_config(raw: dict[str, Any], *, base_dir: str | Path | None = None) -> ExperimentConfig:
    """Validate a config dict; relative ``data.path`` is resolved against ``base_dir``."""
    if "networks" not in raw:
        raise ConfigError("networks: no [networks.NAME] table; add at least one, e.g.\n"
                          "[networks.A]\nmodel = \"calipers.models:CNN\"\n"
                          "args = { channels = 16, dropout = 0.1 }")
    data = raw.get("data")
    if isinstance(data, dict) and data.get("kind") == "uci" and "task" not in data:
        raw = {**raw, "data": {**data, "task": "regression"}}  # UCI folders hold regression sets
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    if cfg.data.kind != "digits" and cfg.data.path is None:
        raise ConfigError(f"data.path: required for data.kind = {cfg.data.kind!r}.")
    seg_kinds = ("nifti", "png")
    if cfg.data.kind != "pack" and (cfg.data.task == "segmentation") != (
            cfg.data.kind in seg_kinds):  # a pack holds either
        raise ConfigError(
            f"data.task = {cfg.data.task!r} does not fit data.kind = {cfg.data.kind!r}: "
            "segmentation uses kind 'nifti' or 'png' (folders images/ and labels/), and those "
            "kinds are only for task = 'segmentation'."
        )
    if cfg.data.kind == "table" and cfg.data.target is None:
        raise ConfigError("data.target: required for data.kind = 'table' (the target column).")
    if base_dir is not None:
        for section, key in (("data", "path"), ("cv", "splits"), ("executor", "container")):
            value = getattr(getattr(cfg, section), key, None)
            if value is not None and not Path(value).is_absolute():
                sub = getattr(cfg, section).model_copy(
                    update={key: str((Path(base_dir) / value).resolve())})
                cfg = cfg.model_copy(update={section: sub})
    if cfg.search is not None:
        _check_search(cfg)
    if cfg.segmentation is not None and cfg.data.task != "segmentation":
        raise ConfigError(f"segmentation: [segmentation] sets the training recipe of "
                          f"segmentation networks; data.task is {cfg.data.task!r}. Remove it.")
    if not cfg.cv.shuffle and cfg.cv.repeats > 1:
        raise ConfigError(f"cv.repeats = {cfg.cv.repeats} with shuffle = false repeats the same "
                          "folds; set repeats = 1 or shuffle = true.")
    if not cfg.cv.shuffle and cfg.cv.splits is not None:
        raise ConfigError("cv.shuffle: has no effect with cv.splits (the given splits are used "
                          "as they are); remove one of them.")
    for key in ("a", "b"):
        name = getattr(cfg.compare, key)
        if name is not None and name not in cfg.networks:
            raise ConfigError(f"compare.{key}: no network named {name!r}; networks are "
                              f"{', '.join(cfg.networks)}.")
    return cfg


def _check_search(cfg: ExperimentConfig) -> None:
    if cfg.data.task != "regression":
        raise ConfigError(f"search: the grid search is for regression (MC log likelihood); "
                          f"data.task is {cfg.data.task!r}. Remove [search] or set task = "
                          "'regression'.")
    if cfg.mc.samples < 1:
        raise ConfigError("mc.samples: [search] scores each split with MC dropout; set [mc] "
                          "samples >= 1 (the paper uses 10000).")
    if cfg.mc.tau is not None:
        raise ConfigError("mc.tau: with [search], tau is chosen per split from search.tau; "
                          "remove mc.tau.")
    if cfg.train.weight_decay > 0:
        raise ConfigError("train.weight_decay: with [search], weight decay follows from tau and "
                          "the dropout rate (λ = l²(1 − p)/(2Nτ)); remove train.weight_decay.")
    for name, net in cfg.networks.items():
        if "dropout" in net.args:
            raise ConfigError(f"networks.{name}.args.dropout: with [search], the dropout rate "
                              "is chosen per split from search.dropout; remove it from args.")


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment TOML file.

    The config's own folder becomes a place to import ``model = "module:callable"`` from
    (after the installed packages and PYTHONPATH): a config names code that calipers runs, so
    run only configs you trust, as you would a script.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist.")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    cfg = parse_config(raw, base_dir=p.parent)
    add_model_dir(p.parent)  # "mymodels:Net" may name mymodels.py beside the config
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ConfigError(f"cannot write {v!r} ({type(v).__name__}) to TOML.")


def _dump_toml(d: dict[str, Any]) -> str:
    out = []
    for section, body in d.items():
        if section == "networks":
            for name, net in body.items():
                key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'
                out.append(f"[networks.{key}]")
                out += [f"{k} = {_toml_value(v)}" for k, v in net.items()]
                out.append("")
            continue
        out.append(f"[{section}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
        out.append("")
    return "\n".join(out)
