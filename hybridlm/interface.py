"""The interface between a stage module ``stages/<name>.py`` and its ``hybridlm <name>`` command.

Why: the command is generated from the stage's ``run()`` signature (hybridlm/cli.py), so a path is named in dvc.yaml
(the cmd passes it) and in the stage (the keyword argument, with its help text beside it), nowhere else. Each
argument after ``params`` is keyword-only and says its role::

    def run(params: dict, *, split: Annotated[Path, Input("Split folder to read.")],
            out: Annotated[Path, Output("Folder to write.")],
            workers: Annotated[int, Option("Parallel processes.")] = 0) -> None:
        \"\"\"One line: the command's help.\"\"\"

``Input`` paths are the stage's data deps in dvc.yaml, ``Output`` paths its outs/metrics (tests/test_contract.py checks
both against dvc.yaml); an ``Option`` is a plain option with run()'s default. :func:`read_stage` reads this from the
source without importing the stage, so ``hybridlm --help`` does not import torch (tests/test_contract.py checks it
reads what Python sees). :class:`StageFailure` is a failure the user must act on: the command prints it, exit 2.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Input:
    """A path the stage reads (a data dep in dvc.yaml)."""

    help: str


@dataclass(frozen=True)
class Output:
    """A path the stage writes (an out, metric or plot in dvc.yaml)."""

    help: str


@dataclass(frozen=True)
class Option:
    """A plain option (not a pipeline path); its default is run()'s."""

    help: str


class StageFailure(RuntimeError):
    """A run stopped for a reason the user must act on (diverged, a kernel failed its check): a message, exit 2."""


ROLES = {role.__name__: role for role in (Input, Output, Option)}
TYPES = {kind.__name__: kind for kind in (Path, str, int, float, bool)}


@dataclass(frozen=True)
class Argument:
    name: str
    type: type
    role: Input | Output | Option
    default: object = ...  # ... = required


@dataclass(frozen=True)
class StageSignature:
    help: str  # run()'s docstring
    arguments: tuple[Argument, ...]

    def paths(self) -> dict[str, Input | Output]:
        return {a.name: a.role for a in self.arguments if not isinstance(a.role, Option)}


def read_stage(source: Path) -> StageSignature:
    """``run()``'s docstring and keyword-only arguments in the stage file ``source``, read from its syntax tree."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    run = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"), None)
    if run is None or [a.arg for a in run.args.args] != ["params"] or run.args.vararg or run.args.kwarg:
        raise TypeError(f"{source}: a stage module needs `def run(params: dict, *, ...)` with keyword-only arguments")
    doc = ast.get_docstring(run)
    if not doc:
        raise TypeError(f"{source}: run() needs a docstring (the command's help)")
    arguments = []
    for arg, default in zip(run.args.kwonlyargs, run.args.kw_defaults):
        kind, role = _annotation(source, arg)
        arguments.append(Argument(arg.arg, kind, role, ... if default is None else ast.literal_eval(default)))
        if isinstance(role, Option) == (default is None):
            raise TypeError(f"{source}: run() argument '{arg.arg}': an Option needs a default, a path has none")
    return StageSignature(doc, tuple(arguments))


def _annotation(source: Path, arg: ast.arg) -> tuple[type, Input | Output | Option]:
    """``Annotated[<type>, <Role>("help")]`` -> (type, role); anything else is refused naming the argument."""
    node = arg.annotation
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        node = ast.parse(node.value, mode="eval").body
    parts = node.slice.elts if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple) else []
    if (len(parts) == 2 and isinstance(node.value, ast.Name) and node.value.id == "Annotated"
            and isinstance(parts[0], ast.Name) and parts[0].id in TYPES
            and isinstance(parts[1], ast.Call) and isinstance(parts[1].func, ast.Name) and parts[1].func.id in ROLES
            and len(parts[1].args) == 1 and not parts[1].keywords
            and isinstance(parts[1].args[0], ast.Constant) and isinstance(parts[1].args[0].value, str)):
        return TYPES[parts[0].id], ROLES[parts[1].func.id](parts[1].args[0].value)
    raise TypeError(f"{source}: run() argument '{arg.arg}' must be annotated Annotated[<{'|'.join(TYPES)}>, "
                    f"<{'|'.join(ROLES)}>(\"help\")]")
