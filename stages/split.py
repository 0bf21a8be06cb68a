"""`split` stage: ``tokens`` -> ``out``/{train,val}/shard-*.parquet and ``metrics`` (metrics/data.json).

Reads the `split` section. Whole clips go to one side (hybridlm.data.split); shards keep the token metadata and
add `hybridlm.split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.atomic import atomic_dir, write_json
from hybridlm.config import section
from hybridlm.data.shards import META_PREFIX, Chunk, read_shards, write_shards
from hybridlm.data.split import val_clips
from hybridlm.interface import Input, Output

def summary(chunks: list[Chunk], frame_rate: int) -> dict:
    frames = sum(c.num_frames for c in chunks)
    return {"clips": len({c.clip_id for c in chunks}), "chunks": len(chunks), "frames": frames,
            "hours": round(frames / frame_rate / 3600, 6)}


def run(params: dict, *,
        tokens: Annotated[Path, Input("Token shards to read.")],
        out: Annotated[Path, Output("Folder to write {train,val}/ shards to.")],
        metrics: Annotated[Path, Output("JSON metrics to write (clips, chunks, hours per side).")]) -> None:
    """Clip-level train/val split of the token shards."""
    cfg = section(params, "split")
    chunks, meta = read_shards(tokens)
    held_out = val_clips((c.clip_id for c in chunks), cfg.val_fraction, cfg.seed)
    sides = {"train": [c for c in chunks if c.clip_id not in held_out],
             "val": [c for c in chunks if c.clip_id in held_out]}
    base = {k[len(META_PREFIX):]: v for k, v in meta.items()}
    with atomic_dir(out) as tmp:
        for name, rows in sides.items():
            write_shards(tmp / name, rows, {**base, "split": name}, cfg.shard_chunks)
    frame_rate = int(base["frame_rate"])
    summaries = {name: summary(rows, frame_rate) for name, rows in sides.items()}
    summaries["total"] = summary(chunks, frame_rate)
    write_json(metrics, summaries)
    print("split: " + ", ".join(f"{k} {v['clips']} clips / {v['chunks']} chunks / {v['hours']:.3f} h"
                                for k, v in summaries.items()))
