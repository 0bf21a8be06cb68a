"""The shared data (../shared) is reached only through tests/conftest.py's ``shared`` fixture, which skips cleanly
without it: a test that read the folder another way would fail in every user's clone, where it is absent."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import SHARED_ENV, SHARED_MARK, shared_path

TESTS = Path(__file__).resolve().parent
ALLOWED = ("conftest.py", Path(__file__).name)  # the fixture, and this check with its examples


def other_ways_to_shared(source: str) -> list[str]:
    """The string constants (docstrings aside) of ``source`` that name the shared folder: a path with a ``shared``
    part (``"../shared"``, ``/ "shared" /``, ``"shared/ljspeech-meta"``) or the variable that points it elsewhere."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [f"line {node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and ("shared" in node.value.replace("\\", "/").split("/") or SHARED_ENV in node.value)]


def test_no_test_reaches_the_shared_data_but_through_the_fixture():
    found = {path.name: hits for path in sorted(TESTS.glob("*.py")) if path.name not in ALLOWED
             if (hits := other_ways_to_shared(path.read_text(encoding="utf-8")))}
    assert not found, f"use the `shared` fixture (tests/conftest.py) instead: {found}"


def test_the_check_finds_the_other_ways():
    assert other_ways_to_shared('"""Reads ../shared when present."""\n# ../shared/REFERENCE.md\n') == []
    for way in ('SHARED = Path(__file__).resolve().parents[2] / "shared"',
                'META = Path(__file__).parents[1] / ".." / "shared" / "ljspeech-meta"',
                'META = ROOT / "../shared/ljspeech-meta/metadata.csv"',
                'root = os.environ["HYBRIDLM_SHARED"]',
                'skip = pytest.mark.skipif(not Path(f"{ROOT}/../shared").is_dir(), reason="absent")'):
        assert other_ways_to_shared(way), way


def test_a_missing_shared_folder_skips_and_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(pytest.skip.Exception, match=r"nowhere/ljspeech-meta/metadata.csv: shared data absent"):
        shared_path("ljspeech-meta/metadata.csv")
    (tmp_path / "elsewhere/ljspeech-meta").mkdir(parents=True)
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "elsewhere"))
    assert shared_path("ljspeech-meta") == tmp_path / "elsewhere/ljspeech-meta"


def test_tests_that_take_the_fixture_are_marked(request, shared):
    assert request.node.get_closest_marker(SHARED_MARK) is not None
