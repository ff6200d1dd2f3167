"""The bad-input suite (issue 15): every bad input gets a message, the right exit code, no
Python traceback, and leaves every file as it was.

Each row of ``CASES`` is: input (a setup function that writes tiny data into ``tmp_path`` and
returns the command line) -> exit code -> a fragment of the message -> files untouched. Cases
are numbered after the issue's list (1-10); ``ok-*`` rows already worked and must stay so.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from calipers.cli import app

runner = CliRunner()
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


# ------------------------------------------------------------------ tiny inputs


def _npz(path: Path, seed: int = 0, n: int = 36, k: int = 3, y=None) -> Path:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k) if y is None else np.asarray(y)
    X = rng.normal(size=(len(y), 4)).astype(np.float32) + y[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=X, y=y)
    return path


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def _config(tmp: Path, *, data: dict | None = None, networks: dict | None = None,
            name: str = "exp.toml", **sections) -> Path:
    """A fast experiment TOML: 2 folds, 1 epoch, 2 MC passes, an MLP."""
    body = {
        "data": data or {"kind": "arrays", "path": "d.npz"},
        "cv": {"folds": 2, "seed": 0},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
        "mc": {"samples": 2},
    }
    for key, value in sections.items():
        body[key] = {**body.get(key, {}), **value}
    lines = []
    for section, values in body.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    networks = networks or {"A": {"model": "calipers.models:MLP",
                                  "args": {"hidden": [8], "dropout": 0.1}}}
    for net, spec in networks.items():
        lines.append(f'[networks."{net}"]')
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items()]
    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    return path


_USER_NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    """A user network whose output width is fixed by hand (``width``)."""

    def __init__(self, input_shape, width=3, flat=False, nan=False):
        super().__init__()
        self.lin = nn.Linear(input_shape[0], width)
        self.drop = nn.Dropout(0.1)
        self.flat, self.nan = flat, nan

    def forward(self, x):
        out = self.lin(self.drop(x))
        if self.nan:
            out = out * float("nan")
        return out[:, 0] if self.flat else out
'''


def _user_net(tmp: Path, **args) -> dict:
    """``mymodels.py`` beside the config (no PYTHONPATH), network ``Wide``."""
    (tmp / "mymodels.py").write_text(_USER_NETS)
    return {"Wide": {"model": "mymodels:Net", "args": args}}


def _cv(cfg: Path, out: Path) -> list[str]:
    return ["cv", str(cfg), "--out", str(out), "--no-report"]


def _finished_run(tmp: Path, name: str = "run", npz: str = "d.npz", seed: int = 0) -> Path:
    _npz(tmp / npz, seed=seed)
    cfg = _config(tmp, data={"kind": "arrays", "path": npz}, name=f"{name}.toml")
    res = runner.invoke(app, _cv(cfg, tmp / name))
    assert res.exit_code == 0, res.output
    return tmp / name


def _nifti(path: Path, shape=(8, 8, 8), seed: int = 0, dtype=np.float32) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(dtype), AFFINE), path)
    return path


def _checkpoint(path: Path) -> Path:
    """An untrained 2-level U-Net checkpoint for 8³ volumes, 3 classes."""
    from calipers.models import build_network
    from calipers.segmentation.predict import CHECKPOINT_FORMAT

    meta = {"model": "calipers.models:UNet", "args": {"channels": [2, 4], "dropout": 0.2},
            "n_classes": 3, "label_values": [0, 1, 2], "input_shape": [1, 8, 8, 8],
            "multiple": 2, "normalize": "zscore", "kind": "nifti"}
    torch.manual_seed(0)
    net = build_network(meta["model"], meta["args"], input_shape=meta["input_shape"],
                        n_outputs=3)
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, **meta,
                "state_dicts": [net.state_dict()], "source": {}}, path)
    return path


def _predict_args(tmp: Path, in_dir: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["predict", "--model", str(_checkpoint(tmp / "m.pt")), "--in", str(in_dir),
            "--out", str(out_dir), "--mc", "2", "--device", "cpu", "-q", *extra]


def _images(tmp: Path, *names: str) -> Path:
    d = tmp / "scans"
    for i, name in enumerate(names):
        _nifti(d / name, seed=i)
    return d


def _subjects(tmp: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(1)
    path = tmp / "all.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(1.0, 1.0, size=(5, 5, 5, n)).astype(np.float32),
                             AFFINE), path)
    return path


def _permute(tmp: Path, *extra: str, out: str | None = None) -> list[str]:
    return ["permute", "-i", str(_subjects(tmp)), "-o", out or str(tmp / "p" / "grp"),
            "-1", "-n", "20", "--device", "cpu", "-q", *extra]


def _seg_set(tmp: Path, n: int = 4, unlabelled: int = 1) -> Path:
    root = tmp / "seg"
    for i in range(n):
        _nifti(root / "images" / f"c{i}.nii.gz", seed=i)
        if i >= unlabelled:
            lab = (np.arange(512).reshape(8, 8, 8) % 3).astype(np.uint8)
            (root / "labels").mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(lab, AFFINE), root / "labels" / f"c{i}.nii.gz")
    return root


# ------------------------------------------------------------------ the cases


def _case_1_out_is_in(tmp):
    d = _images(tmp, "x.nii.gz", "x_seg.nii.gz")
    return _predict_args(tmp, d, d)


def _case_1_out_inside_in(tmp):
    d = _images(tmp, "x.nii.gz")
    return _predict_args(tmp, d, d / "seg")


def _case_1_in_inside_out(tmp):
    d = _images(tmp, "x.nii.gz")
    return _predict_args(tmp, d, tmp)


def _case_1_existing_output(tmp):
    d = _images(tmp, "x.nii.gz")
    (tmp / "seg").mkdir()
    (tmp / "seg" / "x_seg.nii.gz").write_bytes(b"an earlier result")
    return _predict_args(tmp, d, tmp / "seg")


def _case_2_stem_collision(tmp):
    d = _images(tmp, "a.nii.gz")
    _nifti(d / "a.nii", seed=5)
    return _predict_args(tmp, d, tmp / "seg")


def _case_3_width(tmp):
    _npz(tmp / "d.npz")
    return _cv(_config(tmp, networks=_user_net(tmp, width=7)), tmp / "run")


def _case_3_regression_width(tmp):
    _npz(tmp / "d.npz")
    cfg = _config(tmp, data={"kind": "arrays", "path": "d.npz", "task": "regression"},
                  networks=_user_net(tmp, width=3))
    return _cv(cfg, tmp / "run")


def _case_3_seg_classes(tmp):
    root = _seg_set(tmp, unlabelled=0)
    (tmp / "segnets.py").write_text(
        "from torch import nn\n"
        "def build(input_shape, n_outputs):\n"
        "    return nn.Sequential(nn.Dropout3d(0.1), nn.Conv3d(1, n_outputs + 2, 1))\n")
    cfg = _config(tmp, data={"kind": "nifti", "path": str(root), "task": "segmentation"},
                  networks={"S": {"model": "segnets:build"}})
    return _cv(cfg, tmp / "run")


def _case_4_resume_changed_data(tmp):
    run = _finished_run(tmp)
    _npz(tmp / "d.npz", seed=9)  # same y, other X
    shutil.rmtree(run / "A" / "fold-01")
    return _cv(tmp / "run.toml", run)


def _case_4_compare_different_data(tmp):
    r1 = _finished_run(tmp, "r1", "d1.npz", seed=0)
    r2 = _finished_run(tmp, "r2", "d2.npz", seed=3)
    return ["compare", str(r1), str(r2)]


def _case_5_permute_existing_prefix(tmp):
    (tmp / "p").mkdir()
    (tmp / "p" / "grp_tfce_corrp_tstat1.nii.gz").write_bytes(b"earlier")
    return _permute(tmp, "-x")


def _case_6_missing_label(tmp):
    root = _seg_set(tmp)
    cfg = _config(tmp, data={"kind": "nifti", "path": str(root), "task": "segmentation"},
                  networks={"U": {"model": "calipers.models:UNet",
                                  "args": {"channels": [2, 4], "dropout": 0.1}}})
    return _cv(cfg, tmp / "run")


def _case_8_images_is_file(tmp):
    (tmp / "pics.png").write_bytes(b"not a folder")
    return _cv(_config(tmp, data={"kind": "images", "path": "pics.png"}), tmp / "run")


def _case_8_mps(tmp):
    _npz(tmp / "d.npz")
    return _cv(_config(tmp, train={"device": "mps"}), tmp / "run")


def _case_8_flat_output(tmp):
    _npz(tmp / "d.npz")
    return _cv(_config(tmp, networks=_user_net(tmp, flat=True)), tmp / "run")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _case_8_truncated_npz_compare(tmp):
    run = _finished_run(tmp)
    _truncate(run / "A" / "fold-01" / "predictions.npz")
    return ["compare", str(run)]


def _case_8_truncated_npz_resume(tmp):
    run = _finished_run(tmp)
    _truncate(run / "A" / "fold-01" / "predictions.npz")
    return _cv(tmp / "run.toml", run)


def _case_8_network_named_summary(tmp):
    _npz(tmp / "d.npz")
    nets = {"summary.json": {"model": "calipers.models:MLP", "args": {"dropout": 0.1}}}
    return _cv(_config(tmp, networks=nets), tmp / "run")


def _case_8_corrupt_model_pt(tmp):
    run = tmp / "segrun"
    (run / "A" / "fold-00").mkdir(parents=True)
    (run / "config.toml").write_text('[networks.A]\nmodel = "calipers.models:UNet"\n'
                                     'args = { channels = [2, 4], dropout = 0.2 }\n')
    (run / "segmentation.json").write_text(json.dumps({
        "kind": "nifti", "n_classes": 3, "label_values": [0, 1, 2],
        "input_shape": [1, 8, 8, 8], "multiple": 2, "normalize": "zscore"}))
    (run / "A" / "fold-00" / "model.pt").write_bytes(b"PK\x03\x04 truncated zip")
    d = _images(tmp, "x.nii.gz")
    return ["predict", "--model", str(run), "--in", str(d), "--out", str(tmp / "seg"), "-q"]


def _case_8_permute_not_nifti(tmp):
    (tmp / "notes.txt").write_text("hello")
    return ["permute", "-i", str(tmp / "notes.txt"), "-o", str(tmp / "p" / "g"), "-1", "-q"]


def _case_8_predict_out_is_file(tmp):
    d = _images(tmp, "x.nii.gz")
    (tmp / "seg.txt").write_text("a file")
    return _predict_args(tmp, d, tmp / "seg.txt")


def _case_8_env_out_dir(tmp):
    (tmp / "recipes").mkdir()
    return ["env", "--export", "pip", "--out", str(tmp / "recipes")]


def _case_9_permute_truncated(tmp):
    src = _subjects(tmp)
    data = gzip.decompress(src.read_bytes())
    (tmp / "cut.nii.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
    return ["permute", "-i", str(tmp / "cut.nii.gz"), "-o", str(tmp / "p" / "g"), "-1", "-q"]


def _case_9_nan_output(tmp):
    _npz(tmp / "d.npz")
    return _cv(_config(tmp, networks=_user_net(tmp, nan=True)), tmp / "run")


def _case_9_lr_inf(tmp):
    _npz(tmp / "d.npz")
    (tmp / "exp.toml").write_text(_config(tmp).read_text().replace("[train]", "[train]\nlr = inf"))
    return _cv(tmp / "exp.toml", tmp / "run")


def _case_9_damaged_metrics_json(tmp):
    run = _finished_run(tmp)
    (run / "A" / "fold-00" / "metrics.json").write_text('{"metrics": {}}')
    return ["compare", str(run)]


def _case_9_stratify_names_label(tmp):
    _npz(tmp / "d.npz", y=[1] * 10 + [5] * 2 + [7] * 10)
    return _cv(_config(tmp, cv={"folds": 3}), tmp / "run")


def _case_9_text_as_npz(tmp):
    (tmp / "d.npz").write_text("X,y\n1,2\n")
    return _cv(_config(tmp), tmp / "run")


def _case_9_latin1_csv(tmp):
    (tmp / "t.csv").write_bytes("caf\xe9,label\n1,0\n2,1\n3,0\n4,1\n".encode("latin-1"))
    cfg = _config(tmp, data={"kind": "table", "path": "t.csv", "target": "label"})
    return _cv(cfg, tmp / "run")


def _case_10_predict_mc_negative(tmp):
    d = _images(tmp, "x.nii.gz")
    return [*_predict_args(tmp, d, tmp / "seg")[:-1], "-q", "--mc", "-1"]


def _case_10_permute_c_negative(tmp):
    return _permute(tmp, "-c", "-1")


def _case_10_permute_n_one(tmp):
    return [*_permute(tmp)[:-1], "-q", "-n", "1"]


def _case_10_permute_one_sample_with_design(tmp):
    (tmp / "d.csv").write_text("\n".join(["1"] * 6) + "\n")
    return _permute(tmp, "-d", str(tmp / "d.csv"))


def _case_10_zero_dropout(tmp):
    _npz(tmp / "d.npz")
    nets = {"Z": {"model": "calipers.models:MLP", "args": {"hidden": [8], "dropout": 0.0}}}
    return _cv(_config(tmp, networks=nets), tmp / "run")


def _case_ok_bad_key(tmp):
    _npz(tmp / "d.npz")
    return _cv(_config(tmp, train={"epoch": 3}), tmp / "run")


def _case_ok_missing_data(tmp):
    return _cv(_config(tmp), tmp / "run")


def _case_ok_missing_config(tmp):
    return _cv(tmp / "nope.toml", tmp / "run")


def _case_ok_resume_other_config(tmp):
    _finished_run(tmp)
    cfg = _config(tmp, name="run.toml", train={"epochs": 2})
    return _cv(cfg, tmp / "run")


def _case_ok_compare_not_a_run(tmp):
    (tmp / "empty").mkdir()
    return ["compare", str(tmp / "empty")]


def _case_ok_predict_missing_in(tmp):
    return _predict_args(tmp, tmp / "nothing", tmp / "seg")


def _case_ok_predict_bad_checkpoint(tmp):
    d = _images(tmp, "x.nii.gz")
    (tmp / "bad.pt").write_bytes(b"garbage")
    return ["predict", "--model", str(tmp / "bad.pt"), "--in", str(d), "--out",
            str(tmp / "seg"), "-q"]


def _case_ok_permute_missing_glob(tmp):
    return ["permute", "-i", str(tmp / "none_*.nii.gz"), "-o", str(tmp / "p" / "g"), "-1", "-q"]


def _case_ok_env_out_without_export(tmp):
    return ["env", "--out", str(tmp / "x.txt")]


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], list[str]]
    code: int
    fragment: str          # found in the output, whitespace-normalised, case-insensitive
    untouched: bool = True  # every file under tmp_path is as the setup left it


CASES = [
    Case("1-out-is-in", _case_1_out_is_in, 2, "is the --in folder"),
    Case("1-out-inside-in", _case_1_out_inside_in, 2, "is inside --in"),
    Case("1-in-inside-out", _case_1_in_inside_out, 2, "is inside --out"),
    Case("1-existing-output", _case_1_existing_output, 2, "--overwrite"),
    Case("2-stem-collision", _case_2_stem_collision, 2, "share the output name 'a'"),
    Case("3-logits-width", _case_3_width, 2, "network 'Wide'"),
    Case("3-regression-width", _case_3_regression_width, 2, "1 regression target"),
    Case("3-segmentation-classes", _case_3_seg_classes, 2, "3 segmentation classes"),
    Case("4-resume-changed-data", _case_4_resume_changed_data, 2, "data have changed"),
    Case("4-compare-different-data", _case_4_compare_different_data, 2,
         "--allow-different-data"),
    Case("5-permute-existing-prefix", _case_5_permute_existing_prefix, 2, "--overwrite"),
    Case("6-missing-label", _case_6_missing_label, 2, "no label file"),
    Case("8-images-kind-on-a-file", _case_8_images_is_file, 2, "must be a folder"),
    Case("8-device-mps", _case_8_mps, 2, "mps"),
    Case("8-model-returns-(N,)", _case_8_flat_output, 2, "shape (n,)"),
    Case("8-truncated-npz-compare", _case_8_truncated_npz_compare, 2, "predictions.npz"),
    Case("8-truncated-npz-resume", _case_8_truncated_npz_resume, 2, "predictions.npz"),
    Case("8-network-named-summary.json", _case_8_network_named_summary, 2, "summary.json"),
    Case("8-corrupt-model.pt", _case_8_corrupt_model_pt, 2, "model.pt"),
    Case("8-permute-non-nifti", _case_8_permute_not_nifti, 2, "notes.txt"),
    Case("8-predict-out-is-a-file", _case_8_predict_out_is_file, 2, "is a file"),
    Case("8-env-out-is-a-folder", _case_8_env_out_dir, 2, "is a folder"),
    Case("9-permute-truncated-nifti", _case_9_permute_truncated, 2, "cut.nii.gz"),
    Case("9-nan-model-output", _case_9_nan_output, 1, "network 'Wide', fold 0: the training loss",
         untouched=False),  # a run-time failure: the run folder exists, no fold is done
    Case("9-lr-inf", _case_9_lr_inf, 2, "train.lr"),
    Case("9-damaged-metrics.json", _case_9_damaged_metrics_json, 2, "metrics.json"),
    Case("9-stratify-names-user-label", _case_9_stratify_names_label, 2, "class 5"),
    Case("9-text-file-as-npz", _case_9_text_as_npz, 2, "not an .npz file"),
    Case("9-latin1-csv", _case_9_latin1_csv, 2, "t.csv"),
    Case("10-predict-mc-negative", _case_10_predict_mc_negative, 2, "--mc"),
    Case("10-permute-c-negative", _case_10_permute_c_negative, 2, "-c"),
    Case("10-permute-n-1", _case_10_permute_n_one, 2, "-n"),
    Case("10-permute-1-with-design", _case_10_permute_one_sample_with_design, 2, "-1"),
    Case("10-zero-dropout-with-mc", _case_10_zero_dropout, 2, "dropout"),
    Case("ok-unknown-config-key", _case_ok_bad_key, 2, "did you mean 'epochs'"),
    Case("ok-missing-data-file", _case_ok_missing_data, 2, "does not exist"),
    Case("ok-missing-config", _case_ok_missing_config, 2, "does not exist"),
    Case("ok-resume-other-config", _case_ok_resume_other_config, 2, "different configuration"),
    Case("ok-compare-not-a-run", _case_ok_compare_not_a_run, 2, "not a calipers run"),
    Case("ok-predict-missing-in", _case_ok_predict_missing_in, 2, "is not a folder"),
    Case("ok-predict-bad-checkpoint", _case_ok_predict_bad_checkpoint, 2, "cannot load"),
    Case("ok-permute-missing-glob", _case_ok_permute_missing_glob, 2, "matches no file"),
    Case("ok-env-out-without-export", _case_ok_env_out_without_export, 2, "--export"),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = case.setup(tmp_path)
    before = _snapshot(tmp_path)
    res = runner.invoke(app, args)
    out = " ".join(res.output.split()).lower()
    assert "traceback" not in out, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == case.code, res.output
    assert case.fragment.lower() in out, res.output
    if case.untouched:
        assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------ behaviour beside the table


def test_enospc_during_cv_is_a_runtime_error_with_a_message(tmp_path, monkeypatch):
    import errno

    import calipers.runs as runs

    real = runs.atomic_write_bytes

    def full(path, data):
        if Path(path).name == "predictions.npz":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", full)
    _npz(tmp_path / "d.npz")
    cfg = _config(tmp_path, networks=_user_net(tmp_path))
    res = runner.invoke(app, _cv(cfg, tmp_path / "run"))
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "no space left" in res.output.lower()
    assert not list((tmp_path / "run").rglob("metrics.json"))  # no fold counted as done


def test_user_module_next_to_the_config_is_importable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # not the config's folder, no PYTHONPATH
    _npz(tmp_path / "d.npz")
    res = runner.invoke(app, _cv(_config(tmp_path, networks=_user_net(tmp_path)),
                                 tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "Wide" / "fold-01" / "metrics.json").is_file()


def test_csv_with_a_byte_order_mark(tmp_path):
    from calipers.data import load_dataset

    rows = "".join(f"{i % 2},{i}\n" for i in range(6))
    (tmp_path / "t.csv").write_bytes("\ufefflabel,x\n".encode() + rows.encode())
    data = load_dataset("table", path=tmp_path / "t.csv", target="label")
    assert data.n_samples == 6 and data.classes == (0.0, 1.0)


def test_compare_different_data_allowed_when_asked(tmp_path):
    r1 = _finished_run(tmp_path, "r1", "d1.npz", seed=0)
    r2 = _finished_run(tmp_path, "r2", "d2.npz", seed=3)
    res = runner.invoke(app, ["compare", str(r1), str(r2), "--allow-different-data", "--json"])
    assert res.exit_code == 0, res.output
    assert "different data" in res.output.lower()  # said, not silent


def test_resume_same_data_still_resumes(tmp_path):
    run = _finished_run(tmp_path)
    fp = json.loads((run / "data.json").read_text())
    assert len(fp["sha256"]) == 64 and fp["files"][0]["name"] == "d.npz"
    shutil.rmtree(run / "A" / "fold-01")
    res = runner.invoke(app, _cv(tmp_path / "run.toml", run))
    assert res.exit_code == 0, res.output
    assert (run / "A" / "fold-01" / "metrics.json").is_file()


def test_predict_overwrite_and_never_reads_outputs(tmp_path):
    d = _images(tmp_path, "x.nii.gz")
    args = _predict_args(tmp_path, d, tmp_path / "seg")
    assert runner.invoke(app, args).exit_code == 0
    first = sorted(p.name for p in (tmp_path / "seg").iterdir())
    assert first == ["summary.csv", "x_entropy.nii.gz", "x_mi.nii.gz", "x_seg.nii.gz",
                     "x_std.nii.gz"]
    assert runner.invoke(app, args).exit_code == 2  # outputs exist
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == first
    assert sorted(p.name for p in d.iterdir()) == ["x.nii.gz"]


def test_permute_overwrite_removes_the_earlier_runs_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, _permute(tmp_path, "-x", "-T")).exit_code == 0
    first = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert "grp_tfce_corrp_tstat1.nii.gz" in first
    (tmp_path / "p" / "grp_notes.txt").write_text("not ours")
    (tmp_path / "p" / "grpx_tstat1.nii.gz").write_text("another prefix")
    res = runner.invoke(app, _permute(tmp_path, "--overwrite"))
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == ["grp_notes.txt", "grp_summary.json", "grp_tstat1.nii.gz",
                     "grpx_tstat1.nii.gz"]


def test_permute_output_folder_with_trailing_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, _permute(tmp_path, out="out2" + os.sep))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == [
        "summary.json", "tstat1.nii.gz"]
    assert not list(tmp_path.glob("out2_*"))


def test_missing_label_as_a_counted_warning(tmp_path):
    from calipers.exceptions import CalipersWarning
    from calipers.segmentation.data import load_segmentation

    root = _seg_set(tmp_path, unlabelled=2)
    with pytest.warns(CalipersWarning, match=r"2 image\(s\) have no label file .*c0.nii.gz"):
        data = load_segmentation(root, kind="nifti", multiple=2, missing_labels="skip")
    assert data.names == ("c2", "c3")
