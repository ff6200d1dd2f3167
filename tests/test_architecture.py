"""Import layering of the package (docs/architecture.md): a lower package never imports a
higher one, and packages of one layer do not import each other in a cycle.

A small AST walk (no dependency): every ``import calipers.X...`` / ``from calipers.X ... import``
/ relative import in every module, function bodies included (a lazy import is still an import).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "calipers"

#: Low to high. A package may import its own layer (without cycles) and the layers below.
LAYERS: list[set[str]] = [
    {"exceptions", "_options", "_paths", "_format", "tasks", "_checks", "_seeds", "_device", "runs", "config"},
    {"models", "data", "repro", "gpu"},
    {"uncertainty"},
    {"evaluation"},
    {"batched", "segmentation", "stats", "permutation"},
    {"report"},
    {"experiment", "executors", "learners", "tools"},
    {"cli", "__main__"},
]


def _layer(pkg: str) -> int:
    for i, layer in enumerate(LAYERS):
        if pkg in layer:
            return i
    raise AssertionError(f"package {pkg!r} is in no layer; add it to LAYERS and to "
                         "docs/architecture.md")


def import_edges(root: Path) -> dict[tuple[str, str], list[str]]:
    """``{(importer, imported): [module, ...]}`` between top-level parts of package ``root``
    (a sub-package or a flat module); ``root/__init__.py`` (lazy re-exports) is left out."""
    name = root.name
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        if len(parts) < 2:
            continue
        src = parts[1]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), filename=str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = parts if is_init else parts[:-1]
                    base = base[:len(base) - node.level + 1]
                    targets = [".".join([*base, *([node.module] if node.module else [])])]
                    if node.module is None and len(base) == 1:  # from . import x
                        targets = [f"{name}.{a.name}" for a in node.names]
                else:
                    targets = [node.module or ""]
            else:
                continue
            for t in targets:
                bits = t.split(".")
                if bits[0] == name and len(bits) > 1 and bits[1] != src:
                    edges[(src, bits[1])].append(str(f.relative_to(root.parent)))
    return edges


def layer_violations(root: Path) -> list[str]:
    """Every upward import, and every cycle between packages of one layer, as a sentence."""
    edges = import_edges(root)
    out = []
    for (a, b), where in sorted(edges.items()):
        if _layer(a) < _layer(b):
            out.append(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)}) in "
                       f"{', '.join(sorted(set(where)))}")
    graph = defaultdict(set)
    for a, b in edges:
        if _layer(a) == _layer(b):
            graph[a].add(b)

    def reaches(x: str, goal: str, seen: set[str]) -> bool:
        return any(y == goal or (y not in seen and reaches(y, goal, seen | {y}))
                   for y in graph[x])

    for a in sorted(graph):
        for b in sorted(graph[a]):
            if reaches(b, a, {b}):
                out.append(f"{a} and {b} (layer {_layer(a)}) import each other (a cycle)")
    return out


def test_the_package_respects_its_layers():
    assert layer_violations(SRC) == []


def test_the_check_sees_every_package():
    pkgs = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__init__.py"}
    for pkg in pkgs:
        _layer(pkg)  # raises for a package nobody placed


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "calipers"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize("code", [
    "from calipers.experiment.runner import run_experiment\n",
    "import calipers.experiment.engine\n",
    "def f():\n    from calipers.experiment import tasks\n",   # a lazy import counts
    "from ..experiment import tasks\n",                        # so does a relative one
])
def test_an_upward_import_fails(tmp_path, code):
    root = _fake_package(tmp_path, {"segmentation/__init__.py": "",
                                    "segmentation/experiment.py": code,
                                    "experiment/__init__.py": "", "experiment/tasks.py": ""})
    found = layer_violations(root)
    assert len(found) == 1
    assert found[0].startswith("segmentation (layer 4) imports experiment (layer 6) in "
                               "calipers/segmentation/experiment.py")


def test_a_same_layer_cycle_fails_and_a_downward_import_passes(tmp_path):
    root = _fake_package(tmp_path, {
        "stats/__init__.py": "from calipers.batched import x\n",
        "batched/__init__.py": "", "batched/x.py": "from calipers.stats import y\n",
        "experiment/__init__.py": "from calipers.stats import y\nfrom . import tasks\n",
        "experiment/tasks.py": "",
    })
    assert layer_violations(root) == [
        "batched and stats (layer 4) import each other (a cycle)",
        "stats and batched (layer 4) import each other (a cycle)",
    ]
    (root / "batched/x.py").write_text("")
    assert layer_violations(root) == []
