"""`tokenize` stage: ``resampled`` -> ``out``/shard-*.parquet (EnCodec codes of 8 s chunks), ``metrics``, ``timing``.

Reads the `tokenize` section. Clips are cut by the chunk rule (hybridlm.data.chunking) in codec frames, encoded one
chunk at a time by `--workers` processes on the chosen device(s) (hybridlm.data.encoding: the shards are the same
bytes for any worker count), and written as zstd Parquet shards whose metadata records codec, weights, bandwidth
and the params hash (hybridlm.data.shards).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from tqdm import tqdm

from hybridlm.atomic import atomic_dir, write_json
from hybridlm.config import resolve_device, section
from hybridlm.data.audio import read_manifest
from hybridlm.data.chunking import ChunkRule, chunk_bounds
from hybridlm.data.codec import load_codec
from hybridlm.data.encoding import encode_clips, worker_devices
from hybridlm.data.shards import Chunk, write_shards
from hybridlm.interface import Input, Option, Output
from hybridlm.params import params_hash


def run(params: dict, *,
        resampled: Annotated[Path, Input("Resample stage output to read.")],
        out: Annotated[Path, Output("Folder to write the token shards to.")],
        metrics: Annotated[Path, Output("JSON metrics to write (counts of clips, chunks, frames, shards).")],
        timing: Annotated[Path, Output("JSON timing to write (device, wall-clock, real-time factor).")],
        device: Annotated[str, Option("auto | cpu | cuda | cuda:K. CPU and GPU codes differ by float "
                                      "noise.")] = "auto",
        workers: Annotated[int, Option("Parallel processes (0 = one per CPU core, or per GPU on CUDA). Does not "
                                       "change the output.")] = 0,
        ) -> None:
    """EnCodec-tokenize 8 s chunks into zstd Parquet shards."""
    cfg = section(params, "tokenize")
    entries = read_manifest(resampled / "manifest.tsv")
    devices = worker_devices(resolve_device(device, "--device"), workers)[: len(entries)]  # a bad --workers fails here
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
    with atomic_dir(out) as tmp, tqdm(total=total, unit=" chunks", desc=f"tokenize ({codec.device})") as bar:
        def chunks() -> Iterator[Chunk]:
            nonlocal frames
            for clip_id, index, codes in encode_clips(codec, entries, resampled / "wavs", rule, cfg.bandwidth,
                                                      devices):
                frames += codes.shape[1]
                bar.update(1)
                yield Chunk(clip_id, index, codes)

        shards = write_shards(tmp, chunks(), metadata, cfg.shard_chunks)
    wall = time.perf_counter() - start
    audio_seconds = sum(e.samples for e in entries) / codec.sample_rate
    write_json(metrics, {
        "clips": len(entries), "chunks": total, "frames": frames, "shards": shards,
        "audio_hours": round(audio_seconds / 3600, 6), "weights": cfg.weights,
    })
    write_json(timing, {"device": str(codec.device), "workers": len(devices), "wall_seconds": round(wall, 3),
                        "realtime_factor": round(audio_seconds / wall, 2)})
    print(f"tokenize: {len(entries)} clips -> {total} chunks, {frames} frames in {shards} shard(s) -> {out} "
          f"({audio_seconds / wall:.1f}x real time on {codec.device} with {len(devices)} worker(s), {cfg.weights} weights)")
