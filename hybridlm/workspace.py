"""Fresh git+DVC workspaces that run this project's own dvc.yaml with overridden params.

Why: the demo and the end-to-end tests must run *the same* dvc.yaml a user runs, on the synthetic corpus and a
tiny model, without touching the checkout's params.yaml or DVC cache. A workspace is a new git repository holding
copies of dvc.yaml, the code the stages depend on (so DVC can hash those deps), and params.yaml = the project's
params.yaml with overrides merged in. DVC needs a commit before experiments, so the workspace starts with one.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from hybridlm.codegraph import SOURCE_ROOT
from hybridlm.params import read_yaml

COPIED = ("dvc.yaml", "params.yaml", "hybridlm", "stages")
IGNORED_NAMES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# dvc_plots/ is what `dvc plots show/diff` write by default: a rendering, never something to commit.
WORKSPACE_GITIGNORE = "__pycache__/\ndvc_plots/\n"


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tool_env() -> dict[str, str]:
    """Environment in which `dvc` and the `hybridlm` console script of this interpreter are found first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def run_tool(workdir: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run a command (``dvc``, ``git``, ``hybridlm``) in ``workdir``; raise RuntimeError with its output on failure."""
    result = subprocess.run(list(args), cwd=workdir, env=tool_env(), text=True,
                            capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stdout or "") + (result.stderr or "") if capture else "(output above)"
        raise RuntimeError(f"`{' '.join(args)}` failed in {workdir} with exit code {result.returncode}: {detail}")
    return result


def create_workspace(workdir: Path, overrides: dict[str, Any], source_root: Path = SOURCE_ROOT) -> Path:
    """Create ``workdir`` as a committed git+DVC repo running this project's pipeline with ``overrides``."""
    workdir = Path(workdir)
    if not (source_root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{source_root / 'dvc.yaml'}: not found; workspaces need a source checkout of hybridlm")
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"{workdir}: already exists and is not empty; choose another folder or remove it")
    workdir.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = source_root / name
        if src.is_dir():
            shutil.copytree(src, workdir / name, ignore=IGNORED_NAMES)
        else:
            shutil.copy2(src, workdir / name)
    params = read_yaml(source_root / "params.yaml")
    (workdir / "params.yaml").write_text(yaml.safe_dump(merge(params, overrides), sort_keys=False), encoding="utf-8")
    (workdir / ".gitignore").write_text(WORKSPACE_GITIGNORE, encoding="utf-8")
    run_tool(workdir, "git", "init", "-q", capture=True)
    run_tool(workdir, "git", "config", "user.email", "demo@hybridlm.invalid", capture=True)
    run_tool(workdir, "git", "config", "user.name", "hybridlm demo", capture=True)
    run_tool(workdir, "dvc", "init", "-q", capture=True)
    run_tool(workdir, "dvc", "config", "core.analytics", "false", capture=True)
    run_tool(workdir, "git", "add", "-A", capture=True)
    run_tool(workdir, "git", "commit", "-q", "-m", "hybridlm workspace", capture=True)
    return workdir
