"""The pipeline contract, checked for every stage in dvc.yaml (so stages added later are covered too):
paths are named once (in the cmd) and match the declared deps/outs, code deps follow hybridlm/codegraph.py's rule,
the resume key hashes the same files, and leftovers of killed runs are cleaned when any stage starts."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybridlm import codegraph
from hybridlm.cli import app
from hybridlm.codegraph import CONTRACT_MODULES, SOURCE_ROOT, imports_of, stage_code
from hybridlm.config import SECTIONS, load_params
from hybridlm.interface import Argument, Input, Output, StageSignature, read_stage
from hybridlm.params import read_yaml
from hybridlm.pipeline import read_stages
from hybridlm.training import checkpoint

STAGES = read_stages(SOURCE_ROOT / "dvc.yaml")
STAGE_NAMES = sorted(STAGES)


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_code_deps_equal_the_import_graph(name):
    stage = STAGES[name]
    assert sorted(stage.code_deps) == stage_code(stage.command), (
        f"dvc.yaml stage '{name}': code deps must be exactly hybridlm.codegraph.stage_code('{stage.command}')")
    assert len(set(stage.deps)) == len(stage.deps)


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_cmd_options_name_exactly_the_stage_inputs_and_outputs(name):
    """The cmd passes every path argument of run(); its Input ones are the data deps, its Output ones the outs."""
    stage = STAGES[name]
    options = stage.options()
    roles = read_stage(SOURCE_ROOT / "stages" / f"{stage.command}.py").paths()
    assert set(options) == set(roles), f"dvc.yaml stage '{name}': the cmd must pass exactly run()'s path arguments"
    named = {kind: {options[n].as_posix() for n, role in roles.items() if isinstance(role, kind)}
             for kind in (Input, Output)}
    assert named[Input] == set(stage.data_deps), f"dvc.yaml stage '{name}': Input paths must be its data deps"
    assert named[Output] == set(stage.outs), f"dvc.yaml stage '{name}': Output paths must be its outs"


STAGE_MODULES = sorted(p.stem for p in (SOURCE_ROOT / "stages").glob("[!_]*.py"))


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_the_signature_read_from_the_source_is_what_python_sees(module):
    """The CLI reads run()'s arguments from the syntax tree (no import, fast --help): the same as the imported run."""
    run = importlib.import_module(f"hybridlm.stages.{module}").run
    hints = typing.get_type_hints(run, include_extras=True)
    parameters = inspect.signature(run).parameters
    seen = tuple(Argument(n, hints[n].__origin__, *hints[n].__metadata__,
                          ... if p.default is p.empty else p.default)
                 for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY)
    assert list(parameters)[0] == "params" and len(parameters) == 1 + len(seen)
    assert read_stage(SOURCE_ROOT / "stages" / f"{module}.py") == StageSignature(inspect.getdoc(run), seen)


@pytest.mark.parametrize("annotation", ["Path", "Annotated[Path, 'help']", "Annotated[list, Input('x')]",
                                        "Annotated[Path, Input(help='x')]", "Annotated[Path, Input()]"])
def test_an_argument_without_a_role_is_refused_naming_it(tmp_path, annotation):
    source = tmp_path / "x.py"
    source.write_text(f'def run(params: dict, *, out: {annotation}) -> None:\n    """Doc."""\n')
    with pytest.raises(TypeError, match=r"x.py: run\(\) argument 'out' must be annotated"):
        read_stage(source)


def test_a_path_with_a_default_or_a_stage_without_help_is_refused(tmp_path):
    source = tmp_path / "x.py"
    source.write_text('def run(params: dict, *, out: Annotated[Path, Output("o")] = "a") -> None:\n    """Doc."""\n')
    with pytest.raises(TypeError, match="'out': an Option needs a default, a path has none"):
        read_stage(source)
    source.write_text('def run(params: dict, *, out: Annotated[Path, Output("o")]) -> None:\n    pass\n')
    with pytest.raises(TypeError, match=r"run\(\) needs a docstring"):
        read_stage(source)


def test_help_imports_no_stage_and_no_torch():
    """`hybridlm --help` and `hybridlm train --help` stay fast: the stage modules are imported only to run."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom hybridlm.cli import app\n"
            "for argv in (['--help'], ['train', '--help'], ['render_tts', '--help']):\n"
            "    assert CliRunner().invoke(app, argv).exit_code == 0, argv\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('hybridlm.stages.')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_params_sections_exist(name):
    params = load_params(SOURCE_ROOT / "params.yaml")
    sections = read_yaml(SOURCE_ROOT / "dvc.yaml")["stages"][name].get("params", [])
    for entry in sections:  # a whole section, or one key of it ("data.source")
        section, *key = entry.split(".")
        assert section in SECTIONS and section in params, (name, entry)
        assert not key or key[0] in params[section], (name, entry)


def test_the_library_holds_no_pipeline_paths():
    """No module under hybridlm/ or stages/ spells a path that dvc.yaml declares: dvc.yaml names them once."""
    declared = {p for stage in STAGES.values() for p in (*stage.data_deps, *stage.outs)}
    offenders = []
    for file in [*SOURCE_ROOT.glob("hybridlm/**/*.py"), *SOURCE_ROOT.glob("stages/*.py")]:
        tree = ast.parse(file.read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        for value in strings - docstrings:
            if any(re.search(rf"(^|[^\w/]){re.escape(path)}($|[^\w])", value) for path in declared):
                offenders.append(f"{file.relative_to(SOURCE_ROOT)}: {value!r}")
    assert not offenders


def test_contract_modules_import_only_contract_modules():
    for module in CONTRACT_MODULES:
        assert imports_of(module) <= {*CONTRACT_MODULES, "hybridlm/__init__.py"}, module


def test_package_init_files_hold_only_a_docstring():
    for init in [*SOURCE_ROOT.glob("hybridlm/**/__init__.py"), SOURCE_ROOT / "stages/__init__.py"]:
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), init


def test_import_graph_follows_imports_inside_functions(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "hybridlm" / "sub").mkdir(parents=True)
    for init in ("hybridlm/__init__.py", "hybridlm/sub/__init__.py", "stages/__init__.py"):
        (tmp_path / init).write_text('"""doc"""\n')
    (tmp_path / "stages/x.py").write_text("from hybridlm.sub import a\nimport numpy\n"
                                          "def run():\n    from hybridlm import b\n")
    (tmp_path / "hybridlm/sub/a.py").write_text("import hybridlm.params\nfrom hybridlm.sub.c import thing\n")
    (tmp_path / "hybridlm/b.py").write_text("")
    (tmp_path / "hybridlm/sub/c.py").write_text("thing = 1\n")
    (tmp_path / "hybridlm/params.py").write_text("")
    assert stage_code("x", tmp_path) == ["hybridlm/b.py", "hybridlm/sub/a.py", "hybridlm/sub/c.py", "stages/x.py"]


def test_the_resume_key_hashes_the_train_stage_code(monkeypatch):
    """code_version changes with a file in train's graph and not with one outside it (the benchmark)."""
    hashed = []
    real = checkpoint.hash_files
    monkeypatch.setattr(checkpoint, "hash_files", lambda named: hashed.append(sorted(named)) or real(named))
    checkpoint.code_version()
    assert hashed == [stage_code("train")]
    assert "hybridlm/bench/kernels.py" not in hashed[0] and "hybridlm/model.py" in hashed[0]
    assert sorted(STAGES["train"].code_deps) == hashed[0]


def test_codegraph_is_not_fooled_by_a_missing_stage_module():
    with pytest.raises(FileNotFoundError, match="no module for stage command 'nope'"):
        codegraph.stage_code("nope")


def test_any_stage_start_removes_leftovers_of_killed_runs(tmp_path, monkeypatch):
    """A killed download leaves `.LJSpeech-1.1.<random>.tmp` (gigabytes); if DVC later restores download from its
    run cache, download never runs: the next stage that starts (here split, which then fails on missing input)
    must clean it. Resumable transfers (.part in the download cache) are kept."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text((SOURCE_ROOT / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text((SOURCE_ROOT / "params.yaml").read_text())
    raw = Path(STAGES["download"].options()["out"])
    leftover_dir = raw.parent / f".{raw.name}.k3j4h5.tmp"
    (leftover_dir / "wavs").mkdir(parents=True)
    (leftover_dir / "wavs" / "LJ001-0001.wav").write_bytes(b"\0" * 1000)
    samples = Path(STAGES["render"].options()["out"])
    old = samples.parent / f".{samples.name}.old"
    old.mkdir(parents=True)
    timing = Path(STAGES["train"].options()["timing"])
    timing.parent.mkdir(parents=True, exist_ok=True)
    stale_file = timing.parent / f".{timing.name}.abc123.tmp"
    stale_file.write_text("{")
    part = tmp_path / "cache/downloads/LJSpeech-1.1.tar.bz2.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"partial")
    unrelated = raw.parent / ".keep.tmp"
    unrelated.write_text("not ours")
    monkeypatch.setenv("HYBRIDLM_CACHE", str(tmp_path / "cache"))

    result = CliRunner().invoke(app, list(STAGES["split"].argv[1:]))
    assert result.exit_code == 2  # no tokens: the stage fails, after the clean-up
    assert not leftover_dir.exists() and not old.exists() and not stale_file.exists()
    assert part.read_bytes() == b"partial" and unrelated.exists()


def test_workspaces_and_repo_ignore_dvc_plots(tmp_path):
    from hybridlm.workspace import WORKSPACE_GITIGNORE

    assert "dvc_plots/" in WORKSPACE_GITIGNORE.splitlines()
    assert "dvc_plots/" in (SOURCE_ROOT / ".gitignore").read_text().splitlines()
