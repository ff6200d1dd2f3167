"""``predict`` in chunks of files: the same output files as one pass, resumable."""

from __future__ import annotations

import gzip
import shutil

import pytest
from typer.testing import CliRunner

from calipers.cli import app
from calipers.segmentation import predict_folder


@pytest.fixture
def in_dir(seg_run, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for p in sorted((seg_run.parent / "data" / "images").iterdir())[:3]:
        shutil.copy(p, d / p.name)
    (d / "broken.nii.gz").write_bytes(b"not a nifti")
    return d


def test_chunks_of_files_write_the_same_outputs(seg_run, in_dir, tmp_path):
    one = predict_folder(seg_run, in_dir, tmp_path / "one", n_mc=2, seed=4)
    two = predict_folder(seg_run, in_dir, tmp_path / "two", n_mc=2, seed=4, n_chunks=2)
    assert two.done == one.done and len(one.done) == 3
    assert [f for f, _ in two.failed] == [f for f, _ in one.failed] == ["broken.nii.gz"]
    outs = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert outs == sorted(p.name for p in (tmp_path / "two").iterdir() if p.is_file())
    for name in outs:  # byte-identical images (gzip headers hold the time) and summary.csv
        a, b = ((tmp_path / d / name).read_bytes() for d in ("one", "two"))
        if name.endswith(".gz"):
            a, b = gzip.decompress(a), gzip.decompress(b)
        assert a == b, name
    chunks = sorted((tmp_path / "two" / ".calipers").glob("chunk-*.json"))
    assert len(chunks) == 2
    # a lost chunk is redone, the other kept
    kept = chunks[0].stat().st_mtime_ns
    chunks[1].unlink()
    again = predict_folder(seg_run, in_dir, tmp_path / "two", n_mc=2, seed=4, n_chunks=2)
    assert again.done == one.done and chunks[0].stat().st_mtime_ns == kept


def test_cli_predict_chunks_and_status(seg_run, in_dir, tmp_path):
    res = CliRunner().invoke(app, ["predict", "--model", str(seg_run), "--in", str(in_dir),
                                   "--out", str(tmp_path / "o"), "--mc", "2", "--chunks", "2",
                                   "-q"])
    assert res.exit_code == 1, res.output  # broken.nii.gz failed, the others were written
    assert "3 segmented" in res.output and "1 failed" in res.output
    st = CliRunner().invoke(app, ["status", str(tmp_path / "o")])
    assert st.exit_code == 0 and "2 tasks: 2 done" in st.output
