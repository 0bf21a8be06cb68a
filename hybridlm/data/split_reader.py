"""Reading the train/val token splits for the model: non-empty, and laid out as the model expects.

Why a check here: shards carry their codebook count and size in the file metadata; a split made at another
bandwidth (other number of codebooks) must fail with the file and both values named, not as a shape error deep in
the model.
"""

from __future__ import annotations

from pathlib import Path

from hybridlm.data.shards import Chunk, read_shards
from hybridlm.model import ModelConfig

def read_split(root: Path, name: str, model_config: ModelConfig) -> tuple[list[Chunk], dict]:
    """Chunks and metadata (keys ``hybridlm.*``) of ``root/name``; errors name the folder and the mismatch."""
    folder = Path(root) / name
    chunks, meta = read_shards(folder)
    if not chunks:
        raise ValueError(f"{folder}: the shards hold no chunks")
    for key, want in (("num_codebooks", model_config.num_codebooks), ("codebook_size", model_config.codebook_size)):
        have = int(meta[f"hybridlm.{key}"])
        if have != want:
            raise ValueError(f"{folder}: shards have {key} {have} but params.yaml model.{key} is {want}")
    return chunks, meta
