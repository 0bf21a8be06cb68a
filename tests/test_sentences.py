"""sentences stage: whole clips from data/split's chunks with their normalised transcripts, same train/val sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_helpers import stage_paths

from hybridlm.config import section
from hybridlm.data.sentences import build_sentences, join_chunks
from hybridlm.data.shards import Chunk, read_shards, write_shards
from hybridlm.params import ParamError
from hybridlm.stages import sentences as sentences_stage

META = {"codec": "facebook/encodec_24khz", "weights": "random", "bandwidth": 6.0, "num_codebooks": 8,
        "codebook_size": 1024, "frame_rate": 75, "sample_rate": 24_000, "params_hash": "ab" * 32}


def codes(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (8, frames), dtype=np.uint16)


def test_join_chunks_in_index_order():
    a0, a1, b0 = codes(600, 1), codes(158, 2), codes(90, 3)
    joined = join_chunks([Chunk("b", 0, b0), Chunk("a", 1, a1), Chunk("a", 0, a0)], "x")
    assert list(joined) == ["b", "a"]  # clips in order of first appearance
    assert np.array_equal(joined["a"], np.concatenate([a0, a1], axis=1)) and np.array_equal(joined["b"], b0)
    with pytest.raises(ValueError, match="x: clip a has chunks \\[0, 2\\], expected 0..1"):
        join_chunks([Chunk("a", 0, a0), Chunk("a", 2, a1)], "x")
    with pytest.raises(ValueError, match="x: clip a has chunk 0 twice"):
        join_chunks([Chunk("a", 0, a0), Chunk("a", 0, a1)], "x")


def test_build_sentences_texts_and_too_long():
    chunks = [Chunk("a", 0, codes(600, 1)), Chunk("a", 1, codes(158, 2)), Chunk("b", 0, codes(20, 3))]
    texts = {"a": 'He said, "Zürich."', "b": "Five pounds."}
    built = build_sentences(chunks, texts, 758, "fail", "src")
    assert [(r.clip_id, r.chunk_index, r.num_frames, r.text) for r in built.rows] == [
        ("a", 0, 758, "he said, zurich."), ("b", 0, 20, "five pounds.")]
    assert built.joined == 1 and built.too_long == []
    with pytest.raises(ValueError, match="src: clip a has 758 frames, more than sentences.max_frames \\(757\\)"):
        build_sentences(chunks, texts, 757, "fail", "src")
    skipped = build_sentences(chunks, texts, 757, "skip", "src")
    assert [r.clip_id for r in skipped.rows] == ["b"] and skipped.too_long == ["a"]
    with pytest.raises(ValueError, match="src: 1 clip\\(s\\) have no line in metadata.csv, e.g. b"):
        build_sentences(chunks, {"a": "x"}, 1014, "fail", "src")
    with pytest.raises(ValueError, match="src: clip b has an empty transcript after normalisation \\(metadata.csv: "):
        build_sentences(chunks, {**texts, "b": ' "" '}, 1014, "fail", "src")
    with pytest.raises(ValueError, match="src: clip b has an empty transcript in metadata.csv"):
        build_sentences(chunks, {**texts, "b": ""}, 1014, "fail", "src")


def lay_out(root: Path) -> None:
    """data/split with 3 train clips (one in two chunks) and 1 val clip, and the raw metadata.csv."""
    train = [Chunk("LJ001-0001", 0, codes(600, 1)), Chunk("LJ001-0001", 1, codes(160, 2)),
             Chunk("LJ001-0002", 0, codes(80, 3)), Chunk("LJ001-0004", 0, codes(1100, 5))]
    val = [Chunk("LJ001-0003", 0, codes(300, 4))]
    write_shards(root / "data/split/train", train, {**META, "split": "train"}, 2)
    write_shards(root / "data/split/val", val, {**META, "split": "val"}, 2)
    raw = root / "data/raw/LJSpeech-1.1"
    raw.mkdir(parents=True)
    (raw / "metadata.csv").write_text(
        "LJ001-0001|Printing, in the only sense|Printing, in the only sense\n"
        "LJ001-0002|£5 in 1963|five pounds in nineteen sixty-three\n"
        "LJ001-0003|Café (Besançon)|Café (Besançon)\n"
        "LJ001-0004|Too long # more|Too long # more\n", encoding="utf-8")


def test_stage_writes_sentence_shards_on_the_split_sides(tmp_path, monkeypatch):
    lay_out(tmp_path)
    monkeypatch.chdir(tmp_path)
    params = {"sentences": {"max_frames": 1014, "on_too_long": "skip", "shard_rows": 2}}
    sentences_stage.run(params, **stage_paths("sentences"))
    train, meta = read_shards(tmp_path / "data/sentences/train")
    val, val_meta = read_shards(tmp_path / "data/sentences/val")
    assert [(r.clip_id, r.num_frames, r.text) for r in train] == [
        ("LJ001-0001", 760, "printing, in the only sense"), ("LJ001-0002", 80, "five pounds in nineteen sixty-three")]
    assert [(r.clip_id, r.text) for r in val] == [("LJ001-0003", "cafe besancon")]
    assert meta["hybridlm.split"] == "train" and val_meta["hybridlm.split"] == "val"
    assert meta["hybridlm.text_frontend"] == "chars-v1" and meta["hybridlm.weights"] == "random"
    metrics = json.loads((tmp_path / "metrics/sentences.json").read_text())
    assert metrics["train"] == {"sentences": 2, "frames": 840, "max_frames": 760, "hours": round(840 / 75 / 3600, 6),
                                "joined_clips": 1, "max_text_chars": 35, "skipped_too_long": 1,
                                "skipped_ids": ["LJ001-0004"], "unknown_chars": {}}
    assert metrics["val"]["sentences"] == 1 and metrics["val"]["skipped_too_long"] == 0
    first = (tmp_path / "data/sentences/train/shard-00000.parquet").read_bytes()
    sentences_stage.run(params, **stage_paths("sentences"))  # identical params, identical bytes
    assert (tmp_path / "data/sentences/train/shard-00000.parquet").read_bytes() == first
    with pytest.raises(ValueError, match="clip LJ001-0004 has 1100 frames, more than sentences.max_frames"):
        sentences_stage.run({"sentences": {**params["sentences"], "on_too_long": "fail"}},
                            **stage_paths("sentences"))
    # an `id||` line (download warned of it): refused naming the clip, the previous output left as it was
    metadata = tmp_path / "data/raw/LJSpeech-1.1/metadata.csv"
    metadata.write_text(metadata.read_text(encoding="utf-8").replace(
        "LJ001-0002|£5 in 1963|five pounds in nineteen sixty-three", "LJ001-0002||"), encoding="utf-8")
    with pytest.raises(ValueError, match="data/split/train: clip LJ001-0002 has an empty transcript in metadata.csv"):
        sentences_stage.run(params, **stage_paths("sentences"))
    assert (tmp_path / "data/sentences/train/shard-00000.parquet").read_bytes() == first


def test_unknown_characters_are_counted(tmp_path, monkeypatch):
    lay_out(tmp_path)
    monkeypatch.chdir(tmp_path)
    sentences_stage.run({"sentences": {"max_frames": 1200, "on_too_long": "fail", "shard_rows": 5}},
                        **stage_paths("sentences"))
    metrics = json.loads((tmp_path / "metrics/sentences.json").read_text())
    assert metrics["train"]["unknown_chars"] == {"#": 1} and metrics["train"]["skipped_ids"] == []


@pytest.mark.parametrize("raw, key", [({"max_frames": 0}, "sentences.max_frames"),
                                      ({"on_too_long": "drop"}, "sentences.on_too_long"),
                                      ({"shard_rows": 0}, "sentences.shard_rows")])
def test_params_errors_name_the_key(raw, key):
    with pytest.raises(ParamError, match=key.replace(".", "\\.")):
        section({"sentences": raw}, "sentences")
