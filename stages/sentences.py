"""`sentences` stage: ``split`` + ``raw``/metadata.csv -> ``out``/{train,val}/shard-*.parquet, ``metrics``.

Reads the `sentences` section. Each clip becomes one row (its chunks' codes joined, hybridlm.data.sentences) with
its normalised transcript (hybridlm.text) in the shards' `text` column; the train/val sides are those of ``split``.
Unknown characters are counted in the metrics, not fatal: the text encoder maps them to its unknown id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.atomic import atomic_dir, write_json
from hybridlm.config import section
from hybridlm.data.ljspeech import parse_metadata
from hybridlm.data.sentences import build_sentences
from hybridlm.data.shards import META_PREFIX, read_shards, write_shards
from hybridlm.interface import Input, Output
from hybridlm.params import params_hash
from hybridlm.text import VERSION, TextVocab

SIDES = ("train", "val")


def run(params: dict, *,
        split: Annotated[Path, Input("Split folder ({train,val}/ token shards) to read.")],
        raw: Annotated[Path, Input("Corpus folder (LJ layout) whose metadata.csv holds the transcripts.")],
        out: Annotated[Path, Output("Folder to write {train,val}/ sentence shards to.")],
        metrics: Annotated[Path, Output("JSON metrics to write (sentences, hours, skipped and unknown characters "
                                        "per side).")]) -> None:
    """One example per clip with its normalised transcript."""
    cfg = section(params, "sentences")
    transcripts = {row.id: row.normalized for row in parse_metadata(raw / "metadata.csv")}
    vocab = TextVocab()
    summaries: dict = {}
    built = {}
    for side in SIDES:
        chunks, meta = read_shards(split / side)
        built[side] = (build_sentences(chunks, transcripts, cfg.max_frames, cfg.on_too_long, str(split / side)),
                       {k[len(META_PREFIX):]: v for k, v in meta.items()})
    with atomic_dir(out) as tmp:
        for side, (sentences, base) in built.items():
            extra = {"text_frontend": VERSION, "sentences_params_hash": params_hash(cfg)}
            write_shards(tmp / side, sentences.rows, {**base, **extra}, cfg.shard_rows)
    for side, (sentences, base) in built.items():
        frames = [row.num_frames for row in sentences.rows]
        texts = [row.text for row in sentences.rows]
        summaries[side] = {
            "sentences": len(sentences.rows), "frames": sum(frames), "max_frames": max(frames, default=0),
            "hours": round(sum(frames) / int(base["frame_rate"]) / 3600, 6), "joined_clips": sentences.joined,
            "max_text_chars": max(map(len, texts), default=0), "skipped_too_long": len(sentences.too_long),
            "skipped_ids": sentences.too_long,
            "unknown_chars": dict(sorted(vocab.unknown_many(texts).items())),
        }
    write_json(metrics, summaries)
    print("sentences: " + ", ".join(f"{side} {m['sentences']} sentences ({m['hours']:.3f} h, longest "
                                    f"{m['max_frames']} frames, {m['skipped_too_long']} skipped as too long, "
                                    f"{sum(m['unknown_chars'].values())} unknown chars)" for side, m in summaries.items()))
