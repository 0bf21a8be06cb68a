"""Clip-level train/val split: every chunk of a clip goes to the same side, chosen by a seeded permutation.

Why clip level: chunks of one clip share a speaker turn and sentence; putting some in train and others in val leaks
the validation audio into training. Why ``round(val_fraction * clips)`` clips (at least one when the fraction is
positive): it gives 655 of LJ Speech's 13,100 clips at 5% and still a validation set on tiny demo corpora. The
permutation is over the *sorted* clip ids, so the split depends only on the set of clips and the seed, not on
shard order. Because whole clips move, the val *chunk* count varies with the seed (clips have 1-2 chunks): the
reference run's 666 val chunks came from its own draw; this rule's count on the real durations is in
docs/pipeline.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


def num_val_clips(num_clips: int, val_fraction: float) -> int:
    if num_clips < 1:
        raise ValueError("cannot split an empty corpus (no clips)")
    n = round(val_fraction * num_clips)
    if val_fraction > 0:
        n = max(n, 1)
    if n >= num_clips:
        raise ValueError(f"split.val_fraction {val_fraction} leaves no training clips out of {num_clips}")
    return n


def val_clips(clip_ids: Iterable[str], val_fraction: float, seed: int) -> set[str]:
    """The clip ids that go to validation (deterministic in the set of ids and the seed)."""
    ids = sorted(set(clip_ids))
    n = num_val_clips(len(ids), val_fraction)
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i] for i in order[:n]}
