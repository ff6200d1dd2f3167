import numpy as np
import pytest

from calipers.config import load_config, parse_config
from calipers.exceptions import ConfigError

NET = {"A": {"model": "calipers.models:MLP", "args": {"dropout": 0.1}}}

DESIGN_EXAMPLE = '''
[data]
kind = "arrays"            # digits | arrays | images | table
path = "data.npz"
task = "classification"
[cv]
folds = 10
repeats = 1
seed = 0
stratify = true
[train]
epochs = 20
batch_size = 64
lr = 1e-3
device = "auto"
[mc]
samples = 30
[networks.A]
model = "calipers.models:CNN"
args = { channels = 16, dropout = 0.1 }
[networks.B]
model = "calipers.models:CNN"
args = { channels = 32, dropout = 0.3 }
'''


def test_design_example_parses_and_resolves_path(tmp_path):
    (tmp_path / "exp.toml").write_text(DESIGN_EXAMPLE)
    cfg = load_config(tmp_path / "exp.toml")
    assert cfg.cv.folds == 10 and cfg.mc.samples == 30 and cfg.train.lr == 1e-3
    assert cfg.networks["B"].args == {"channels": 32, "dropout": 0.3}
    assert cfg.data.path == str(tmp_path / "data.npz")


def test_round_trip_through_toml():
    import tomllib

    cfg = parse_config({"networks": NET, "cv": {"folds": 4}, "train": {"device": "CPU"}})
    assert parse_config(tomllib.loads(cfg.to_toml())) == cfg
    assert cfg.train.device == "cpu"


@pytest.mark.parametrize("raw, match", [
    ({"cv": {"fold": 3}}, r"cv.fold: unknown key; did you mean 'folds'\? Valid keys here: folds, repeats, seed, stratify"),
    ({"cv": {"folds": 1}}, r"cv.folds: Input should be greater than or equal to 2 \(got 1\)"),
    ({"train": {"lr": "fast"}}, r"train.lr: .*number.*\(got 'fast'\)"),
    ({"data": {"kind": "csv"}}, r"data.kind: Input should be 'digits', 'arrays', 'images', 'table', 'uci', 'nifti', 'png' or 'pack' \(got 'csv'\)"),
    ({"train": {"device": "gpu"}}, r"train.device: .*must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
    ({"mc": {"samples": -1}}, r"mc.samples: Input should be greater than or equal to 0"),
    ({"networks": {"A": {"modle": "x:y"}}}, r"networks.A.modle: unknown key; did you mean 'model'\?"),
    ({"trian": {}}, r"trian: unknown key; did you mean 'train'\?"),
    ({"networks": {"a/b": {"model": "x:y"}}}, r"networks: .*folder names.*got \['a/b'\]"),
])
def test_bad_keys_name_the_key_path(raw, match):
    raw = {"networks": NET, **raw}
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_segmentation_needs_a_segmentation_kind():
    with pytest.raises(ConfigError, match="segmentation uses kind 'nifti' or 'png'"):
        parse_config({"networks": NET, "data": {"kind": "arrays", "path": "x.npz",
                                                "task": "segmentation"}})


def test_no_networks():
    with pytest.raises(ConfigError, match=r"networks: no \[networks.NAME\] table"):
        parse_config({"cv": {"folds": 3}})


def test_path_required_for_files():
    with pytest.raises(ConfigError, match="data.path: required for data.kind = 'arrays'"):
        parse_config({"networks": NET, "data": {"kind": "arrays"}})


def test_compare_names_must_exist():
    with pytest.raises(ConfigError, match="compare.b: no network named 'C'"):
        parse_config({"networks": NET, "compare": {"a": "A", "b": "C"}})


def test_missing_and_invalid_toml(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[cv\nfolds=3")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_predefined_splits_drive_the_run(tmp_path, rng):
    """[cv] splits = DIR replaces the splitter; the folds are read exactly."""
    from calipers.experiment.runner import run_experiment

    X, y = rng.normal(size=(30, 3)), np.repeat([0, 1], 15)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    (tmp_path / "sp").mkdir()
    tests = [np.arange(0, 10), np.arange(10, 20)]
    for k, te in enumerate(tests):
        np.savetxt(tmp_path / f"sp/index_test_{k}.txt", te, fmt="%d")
        np.savetxt(tmp_path / f"sp/index_train_{k}.txt", np.setdiff1d(np.arange(30), te), fmt="%d")
    (tmp_path / "e.toml").write_text(
        '[data]\nkind = "arrays"\npath = "d.npz"\n[cv]\nsplits = "sp"\n[train]\nepochs = 1\n'
        'device = "cpu"\n[mc]\nsamples = 2\n[networks.A]\nmodel = "calipers.models:MLP"\n'
        '[networks.B]\nmodel = "calipers.models:MLP"\nargs = { dropout = 0.3 }\n')
    cfg = load_config(tmp_path / "e.toml")
    assert cfg.cv.splits == str(tmp_path / "sp")
    res = run_experiment(cfg, tmp_path / "run", report=False)
    assert len(res.cv.folds) == 2
    for got, want in zip(res.cv.folds.test, tests, strict=True):
        np.testing.assert_array_equal(got, want)
