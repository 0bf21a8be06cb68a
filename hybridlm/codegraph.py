"""The project code a stage runs, derived from its imports: dvc.yaml's code deps and the resume key's code hash.

The rule, one for every stage: a stage's code is its module ``stages/<command>.py`` plus every ``hybridlm`` module
it imports, directly or through other project modules (every ``import`` statement in a file counts, also those
inside functions), except

- ``CONTRACT_MODULES`` (params.py, config.py, atomic.py, codegraph.py, interface.py): they read and validate params,
  write files atomically, derive this list and declare a stage's command-line arguments; they decide *whether* a stage runs and *how* its files land, not *what* it
  computes. Listing them
  would re-run every stage (and restart training from step 0 through the resume key) whenever a section is added to
  config.py. They may import only each other, so that nothing computational hides behind them (tested).
- package ``__init__.py`` files, which hold only a docstring (tested);
- hybridlm/cli.py, which only dispatches to the stage modules and is not imported by them.

tests/test_contract.py checks that every stage's code deps in dvc.yaml equal :func:`stage_code`, so a new import
that is not declared fails the suite instead of silently not re-running the stage.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import hybridlm

SOURCE_ROOT = Path(hybridlm.__file__).resolve().parent.parent
CONTRACT_MODULES = ("hybridlm/atomic.py", "hybridlm/codegraph.py", "hybridlm/config.py", "hybridlm/interface.py",
                    "hybridlm/params.py")
# Dotted package -> folder (relative to the source root): `stages/` installs as `hybridlm.stages` (pyproject.toml).
PACKAGE_DIRS = {"hybridlm.stages": "stages", "hybridlm": "hybridlm"}


def module_path(dotted: str, root: Path = SOURCE_ROOT) -> str | None:
    """``hybridlm.training.loop`` -> ``hybridlm/training/loop.py`` (relative to ``root``); None when ``dotted`` is
    not a project module (third-party, or a name imported from a module)."""
    for package, folder in PACKAGE_DIRS.items():
        if dotted == package or dotted.startswith(package + "."):
            rest = dotted[len(package):].lstrip(".").replace(".", "/")
            base = f"{folder}/{rest}" if rest else folder
            for candidate in (f"{base}.py", f"{base}/__init__.py"):
                if (root / candidate).is_file():
                    return candidate
            return None
    return None


@cache
def imports_of(relative: str, root: Path = SOURCE_ROOT) -> frozenset[str]:
    """Project files imported by the file ``relative`` (absolute imports; ``from a import b`` counts ``a.b`` when
    that is a module, else ``a``)."""
    tree = ast.parse((root / relative).read_text(encoding="utf-8"), filename=relative)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if module_path(n, root) else node.module for n in names]
        else:
            continue
        found.update(p for n in names if (p := module_path(n, root)))
    return frozenset(found)


def stage_code(command: str, root: Path = SOURCE_ROOT) -> list[str]:
    """The project files (sorted, relative to ``root``) whose edit changes what stage ``command`` computes."""
    start = f"stages/{command}.py"
    if not (root / start).is_file():
        raise FileNotFoundError(f"{root / start}: no module for stage command '{command}'")
    seen, todo = set(), [start]
    while todo:
        file = todo.pop()
        if file in seen or file in CONTRACT_MODULES or file.endswith("__init__.py"):
            continue
        seen.add(file)
        todo.extend(imports_of(file, root))
    return sorted(seen)
