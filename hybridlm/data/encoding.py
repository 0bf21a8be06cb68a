"""Tokenize clips with several processes (CPU cores or GPUs); the codes do not depend on how many.

Why processes: each chunk is encoded alone on one thread (hybridlm.data.codec.encode_pieces says why: batching or
another thread count changes codes by float noise), so the only deterministic way to use more cores or GPUs is
more processes, each encoding whole clips. Clips go out in manifest order and come back in that order
(``Executor.map``), so the shard contents are the same bytes for any worker count.

Devices: on CPU, ``workers`` 0 means one process per core. On CUDA, 0 means one process per visible GPU; with more
workers than GPUs they share the GPUs round-robin. An explicit ``cuda:K`` puts every worker on that GPU.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from hybridlm.data.audio import ManifestEntry, read_flac
from hybridlm.data.chunking import ChunkRule, chunk_bounds
from hybridlm.data.codec import Codec, encode_pieces, load_codec

Encoded = tuple[str, int, np.ndarray]  # (clip id, chunk index, codes uint16 [n_q, frames])

_WORKER: dict = {}  # the codec and settings of this worker process, set once by _start_worker


def worker_devices(device: torch.device, workers: int) -> list[str]:
    """The device of each worker process: ``workers`` 0 = one per CPU core, or one per GPU on CUDA."""
    if workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 = one per CPU core or GPU), got {workers}")
    if device.type != "cuda":
        return ["cpu"] * (workers or os.cpu_count() or 1)
    if device.index is not None:
        return [str(device)] * (workers or 1)
    gpus = torch.cuda.device_count()
    return [f"cuda:{i % gpus}" for i in range(workers or gpus)]


def clip_pieces(entry: ManifestEntry, wav_dir: Path, rule: ChunkRule,
                sample_rate: int) -> Iterator[tuple[str, int, np.ndarray]]:
    """(clip id, chunk index, samples) for every chunk of one clip."""
    wav = read_flac(wav_dir / f"{entry.id}.flac", sample_rate)
    if len(wav) != entry.samples:
        raise ValueError(f"{wav_dir}/{entry.id}.flac: {len(wav)} samples, manifest says {entry.samples}")
    for index, (start, end) in enumerate(chunk_bounds(entry.samples, rule)):
        yield entry.id, index, wav[start * rule.hop: end * rule.hop]


def encode_clips(codec: Codec, entries: list[ManifestEntry], wav_dir: Path, rule: ChunkRule, bandwidth: float,
                 devices: list[str]) -> Iterator[Encoded]:
    """Every chunk of every clip, in manifest order, encoded by one process per entry of ``devices`` (one entry =
    in this process with ``codec``; worker processes load the same weights on their own devices)."""
    if len(devices) <= 1:
        for entry in entries:
            yield from encode_pieces(codec, clip_pieces(entry, wav_dir, rule, codec.sample_rate), bandwidth)
        return
    context = multiprocessing.get_context("spawn")  # CUDA and torch's thread pools do not survive a fork
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    settings = (codec.weights, codec.model_id, queue, wav_dir, rule, bandwidth)
    pool = ProcessPoolExecutor(len(devices), mp_context=context, initializer=_start_worker, initargs=settings)
    try:
        for chunks in pool.map(_encode_clip, entries):
            yield from chunks
    finally:  # on an error, drop the clips not yet started instead of encoding them all first
        pool.shutdown(cancel_futures=True)


def _start_worker(weights: str, model_id: str, devices, wav_dir: Path, rule: ChunkRule, bandwidth: float) -> None:
    codec = load_codec(weights, model_id, devices.get(), warn=False)  # the parent printed the random-weights warning
    _WORKER.update(codec=codec, wav_dir=wav_dir, rule=rule, bandwidth=bandwidth)


def _encode_clip(entry: ManifestEntry) -> list[Encoded]:
    codec = _WORKER["codec"]
    pieces = clip_pieces(entry, _WORKER["wav_dir"], _WORKER["rule"], codec.sample_rate)
    return list(encode_pieces(codec, pieces, _WORKER["bandwidth"]))
