"""Command-line conventions (calipers.cli._conventions) and `calipers report`."""

import os
import re
import shutil
import stat

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import calipers
from calipers.cli import app
from calipers.runs import atomic_write_text

runner = CliRunner()
COMMANDS = ["demo", "cv", "compare", "env", "repro", "permute", "predict", "report"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Two MLPs, 2 folds, 1 epoch on blobs, written by `calipers cv --no-report`."""
    root = tmp_path_factory.mktemp("cv")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    X = (np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 0]])[y] + rng.normal(size=(90, 4)))
    np.savez(root / "d.npz", X=X.astype(np.float32), y=y)
    (root / "e.toml").write_text(
        '[data]\nkind = "arrays"\npath = "d.npz"\n[cv]\nfolds = 2\n[train]\nepochs = 1\n'
        '[mc]\nsamples = 2\n[networks.A]\nmodel = "calipers.models:MLP"\n'
        '[networks.B]\nmodel = "calipers.models:MLP"\nargs = { dropout = 0.3 }\n')
    out = root / "run"
    res = runner.invoke(app, ["cv", str(root / "e.toml"), "--out", str(out), "--no-report"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_version_and_short_help():
    for flag in ("--version", "-V"):
        res = runner.invoke(app, [flag])
        assert res.exit_code == 0 and res.output.strip() == f"calipers {calipers.__version__}"
    assert runner.invoke(app, ["-h"]).exit_code == 0
    res = runner.invoke(app, ["compare", "-h"])
    assert res.exit_code == 0 and "Usage:" in res.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_readable(command):
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    text = res.output
    # no Python types, no <bool> after flags, no {ARG} braces on the usage line
    for bad in ("<bool>", "<int>", "<float>", "<str>", "<path>", "list[", "{"):
        assert bad not in text, (command, bad)
    assert re.search(r"--help\s+-h\s+Show this message", text)


def test_flags_and_types_in_help():
    text = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "120"}).output
    assert "Usage: calipers compare [OPTIONS] RUN_DIRS..." in " ".join(text.split())
    assert re.search(r"--json\s+Print JSON", text)  # a flag: no placeholder
    assert re.search(r"--alpha\s+NUMBER\s+Significance level.*\[default: 0\.05\]", text)
    text = runner.invoke(app, ["report", "--help"], env={"COLUMNS": "120"}).output
    assert re.search(r"--format\s+html\|pdf", text) and "[default: 200]" in text


def test_usage_errors_have_one_style():
    res = runner.invoke(app, ["compare", "--bogus"])
    assert res.exit_code == 2
    assert "error: No such option: --bogus" in res.output
    assert "Try 'calipers compare -h' for help." in res.output
    assert "╭" not in res.output  # no rich error panel


def test_compare_refuses_bad_pairs(small_run, tmp_path):
    out, _ = small_run
    cases = [
        (["--a", "A"], "error: --a needs --b"),
        (["--b", "B"], "error: --b needs --a"),
        (["--a", "A", "--b", "A"], "a network cannot be compared with itself"),
        ([str(out)], "is passed twice"),
        ([str(tmp_path / "nope")], "nope does not exist"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, ["compare", str(out), *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert message in " ".join(res.output.split()), (extra, res.output)
        assert "━" not in res.output  # nothing drawn before the error


def test_cv_in_a_log_prints_one_line_per_fold(small_run):
    _, output = small_run  # CliRunner's stdout is not a terminal
    lines = [ln for ln in output.splitlines() if re.match(r"fold \d/4 done", ln)]
    assert len(lines) == 4
    assert re.fullmatch(r"fold 1/4 done \(A fold 1\) · \d:\d\d:\d\d elapsed · about "
                        r"\d:\d\d:\d\d left", lines[0])
    assert lines[-1].startswith("fold 4/4 done (B fold 2)") and "left" not in lines[-1]


def test_cv_terminal_table_uses_the_number_rule(small_run):
    _, output = small_run
    assert "Use " in output  # the headline
    assert re.search(r"\d+(\.\d+)?% ± \d+(\.\d+)?", output)
    assert "(best)" not in output or "established" in output


def test_report_rebuilds_html_and_figures(small_run, tmp_path):
    out, _ = small_run
    assert not (out / "report.html").exists()  # cv --no-report
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<p class='headline'>Use " in html
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert "fold-scores.svg" in names and "fold-scores.png" in names
    assert {"reliability-A.png", "reliability-B.svg", "paired-differences.png"} <= set(names)
    png = (out / "figures" / "fold-scores.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    width = int.from_bytes(png[16:20], "big")
    assert width >= 6.5 * 200 * 0.99  # full content width (6.5 in) at 200 dpi
    assert (out / "figures" / "fold-scores.svg").read_text().lstrip().startswith("<?xml")


def test_report_pdf(small_run, tmp_path):
    out, _ = small_run
    target = tmp_path / "paper" / "demo.pdf"
    res = runner.invoke(app, ["report", str(out), "--out", str(target)])
    assert res.exit_code == 0, res.output
    data = target.read_bytes()
    assert data.startswith(b"%PDF")
    n_pages = len(re.findall(rb"/Type\s*/Page\b", data))
    n_figs = len(list((tmp_path / "paper" / "figures").glob("*.svg")))
    assert n_figs >= 4 and n_pages >= 1 + n_figs  # text page(s), then one page per figure
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.docx")])
    assert res.exit_code == 2 and "name it .html or .pdf" in res.output


def test_report_bad_input(small_run, tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "missing does not exist" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "is not a calipers run folder" in " ".join(res.output.split())
    # a run that stopped early: report what is there, say what is missing
    out, _ = small_run
    part = tmp_path / "partial"
    shutil.copytree(out, part)
    (part / "summary.json").unlink()
    (part / "B" / "fold-01" / "metrics.json").unlink()
    res = runner.invoke(app, ["report", str(part)])
    assert res.exit_code == 0, res.output
    html = (part / "report.html").read_text(encoding="utf-8")
    assert "This run is incomplete" in html
    assert "B: 1 of 2 folds not finished (01)" in html
    assert "<td>B</td><td>accuracy</td>" in html and "Paired comparisons" not in html


def test_report_read_only_run_folder(small_run, tmp_path, monkeypatch):
    out, _ = small_run
    ro = tmp_path / "ro"
    shutil.copytree(out, ro, ignore=shutil.ignore_patterns("figures", "report.*"))
    import calipers.report.write as write_mod

    def read_only(folder):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(write_mod, "_probe_file", read_only)
    res = runner.invoke(app, ["report", str(ro)])
    assert res.exit_code == 2
    assert "cannot write the report" in res.output and "--out FILE" in res.output
    assert not (ro / "figures").exists() and not (ro / "report.html").exists()
    monkeypatch.undo()
    res = runner.invoke(app, ["report", str(ro), "--out", str(tmp_path / "elsewhere.html")])
    assert res.exit_code == 0 and (tmp_path / "elsewhere.html").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_report_real_read_only_folder(small_run, tmp_path):
    ro = tmp_path / "ro"
    shutil.copytree(small_run[0], ro)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        res = runner.invoke(app, ["report", str(ro)])
        assert res.exit_code == 2 and "cannot write the report" in res.output
    finally:
        ro.chmod(stat.S_IRWXU)


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        os.umask(0o077)
        p = atomic_write_text(tmp_path / "b.txt", "x")
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_run_records_the_calipers_version(small_run):
    import json

    env = json.loads((small_run[0] / "env.json").read_text())
    assert env["packages"]["calipers"] == calipers.__version__


def test_errors_of_commands_use_the_same_prefix(tmp_path):
    for args in (["compare", str(tmp_path / "x")], ["report", str(tmp_path / "x")],
                 ["repro", str(tmp_path / "x"), str(tmp_path / "y")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and res.output.lstrip().startswith("error: "), res.output


def test_conventions_group_is_the_app_group():
    from calipers.cli._conventions import CalipersGroup

    assert isinstance(typer.main.get_command(app), CalipersGroup)
