"""Environment fingerprint: dependency versions, determinism flags, round trip through env.json."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from calipers.repro.determinism import deterministic
from calipers.repro.env import Environment, dependency_versions, fingerprint, load_env


@pytest.fixture(scope="module")
def env() -> Environment:
    return fingerprint()


def test_core_facts_match_this_process(env):
    assert env.python == platform.python_version() == sys.version.split()[0]
    assert env.cuda == torch.version.cuda
    assert env.cuda_available == torch.cuda.is_available()
    assert env.packages["torch"] == torch.__version__


def test_dependencies_are_installed_versions_of_the_requirement_closure(env):
    deps = env.dependencies
    assert "calipers" not in deps
    # every direct requirement of calipers is there, at its installed version
    for text in metadata.requires("calipers"):
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        assert deps[key] == metadata.version(req.name), key
        assert req.specifier.contains(deps[key], prereleases=True)
    # and transitive ones: scikit-learn needs joblib and threadpoolctl, torch needs sympy
    for name in ("joblib", "threadpoolctl", "sympy"):
        assert deps[name] == metadata.version(name)
    # test-only packages are not runtime dependencies
    assert "pytest" not in deps and "statsmodels" not in deps
    assert list(deps) == sorted(deps)


def test_dependency_versions_of_a_leaf_package():
    # mdurl has no dependencies; markdown-it-py depends on mdurl only (hand-checked metadata)
    assert dependency_versions("mdurl") == {}
    assert dependency_versions("markdown-it-py") == {"mdurl": metadata.version("mdurl")}


def test_determinism_recorded_off_then_on(env):
    assert env.determinism["enabled"] is False
    with deterministic(0):
        inside = fingerprint()
    assert inside.determinism["enabled"] is True
    assert inside.determinism["cublas_workspace_config"] == ":4096:8"
    assert inside.determinism["cudnn_benchmark"] is False


def test_round_trip_through_json(env, tmp_path):
    (tmp_path / "env.json").write_text(json.dumps(env.to_dict()))
    assert load_env(tmp_path) == env
    assert load_env(tmp_path / "env.json") == env
    assert Environment.from_dict(json.loads(json.dumps(env.to_dict()))) == env


def test_from_dict_accepts_older_and_newer_records(env):
    old = {k: v for k, v in env.to_dict().items() if k not in ("dependencies", "determinism")}
    rebuilt = Environment.from_dict({**old, "added_later": 1})
    assert rebuilt.dependencies == {} and rebuilt.determinism == {}
    assert rebuilt.packages == env.packages


def test_lines_show_determinism_and_dependency_count(env):
    rows = dict(env.lines())
    assert rows["deterministic"] == "off"
    assert rows["dependencies"] == f"{len(env.dependencies)} pinned (--export pip)"
    assert rows["python"] == env.python


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"env.json does not exist; pass a calipers run"):
        load_env(tmp_path)
    (tmp_path / "env.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        load_env(tmp_path)
    with pytest.raises(ValueError, match=r"lacks key\(s\) .*python.*calipers env --json"):
        Environment.from_dict({"created": "x"})
    with pytest.raises(TypeError, match=r"must be a mapping .*got list"):
        Environment.from_dict([1, 2])
