"""Every `calipers` command in README.md and docs/*.md parses as written; the cheap ones run.

Commands are taken from fenced code blocks (bash, sh or unlabelled). Each is parsed by the real
command line (unknown options, wrong option values and unknown commands fail). Commands in
``CHEAP`` also run; the others train networks or need a run folder, and are covered elsewhere
(``demo --quick`` by tests/test_cli.py, ``report``/``compare`` by tests/test_cli_conventions.py).
Python blocks must not use undefined names.
"""

from __future__ import annotations

import ast
import builtins
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from calipers.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHEAP = {("--version",), ("-V",), ("-h",), ("--help",), ("env",), ("env", "--json")}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: set[str]) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for m in FENCE.finditer(path.read_text(encoding="utf-8")):
            if m.group(1) in lang:
                found.append((path.name, m.group(2)))
    return found


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, block in _blocks({"bash", "sh", "console", ""}):
        text = re.sub(r"<<'EOF'.*?^EOF$", "", block, flags=re.S | re.M).replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("calipers "):
                continue
            line = re.sub(r"\s\[-[^\]]*\]", "", line)  # "[--device cuda]": optional, shown
            out.append((name, shlex.split(line, comments=True)[1:]))
    return out


COMMANDS = _commands()


def test_docs_have_commands():
    assert len(COMMANDS) >= 15
    assert any(args[:1] == ["report"] for _, args in COMMANDS)
    assert any(args[:2] == ["demo", "--quick"] for _, args in COMMANDS)


@pytest.mark.parametrize(("doc", "args"), COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_documented_command_parses(doc, args):
    group = typer.main.get_command(app)
    if args[0].startswith("-"):
        assert args in (["--version"], ["-V"], ["-h"], ["--help"]), f"{doc}: {args}"
        return
    sub_name, *rest = args
    assert sub_name in group.commands, f"{doc}: unknown command {sub_name!r}"
    group.commands[sub_name].make_context(sub_name, rest, resilient_parsing=True)


@pytest.mark.parametrize("args", sorted(CHEAP))
def test_cheap_commands_run(args, tmp_path, monkeypatch):
    documented = {tuple(a) for _, a in COMMANDS}
    if args not in documented and args not in {("-V",), ("-h",), ("--help",)}:
        pytest.skip(f"calipers {' '.join(args)} is not in the docs")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output


def _undefined_names(code: str) -> set[str]:
    tree = ast.parse(code)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - bound


@pytest.mark.parametrize(("doc", "code"), _blocks({"python"}))
def test_python_snippets_define_their_names(doc, code):
    assert _undefined_names(code) == set(), doc
