"""dvc.yaml read as data: each stage's command line, its path options, and the paths it declares.

Why: dvc.yaml is the one place that names the pipeline's paths. Each stage's ``cmd`` passes them to its
``hybridlm`` command as options (``hybridlm train --split data/split --checkpoints data/checkpoints ...``), so the
library holds no path constants. Tests, the workspace helper and the leftover clean-up read the paths from here
instead of repeating them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from hybridlm.atomic import remove_stale_temporaries
from hybridlm.params import read_yaml

CODE_ROOTS = ("hybridlm/", "stages/")  # a dep under these is code (checked against hybridlm/codegraph.py)


@dataclass(frozen=True)
class Stage:
    name: str
    argv: tuple[str, ...]  # the cmd, split like a shell would
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots: every path the stage writes

    @property
    def command(self) -> str:
        """The ``hybridlm`` subcommand (its module is ``stages/<command>.py``)."""
        return self.argv[1]

    @property
    def code_deps(self) -> tuple[str, ...]:
        return tuple(d for d in self.deps if d.startswith(CODE_ROOTS))

    @property
    def data_deps(self) -> tuple[str, ...]:
        return tuple(d for d in self.deps if not d.startswith(CODE_ROOTS))

    def options(self) -> dict[str, Path]:
        """``--eval-metrics metrics/eval.json`` -> ``{"eval_metrics": Path("metrics/eval.json")}``: the keyword
        arguments of the stage module's ``run``."""
        found: dict[str, Path] = {}
        args = list(self.argv[2:])
        for flag, value in zip(args[::2], args[1::2]):
            if not flag.startswith("--") or value.startswith("--"):
                raise ValueError(f"dvc.yaml: stage '{self.name}': cmd must be `hybridlm {self.command}` followed by "
                                 f"--option value pairs, got {shlex.join(self.argv)!r}")
            found[flag[2:].replace("-", "_")] = Path(value)
        if len(args) % 2:
            raise ValueError(f"dvc.yaml: stage '{self.name}': option {args[-1]!r} has no value")
        return found


def _paths(entries: list | None) -> tuple[str, ...]:
    """Paths of a deps/outs/metrics/plots list, whose items are ``path`` or ``{path: {options}}``."""
    return tuple(next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or [])


def read_stages(dvc_yaml: Path | str) -> dict[str, Stage]:
    """Every stage of ``dvc_yaml`` by name."""
    data = read_yaml(dvc_yaml)
    stages = {}
    for name, body in (data.get("stages") or {}).items():
        argv = tuple(shlex.split(body["cmd"]))
        if len(argv) < 2 or argv[0] != "hybridlm":
            raise ValueError(f"{dvc_yaml}: stage '{name}': cmd must start with `hybridlm <command>`, got {body['cmd']!r}")
        outs = _paths(body.get("outs")) + _paths(body.get("metrics")) + _paths(body.get("plots"))
        stages[name] = Stage(name, argv, _paths(body.get("deps")), outs)
    return stages


def remove_leftovers(paths: list[Path], dvc_yaml: Path = Path("dvc.yaml")) -> None:
    """Delete temporaries of killed runs (``.<name>.*.tmp``, ``.<name>.old``; see hybridlm/atomic.py) beside
    ``paths`` and beside every output of every stage in ``dvc_yaml`` (when it exists).

    Why every stage's outputs and not only this stage's: when DVC restores a stage from its run cache, that stage's
    code never runs, so a killed earlier run of it (a partial corpus is gigabytes) would otherwise keep its
    leftovers for ever. Any `hybridlm` stage starting cleans them. Safe because DVC runs one stage at a time per
    workspace (`dvc repro` holds the repository lock); do not start a stage by hand while another one runs in the
    same folder. Download transfers (``.part`` in the download cache) live elsewhere and are kept for resuming.
    """
    declared = set(paths)
    if dvc_yaml.is_file():
        declared |= {Path(p) for stage in read_stages(dvc_yaml).values() for p in stage.outs}
    for path in sorted(declared):
        remove_stale_temporaries(path)
