"""The chunk rule (on the real LJ durations), token shards (schema, metadata, errors) and the clip-level split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import stage_paths

from hybridlm.config import SplitParams
from hybridlm.data.chunking import ChunkRule, chunk_bounds
from hybridlm.data.shards import SCHEMA, TEXT_SCHEMA, Chunk, read_shards, write_shard, write_shards
from hybridlm.data.split import num_val_clips, val_clips
from hybridlm.params import ParamError, parse_section
from hybridlm.stages import split as split_stage

RULE = ChunkRule.from_seconds(8.0, 2.0, 24_000, 320)
DURATIONS = "ljspeech-meta/durations.tsv"  # in the shared data
META = {"codec": "facebook/encodec_24khz", "weights": "random", "bandwidth": 6.0, "num_codebooks": 8,
        "codebook_size": 1024, "frame_rate": 75, "sample_rate": 24_000, "params_hash": "ab" * 32}


def pieces_by_seconds(seconds: float, chunk: float, min_tail: float) -> int:
    """The rule stated on durations, independently of the stage's frame arithmetic."""
    pieces = max(1, math.ceil(seconds / chunk))
    return pieces - 1 if pieces > 1 and seconds - (pieces - 1) * chunk < min_tail else pieces


def seconds_to_samples(seconds: float) -> int:
    """LJ duration (22,050 Hz samples / 22050) -> sample count after resampling to 24 kHz (soxr rounds)."""
    return round(round(seconds * 22_050) * 24_000 / 22_050)


# ----------------------------------------------------------------------------------------------------- chunking
def test_rule_in_frames():
    assert RULE == ChunkRule(chunk_frames=600, hop=320, min_tail_samples=48_000)
    assert chunk_bounds(24_000, RULE) == [(0, 75)]  # short clip: one piece
    assert chunk_bounds(100, RULE) == [(0, 1)]  # a partial frame is a frame
    assert chunk_bounds(192_000, RULE) == [(0, 600)]  # exactly 8 s
    assert chunk_bounds(192_000 + 47_999, RULE) == [(0, 750)]  # 9.99996 s: tail < 2 s merges (pieces <= 10 s)
    assert chunk_bounds(192_000 + 48_000, RULE) == [(0, 600), (600, 750)]  # tail of exactly 2 s stays
    assert chunk_bounds(3 * 192_000 + 100, RULE) == [(0, 600), (600, 1200), (1200, 1801)]
    with pytest.raises(ValueError, match="at least one sample"):
        chunk_bounds(0, RULE)
    with pytest.raises(ValueError, match="whole number of codec frames"):
        ChunkRule.from_seconds(8.001, 2.0, 24_000, 320)


def test_pieces_tile_the_clip():
    for samples in (1, 319, 320, 321, 191_999, 240_001, 1_000_000):
        bounds = chunk_bounds(samples, RULE)
        assert bounds[0][0] == 0 and bounds[-1][1] == math.ceil(samples / 320)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(end - start <= 600 + 150 for start, end in bounds)


def test_chunk_count_on_real_lj_durations_is_the_reference_13290(shared):
    seconds = [float(line.split("\t")[1]) for line in shared(DURATIONS).read_text().splitlines()]
    assert len(seconds) == 13_100
    assert sum(pieces_by_seconds(s, 8.0, 2.0) for s in seconds) == 13_290
    assert sum(len(chunk_bounds(seconds_to_samples(s), RULE)) for s in seconds) == 13_290  # the stage's frame rule
    assert sum(math.ceil(s / 8.0) for s in seconds) == 17_167  # plain ceil, for contrast
    assert sum(pieces_by_seconds(s, 8.0, 0.0) for s in seconds) == 17_167


# ----------------------------------------------------------------------------------------------------- shards
def make_chunks(n: int, clips: int, seed: int = 0) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    return [Chunk(f"LJ001-{i % clips:04d}", i // clips, rng.integers(0, 1024, (8, int(rng.integers(1, 40))),
                                                                     dtype=np.uint16)) for i in range(n)]


def test_shard_roundtrip_schema_and_metadata(tmp_path):
    chunks = make_chunks(7, 5)
    assert write_shards(tmp_path / "tokens", chunks, META, shard_chunks=3) == 3
    files = sorted((tmp_path / "tokens").iterdir())
    assert [f.name for f in files] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    parquet = pq.ParquetFile(files[0])
    assert parquet.schema_arrow.remove_metadata().equals(SCHEMA)
    assert parquet.metadata.row_group(0).column(3).compression == "ZSTD"
    assert parquet.schema_arrow.field("codes").type == pa.list_(pa.uint16())
    raw = parquet.schema_arrow.metadata
    assert json.loads(raw[b"hybridlm.weights"]) == "random" and json.loads(raw[b"hybridlm.bandwidth"]) == 6.0
    back, meta = read_shards(tmp_path / "tokens")
    assert meta == {f"hybridlm.{k}": v for k, v in META.items()}
    assert [(c.clip_id, c.chunk_index) for c in back] == [(c.clip_id, c.chunk_index) for c in chunks]
    for a, b in zip(back, chunks):
        assert a.codes.dtype == np.uint16 and np.array_equal(a.codes, b.codes)
    first = pq.read_table(files[0]).to_pylist()[0]
    assert first["num_frames"] == chunks[0].num_frames
    assert first["codes"] == chunks[0].codes.reshape(-1).tolist()  # row-major [n_q, T]
    single, _ = read_shards(files[1])
    assert len(single) == 3


def test_sentence_shards_carry_a_text_column(tmp_path):
    chunks = make_chunks(3, 3)
    for chunk, text in zip(chunks, ["a b.", 'he said "é"', ""]):
        chunk.text = text
    write_shards(tmp_path / "s", chunks, META, shard_chunks=2)
    assert pq.read_schema(tmp_path / "s" / "shard-00000.parquet").remove_metadata().equals(TEXT_SCHEMA)
    back, _ = read_shards(tmp_path / "s")
    assert [c.text for c in back] == ["a b.", 'he said "é"', ""]
    assert all(np.array_equal(a.codes, b.codes) for a, b in zip(back, chunks))
    write_shards(tmp_path / "t", make_chunks(2, 2), META, shard_chunks=5)
    assert [c.text for c in read_shards(tmp_path / "t")[0]] == [None, None]  # token shards have no text
    chunks[1].text = None
    with pytest.raises(ValueError, match="either every row has a text or none"):
        write_shard(tmp_path / "x.parquet", chunks, META)


def test_shard_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such shard"):
        read_shards(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .parquet shards"):
        read_shards(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "shard-00000.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="shard-00000.parquet: not a readable Parquet shard"):
        read_shards(tmp_path / "bad")
    write_shard(tmp_path / "mix" / "shard-00000.parquet", make_chunks(2, 2), META)
    write_shard(tmp_path / "mix" / "shard-00001.parquet", make_chunks(2, 2), {**META, "weights": "pretrained"})
    with pytest.raises(ValueError, match="shard-00001.parquet: metadata differs .* hybridlm.weights"):
        read_shards(tmp_path / "mix")
    with pytest.raises(ValueError, match="lacks params_hash"):
        write_shard(tmp_path / "x.parquet", [], {k: v for k, v in META.items() if k != "params_hash"})
    with pytest.raises(ValueError, match=r"codes must be uint16 \[8, T\]"):
        write_shard(tmp_path / "x.parquet", [Chunk("a", 0, np.zeros((8, 3), np.int64))], META)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match="foreign.parquet: not a hybridlm token shard"):
        read_shards(tmp_path / "foreign.parquet")


# ----------------------------------------------------------------------------------------------------- split
def test_val_clip_count_rule():
    assert num_val_clips(13_100, 0.05) == 655
    assert num_val_clips(6, 0.05) == 1  # tiny corpora still get a validation clip
    assert num_val_clips(6, 0.0) == 0
    with pytest.raises(ValueError, match="leaves no training clips"):
        num_val_clips(2, 0.9)


def test_split_is_deterministic_and_order_free():
    ids = [f"LJ{i:03d}-0001" for i in range(200)]
    a = val_clips(ids, 0.05, seed=3)
    assert a == val_clips(list(reversed(ids)), 0.05, seed=3) and len(a) == 10
    assert a != val_clips(ids, 0.05, seed=4)


def test_split_numbers_on_real_durations(shared):
    rows = [line.split("\t") for line in shared(DURATIONS).read_text().splitlines()]
    pieces = {cid: len(chunk_bounds(seconds_to_samples(float(s)), RULE)) for cid, s in rows}
    held_out = val_clips(pieces, 0.05, seed=1234)
    assert len(held_out) == 655
    val = sum(pieces[c] for c in held_out)
    assert (13_290 - val, val) == (12_622, 668)  # the reference run drew 12,624 / 666 (see docs/pipeline.md)


def write_tokens(root: Path, chunks: list[Chunk]) -> None:
    write_shards(root / "data" / "tokens", chunks, META, shard_chunks=4)


def test_split_stage_disjoint_complete_and_metrics(tmp_path, monkeypatch):
    chunks = make_chunks(30, 20)  # clips 0..9 have two chunks
    write_tokens(tmp_path, chunks)
    monkeypatch.chdir(tmp_path)
    params = {"split": {"val_fraction": 0.25, "seed": 9, "shard_chunks": 4}}
    split_stage.run(params, **stage_paths("split"))
    train, train_meta = read_shards(Path("data/split/train"))
    val, val_meta = read_shards(Path("data/split/val"))
    assert train_meta["hybridlm.split"] == "train" and val_meta["hybridlm.split"] == "val"
    assert train_meta["hybridlm.weights"] == "random"
    train_ids, val_ids = {c.clip_id for c in train}, {c.clip_id for c in val}
    assert not train_ids & val_ids and len(val_ids) == 5 and len(train_ids | val_ids) == 20
    assert sorted((c.clip_id, c.chunk_index) for c in train + val) == sorted((c.clip_id, c.chunk_index) for c in chunks)
    metrics = json.loads(Path("metrics/data.json").read_text())
    assert metrics["val"]["clips"] == 5 and metrics["train"]["clips"] == 15
    assert metrics["train"]["chunks"] + metrics["val"]["chunks"] == metrics["total"]["chunks"] == 30
    frames = sum(c.num_frames for c in val)
    assert metrics["val"]["frames"] == frames and metrics["val"]["hours"] == round(frames / 75 / 3600, 6)
    first = {p.name: p.read_bytes() for p in Path("data/split/val").iterdir()}
    split_stage.run(params, **stage_paths("split"))
    assert {p.name: p.read_bytes() for p in Path("data/split/val").iterdir()} == first  # same seed, same bytes


@pytest.mark.parametrize("section, key", [
    ({"val_fraction": 1.0}, "split.val_fraction"),
    ({"val_fraction": -0.1}, "split.val_fraction"),
    ({"val_fraction": "5%"}, "split.val_fraction"),
    ({"seed": 1.5}, "split.seed"),
    ({"shard_chunks": 0}, "split.shard_chunks"),
    ({"sed": 1}, "split.sed"),
])
def test_split_params_errors_name_the_key(section, key):
    with pytest.raises(ParamError, match=f"'{key}'"):
        parse_section(SplitParams, {"split": section}, "split")
