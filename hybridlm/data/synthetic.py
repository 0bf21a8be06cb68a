"""A deterministic, LJ-format stand-in corpus for offline runs (demo, tests, CI).

Why: the real corpus is 2.6 GB behind a URL; the pipeline must still run end to end without it. The generated
corpus has the same layout and formats as LJ Speech 1.1 (``metadata.csv`` + 22,050 Hz 16-bit mono WAVs), metadata
lines with the traps of the real file (raw ``"``, ``£``, accented letters), and clips longer than 8 s so chunking
is exercised. The audio is speech-like rather than noise — voiced syllables (harmonics of a gliding pitch shaped by
formant resonances), fricative noise bursts and pauses — so a codec sees realistic structure. It is cheap (numpy,
no models) and byte-identical for the same parameters: each clip is drawn from its own ``(seed, index)`` stream and
WAVs are written with the stdlib ``wave`` module (a fixed 44-byte header, no timestamps).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridlm.config import SyntheticParams

SAMPLE_RATE = 22_050
LONG_CLIP_SECONDS = 8.0  # every third clip is longer than this when max_seconds allows: chunking needs them

# (raw transcription, normalized transcription): the kinds of lines that break naive CSV parsing of LJ Speech.
SENTENCES = (
    ('He said, "the type was worn," and put the forme aside.',
     'He said, "the type was worn," and put the forme aside.'),
    ("The fine was £5 10s., paid at the door of the café.",
     "The fine was five pounds ten shillings, paid at the door of the café."),
    ('"Quote. He was a dangerous man," end quote.',
     '"Quote. He was a dangerous man," end quote.'),
    ("Zürich, Besançon and São Paulo were named in the 1963 report;",
     "Zürich, Besançon and São Paulo were named in the nineteen sixty-three report;"),
    ('The clerk wrote "received" and signed it, "J. Smith.',
     'The clerk wrote "received" and signed it, "J. Smith.'),
    ("Printing, in the only sense with which we are at present concerned, differs from most arts.",
     "Printing, in the only sense with which we are at present concerned, differs from most arts."),
    ("The naïve prisoner owed £1,200 to the coöperative.",
     "The naïve prisoner owed one thousand two hundred pounds to the coöperative."),
    ("On the 22nd of November, 1963, at 12:30 p.m.,",
     "On the twenty-second of November, nineteen sixty-three, at twelve thirty p.m.,"),
)


def clip_id(index: int) -> str:
    """LJ-style ids (``LJ9xx-xxxx``, a chapter per 100 clips); the 900s never occur in the real corpus."""
    return f"LJ{900 + index // 100:03d}-{index % 100 + 1:04d}"


def clip_seconds(params: SyntheticParams, index: int, rng: np.random.Generator) -> float:
    low, high = params.min_seconds, params.max_seconds
    if index % 3 == 0 and high > LONG_CLIP_SECONDS:
        low = max(low, LONG_CLIP_SECONDS + 0.05 * (high - LONG_CLIP_SECONDS))
    return float(rng.uniform(low, high))


def speech_like(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Float signal in [-1, 1]: syllables of a voiced source through three formant bumps, noise bursts, pauses."""
    out = np.zeros(num_samples)
    nyquist = sample_rate / 2
    pos = int(rng.uniform(0.05, 0.2) * sample_rate)  # leading silence, as in LJ clips
    base_f0 = rng.uniform(95.0, 210.0)  # one "speaker" per clip
    while pos < num_samples:
        length = int(rng.uniform(0.10, 0.32) * sample_rate)
        seg = min(length, num_samples - pos)
        t = np.arange(seg) / sample_rate
        envelope = np.sin(np.pi * np.arange(seg) / length) ** 1.5
        if rng.random() < 0.8:  # voiced: harmonics of a gliding pitch, amplitude from formant resonances
            f0 = base_f0 * rng.uniform(0.85, 1.2) * (1.0 + rng.uniform(-0.15, 0.15) * t / max(t[-1], 1e-3))
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            formants = (rng.uniform(300, 850), rng.uniform(900, 2300), rng.uniform(2400, 3200))
            signal = np.zeros(seg)
            for k in range(1, int(4000 / base_f0) + 1):
                freq = k * base_f0
                if freq >= nyquist:
                    break
                gain = sum(np.exp(-0.5 * ((freq - f) / (0.12 * f)) ** 2) for f in formants) / k**0.5
                signal += gain * np.sin(k * phase)
        else:  # fricative: high-passed noise
            noise = rng.standard_normal(seg)
            signal = 0.3 * np.diff(noise, prepend=0.0)
        out[pos:pos + seg] += envelope * signal
        pos += seg + int(rng.choice([0.0, 0.03, 0.25], p=[0.5, 0.35, 0.15]) * sample_rate)  # gaps and pauses
    out += 1e-3 * rng.standard_normal(num_samples)  # room noise floor
    peak = np.max(np.abs(out))
    return out * (rng.uniform(0.3, 0.7) / peak) if peak > 0 else out


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
        seconds = clip_seconds(params, index, rng)
        cid = clip_id(index)
        write_wav_int16(root / "wavs" / f"{cid}.wav", speech_like(round(seconds * SAMPLE_RATE), rng))
        text, normalized = SENTENCES[(index + params.seed) % len(SENTENCES)]
        lines.append(f"{cid}|{text}|{normalized}\n")
        ids.append(cid)
    (root / "metadata.csv").write_text("".join(lines), encoding="utf-8", newline="")
    return ids
