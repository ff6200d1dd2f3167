"""``calipers predict``: segment every image of a folder, with per-voxel uncertainty maps.

# NOTE [Segmentation checkpoint]
A checkpoint is one ``torch.save`` of plain types, loadable with ``weights_only=True``::

    {"format": "calipers-segmentation-checkpoint", "version": 1,
     "model": "calipers.models:UNet", "args": {...},          # the network spec
     "n_classes": 3, "label_values": [0, 1, 2], "input_shape": [1, 48, 64, 48],
     "multiple": 16, "normalize": "zscore", "kind": "nifti",
     "state_dicts": [{...}, ...],                             # one per fold: an ensemble
     "source": {"run": "...", "network": "A", "folds": [0, 1, 2, 3, 4]}}

A run folder gives the same information: ``config.toml`` (spec), ``segmentation.json`` (data)
and ``<network>/fold-XX/model.pt``.

Outputs per input ``NAME`` (NIfTI keeps the source affine and header; PNG for 2-D PNG input):
``NAME_seg`` (stored label values), ``NAME_entropy``, ``NAME_mi``, ``NAME_std`` and, for an
ensemble, ``NAME_disagreement`` (see ``segmentation.maps``). PNG maps are 16-bit:
``value = round(65535 · u / scale)`` with scale ``log C`` for entropy, MI and disagreement and
0.5 for std. ``summary.csv`` has one row per input (status ``ok`` or the error).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calipers._checks import _check_positive_int
from calipers._device import resolve_device
from calipers._paths import check_separate_folders
from calipers._seeds import child_seed
from calipers.exceptions import DataError
from calipers.models import build_network
from calipers.runs import atomic_write_bytes, atomic_write_text, fold_dir, read_json
from calipers.segmentation.data import Image, image_kind, normalize_intensity, read_image
from calipers.segmentation.maps import VoxelMaps, _check_roi, mc_segment

__all__ = ["CHECKPOINT_FORMAT", "PredictResult", "Predictor", "export_checkpoint",
           "load_predictor", "predict_folder"]

CHECKPOINT_FORMAT = "calipers-segmentation-checkpoint"
_META = ("model", "args", "n_classes", "label_values", "input_shape", "multiple", "normalize",
         "kind")
_MAPS = ("seg", "entropy", "mi", "std", "disagreement")
_CSV_COLS = ("file", "status", "shape", "n_models", "n_mc", "foreground_voxels",
             "mean_entropy_fg", "mean_mutual_info_fg", "mean_std_fg", "mean_disagreement_fg")


@dataclass(frozen=True, eq=False)
class Predictor:
    """Trained segmentation networks (one, or the folds of a run as an ensemble) and their data
    conventions (NOTE [Segmentation checkpoint])."""

    models: tuple[nn.Module, ...] = field(repr=False)
    meta: dict[str, Any] = field(repr=False)
    source: dict[str, Any]

    @property
    def ndim(self) -> int:
        return len(self.meta["input_shape"]) - 1

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict (plain types and tensors)."""
        return {"format": CHECKPOINT_FORMAT, "version": 1,
                **{k: self.meta[k] for k in _META},
                "state_dicts": [{k: v.detach().cpu() for k, v in m.state_dict().items()}
                                for m in self.models],
                "source": dict(self.source)}


def _build(meta: dict[str, Any], states: list[dict[str, torch.Tensor]],
           device: torch.device) -> tuple[nn.Module, ...]:
    models = []
    for state in states:
        net = build_network(meta["model"], meta["args"], input_shape=meta["input_shape"],
                            n_outputs=meta["n_classes"])
        net.load_state_dict(state)
        models.append(net.to(device).eval())
    return tuple(models)


def _run_meta(run_dir: Path, network: str | None) -> tuple[str, dict[str, Any], list[int]]:
    if not (run_dir / "segmentation.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a segmentation run folder (no "
                                "segmentation.json); train one with `calipers cv CONFIG.toml`.")
    cfg = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    nets = list(cfg.get("networks", {}))
    if network is None:
        best = read_json(run_dir / "summary.json").get("best") if (
            run_dir / "summary.json").is_file() else None
        network = best if best in nets else nets[0]
    elif network not in nets:
        raise ValueError(f"network {network!r} is not in {run_dir}; it has {', '.join(nets)}.")
    info = read_json(run_dir / "segmentation.json")
    spec = cfg["networks"][network]
    if spec.get("learner", "calipers") != "calipers":  # segmentation trains calipers' U-Nets
        raise ValueError(f"network {network!r} of {run_dir} has learner "
                         f"{spec['learner']!r}; segmentation prediction loads networks trained "
                         "by calipers' own loop only.")
    meta = {"model": spec["model"], "args": dict(spec.get("args", {})), **{
        k: info[k] for k in _META if k not in ("model", "args")}}
    folds = [j for j in range(1000) if (fold_dir(run_dir, network, j) / "model.pt").is_file()]
    if not folds:
        raise FileNotFoundError(f"{run_dir}/{network} holds no fold-XX/model.pt; finish the run "
                                "with `calipers cv` first.")
    return network, meta, folds


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise DataError(f"{path}: cannot load the fold's weights ({type(exc).__name__}: "
                        f"{str(exc).split('. ')[0][:160]}); the file is damaged. "
                        "Delete its fold folder and rerun `calipers cv` to retrain it.") from None


def load_predictor(
    source: str | Path,
    *,
    network: str | None = None,
    folds: list[int] | None = None,
    device: str | torch.device = "cpu",
) -> Predictor:
    """Load a checkpoint file or a run folder (every fold of ``network``: an ensemble).

    ``network`` defaults to the run's chosen network (``summary.json`` ``best``), else the first.
    """
    source = Path(source)
    dev = resolve_device(device)
    if source.is_dir():
        name, meta, available = _run_meta(source, network)
        use = available if folds is None else [int(j) for j in folds]
        missing = sorted(set(use) - set(available))
        if missing:
            raise FileNotFoundError(f"{source}/{name}: folds {missing} have no model.pt; "
                                    f"available: {available}.")
        states = [_load_state(fold_dir(source, name, j) / "model.pt") for j in use]
        src = {"run": str(source), "network": name, "folds": use}
        return Predictor(_build(meta, states, dev), meta, src)
    if not source.is_file():
        raise FileNotFoundError(f"--model {source} is neither a run folder nor a checkpoint file.")
    try:
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{source}: cannot load as a checkpoint ({type(exc).__name__}: {exc}).") \
            from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{source} is not a calipers segmentation checkpoint (no format "
                        f"{CHECKPOINT_FORMAT!r}); export one with "
                        "calipers.segmentation.export_checkpoint(run_dir, fold, path).")
    try:
        meta = {k: ckpt[k] for k in _META}
        states = list(ckpt["state_dicts"])
    except KeyError as exc:
        raise DataError(f"{source}: the checkpoint lacks {exc}; export it again.") from None
    return Predictor(_build(meta, states, dev), meta,
                     dict(ckpt.get("source", {})))


def export_checkpoint(run_dir: str | Path, fold: int | None, path: str | Path, *,
                      network: str | None = None) -> Path:
    """Write one self-describing checkpoint file from a run (``fold=None``: all folds).

    See NOTE [Segmentation checkpoint]; the file loads with ``torch.load(weights_only=True)``.
    """
    pred = load_predictor(run_dir, network=network, folds=None if fold is None else [fold])
    buf = io.BytesIO()
    torch.save(pred.to_checkpoint(), buf)
    return atomic_write_bytes(path, buf.getvalue())


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict_folder` did: files written, files skipped and why."""

    out_dir: Path
    done: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    n_models: int
    n_mc: int

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "done": list(self.done),
                "failed": [{"file": f, "error": e} for f, e in self.failed],
                "n_models": self.n_models, "n_mc": self.n_mc}


def _nifti_bytes(arr: np.ndarray, src: Image, dtype: type) -> bytes:
    import nibabel as nib

    header = src.header.copy()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(np.asarray(arr, dtype=dtype), src.affine, header)
    img.header.set_slope_inter(1.0, 0.0)
    return gzip.compress(img.to_bytes(), compresslevel=6)


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write_maps(out_dir: Path, stem: str, src: Image, maps: VoxelMaps,
                meta: dict[str, Any]) -> None:
    values = np.asarray(meta["label_values"])
    seg = values[maps.segmentation]
    scale = {"entropy": math.log(meta["n_classes"]), "mi": math.log(meta["n_classes"]),
             "std": 0.5, "disagreement": math.log(meta["n_classes"])}
    layers = {"entropy": maps.entropy, "mi": maps.mutual_info, "std": maps.std,
              "disagreement": maps.disagreement}
    files: dict[str, bytes] = {}
    if image_kind(src.path) == "nifti":
        seg_dtype = np.uint8 if values.max() < 256 else np.int16
        files[f"{stem}_seg.nii.gz"] = _nifti_bytes(seg, src, seg_dtype)
        for key, m in layers.items():
            if m is not None:
                files[f"{stem}_{key}.nii.gz"] = _nifti_bytes(m, src, np.float32)
    else:
        files[f"{stem}_seg.png"] = _png_bytes(seg.astype(np.uint8 if values.max() < 256
                                                         else np.uint16))
        for key, m in layers.items():
            if m is not None:
                u = np.clip(np.rint(65535 * m / scale[key]), 0, 65535).astype(np.uint16)
                files[f"{stem}_{key}.png"] = _png_bytes(u)
    for name, data in files.items():
        atomic_write_bytes(out_dir / name, data)


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii", ".png"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _check_outputs(files: list[Path], out_dir: Path, overwrite: bool) -> None:
    """Refuse inputs whose outputs collide, and existing outputs unless ``overwrite``."""
    by_stem: dict[str, list[str]] = {}
    for p in files:
        by_stem.setdefault(_stem(p), []).append(p.name)
    shared = {k: v for k, v in by_stem.items() if len(v) > 1}
    if shared:
        stem, names = next(iter(shared.items()))
        raise ValueError(f"--in holds files that share the output name {stem!r}: "
                         f"{', '.join(names)} would write the same {stem}_* maps"
                         + (f" ({len(shared)} such names)" if len(shared) > 1 else "")
                         + "; rename or move one of them.")
    if overwrite or not out_dir.is_dir():
        return
    existing = sorted(p.name for p in out_dir.iterdir()
                      if p.name == "summary.csv" or any(
                          p.name.startswith(f"{stem}_") and p.name[len(stem) + 1:].split(".")[0]
                          in _MAPS for stem in by_stem))
    if existing:
        raise ValueError(f"--out {out_dir} already holds outputs ({', '.join(existing[:3])}"
                         f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace "
                         "them, or choose another --out.")


def _one_file(path: Path, pred: Predictor, out_dir: Path, n_mc: int, seed: int,
              roi_size: Sequence[int] | None = None) -> dict:
    src = read_image(path)
    if src.data.ndim != pred.ndim:
        raise DataError(f"{path.name}: a {src.data.ndim}-D image, but the model segments "
                        f"{pred.ndim}-D images.")
    x = normalize_intensity(src.data)[None]
    maps = mc_segment(pred.models, x, n_mc=n_mc, seed=child_seed(seed, path.name),
                      device="auto", multiple=int(pred.meta["multiple"]),
                      min_shape=pred.meta["input_shape"][1:], roi_size=roi_size)
    _write_maps(out_dir, _stem(path), src, maps, pred.meta)
    return {"shape": "x".join(map(str, src.data.shape)), **maps.summary()}


def predict_folder(
    model: str | Path | Predictor,
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    n_mc: int = 20,
    seed: int = 0,
    device: str | torch.device = "auto",
    network: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    roi_size: Sequence[int] | None = None,
    overwrite: bool = False,
    executor: Any = None,
    n_chunks: int | None = None,
) -> PredictResult:
    """Segment every NIfTI/PNG image in ``in_dir``; write segmentations and uncertainty maps.

    Parameters
    ----------
    model : path or Predictor
        A run folder (its folds form an ensemble whose disagreement is mapped too) or a
        checkpoint file (NOTE [Segmentation checkpoint]).
    in_dir, out_dir : path
        Input folder (not searched recursively); output folder, created if needed.
    n_mc : int >= 0, default 20
        MC-dropout passes per model (0: deterministic).
    seed : int
        Each file's passes use ``child_seed(seed, file name)``.
    device : "auto", "cpu", "cuda[:i]"
    network : str, optional
        Which network of a run folder (default: the run's chosen one).
    progress : callable(done, total, file name), optional
    roi_size : sequence of int, optional
        Sliding-window inference with windows of this size (see :func:`mc_segment`), for
        images larger than the training shape.
    overwrite : bool, default False
        Replace outputs that already exist in ``out_dir`` (otherwise refused before any work).
    executor, n_chunks : optional
        Segment the files in ``n_chunks`` tasks (default: the executor's worker count) run by
        ``executor`` (:mod:`calipers.executors`); ``model`` must then be a path. Each file's
        outputs are the same as without (its seed depends on its name only).

    Returns
    -------
    PredictResult
        A file that cannot be read or segmented is listed in ``failed`` and skipped; every
        output file (and ``summary.csv``) is written atomically.

    Raises
    ------
    ValueError
        Before any work: ``out_dir`` is, holds or lies inside ``in_dir`` (outputs would replace
        inputs and be read as inputs next time); two inputs share a name stem (``a.nii`` and
        ``a.nii.gz`` would write the same ``a_*`` maps); outputs exist and not ``overwrite``.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"--in {in_dir} is not a folder.")
    check_separate_folders(in_dir, out_dir)
    n_mc = _check_positive_int(n_mc, name="--mc (n_mc)", minimum=0,
                               fix="Pass 0 for one deterministic pass, or e.g. 20.")
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and image_kind(p) is not None)
    if not files:
        raise FileNotFoundError(f"--in {in_dir} holds no .nii, .nii.gz or .png files.")
    # a chunked run that stopped part way is resumed, not refused: its finished chunks have
    # markers in out_dir/.calipers, and only the unfinished chunks run again
    resuming = (executor is not None or n_chunks is not None) and any(
        (out_dir / ".calipers").glob("chunk-*.json"))
    _check_outputs(files, out_dir, overwrite or resuming)
    pred = model if isinstance(model, Predictor) else load_predictor(
        model, network=network, device=device)
    _check_roi(roi_size, pred.ndim, int(pred.meta["multiple"]), 0.25)  # before any output
    out_dir.mkdir(parents=True, exist_ok=True)
    if executor is not None or n_chunks is not None:
        rows = _predict_chunked(model, files, out_dir, executor, n_chunks, progress,
                                {"n_mc": n_mc, "seed": seed, "device": device,
                                 "network": network, "roi_size": roi_size})
        return _finish(out_dir, rows, len(pred.models), n_mc)
    rows, done, failed = [], [], []
    for k, path in enumerate(files):
        try:
            row = {"file": path.name, "status": "ok", **_one_file(path, pred, out_dir, n_mc,
                                                                   seed, roi_size)}
            done.append(path.name)
        except (DataError, ValueError, OSError, RuntimeError) as exc:
            row = {"file": path.name, "status": f"failed: {exc}"}
            failed.append((path.name, str(exc)))
        rows.append(row)
        if progress is not None:
            progress(k + 1, len(files), path.name)
    return _finish(out_dir, rows, len(pred.models), n_mc)


def _finish(out_dir: Path, rows: list[dict], n_models: int, n_mc: int) -> PredictResult:
    """Write ``summary.csv`` (one row per input, in file order) and say what was done."""
    done = [r["file"] for r in rows if r["status"] == "ok"]
    failed = [(r["file"], r["status"].removeprefix("failed: ")) for r in rows
              if r["status"] != "ok"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_COLS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    return PredictResult(out_dir, tuple(done), tuple(failed), n_models, n_mc)


def predict_files(model: str, files: Sequence[str], out_dir: str, rows_path: str, *,
                  n_mc: int, seed: int, device: Any, network: str | None,
                  roi_size: Sequence[int] | None) -> None:
    """The task of one chunk of input files: segment each, write its maps, then the chunk's
    ``summary.csv`` rows to ``rows_path`` (the marker, last)."""
    from calipers.runs import atomic_write_json

    pred = load_predictor(model, network=network, device=device)
    rows = []
    for name in files:
        path = Path(name)
        try:
            rows.append({"file": path.name, "status": "ok",
                         **_one_file(path, pred, Path(out_dir), n_mc, seed, roi_size)})
        except (DataError, ValueError, OSError, RuntimeError) as exc:
            rows.append({"file": path.name, "status": f"failed: {exc}"})
    atomic_write_json(rows_path, rows)


def _predict_chunked(model, files, out_dir, executor, n_chunks, progress, options) -> list[dict]:
    from calipers.tasks import SerialExecutor, Task

    if isinstance(model, Predictor):
        raise ValueError("predict with an executor loads the model in each task: pass the run "
                         "folder or checkpoint path, not a Predictor.")
    executor = executor or SerialExecutor()
    n = max(1, min(len(files), n_chunks or getattr(executor, "workers", 1)))
    parts = [files[round(c * len(files) / n): round((c + 1) * len(files) / n)] for c in range(n)]
    tasks = [Task(f"predict/chunk-{c:03d}", predict_files,
                  {"model": str(Path(model).resolve()), "files": [str(f) for f in part],
                   "out_dir": str(out_dir), "rows_path": str(out_dir / ".calipers" /
                                                             f"chunk-{c:03d}.json"), **options},
                  out_dir / ".calipers" / f"chunk-{c:03d}.json") for c, part in enumerate(parts)]
    finished = [sum(len(parts[c]) for c, t in enumerate(tasks) if t.done())]

    def on_done(task: Task, _result: Any) -> None:
        finished[0] += len(task.kwargs["files"])
        if progress is not None:
            progress(finished[0], len(files), Path(task.kwargs["files"][-1]).name)

    executor.map([t for t in tasks if not t.done()], on_done=on_done)
    return [row for t in tasks for row in read_json(t.marker)]
