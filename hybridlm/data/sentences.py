"""One example per sentence for text-conditioned training: a clip's codes, whole, beside its normalised transcript.

Why join the chunks of data/split instead of tokenizing whole clips again: the split stage already holds every
clip's codes on the side of the clip-level train/val split that the unconditional run used, so reusing them keeps
that split by construction (nothing in val was heard in training by either model) and costs no second pass of the
codec over 24 hours of audio. The price: a clip longer than ``tokenize.chunk_seconds`` was encoded as two pieces,
each from a fresh encoder state, so its codes show a few frames of encoder onset at the seam (8 s into 4,067 of
LJ Speech's 13,100 clips) that a whole-clip encoding would not have. The decoder turns them into a brief blip,
the model learns them as part of the data; re-tokenizing whole clips would remove that, at the cost of a codec
pass and a second copy of the split logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hybridlm.data.shards import Chunk
from hybridlm.text import normalize


@dataclass(frozen=True)
class Sentences:
    """The sentence rows of one split side and the clips left out for being longer than ``max_frames``."""

    rows: list[Chunk]  # chunk_index 0, codes of the whole clip, text = normalised transcript
    too_long: list[str]
    joined: int  # clips that had more than one chunk


def join_chunks(chunks: Iterable[Chunk], source: str) -> dict[str, np.ndarray]:
    """Clip id -> its chunks' codes concatenated in ``chunk_index`` order (clips in order of first appearance).

    Every clip must have chunks 0..n-1 exactly once: a gap or a duplicate means the shards were not written by
    tokenize + split, and joining them would splice the wrong audio."""
    pieces: dict[str, dict[int, np.ndarray]] = {}
    for chunk in chunks:
        own = pieces.setdefault(chunk.clip_id, {})
        if chunk.chunk_index in own:
            raise ValueError(f"{source}: clip {chunk.clip_id} has chunk {chunk.chunk_index} twice")
        own[chunk.chunk_index] = chunk.codes
    joined = {}
    for clip_id, own in pieces.items():
        if sorted(own) != list(range(len(own))):
            raise ValueError(f"{source}: clip {clip_id} has chunks {sorted(own)}, expected 0..{len(own) - 1}")
        joined[clip_id] = np.concatenate([own[i] for i in range(len(own))], axis=1)
    return joined


def build_sentences(chunks: Iterable[Chunk], transcripts: dict[str, str], max_frames: int, on_too_long: str,
                    source: str) -> Sentences:
    """Whole-clip rows with their normalised transcripts. A clip longer than ``max_frames`` is an error naming it
    (``on_too_long: fail``) or left out and listed (``skip``). ``source`` names the shards in messages."""
    chunks = list(chunks)
    joined = join_chunks(chunks, source)
    missing = [clip_id for clip_id in joined if clip_id not in transcripts]
    if missing:
        raise ValueError(f"{source}: {len(missing)} clip(s) have no line in metadata.csv, e.g. {', '.join(missing[:5])}")
    rows, too_long = [], []
    for clip_id, codes in joined.items():
        if codes.shape[1] > max_frames:
            if on_too_long == "fail":
                raise ValueError(f"{source}: clip {clip_id} has {codes.shape[1]} frames, more than "
                                 f"sentences.max_frames ({max_frames}); raise it (within model.context) or set "
                                 f"sentences.on_too_long: skip")
            too_long.append(clip_id)
            continue
        text = normalize(transcripts[clip_id])
        if not transcripts[clip_id].strip():
            raise ValueError(f"{source}: clip {clip_id} has an empty transcript in metadata.csv (download warned "
                             f"of it): write its text there, or leave the clip out of the corpus")
        if not text:
            raise ValueError(f"{source}: clip {clip_id} has an empty transcript after normalisation "
                             f"(metadata.csv: {transcripts[clip_id]!r})")
        rows.append(Chunk(clip_id, 0, codes, text))
    counts: dict[str, int] = {}
    for chunk in chunks:
        counts[chunk.clip_id] = counts.get(chunk.clip_id, 0) + 1
    return Sentences(rows, too_long, sum(n > 1 for n in counts.values()))
