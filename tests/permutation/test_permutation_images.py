"""NIfTI in, randomise-named NIfTI out; the ``permute`` command through typer's CliRunner."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import scipy.stats as st
import typer
from numpy.testing import assert_allclose, assert_array_equal
from typer.testing import CliRunner

from calipers.cli.permute import permute
from calipers.exceptions import CalipersWarning, DataError
from calipers.permutation import permutation_test, permute_images

SHAPE = (10, 12, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture
def subjects(rng, tmp_path):
    """8 subjects on a 10×12×8 grid: a 4-D file and 8 3-D files; the data array too."""
    n = 8
    data = rng.normal(size=(n, *SHAPE))
    data[:, 2:6, 3:8, 2:6] += 1.2
    data[:, 0] = 0.0  # a constant slab: outside randomise's default mask
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1).astype(np.float32), AFFINE),
             tmp_path / "all.nii.gz")
    paths = []
    for i in range(n):
        p = tmp_path / f"sub{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(data[i].astype(np.float32), AFFINE), p)
        paths.append(p)
    return data.astype(np.float32).astype(np.float64), paths, tmp_path


def _load(path):
    return np.asarray(nib.load(path).dataobj)


def test_output_names_values_and_one_minus_p(subjects):
    data, _paths, tmp = subjects
    out = permute_images(
        str(tmp / "sub*.nii.gz"), tmp / "res" / "grp", one_sample=True, n_permutations=500,
        tfce=True, cluster_extent_threshold=2.0, cluster_mass_threshold=3.0, vox_corrp=True,
        uncorrp=True, device="cpu",
    )
    golden = [
        "grp_tstat1.nii.gz", "grp_vox_p_tstat1.nii.gz", "grp_vox_corrp_tstat1.nii.gz",
        "grp_tfce_p_tstat1.nii.gz", "grp_tfce_corrp_tstat1.nii.gz",
        "grp_clustere_corrp_tstat1.nii.gz", "grp_clusterm_corrp_tstat1.nii.gz",
        "grp_summary.json",
    ]
    assert [f.name for f in out.files] == golden
    assert sorted(p.name for p in (tmp / "res").iterdir()) == sorted(golden)  # no temp files
    mask = np.ptp(data, axis=0) > 0
    assert out.n_voxels == int(mask.sum()) == 9 * 12 * 8
    t = _load(tmp / "res" / "grp_tstat1.nii.gz")
    assert_allclose(t[mask], st.ttest_1samp(data[:, mask], 0.0).statistic, rtol=1e-5)
    assert np.all(t[~mask] == 0)
    ref = permutation_test(data[:, mask], n_permutations=500, device="cpu")
    corrp = _load(tmp / "res" / "grp_vox_corrp_tstat1.nii.gz")
    assert_allclose(corrp[mask], 1 - ref.p_fwe[0], atol=1e-6)
    assert_allclose(_load(tmp / "res" / "grp_vox_p_tstat1.nii.gz")[mask],
                    1 - ref.p_uncorrected[0], atol=1e-6)
    summary = json.loads((tmp / "res" / "grp_summary.json").read_text())
    assert summary["n_significant"]["p_fwe"] == [int(np.sum(corrp[mask] >= 0.95 - 1e-7))]
    assert len(summary["null_max_statistic"][0]) == 256 and summary["exhaustive"] == [True]
    assert summary["null_tfce"][0][0] == pytest.approx(float(out.result.tfce.max()), rel=1e-6)
    assert nib.load(tmp / "res" / "grp_tstat1.nii.gz").affine == pytest.approx(AFFINE)


def test_4d_file_equals_list_of_3d_and_logp(subjects):
    data, paths, tmp = subjects
    a = permute_images(tmp / "all.nii.gz", tmp / "a", one_sample=True, n_permutations=200,
                       uncorrp=True, device="cpu")
    b = permute_images(paths, tmp / "b", one_sample=True, n_permutations=200, uncorrp=True,
                       logp=True, device="cpu")
    assert_array_equal(a.result.statistic, b.result.statistic)
    p = 1 - _load(tmp / "a_vox_p_tstat1.nii.gz")
    logp = _load(tmp / "b_vox_p_tstat1.nii.gz")
    mask = np.ptp(data, axis=0) > 0
    assert_allclose(logp[mask], -np.log10(p[mask]), rtol=1e-4)


def test_float32_read_path_gives_the_float64_results(subjects):
    """permute_images keeps unscaled float32 voxels as float32 until masking: the same
    statistic and p as the arrays in float64, and as a float64 file and a scaled float32 file
    (slope 2: read through the float64 path)."""
    data, _paths, tmp = subjects
    vol = np.moveaxis(data, 0, -1)
    nib.save(nib.Nifti1Image(vol.astype(np.float64), AFFINE), tmp / "all64.nii.gz")
    scaled = nib.Nifti1Image((vol / 2).astype(np.float32), AFFINE)
    scaled.header.set_slope_inter(2.0, 0.0)
    nib.save(scaled, tmp / "scaled.nii.gz")
    mask = np.ptp(data, axis=0) > 0
    ref = permutation_test(data[:, mask], n_permutations=100, device="cpu", mask=mask,
                           tfce=True)
    for name in ("all.nii.gz", "all64.nii.gz", "scaled.nii.gz"):
        out = permute_images(tmp / name, tmp / name.split(".")[0], one_sample=True,
                             n_permutations=100, tfce=True, device="cpu")
        assert_array_equal(out.result.statistic, ref.statistic)
        assert_array_equal(out.result.p_uncorrected, ref.p_uncorrected)
        assert_array_equal(out.result.p_tfce_fwe, ref.p_tfce_fwe)


def test_design_files_and_f_test(subjects):
    _data, paths, tmp = subjects
    (tmp / "d.mat").write_text(
        "/NumWaves 2\n/NumPoints 8\n/Matrix\n" + "".join(f"1 {v}\n" for v in range(8))
    )
    (tmp / "d.con").write_text("/NumWaves 2\n/NumContrasts 2\n/Matrix\n1 0\n0 1\n")
    (tmp / "d.fts").write_text("/NumWaves 2\n/NumContrasts 1\n/Matrix\n1 1\n")
    out = permute_images(paths, tmp / "glm", design=tmp / "d.mat", contrasts=tmp / "d.con",
                         f_tests=tmp / "d.fts", n_permutations=100, vox_corrp=True, device="cpu")
    names = [f.name for f in out.files]
    assert names == [
        "glm_tstat1.nii.gz", "glm_vox_corrp_tstat1.nii.gz", "glm_tstat2.nii.gz",
        "glm_vox_corrp_tstat2.nii.gz", "glm_fstat1.nii.gz", "glm_vox_corrp_fstat1.nii.gz",
        "glm_summary.json",
    ]


def test_bad_images_raise_and_write_nothing(subjects):
    data, paths, tmp = subjects
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 9), np.float32), AFFINE), tmp / "odd.nii.gz")
    nib.save(nib.Nifti1Image(data[0].astype(np.float32), np.diag([3.0, 2, 2, 1])),
             tmp / "moved.nii.gz")
    out = tmp / "out" / "x"
    with pytest.raises(DataError, match=r"different shapes: .*odd.nii.gz is \(10, 12, 9\)"):
        permute_images([*paths[:3], tmp / "odd.nii.gz"], out, one_sample=True, device="cpu")
    with pytest.raises(DataError, match=r"different affines: .*moved.nii.gz differs"):
        permute_images([*paths[:3], tmp / "moved.nii.gz"], out, one_sample=True, device="cpu")
    with pytest.raises(ValueError, match=r"design has 3 rows but y has 8 subjects"):
        permute_images(paths, out, design=np.ones((3, 1)), device="cpu")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE), tmp / "empty.nii.gz")
    with pytest.raises(DataError, match=r"the mask is empty"):
        permute_images(paths, out, mask=tmp / "empty.nii.gz", one_sample=True, device="cpu")
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())


def test_nan_voxels_are_excluded_and_counted(subjects):
    data, paths, tmp = subjects
    vol = data[3].copy()
    vol[5, 5, 5] = np.nan
    vol[6, 6, 6] = np.nan
    nib.save(nib.Nifti1Image(vol.astype(np.float32), AFFINE), paths[3])
    with pytest.warns(CalipersWarning, match=r"2 voxel\(s\) of the mask hold NaN"):
        out = permute_images(paths, tmp / "n", one_sample=True, n_permutations=50, device="cpu")
    assert out.n_nan_excluded == 2 and out.summary["n_nan_excluded"] == 2
    assert out.n_voxels == 9 * 12 * 8 - 2


# ---------------------------------------------------------------- the CLI


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("permute")(permute)

    @app.command("noop")
    def _noop() -> None:  # a second command so that "permute" stays a subcommand
        pass

    return app


def test_cli_randomise_flags(subjects):
    data, _paths, tmp = subjects
    runner = CliRunner()
    res = runner.invoke(_app(), [
        "permute", "-i", str(tmp / "all.nii.gz"), "-o", str(tmp / "cli" / "r"), "-1", "-T",
        "-c", "2.3", "-C", "3", "-x", "--uncorrp", "-n", "100", "--seed", "3",
        "--device", "cpu", "-q",
    ])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp / "cli").iterdir())
    assert names == sorted([
        "r_tstat1.nii.gz", "r_vox_p_tstat1.nii.gz", "r_vox_corrp_tstat1.nii.gz",
        "r_tfce_p_tstat1.nii.gz", "r_tfce_corrp_tstat1.nii.gz", "r_clustere_corrp_tstat1.nii.gz",
        "r_clusterm_corrp_tstat1.nii.gz", "r_summary.json",
    ])
    summary = json.loads((tmp / "cli" / "r_summary.json").read_text())
    assert summary["cluster_extent_threshold"] == 2.3 and summary["cluster_mass_threshold"] == 3.0
    assert summary["n_permutations"] == [100]
    direct = permutation_test(data[:, np.ptp(data, axis=0) > 0], n_permutations=100, seed=3,
                              device="cpu")
    assert_allclose(summary["null_max_statistic"][0], direct.max_null[0], rtol=1e-6)


def test_cli_progress_in_logs(subjects):
    # not a terminal: plain "permutation N/M done" lines (at most every 10 s, and the last)
    _data, _paths, tmp = subjects
    res = CliRunner().invoke(_app(), ["permute", "-i", str(tmp / "all.nii.gz"), "-o",
                                      str(tmp / "log" / "r"), "-1", "-n", "50", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("permutation ")]
    assert lines and lines[-1].startswith("permutation 50/50 done · "), res.output
    assert "━" not in res.output


def test_cli_bad_input_exits_2_without_traceback(subjects):
    _data, _paths, tmp = subjects
    (tmp / "bad.mat").write_text("/NumWaves 1\n/NumPoints 8\n" + "1\n" * 8)
    res = CliRunner().invoke(_app(), [
        "permute", "-i", str(tmp / "all.nii.gz"), "-o", str(tmp / "e" / "r"),
        "-d", str(tmp / "bad.mat"), "-t", str(tmp / "bad.mat"), "-q",
    ])
    assert res.exit_code == 2
    assert "no /Matrix line" in res.output and "Traceback" not in res.output
    assert not (tmp / "e").exists()
