"""Permutations in chunk tasks: p-maps bit-identical to one run, whatever the executor."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from calipers.cli import app
from calipers.executors import LocalExecutor
from calipers.permutation import permutation_test
from calipers.permutation.chunks import chunk_ranges
from calipers.permutation.engine import RangeNull, combine_ranges, prepare_contrast

_P_FIELDS = ("p_uncorrected", "p_fwe", "p_tfce_uncorrected", "p_tfce_fwe",
             "p_cluster_extent_fwe", "p_cluster_mass_fwe")
_NULLS = ("max_null", "tfce_max_null", "cluster_extent_max_null", "cluster_mass_max_null")


def _assert_same(a, b):
    for f in _P_FIELDS:
        va, vb = getattr(a, f), getattr(b, f)
        assert (va is None) == (vb is None), f
        if va is not None:
            assert_array_equal(va, vb, err_msg=f)
    for f in _NULLS:
        if getattr(a, f) is not None:
            for u, v in zip(getattr(a, f), getattr(b, f), strict=True):
                assert_array_equal(u, v, err_msg=f)
    assert a.n_permutations == b.n_permutations


@pytest.fixture
def grid(rng):
    y = rng.normal(0.4, 1.0, size=(10, 6, 7, 5))
    y[:, 1:4, 2:5, 1:3] += 0.8
    return y


def test_chunk_ranges_cover_on_engine_boundaries():
    for n, engine, k in [(700, 100, 3), (1000, 128, 7), (50, 128, 3), (256, 128, 2)]:
        r = chunk_ranges(n, engine, k)
        assert len(r) == k and r[0][0] == 0 and r[-1][1] == n
        assert all(b == c for (_, b), (c, _) in itertools.pairwise(r))
        assert all(a % engine == 0 or a == n for a, _ in r)


def test_combine_refuses_ranges_that_do_not_cover(rng):
    prep = prepare_contrast(rng.normal(size=(6, 4)), np.ones((6, 1)), np.ones((1, 1)),
                            flip=True, two_sided=False)
    part = RangeNull(0, 5, np.zeros(5, np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"do not cover 0..10 exactly once"):
        combine_ranges(prep, 10, [part])


def test_three_chunks_equal_one_run_sign_flips_tfce_clusters(grid):
    kw = {"n_permutations": 700, "tfce": True, "cluster_threshold": 2.0, "device": "cpu",
          "chunk_size": 100, "seed": 3}
    _assert_same(permutation_test(grid, **kw), permutation_test(grid, n_chunks=3, **kw))


def test_chunks_equal_one_run_glm_blocks_f_two_sided(rng):
    y = rng.normal(size=(12, 300))
    x = np.column_stack([np.ones(12), rng.normal(size=12), np.repeat([0.0, 1.0], 6)])
    cons = np.array([[0, 1.0, 0], [0, 0, 1.0]])
    kw = {"n_permutations": 1500, "device": "cpu", "seed": 7, "f_tests": [[1, 1]],
          "exchangeability_blocks": np.tile([1, 2], 6), "two_sided": True}
    one = permutation_test(y, x, cons, **kw)
    assert one.methods == ("permutation",) * 3
    for n_chunks in (2, 5):
        _assert_same(one, permutation_test(y, x, cons, n_chunks=n_chunks, **kw))


def test_local_workers_and_resume_give_one_runs_p_maps(grid, tmp_path):
    """3 chunks on 2 spawned workers; then one chunk file lost and the run repeated: only that
    chunk is recomputed and the p-maps stay the same."""
    kw = {"n_permutations": 600, "tfce": True, "device": "cpu", "chunk_size": 100, "seed": 1}
    import torch

    torch.set_num_threads(1)  # as the workers (restored by conftest)
    one = permutation_test(grid, **kw)
    with LocalExecutor(2, threads=1, run_dir=tmp_path, show_progress=False) as ex:
        _assert_same(one, permutation_test(grid, executor=ex, n_chunks=3, work_dir=tmp_path,
                                           **kw))
    files = sorted(tmp_path.glob("chunks-*/chunk-*.npz"))
    assert [f.name for f in files] == ["chunk-000.npz", "chunk-001.npz", "chunk-002.npz"]
    kept = files[0].stat().st_mtime_ns
    files[1].unlink()  # as if the run had been killed before this chunk finished
    _assert_same(one, permutation_test(grid, n_chunks=3, work_dir=tmp_path, **kw))
    assert files[0].stat().st_mtime_ns == kept and files[1].is_file()


def test_cli_permute_in_chunks_writes_the_same_images(grid, tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.moveaxis(grid, 0, -1).astype(np.float32), affine),
             tmp_path / "all.nii.gz")
    args = ["permute", "-i", str(tmp_path / "all.nii.gz"), "-1", "-T", "-x", "-n", "300",
            "--device", "cpu", "-q"]
    runner = CliRunner()
    one = runner.invoke(app, [*args, "-o", str(tmp_path / "one" / "r")])
    assert one.exit_code == 0, one.output
    three = runner.invoke(app, [*args, "-o", str(tmp_path / "three" / "r"), "--chunks", "3"])
    assert three.exit_code == 0, three.output
    for name in ("r_tfce_corrp_tstat1.nii.gz", "r_vox_corrp_tstat1.nii.gz"):
        a = np.asarray(nib.load(tmp_path / "one" / name).dataobj)
        b = np.asarray(nib.load(tmp_path / "three" / name).dataobj)
        assert_array_equal(a, b)
    assert len(list((tmp_path / "three" / "r_tasks").glob("chunks-*/chunk-*.npz"))) == 3
    st = runner.invoke(app, ["status", str(tmp_path / "three" / "r_tasks")])
    assert st.exit_code == 0 and "3 tasks: 3 done" in st.output
