"""Validate LJ Speech WAVs and resample them to the codec's rate as 16-bit FLAC, in parallel; the clip manifest.

Why: EnCodec 24 kHz needs 24 kHz input; LJ Speech is 22,050 Hz. soxr (very-high-quality band-limited resampling)
avoids the aliasing a naive interpolation adds, and FLAC keeps the 16-bit result lossless at about half the size.
Every input is checked against what LJ Speech is (readable, non-empty, mono, 16-bit PCM, 22,050 Hz) so a damaged
or foreign file is reported *by name* instead of turning into silent garbage tokens. ``on_bad_file`` chooses
between failing the stage (default: a bad file in a corpus you downloaded is a corrupted download) and skipping
(listed by name and counted in the stage's metrics, never silent).
"""

from __future__ import annotations

import multiprocessing
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from hybridlm.config import ResampleParams

MANIFEST_HEADER = ("id", "seconds", "samples")


class BadAudioError(ValueError):
    """An input WAV is unreadable, empty, or not mono / 16-bit PCM / the expected rate. The message names the file."""


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    seconds: float
    samples: int


def read_wav_checked(path: Path, expected_rate: int) -> np.ndarray:
    """Return the int16 samples of an LJ-style WAV, or raise BadAudioError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise BadAudioError(f"{path.name}: file is missing")
    try:
        info = sf.info(str(path))
    except RuntimeError as exc:
        raise BadAudioError(f"{path.name}: unreadable audio ({exc})") from exc
    if info.format != "WAV" or info.subtype != "PCM_16":
        raise BadAudioError(f"{path.name}: expected 16-bit PCM WAV, got {info.format}/{info.subtype}")
    if info.channels != 1:
        raise BadAudioError(f"{path.name}: expected mono, got {info.channels} channels")
    if info.samplerate != expected_rate:
        raise BadAudioError(f"{path.name}: expected {expected_rate} Hz, got {info.samplerate} Hz")
    declared, present = wav_data_chunk_sizes(path)
    if present < declared:
        raise BadAudioError(f"{path.name}: truncated: its data chunk declares {declared} bytes, "
                            f"the file holds {present}")
    if info.frames == 0:
        raise BadAudioError(f"{path.name}: empty (0 samples)")
    try:
        data, _ = sf.read(str(path), dtype="int16", always_2d=False)
    except RuntimeError as exc:
        raise BadAudioError(f"{path.name}: unreadable audio data ({exc})") from exc
    return data


def wav_data_chunk_sizes(path: Path) -> tuple[int, int]:
    """(bytes the RIFF ``data`` chunk declares, bytes of it actually in the file).

    Why parse the chunks ourselves: libsndfile silently shortens the frame count of a truncated WAV to what is
    present, so a file cut in half reads as a valid, shorter clip. Only the chunk header still tells the truth.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        header = fh.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:] != b"WAVE":
            raise BadAudioError(f"{path.name}: not a RIFF/WAVE file")
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                return chunk_size, size - offset - 8
            offset += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even length
    raise BadAudioError(f"{path.name}: no data chunk")


def resample_int16(data: np.ndarray, source_rate: int, target_rate: int, quality: str) -> np.ndarray:
    """Band-limited resampling of int16 audio; the result is rounded and clipped back to int16."""
    if source_rate == target_rate:
        return data.astype(np.int16, copy=True)
    y = soxr.resample(data.astype(np.float32) / 32768.0, source_rate, target_rate, quality=quality)
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def read_flac(path: Path, expected_rate: int) -> np.ndarray:
    """float32 samples in [-1, 1) of a resampled clip; checks it has the rate the manifest implies."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except RuntimeError as exc:
        raise ValueError(f"{path}: unreadable audio ({exc})") from exc
    if rate != expected_rate or data.ndim != 1:
        raise ValueError(f"{path}: expected mono {expected_rate} Hz, got {rate} Hz with shape {data.shape}")
    return data


def _convert_one(job: tuple[str, str, str, int, int, str]) -> tuple[str, int | None, str]:
    """Worker: (id, wav, flac, source rate, target rate, quality) -> (id, samples or None, error message)."""
    clip_id, wav, flac, source_rate, target_rate, quality = job
    try:
        data = read_wav_checked(Path(wav), source_rate)
    except BadAudioError as exc:
        return clip_id, None, str(exc)
    out = resample_int16(data, source_rate, target_rate, quality)
    sf.write(flac, out, target_rate, format="FLAC", subtype="PCM_16")
    return clip_id, len(out), ""


@dataclass
class ResampleResult:
    entries: list[ManifestEntry]
    skipped: dict[str, str]  # wav file name -> reason


def resample_corpus(ids: list[str], wav_dir: Path, out_dir: Path, params: ResampleParams,
                    workers: int = 0) -> ResampleResult:
    """Convert ``wav_dir/<id>.wav`` to ``out_dir/<id>.flac`` for every id (order kept), with ``workers`` processes
    (0 = all cores, 1 = in this process). Bad files raise one BadAudioError listing all of them when
    ``on_bad_file == "fail"``; with ``"skip"`` they are returned in ``skipped``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(wav_dir / f"{i}.wav"), str(out_dir / f"{i}.flac"), params.source_sample_rate,
             params.sample_rate, params.quality) for i in ids]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), unit=" clips", desc="resample")
    if workers == 1:
        results = [_tick(bar, _convert_one(job)) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = [_tick(bar, r) for r in pool.imap(_convert_one, jobs, chunksize=8)]
    bar.close()
    entries, skipped = [], {}
    for clip_id, samples, error in results:
        if samples is None:
            skipped[f"{clip_id}.wav"] = error
        else:
            entries.append(ManifestEntry(clip_id, samples / params.sample_rate, samples))
    if skipped and params.on_bad_file == "fail":
        shown = "; ".join(list(skipped.values())[:10])
        more = f" (and {len(skipped) - 10} more)" if len(skipped) > 10 else ""
        raise BadAudioError(
            f"{len(skipped)} bad input file(s) in {wav_dir}: {shown}{more}. "
            f"Set resample.on_bad_file: skip to leave them out (they are then listed in the resample metrics)"
        )
    if not entries:
        raise BadAudioError(f"{wav_dir}: no usable clips (all {len(ids)} were bad)")
    return ResampleResult(entries, skipped)


def _tick(bar: tqdm, result):
    bar.update(1)
    return result


def write_manifest(path: Path, entries: list[ManifestEntry]) -> None:
    """TSV with a header: id, seconds (6 decimals), samples (at the resampled rate)."""
    lines = ["\t".join(MANIFEST_HEADER)] + [f"{e.id}\t{e.seconds:.6f}\t{e.samples}" for e in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_manifest(path: Path) -> list[ManifestEntry]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run the resample stage first)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_HEADER:
        raise ValueError(f"{path}: expected the header line {' TAB '.join(MANIFEST_HEADER)}")
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        try:
            clip_id, seconds, samples = fields
            entries.append(ManifestEntry(clip_id, float(seconds), int(samples)))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: expected id<TAB>seconds<TAB>samples, got {line!r}") from exc
    if not entries:
        raise ValueError(f"{path}: manifest lists no clips")
    return entries
