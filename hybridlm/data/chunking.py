"""How clips become training pieces: fixed-length chunks with a short tail merged into the previous piece.

Why this rule: the LM trains on rows of at most ``context`` steps, so long clips are cut; cutting at a fixed length
leaves a tail, and a tail of a second or so is mostly silence and too short to learn from. Merging a tail shorter
than ``min_tail_seconds`` into the previous piece keeps every second of audio and bounds pieces at
``chunk + min_tail`` (8 + 2 = 10 s). On LJ Speech's 13,100 durations this gives the reference run's 13,290 pieces
(plain ceil(d / 8) would give 17,167). Boundaries are in codec frames (75/s: a chunk of 8 s is 600 frames), so
every chunk's codes are a contiguous slice of whole frames; the tail test is done on samples (see ChunkRule).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkRule:
    """The rule at the codec's rate: pieces of ``chunk_frames`` frames (``hop`` samples each); a last piece with
    fewer than ``min_tail_samples`` samples is merged into the previous one.

    The tail is measured in samples, not in frames: the codec's last frame is partial (ceil), and counting it as a
    whole frame would turn a 1.992 s tail into 150 frames = 2.0 s and keep 23 LJ tails the seconds rule merges.
    """

    chunk_frames: int
    hop: int
    min_tail_samples: int

    @classmethod
    def from_seconds(cls, chunk_seconds: float, min_tail_seconds: float, sample_rate: int, hop: int) -> ChunkRule:
        frames = chunk_seconds * sample_rate / hop
        chunk, tail = round(frames), round(min_tail_seconds * sample_rate)
        if chunk < 1 or abs(frames - chunk) > 1e-6:
            raise ValueError(f"tokenize.chunk_seconds {chunk_seconds} is not a positive whole number of codec frames "
                             f"({hop / sample_rate * 1000:g} ms each)")
        if not 0 <= tail <= chunk * hop:
            raise ValueError(f"tokenize.min_tail_seconds {min_tail_seconds} must be between 0 and chunk_seconds")
        return cls(chunk, hop, tail)


def chunk_bounds(num_samples: int, rule: ChunkRule) -> list[tuple[int, int]]:
    """Frame ranges ``[start, end)`` covering a clip of ``num_samples`` samples (frames = ceil(samples / hop))."""
    if num_samples <= 0:
        raise ValueError(f"a clip must have at least one sample, got {num_samples}")
    num_frames = frames_for_samples(num_samples, rule.hop)
    starts = list(range(0, num_frames, rule.chunk_frames))
    if len(starts) > 1 and num_samples - starts[-1] * rule.hop < rule.min_tail_samples:
        starts.pop()  # the short tail joins the previous piece
    ends = starts[1:] + [num_frames]
    return list(zip(starts, ends))


def frames_for_samples(samples: int, hop: int) -> int:
    """Codec frames covering ``samples`` (EnCodec pads the last partial hop): ceil(samples / hop)."""
    return -(-samples // hop)
