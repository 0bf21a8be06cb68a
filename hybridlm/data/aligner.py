"""A flat-start Viterbi forced aligner: how many codec frames each text id of a sentence lasts, from codes and text
alone.

Why: a text-to-speech decoder reads its text only if it knows *where* in the text each frame is. Free
cross-attention does not find that at the demo's scale, and the guided diagonal is off the true character by half a
character on average (shared/REFERENCE.md, "Measured on the demo"); a monotonic pointer from a forced alignment
reads. This is how HMM forced aligners (Montreal Forced Aligner) start, and Glow-TTS's monotonic alignment search
with a per-id emission model:

- Each text id has a categorical distribution over the codes of codebooks ``0 .. codebooks-1`` (independent per
  codebook, add-``smoothing`` counts), fit on the TRAIN sentences; the leading and trailing silences are one more
  "id" (:data:`SILENCE`), so a clip's silent edges have a place to go instead of stretching its first and last
  characters.
- Round 0 is the even diagonal (the silences and each id get an equal share of the frames). Each round refits the
  emissions on the current paths, then takes every sentence's best monotonic path (Viterbi: each id at least one
  frame, in order; the silences may be empty). It stops when no train path changes, or after ``max_rounds``.

The same code runs on real LJ Speech (codes + text only). On the synthetic corpus, where the audio is a function of
the text, :func:`agreement` compares the result with the synthesis's own alignment: a check, never an input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridlm.atomic import write_text

SILENCE = 0  # emission "id" of the leading and trailing silences (text id 0 is padding: never a real unit)
ORACLE = "val_oracle"  # the file stem of the val sentences' TRUE alignment (synthetic corpus only): the oracle cap


@dataclass(frozen=True)
class Alignment:
    """One sentence's path: ``lead`` silent frames, then ``durations[j]`` frames of text id ``j`` (>= 1 each), then
    ``trail`` silent frames; they add up to the sentence's frames."""

    lead: int
    durations: list[int]
    trail: int

    @property
    def frames(self) -> int:
        return self.lead + sum(self.durations) + self.trail

    def unit_of_frame(self) -> np.ndarray:
        """``[frames]``: the text position sounding in each frame, -1 in the silences."""
        inner = np.repeat(np.arange(len(self.durations)), self.durations)
        return np.concatenate([np.full(self.lead, -1), inner, np.full(self.trail, -1)]).astype(np.int64)


@dataclass(frozen=True)
class AlignResult:
    train: list[Alignment]
    val: list[Alignment]
    rounds: int  # Viterbi rounds run
    changed: list[int]  # train sentences whose path changed, per round (the last is 0 when it converged)


def check_inputs(codes: Sequence[np.ndarray], texts: Sequence[Sequence[int]], codebooks: int, where: str) -> None:
    """Every sentence needs at least one frame per text id and ``codebooks`` codebooks: an error names the first that
    does not (a sentence shorter than its text cannot be read at one id per frame)."""
    for i, (c, t) in enumerate(zip(codes, texts)):
        if c.ndim != 2 or c.shape[0] < codebooks:
            raise ValueError(f"{where}: sentence {i} has codes of shape {c.shape}, need [>= {codebooks}, frames] "
                             f"(align.codebooks)")
        if not len(t) or c.shape[1] < len(t):
            raise ValueError(f"{where}: sentence {i} has {c.shape[1]} frames for {len(t)} text ids; the aligner "
                             f"needs at least one frame per id")


def even_diagonal(frames: int, units: int) -> Alignment:
    """Round 0: ``frames`` shared evenly by the leading silence, the ``units`` ids and the trailing silence (each
    silence one share, so that the silence emissions start from the clip's edges, which are mostly silent)."""
    bounds = (np.arange(units + 3) * frames) // (units + 2)
    shares = np.diff(bounds).tolist()
    return Alignment(shares[0], shares[1:-1], shares[-1])


class Emissions:
    """Per-id categorical log-probabilities over each codebook's codes: ``log_probs[q, id, code]``."""

    def __init__(self, vocab_size: int, codebook_size: int, codebooks: int, smoothing: float) -> None:
        self.counts = np.full((codebooks, vocab_size, codebook_size), smoothing, dtype=np.float64)

    def add(self, codes: np.ndarray, text: Sequence[int], path: Alignment) -> None:
        ids = _frame_ids(text, path)
        for q in range(self.counts.shape[0]):
            np.add.at(self.counts[q], (ids, codes[q]), 1.0)

    def log_probs(self) -> np.ndarray:
        return np.log(self.counts / self.counts.sum(axis=2, keepdims=True))


def _frame_ids(text: Sequence[int], path: Alignment) -> np.ndarray:
    """The emission id of every frame of ``path``: the text id sounding, SILENCE in the silences."""
    ids = np.asarray(text, dtype=np.int64)[np.repeat(np.arange(len(text)), path.durations)]
    return np.concatenate([np.full(path.lead, SILENCE), ids, np.full(path.trail, SILENCE)])


def viterbi(emit: np.ndarray) -> Alignment:
    """Best monotonic path through states [lead silence, id 0 .. id L-1, trail silence] given per-frame log scores
    ``emit [frames, L + 2]`` of each state; each id >= 1 frame, the silences >= 0."""
    frames, states = emit.shape
    units = states - 2
    best = np.full(states, -np.inf)
    best[:2] = emit[0, :2]  # start in the lead silence or at the first id
    moved = np.zeros((frames, states), dtype=bool)  # True: entered this state at this frame
    for t in range(1, frames):
        advance = np.concatenate([[-np.inf], best[:-1]])
        moved[t] = advance > best
        best = np.maximum(best, advance) + emit[t]
    state = units + 1 if best[units + 1] >= best[units] else units  # end in the trail silence or on the last id
    lengths = np.zeros(states, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        lengths[state] += 1
        if t and moved[t, state]:
            state -= 1
    return Alignment(int(lengths[0]), lengths[1:-1].tolist(), int(lengths[-1]))


def _best_paths(emissions: np.ndarray, codes: Sequence[np.ndarray], texts: Sequence[Sequence[int]]
                ) -> list[Alignment]:
    out = []
    for c, t in zip(codes, texts):
        per_id = sum(emissions[q][:, c[q]] for q in range(emissions.shape[0]))  # [vocab, frames]
        out.append(viterbi(per_id[[SILENCE, *t, SILENCE]].T))
    return out


def align(train_codes: Sequence[np.ndarray], train_texts: Sequence[Sequence[int]], val_codes: Sequence[np.ndarray],
          val_texts: Sequence[Sequence[int]], *, vocab_size: int, codebook_size: int, codebooks: int,
          smoothing: float, max_rounds: int) -> AlignResult:
    """Fit the emissions on the train sentences (flat start, Viterbi rounds until no path changes) and align both
    sides with them. ``codes`` are ``[n_q, frames]`` per sentence, ``texts`` its text ids (< ``vocab_size``)."""
    check_inputs(train_codes, train_texts, codebooks, "align: train")
    check_inputs(val_codes, val_texts, codebooks, "align: val")
    paths = [even_diagonal(c.shape[1], len(t)) for c, t in zip(train_codes, train_texts)]
    changed: list[int] = []
    emissions = None
    for _ in range(max_rounds):
        fit = Emissions(vocab_size, codebook_size, codebooks, smoothing)
        for c, t, p in zip(train_codes, train_texts, paths):
            fit.add(c, t, p)
        emissions = fit.log_probs()
        new = _best_paths(emissions, train_codes, train_texts)
        changed.append(sum(a != b for a, b in zip(new, paths)))
        paths = new
        if not changed[-1]:
            break
    return AlignResult(paths, _best_paths(emissions, val_codes, val_texts), len(changed), changed)


def from_units(units: np.ndarray, count: int) -> Alignment:
    """The path of a per-frame text position sequence (``-1`` = silence, positions non-decreasing), e.g. a true
    alignment: ids that never sound get 0 frames (a path the Viterbi never takes, but the pointer reads past)."""
    sounding = np.flatnonzero(units >= 0)
    if not len(sounding):
        raise ValueError("alignment: no frame sounds any text id")
    lead, last = int(sounding[0]), int(sounding[-1])
    return Alignment(lead, np.bincount(units[sounding], minlength=count).tolist(), len(units) - last - 1)


def agreement(predicted: np.ndarray, truth: np.ndarray, lag: int) -> float:
    """Share of frames where ``predicted`` (text position per frame, -1 = silence) equals ``truth`` delayed by
    ``lag`` frames (``truth[t - lag]``; the first ``lag`` frames count as silence)."""
    delayed = np.concatenate([np.full(lag, -1), truth[: len(truth) - lag]]) if lag else truth
    return float(np.mean(predicted == delayed))


def frames_per_id(path: Alignment) -> list[int]:
    """What the text-to-speech model reads the path as: frames per text id, the leading silence counted with the
    first id (the pointer shows the coming id through it); after the last id the text is over (the trailing silence
    and EOS are the model's to place)."""
    return [path.lead + path.durations[0], *path.durations[1:]]


def write_alignments(path: Path, ids: Sequence[str], paths: Sequence[Alignment]) -> None:
    """One JSON line per sentence: ``{"clip_id", "lead", "durations", "trail"}``, in sentence-shard order."""
    lines = [json.dumps({"clip_id": i, "lead": p.lead, "durations": p.durations, "trail": p.trail}) for i, p in
             zip(ids, paths)]
    write_text(path, "".join(line + "\n" for line in lines))


def read_alignments(path: Path) -> dict[str, Alignment]:
    """Clip id -> its alignment, from a file :func:`write_alignments` wrote; a malformed line is an error naming
    the file and line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no alignments (run the align stage)")
    out = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            out[row["clip_id"]] = Alignment(int(row["lead"]), [int(d) for d in row["durations"]], int(row["trail"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not an alignment line ({exc})") from exc
    return out
