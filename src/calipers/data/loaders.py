"""Loaders for the built-in and file data kinds: digits, arrays (.npz), images, table (.csv),
uci (a folder in the layout of Gal & Ghahramani's UCI benchmark)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from calipers._checks import _look_up_option
from calipers._options import DataKind, look_up_option
from calipers.data.dataset import Dataset, make_dataset
from calipers.exceptions import DataError

__all__ = ["KINDS", "load_arrays", "load_dataset", "load_digits", "load_images", "load_table",
           "load_uci"]

KINDS = tuple(k.value for k in DataKind)  # digits, arrays, images, table, uci, pack
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def load_digits() -> Dataset:
    """scikit-learn's 1,797 real 8×8 handwritten digits as images ``(N, 1, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    X = (bunch.images[:, None, :, :] / 16.0).astype(np.float32)
    return make_dataset(X, bunch.target, task="classification", name="digits (scikit-learn)")


def _existing(path: str | os.PathLike[str], what: str, key: str = "data.path") -> Path:
    if path is None:
        raise DataError(f"{what} needs a path; set {key} in the config.")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p} does not exist (check {key}).")
    return p


def load_arrays(path: str | os.PathLike[str], *, task: str = "classification") -> Dataset:
    """An ``.npz`` file with arrays ``X`` (n_samples, ...) and ``y`` (n_samples,) [, ``groups``]."""
    p = _existing(path, "arrays file")
    if p.is_dir():
        raise DataError(f"arrays file {p} is a folder; data.path must name an .npz file.")
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise DataError(f"{p} is not an .npz file (it is not a zip archive; starts with "
                        f"{magic!r}). Save one with np.savez(path, X=X, y=y).")
    try:
        with np.load(p, allow_pickle=False) as npz:
            missing = [k for k in ("X", "y") if k not in npz.files]
            if missing:
                raise DataError(f"{p} lacks array(s) {missing}; it holds {npz.files}. "
                                "Save it with np.savez(path, X=X, y=y).")
            X, y = npz["X"], npz["y"]
            groups = npz["groups"] if "groups" in npz.files else None
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {p} as an .npz file: {exc}") from exc
    return make_dataset(X, y, task=task, name=p.name, groups=groups)


def read_image_chw(f: Path) -> np.ndarray:
    """One image file as float32 ``(C, H, W)`` in [0, 1]: grey images get C = 1, others RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            a = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {f}: {exc}") from exc
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_images(path: str | os.PathLike[str]) -> Dataset:
    """A folder with one subfolder per class of PNG/JPEG images, all the same size.

    Grayscale images give ``(N, 1, H, W)``, colour ``(N, 3, H, W)``, scaled to [0, 1].
    """

    root = _existing(path, "image folder")
    if not root.is_dir():
        raise DataError(f"data.path {root} must be a folder holding one subfolder of images "
                        "per class (data.kind = 'images'); it is a file.")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if len(class_dirs) < 2:
        raise DataError(f"{root} must hold one subfolder per class (at least 2); "
                        f"found {len(class_dirs)}.")
    arrays, labels = [], []
    for d in class_dirs:
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {d} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")
        for f in files:
            arrays.append(read_image_chw(f))
            labels.append(d.name)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images in {root} differ in shape/channels: {sorted(shapes)}; resize "
                        "them to one size first.")
    return make_dataset(np.stack(arrays), np.array(labels), task="classification", name=root.name)


def load_table(
    path: str | os.PathLike[str], *, target: str | None, task: str = "classification",
    group: str | None = None,
) -> Dataset:
    """A CSV with a header row; ``target`` names the target column, other columns are features."""
    p = _existing(path, "table")
    if p.is_dir():
        raise DataError(f"table {p} is a folder; data.path must name a .csv file.")
    try:  # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first name
        with p.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise DataError(f"{p} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
                        f"{exc.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet, or "
                        "iconv -f latin1 -t utf-8).") from None
    if len(rows) < 3:
        raise DataError(f"{p} needs a header row and at least 2 data rows; "
                        f"it has {len(rows)} rows.")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if target is None:
        raise DataError(f"set data.target to the target column of {p}; columns: {header}.")
    target = _look_up_option(target, header, what="target column")
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise DataError(f"{p}: row(s) {bad[:5]} have a different number of fields than the header "
                        f"({len(header)}).")
    cols = {h: [r[i].strip() for r in body] for i, h in enumerate(header)}
    groups = np.array(cols.pop(group)) if group else None
    y_text = cols.pop(target)
    X = np.empty((len(body), len(cols)), dtype=np.float64)
    for j, (name, values) in enumerate(cols.items()):
        try:
            X[:, j] = [float(v) if v != "" else np.nan for v in values]
        except ValueError:
            raise DataError(f"{p}: feature column {name!r} is not numeric (e.g. {values[0]!r}); "
                            "encode it as numbers or drop it.") from None
    try:
        y = np.array([float(v) for v in y_text])
    except ValueError:
        if task == "regression":
            raise DataError(f"{p}: target {target!r} is not numeric; regression needs numbers."
                            ) from None
        y = np.array(y_text)
    return make_dataset(X, y, task=task, name=p.name, groups=groups)


def load_uci(path: str | os.PathLike[str], *, task: str = "regression") -> Dataset:
    """A folder in the layout of Gal & Ghahramani's UCI benchmark: ``data.txt`` (whitespace-
    separated numbers, no header), ``index_features.txt`` (0-based input columns) and
    ``index_target.txt`` (the target column). Its ``index_train_<k>.txt`` /
    ``index_test_<k>.txt`` splits are read by ``[cv] splits``
    (:func:`calipers.evaluation.splits.read_splits`).
    """
    root = _existing(path, "UCI folder")
    if not root.is_dir():
        raise DataError(f"data.path {root} must be a folder holding data.txt, "
                        "index_features.txt and index_target.txt.")
    files = {k: root / f"{k}.txt" for k in ("data", "index_features", "index_target")}
    missing = [f.name for f in files.values() if not f.is_file()]
    if missing:
        raise DataError(f"{root} lacks {missing}; a UCI folder holds data.txt, "
                        "index_features.txt and index_target.txt.")
    try:
        data = np.loadtxt(files["data"], ndmin=2)
        feat = np.atleast_1d(np.loadtxt(files["index_features"])).astype(int)
        tgt = np.atleast_1d(np.loadtxt(files["index_target"])).astype(int)
    except ValueError as exc:
        raise DataError(f"{root}: could not read the numbers ({exc}).") from None
    bad = [int(c) for c in (*feat, *tgt) if not 0 <= c < data.shape[1]]
    if bad or len(tgt) != 1:
        raise DataError(f"{root}: column indices {bad or tgt.tolist()} do not fit data.txt's "
                        f"{data.shape[1]} columns (one target column expected).")
    return make_dataset(data[:, feat], data[:, tgt[0]], task=task, name=root.name)


def load_dataset(
    kind: str, *, path: str | os.PathLike[str] | None = None, task: str = "classification",
    target: str | None = None, group: str | None = None,
) -> Dataset:
    """Load a data set by kind: ``digits | arrays | images | table | uci`` (see each loader)."""
    kind = look_up_option(kind, DataKind, name="data kind")
    if kind == "digits":
        return load_digits()
    if kind == "arrays":
        return load_arrays(path, task=task)
    if kind == "images":
        return load_images(path)
    if kind == "uci":
        return load_uci(path, task=task)
    if kind == "pack":  # `calipers pack` output, memory-mapped
        from calipers.data.pack import load_pack

        return load_pack(_existing(path, "pack folder"))
    return load_table(path, target=target, task=task, group=group)
