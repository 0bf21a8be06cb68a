"""A stage's results written twice: every number for the results pages, the headline for `dvc metrics diff`.

Why: evaluate, evaluate_tts and render_tts measure much more than a person compares between runs (every codebook,
the loss with a wrong text, token counts, ASR character rates ...). Declared as DVC metrics, all of it made
`dvc metrics diff` between the demo and a `train.steps=60` experiment print 99 lines and `dvc exp show` hundreds of
columns, with the numbers that matter buried. So the declared metrics file (dvc.yaml `metrics:`) holds only the
headline keys of each checkpoint's entry, and the whole record goes to the stage's ``details`` output (an `outs`
entry, kept in git), which the results pages and the demo summary read. Both hold the same numbers, bytes for
bytes reproducible: only the layout differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hybridlm.atomic import write_json


def headline(results: dict, keys: Sequence[str]) -> dict:
    """Of each ``step_N`` entry of ``results`` and of its ``ceiling`` (the codec's), only the dotted ``keys`` it
    has (``content_gap_per_codebook.cb0`` keeps that one codebook); ``final`` (a copy of the last step) and text
    fields are left to the details."""
    picked: dict = {}
    for name, entry in results.items():
        if not (name.startswith("step_") or name == "ceiling") or not isinstance(entry, dict):
            continue
        for key in keys:
            *parents, leaf = key.split(".")
            source = entry
            for part in parents:
                source = source.get(part) if isinstance(source, dict) else None
            if isinstance(source, dict) and isinstance(source.get(leaf), (int, float)):
                target = picked.setdefault(name, {})
                for part in parents:
                    target = target.setdefault(part, {})
                target[leaf] = source[leaf]
    return picked


def write_results(metrics: Path, details: Path, results: dict, keys: Sequence[str]) -> None:
    """``details``: ``results`` whole; ``metrics``: its :func:`headline`."""
    write_json(details, results)
    write_json(metrics, headline(results, keys))
