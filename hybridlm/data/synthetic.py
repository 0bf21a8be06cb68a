"""A deterministic, LJ-format stand-in corpus for offline runs (demo, tests, CI) in which the audio *says* the text.

Why: the real corpus is 2.6 GB behind a URL; the pipeline must still run end to end without it, and the
text-conditioned model must be able to show offline that it uses its transcript. So the generated corpus has the
layout and formats of LJ Speech 1.1 (``metadata.csv`` + 22,050 Hz 16-bit mono WAVs), metadata lines with the traps
of the real file (raw ``"``, ``£``, accented letters, numbers spelled out in field 3), some clips longer than 8 s so
chunking is exercised — and each clip's audio is a deterministic function of its normalised transcript
(:func:`synthesize`):

- Every letter is one steady "syllable" of its letter class (:data:`LETTER_CLASSES`: 8 classes, e.g. ``a e`` or
  ``b p m w``). A class fixes the pitch, two formants and the length (8, 10 or 12 codec frames) of its syllable.
- A space is a short silence, ``, ; :`` a longer pause, ``. ? !`` the longest; ``'`` and ``-`` are silent.
- Transcripts are words of random letters (so the next letter cannot be guessed from the audio so far: only the
  text says it), with one trap word per clip, filled up to a drawn clip length; the rest of the clip is silence.

Why steady tones at multiples of 75 Hz: the demo tokenizes with a *random-weight* EnCodec (the real weights are not
reachable), which is no speech codec: a speech-like syllable (gliding pitch, random formants, noise) gives codes
that change from frame to frame in ways unrelated to the letter, and a previous corpus of that kind gave nearly no
text benefit through it. A waveform that repeats exactly once per codec frame (1/75 s = 294 samples at 22,050 Hz,
320 at 24 kHz) gives the same encoder input every frame, so after the onset each class settles to its own steady
codes: the letter decides the codes. Syllables start and end on frame boundaries for the same reason. The measured
code distinctness through the random codec is in tests/test_synthetic_codes.py and the docs.

Cheap (numpy, no models) and byte-identical for the same parameters: each clip is drawn from its own
``(seed, index)`` stream and WAVs are written with the stdlib ``wave`` module (a fixed 44-byte header).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridlm.config import SyntheticParams
from hybridlm.text import normalize

SAMPLE_RATE = 22_050
FRAME_RATE = 75  # EnCodec 24 kHz frames per second; a syllable's waveform repeats exactly once per frame
LONG_CLIP_SECONDS = (8.1, 9.5)  # every data.synthetic.long_every-th clip: over 8 s (chunking), under 10.1 s
LEAD_FRAMES = 8  # leading silence, as in LJ clips

# (letters, pitch in Hz (a multiple of FRAME_RATE), formants in Hz, frames): one class per row.
LETTER_CLASSES = (
    ("ae", 150, (700, 1200), 12),
    ("io", 225, (350, 2300), 12),
    ("uy", 75, (300, 800), 10),
    ("bpmw", 300, (500, 1000), 8),
    ("dtnl", 375, (1500, 2600), 8),
    ("gkcq", 150, (2200, 3200), 10),
    ("fvsz", 450, (900, 2800), 8),
    ("hjrx", 75, (1300, 1800), 10),
)
SILENT_FRAMES = {" ": 4, ",": 12, ";": 12, ":": 12, ".": 18, "?": 18, "!": 18, "'": 0, "-": 0}

# (raw transcription, normalized transcription): words that break naive CSV parsing or need normalising. Clip i
# carries TRAPS[i % len(TRAPS)] when it fits; the short ones come first so that tiny test corpora have them.
TRAPS = (
    ('"received,"', '"received,"'),
    ("£5", "five pounds"),
    ("Besançon", "Besançon"),
    ("café", "café"),
    ("Zürich;", "Zürich;"),
    ("1963", "nineteen sixty-three"),
)


def clip_id(index: int) -> str:
    """LJ-style ids (``LJ9xx-xxxx``, a chapter per 100 clips); the 900s never occur in the real corpus."""
    return f"LJ{900 + index // 100:03d}-{index % 100 + 1:04d}"


def clip_seconds(params: SyntheticParams, index: int, rng: np.random.Generator) -> float:
    """Clip ``index``'s length: a long one (LONG_CLIP_SECONDS) every ``long_every`` clips, else in
    [min_seconds, max_seconds]. Why both: the text-to-speech demo wants many short sentences (cheap to tokenize,
    many to learn from), the unconditional path a few clips longer than its 8 s chunks."""
    long = params.long_every and index % params.long_every == 0
    return float(rng.uniform(*(LONG_CLIP_SECONDS if long else (params.min_seconds, params.max_seconds))))


def _class_period(pitch: float, formants: tuple[float, float], frame: int, sample_rate: int) -> np.ndarray:
    """One frame of a class's waveform: harmonics of ``pitch`` weighted by two formant bumps, peak 0.5."""
    t = np.arange(frame) / sample_rate
    wave_ = np.zeros(frame)
    for k in range(1, int(0.45 * sample_rate / pitch) + 1):
        gain = sum(np.exp(-0.5 * ((k * pitch - f) / (0.15 * f)) ** 2) for f in formants) + 0.02
        wave_ += gain / k**0.5 * np.sin(2 * np.pi * k * pitch * t)
    return 0.5 * wave_ / np.max(np.abs(wave_))


def _letter_table() -> dict[str, tuple[int, int]]:
    """letter -> (class index, frames)."""
    return {letter: (index, frames) for index, (letters, _, _, frames) in enumerate(LETTER_CLASSES)
            for letter in letters}


LETTERS = _letter_table()


def char_frames(char: str) -> int:
    """Codec frames the character ``char`` of a normalised transcript lasts."""
    if char in LETTERS:
        return LETTERS[char][1]
    if char in SILENT_FRAMES:
        return SILENT_FRAMES[char]
    raise ValueError(f"synthetic corpus: no sound for character {char!r} (normalised text only)")


def text_frames(text: str) -> int:
    """Frames :func:`synthesize` needs for ``text``, leading silence included."""
    return LEAD_FRAMES + sum(char_frames(c) for c in normalize(text))


@dataclass(frozen=True)
class Synthesis:
    """Audio of a transcript and its ground-truth alignment: ``char_of_frame[f]`` is the index in the normalised
    text of the character sounding in frame ``f`` (-1 in the leading and trailing silence)."""

    samples: np.ndarray  # float64 [frames * samples per frame], in [-0.5, 0.5]
    char_of_frame: np.ndarray  # int32 [frames]
    text: str  # the normalised transcript


def synthesize(text: str, num_frames: int | None = None, sample_rate: int = SAMPLE_RATE) -> Synthesis:
    """The audio of ``text`` (normalised first), padded with silence to ``num_frames`` frames when given.

    ``sample_rate`` must hold a whole number of samples per frame (22,050 and 24,000 Hz do)."""
    norm = normalize(text)
    needed = text_frames(norm)
    total = needed if num_frames is None else num_frames
    if total < needed:
        raise ValueError(f"synthetic corpus: {norm!r} needs {needed} frames, only {total} given")
    segments = [(-1, LEAD_FRAMES)] + [(LETTERS[c][0] if c in LETTERS else -1, char_frames(c)) for c in norm]
    owner = np.full(total, -1, dtype=np.int32)
    pos = LEAD_FRAMES
    for index, char in enumerate(norm):
        owner[pos:pos + char_frames(char)] = index
        pos += char_frames(char)
    return Synthesis(_tones(segments, total, sample_rate), owner, norm)


def synthesize_classes(frame_classes: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Audio of a per-frame class sequence (class index, -1 = silence), each run of one class as one syllable of
    that class: how a recogniser's reading of the codes (hybridlm.synthetic_asr) sounds in the corpus's own tones."""
    classes = np.asarray(frame_classes, dtype=np.int64)
    if classes.size and not ((classes >= -1) & (classes < len(LETTER_CLASSES))).all():
        raise ValueError(f"synthetic corpus: classes must be -1 (silence) or 0..{len(LETTER_CLASSES) - 1}")
    starts = np.flatnonzero(np.diff(classes, prepend=-2)) if classes.size else np.array([], dtype=np.int64)
    lengths = np.diff(np.append(starts, classes.size))
    return _tones([(int(classes[s]), int(n)) for s, n in zip(starts, lengths)], int(classes.size), sample_rate)


def _tones(segments: list[tuple[int, int]], total: int, sample_rate: int) -> np.ndarray:
    """``total`` frames of audio: the ``(class index or -1 for silence, frames)`` segments in order from frame 0
    (each class segment one syllable, faded in and out), silence after them."""
    if sample_rate % FRAME_RATE:
        raise ValueError(f"synthetic corpus: sample rate {sample_rate} is not a multiple of {FRAME_RATE} Hz")
    frame = sample_rate // FRAME_RATE
    periods = [_class_period(pitch, formants, frame, sample_rate) for _, pitch, formants, _ in LETTER_CLASSES]
    ramp = np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, frame // 4)) ** 2  # 3 ms fade in/out: no clicks
    samples = np.zeros(total * frame)
    pos = 0
    for cls, frames in segments:
        if cls >= 0 and frames:
            segment = np.tile(periods[cls], frames)
            segment[: len(ramp)] *= ramp
            segment[len(segment) - len(ramp):] *= ramp[::-1]
            samples[pos * frame:(pos + frames) * frame] = segment
        pos += frames
    return samples


def random_word(rng: np.random.Generator, max_letters: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(list(letters), size=int(rng.integers(1, max_letters + 1))))


def transcript(index: int, budget_frames: int, rng: np.random.Generator) -> tuple[str, str]:
    """(raw, normalized) transcript of clip ``index`` whose audio fits ``budget_frames``: random words, the clip's
    trap word second (or first in a one-word clip) when it fits, a capital first letter and a full stop."""
    trap_raw, trap_norm = TRAPS[index % len(TRAPS)]
    raw: list[str] = []
    norm: list[str] = []
    used = text_frames(".")  # the leading silence and the final full stop
    while True:
        want_trap = len(raw) == 1 or (len(raw) == 0 and rng.random() < 0.2)
        if want_trap and trap_raw not in raw and text_frames(trap_norm) - LEAD_FRAMES + 4 <= budget_frames - used:
            word_raw, word_norm = trap_raw, trap_norm
        else:
            word_raw = word_norm = random_word(rng, 7)
            while text_frames(word_norm) - LEAD_FRAMES + 4 > budget_frames - used and len(word_raw) > 1:
                word_raw = word_norm = word_raw[:-1]
        cost = text_frames(word_norm) - LEAD_FRAMES + (4 if raw else 0)
        if cost > budget_frames - used:
            break
        raw.append(word_raw)
        norm.append(word_norm)
        used += cost
    if not raw:
        raise ValueError(f"synthetic corpus: clip {index} has room for no word ({budget_frames} frames)")
    cap = (lambda words: [words[0][:1].upper() + words[0][1:], *words[1:]])
    return " ".join(cap(raw)) + ".", " ".join(cap(norm)) + "."


def write_wav_int16(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit mono PCM WAV with the stdlib writer (deterministic bytes)."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def generate_corpus(root: Path, params: SyntheticParams) -> list[str]:
    """Write ``root/metadata.csv`` and ``root/wavs/<id>.wav`` (LJ Speech 1.1 layout); return the clip ids."""
    root = Path(root)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    ids, lines = [], []
    for index in range(params.clips):
        rng = np.random.default_rng([params.seed, index])
        frames = int(clip_seconds(params, index, rng) * FRAME_RATE)
        raw, normalized = transcript(index, frames, rng)
        cid = clip_id(index)
        write_wav_int16(root / "wavs" / f"{cid}.wav", synthesize(normalized, frames).samples)
        lines.append(f"{cid}|{raw}|{normalized}\n")
        ids.append(cid)
    (root / "metadata.csv").write_text("".join(lines), encoding="utf-8", newline="")
    return ids
