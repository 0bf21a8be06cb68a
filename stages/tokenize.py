"""`tokenize` stage: data/resampled -> data/tokens/shard-*.parquet (EnCodec codes of 8 s chunks), metrics/tokenize.json.

Reads the `tokenize` section. Clips are cut by the chunk rule (hybridlm.data.chunking) in codec frames, encoded in
batches on the chosen device, and written as zstd Parquet shards whose metadata records codec, weights, bandwidth
and the params hash (hybridlm.data.shards).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from hybridlm.atomic import atomic_dir, write_json
from hybridlm.data.audio import ManifestEntry, read_flac, read_manifest
from hybridlm.data.chunking import ChunkRule, chunk_bounds
from hybridlm.data.codec import encode_pieces, load_codec
from hybridlm.data.shards import Chunk, write_shards
from hybridlm.params import ParamError, params_hash, parse_section

RESAMPLED = Path("data/resampled")
OUT = Path("data/tokens")
METRICS = Path("metrics/tokenize.json")
FRAME_RATE = 75  # EnCodec 24 kHz: 24,000 / 320; checked against the loaded codec by ChunkRule.from_seconds


@dataclass(frozen=True)
class TokenizeParams:
    """`tokenize`: codec weights and bandwidth, the chunk rule, batch and shard sizes."""

    weights: Literal["pretrained", "random"] = "pretrained"
    model_id: str = "facebook/encodec_24khz"
    bandwidth: float = field(default=6.0, metadata={"choices": [1.5, 3.0, 6.0, 12.0, 24.0]})
    chunk_seconds: float = field(default=8.0, metadata={"gt": 0.0})
    min_tail_seconds: float = field(default=2.0, metadata={"min": 0.0})
    batch_size: int = field(default=16, metadata={"min": 1})
    shard_chunks: int = field(default=2000, metadata={"min": 1})

    def __post_init__(self) -> None:
        frames = self.chunk_seconds * FRAME_RATE
        if abs(frames - round(frames)) > 1e-6:
            raise ParamError(f"params.yaml: 'tokenize.chunk_seconds' ({self.chunk_seconds}) must be a whole number of "
                             f"EnCodec frames (1/{FRAME_RATE} s), e.g. 8.0 = 600 frames")
        if self.min_tail_seconds > self.chunk_seconds:
            raise ParamError(f"params.yaml: 'tokenize.min_tail_seconds' ({self.min_tail_seconds}) must be <= "
                             f"'tokenize.chunk_seconds' ({self.chunk_seconds})")


def iter_pieces(entries: list[ManifestEntry], rule: ChunkRule,
                sample_rate: int) -> Iterator[tuple[str, int, np.ndarray]]:
    """(clip id, chunk index, samples) for every chunk of every clip, reading one FLAC at a time."""
    for entry in entries:
        wav = read_flac(RESAMPLED / "wavs" / f"{entry.id}.flac", sample_rate)
        if len(wav) != entry.samples:
            raise ValueError(f"{RESAMPLED}/wavs/{entry.id}.flac: {len(wav)} samples, manifest says {entry.samples}")
        for index, (start, end) in enumerate(chunk_bounds(entry.samples, rule)):
            yield entry.id, index, wav[start * rule.hop: end * rule.hop]


def run(params: dict, device: str = "auto", **options) -> None:
    cfg = parse_section(TokenizeParams, params, "tokenize")
    entries = read_manifest(RESAMPLED / "manifest.tsv")
    codec = load_codec(cfg.weights, cfg.model_id, device)
    rule = ChunkRule.from_seconds(cfg.chunk_seconds, cfg.min_tail_seconds, codec.sample_rate, codec.hop_length)
    total = sum(len(chunk_bounds(e.samples, rule)) for e in entries)
    metadata = {
        "codec": cfg.model_id, "weights": cfg.weights, "bandwidth": cfg.bandwidth,
        "num_codebooks": codec.num_codebooks(cfg.bandwidth), "codebook_size": codec.codebook_size,
        "frame_rate": codec.frame_rate, "sample_rate": codec.sample_rate, "params_hash": params_hash(cfg),
    }
    start = time.perf_counter()
    frames = 0
    with atomic_dir(OUT) as tmp, tqdm(total=total, unit=" chunks", desc=f"tokenize ({codec.device})") as bar:
        def chunks() -> Iterator[Chunk]:
            nonlocal frames
            pieces = iter_pieces(entries, rule, codec.sample_rate)
            for clip_id, index, codes in encode_pieces(codec, pieces, cfg.bandwidth, cfg.batch_size):
                frames += codes.shape[1]
                bar.update(1)
                yield Chunk(clip_id, index, codes)

        shards = write_shards(tmp, chunks(), metadata, cfg.shard_chunks)
    wall = time.perf_counter() - start
    audio_seconds = sum(e.samples for e in entries) / codec.sample_rate
    write_json(METRICS, {
        "clips": len(entries), "chunks": total, "frames": frames, "shards": shards,
        "audio_hours": round(audio_seconds / 3600, 6), "weights": cfg.weights, "device": str(codec.device),
        "wall_seconds": round(wall, 3), "realtime_factor": round(audio_seconds / wall, 2),
    })
    print(f"tokenize: {len(entries)} clips -> {total} chunks, {frames} frames in {shards} shard(s) -> {OUT} "
          f"({audio_seconds / wall:.1f}x real time on {codec.device}, {cfg.weights} weights)")
