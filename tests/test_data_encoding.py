"""Parallel tokenization: the shards are the same bytes whatever the worker count; worker/device planning."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from data_helpers import corpus_speech, stage_paths

from hybridlm.data.audio import ManifestEntry, write_manifest
from hybridlm.data.encoding import worker_devices
from hybridlm.stages import tokenize as tokenize_stage

# 1 s chunks: 4 clips of 1.3-2.7 s give 7 chunks, some merged tails; small enough for two spawned workers.
SECONDS = [2.7, 1.3, 2.2, 1.6]
PARAMS = {"tokenize": {"weights": "random", "chunk_seconds": 1.0, "min_tail_seconds": 0.4, "shard_chunks": 3}}


def write_resampled(root) -> None:
    wavs = root / "data/resampled/wavs"
    wavs.mkdir(parents=True)
    entries = []
    for i, seconds in enumerate(SECONDS):
        samples = corpus_speech(seconds, i)
        sf.write(str(wavs / f"c{i}.flac"), samples, 24_000, format="FLAC", subtype="PCM_16")
        entries.append(ManifestEntry(f"c{i}", len(samples) / 24_000, len(samples)))
    write_manifest(root / "data/resampled/manifest.tsv", entries)


@pytest.mark.slow  # two spawned workers each build the random codec: ~2 min on the loaded 2-core machine
def test_shards_are_identical_for_one_and_two_workers(tmp_path, monkeypatch):
    write_resampled(tmp_path)
    monkeypatch.chdir(tmp_path)
    shards = {}
    for workers in (1, 2):
        tokenize_stage.run(PARAMS, device="cpu", workers=workers, **stage_paths("tokenize"))
        shards[workers] = {p.name: p.read_bytes() for p in sorted((tmp_path / "data/tokens").iterdir())}
    assert list(shards[1]) == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert shards[1] == shards[2]


def test_worker_devices():
    assert worker_devices(torch.device("cpu"), 3) == ["cpu"] * 3
    assert len(worker_devices(torch.device("cpu"), 0)) >= 1  # one per core
    assert worker_devices(torch.device("cuda", 1), 2) == ["cuda:1", "cuda:1"]
    with pytest.raises(ValueError, match="--workers must be >= 0"):
        worker_devices(torch.device("cpu"), -1)
