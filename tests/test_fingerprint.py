"""``calipers.repro.data_fingerprint``: the run's data.json (NOTE [Data fingerprint])."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from calipers.exceptions import DataError
from calipers.repro.data_fingerprint import (
    check_data,
    check_same_data,
    data_fingerprint,
    write_data,
)


def test_hash_is_sha256_of_dtype_shape_and_bytes(rng):
    X = rng.normal(size=(5, 3)).astype(np.float32)
    y = np.arange(5)
    h = hashlib.sha256()
    for a in (X, y):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(b"-")
    fp = data_fingerprint([X, y, None])
    assert fp["sha256"] == h.hexdigest() and fp["n_samples"] == 5 and fp["files"] == []


def test_any_change_changes_the_hash(rng, tmp_path):
    X = rng.normal(size=(40, 3))
    y = np.arange(40) % 2
    base = data_fingerprint([X, y])["sha256"]
    X2 = X.copy()
    X2[17, 1] = np.nextafter(X2[17, 1], 1)  # one ulp
    assert data_fingerprint([X2, y])["sha256"] != base
    assert data_fingerprint([X.astype(np.float32), y])["sha256"] != base
    assert data_fingerprint([X.reshape(40, 3, 1), y])["sha256"] != base
    assert data_fingerprint([X, y], names=["a"])["sha256"] != base
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.nii").write_bytes(b"12")
    with_folder = data_fingerprint([X, y], path=tmp_path / "d")
    assert with_folder["files"] == [{"name": "a.nii", "size": 2}]
    (tmp_path / "d" / "b.nii").write_bytes(b"1")
    assert data_fingerprint([X, y], path=tmp_path / "d")["sha256"] != with_folder["sha256"]


def test_check_and_write(tmp_path, rng):
    X = rng.normal(size=(6, 2))
    fp = data_fingerprint([X, np.arange(6)])
    check_data(tmp_path, fp)  # no data.json yet: nothing to check
    write_data(tmp_path, fp)
    check_data(tmp_path, fp)
    other = data_fingerprint([X + 1, np.arange(6)])
    write_data(tmp_path, other)  # the first session's data stay the run's
    assert json.loads((tmp_path / "data.json").read_text())["sha256"] == fp["sha256"]
    with pytest.raises(DataError, match="the data have changed"):
        check_data(tmp_path, other)


def test_check_same_data(tmp_path, rng):
    fps = [data_fingerprint([rng.normal(size=(4, 2))]) for _ in range(2)]
    for name, fp in zip("abc", (fps[0], fps[0], fps[1]), strict=True):
        write_data(tmp_path / name, fp)
    (tmp_path / "old").mkdir()
    assert check_same_data([tmp_path / "a", tmp_path / "b"]) == []
    with pytest.raises(DataError, match="--allow-different-data"):
        check_same_data([tmp_path / "a", tmp_path / "c"])
    notes = check_same_data([tmp_path / "a", tmp_path / "c"], allow_different=True)
    assert len(notes) == 1 and "different data (allowed)" in notes[0]
    notes = check_same_data([tmp_path / "a", tmp_path / "old"])
    assert len(notes) == 1 and "old has no data.json" in notes[0]
    assert check_same_data([tmp_path / "old", tmp_path / "old"]) == []


def test_no_data_json_for_an_older_run_with_finished_folds(tmp_path, rng):
    (tmp_path / "A" / "fold-00").mkdir(parents=True)
    (tmp_path / "A" / "fold-00" / "metrics.json").write_text("{}")
    write_data(tmp_path, data_fingerprint([rng.normal(size=(3, 2))]))
    assert not (tmp_path / "data.json").exists()
