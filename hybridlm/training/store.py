"""The resume store: training states kept *outside* DVC's outputs, keyed by the trajectory.

Why: DVC deletes a stage's outputs before it re-runs the stage, and `persist: true` (which would keep them) disables
the run-cache and lets a run record outputs it did not produce. So the train stage keeps its states in a folder DVC
does not know about, named by the trajectory key (hash of the trajectory params, the data hash and the code
version; see checkpoint.provenance). A re-run with more `train.steps` finds the states of the same trajectory,
continues from the latest one, and *copies* the stored checkpoint files into data/checkpoints, so earlier
checkpoints come back byte-identical. Anything that changes the trajectory changes the key: no state of another
model, other data or other code is ever resumed.

Location: ``$HYBRIDLM_CACHE/train/<key>/`` when HYBRIDLM_CACHE is set, else ``.hybridlm/train/<key>/`` under the
directory the stage runs in (the DVC project root). ``.hybridlm/`` ignores itself for git (it holds a
``.gitignore`` of ``*``), so states never reach a commit or an experiment. `dvc exp run --temp/--queue` run in a
temporary copy without it: set HYBRIDLM_CACHE to a shared folder to resume there too.

Files: ``step-NNNNNN.pt`` are checkpoints (a `save_steps` entry or a run's final step) and are kept;
``resume-NNNNNN.pt`` are periodic states (every `train.eval_every` steps), each written atomically, after which the
periodic states of earlier steps are deleted. A SIGKILL therefore loses at most `eval_every` steps, and a shorter
run never deletes the periodic state of a longer one. One training process per trajectory at a time: a second one
started on the same store would race the first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hybridlm.atomic import write_json, write_text
from hybridlm.training.checkpoint import NAME, checkpoint_name, save_checkpoint

RESUME = re.compile(r"^resume-(\d{6,})\.pt$")


def store_root(workdir: Path) -> Path:
    """``$HYBRIDLM_CACHE`` or ``<workdir>/.hybridlm`` (created with a self-ignoring .gitignore)."""
    env = os.environ.get("HYBRIDLM_CACHE")
    if env:
        return Path(env).expanduser()
    root = Path(workdir) / ".hybridlm"
    if not (root / ".gitignore").is_file():
        write_text(root / ".gitignore", "# hybridlm resume store: never commit\n*\n")
    return root


class ResumeStore:
    """States of one trajectory: kept checkpoints plus the latest periodic resume state."""

    def __init__(self, root: Path, provenance: dict[str, Any]) -> None:
        self.folder = Path(root) / "train" / provenance["key"]
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".*.tmp"):  # a state file whose writer was killed mid-write
            stale.unlink(missing_ok=True)
        if not (self.folder / "provenance.json").is_file():
            write_json(self.folder / "provenance.json", provenance)

    def checkpoint_path(self, step: int) -> Path:
        return self.folder / checkpoint_name(step)

    def checkpoints(self) -> dict[int, Path]:
        return {int(m.group(1)): p for p in self.folder.iterdir() if (m := NAME.match(p.name))}

    def resume_states(self) -> dict[int, Path]:
        return {int(m.group(1)): p for p in self.folder.iterdir() if (m := RESUME.match(p.name))}

    def latest_at_most(self, step: int) -> tuple[int, Path] | None:
        """The most advanced stored state at or before ``step`` (checkpoint or periodic), or None."""
        candidates = {s: p for s, p in self.resume_states().items() if s <= step}
        candidates.update({s: p for s, p in self.checkpoints().items() if s <= step})
        if not candidates:
            return None
        best = max(candidates)
        return best, candidates[best]

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        path = self.checkpoint_path(int(state["step"]))
        save_checkpoint(path, state)
        return path

    def save_resume(self, state: dict[str, Any]) -> None:
        step = int(state["step"])
        save_checkpoint(self.folder / f"resume-{step:06d}.pt", state)
        for older, path in self.resume_states().items():
            if older < step:
                path.unlink(missing_ok=True)
