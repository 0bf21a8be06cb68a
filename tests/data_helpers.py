"""Builders shared by the data-pipeline tests: tiny LJ-layout corpora and archives made on the fly."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from hybridlm.data.synthetic import FRAME_RATE, synthesize, transcript, write_wav_int16
from hybridlm.pipeline import read_stages
from hybridlm.workspace import SOURCE_ROOT

STAGES = read_stages(SOURCE_ROOT / "dvc.yaml")


def stage_paths(name: str) -> dict[str, Path]:
    """The path keyword arguments dvc.yaml's cmd gives stage ``name`` (relative: tests run it in a temp cwd)."""
    return STAGES[name].options()

# Lines that break naive CSV parsing: raw quotes (unbalanced too), £, accents, a field that is empty.
TRICKY_LINES = [
    'LJ001-0001|He said, "the type was worn," and left.|He said, "the type was worn," and left.',
    "LJ001-0002|The fine was £5, paid at the café in Besançon.|The fine was five pounds, paid at the café in Besançon.",
    'LJ001-0003|"Quote. Zürich, naïve, coöperate|"Quote. Zürich, naïve, coöperate',
]


def tone(seconds: float, rate: int = 22_050, freq: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * freq * t)


def corpus_speech(seconds: float, seed: int, rate: int = 24_000) -> np.ndarray:
    """``seconds`` of the synthetic corpus' audio (random words read by hybridlm.data.synthetic), float32."""
    frames = max(FRAME_RATE, -(-round(seconds * rate) * FRAME_RATE // rate))
    _, text = transcript(seed, frames, np.random.default_rng(seed))
    return synthesize(text, frames, rate).samples[: round(seconds * rate)].astype(np.float32)


def make_lj_folder(root: Path, seconds: list[float] | None = None, lines: list[str] | None = None) -> Path:
    """``root/LJSpeech-1.1`` with metadata.csv and one 22,050 Hz tone WAV per line; returns that folder."""
    lines = lines or TRICKY_LINES
    seconds = seconds or [1.0] * len(lines)
    lj = Path(root) / "LJSpeech-1.1"
    (lj / "wavs").mkdir(parents=True)
    (lj / "metadata.csv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for line, secs in zip(lines, seconds):
        write_wav_int16(lj / "wavs" / f"{line.split('|')[0]}.wav", tone(secs))
    return lj


def make_archive(path: Path, folder: Path, mode: str = "w:bz2", extra: list[tarfile.TarInfo] | None = None) -> Path:
    """Tar ``folder`` (keeping its own name as the top-level entry), plus any ``extra`` (bodiless) members."""
    with tarfile.open(path, mode) as tar:
        tar.add(folder, arcname=folder.name)
        for member in extra or []:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path
