"""How clips become training pieces: fixed-length chunks with a short tail merged into the previous piece.

Why this rule: the LM trains on rows of at most ``context`` steps, so long clips are cut; cutting at a fixed length
leaves a tail, and a tail of a second or so is mostly silence and too short to learn from. Merging a tail shorter
than ``min_tail_seconds`` into the previous piece keeps every second of audio and bounds pieces at
``chunk + min_tail`` (8 + 2 = 10 s). On LJ Speech's 13,100 durations this gives the reference run's 13,290 pieces
(plain ceil(d / 8) would give 17,167). Boundaries are in codec frames (75/s: a chunk of 8 s is 600 frames), so
every chunk's codes are a contiguous slice of whole frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkRule:
    """The rule in frames: pieces of ``chunk_frames``; a last piece shorter than ``min_tail_frames`` is merged."""

    chunk_frames: int
    min_tail_frames: int

    @classmethod
    def from_seconds(cls, chunk_seconds: float, min_tail_seconds: float, frame_rate: float) -> ChunkRule:
        chunk = round(chunk_seconds * frame_rate)
        tail = round(min_tail_seconds * frame_rate)
        if chunk < 1 or not 0 <= tail <= chunk:
            raise ValueError(f"chunk of {chunk} frames with a minimum tail of {tail} frames is not a valid rule")
        return cls(chunk, tail)


def chunk_bounds(num_frames: int, rule: ChunkRule) -> list[tuple[int, int]]:
    """Frame ranges ``[start, end)`` covering ``[0, num_frames)`` under ``rule`` (one piece if the clip is short)."""
    if num_frames <= 0:
        raise ValueError(f"a clip must have at least one frame, got {num_frames}")
    starts = list(range(0, num_frames, rule.chunk_frames))
    tail = num_frames - starts[-1]
    if len(starts) > 1 and tail < rule.min_tail_frames:
        starts.pop()  # the short tail joins the previous piece
    ends = starts[1:] + [num_frames]
    return list(zip(starts, ends))


def count_chunks_seconds(seconds: float, chunk_seconds: float, min_tail_seconds: float) -> int:
    """The same rule on durations in seconds (used to check the rule against durations.tsv)."""
    pieces = max(1, math.ceil(seconds / chunk_seconds))
    if pieces > 1 and seconds - (pieces - 1) * chunk_seconds < min_tail_seconds:
        pieces -= 1
    return pieces


def frames_for_samples(samples: int, hop: int) -> int:
    """Codec frames covering ``samples`` (EnCodec pads the last partial hop): ceil(samples / hop)."""
    return -(-samples // hop)
