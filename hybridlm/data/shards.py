"""Token shards: zstd Parquet files of EnCodec codes, with the codec's identity in the file metadata.

Why Parquet: columnar, compressed (zstd), typed (``uint16`` codes), readable from any language, and one file holds
thousands of chunks. Why file-level metadata: a shard must say which codec, weights (pretrained or random!),
bandwidth and params made it, so training can refuse to mix incompatible shards.

Schema (one row per chunk):
    clip_id: string, chunk_index: int32, num_frames: int32,
    codes: list<uint16>  -- the [num_codebooks, num_frames] code matrix flattened row-major
    text: string         -- only in sentence shards (data/sentences/): the clip's normalised transcript
File metadata: ``hybridlm.<key>`` -> JSON value, keys codec, weights, bandwidth, num_codebooks, codebook_size,
frame_rate, sample_rate, params_hash (and split in data/split/).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hybridlm.atomic import atomic_path

SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("chunk_index", pa.int32()),
    ("num_frames", pa.int32()),
    ("codes", pa.list_(pa.uint16())),
])
TEXT_SCHEMA = SCHEMA.append(pa.field("text", pa.string()))
META_PREFIX = "hybridlm."
REQUIRED_META = ("codec", "weights", "bandwidth", "num_codebooks", "codebook_size", "frame_rate", "sample_rate",
                 "params_hash")


@dataclass
class Chunk:
    clip_id: str
    chunk_index: int
    codes: np.ndarray  # uint16 [n_q, T]
    text: str | None = None  # normalised transcript: sentence shards only

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def write_shard(path: Path, chunks: list[Chunk], metadata: dict[str, Any]) -> None:
    """Write one shard atomically. ``metadata`` keys are given without the ``hybridlm.`` prefix."""
    missing = [k for k in REQUIRED_META if k not in metadata]
    if missing:
        raise ValueError(f"{path}: shard metadata lacks {', '.join(missing)}")
    n_q = int(metadata["num_codebooks"])
    for chunk in chunks:
        if chunk.codes.dtype != np.uint16 or chunk.codes.ndim != 2 or chunk.codes.shape[0] != n_q:
            raise ValueError(f"{path}: chunk {chunk.clip_id}#{chunk.chunk_index} codes must be uint16 "
                             f"[{n_q}, T], got {chunk.codes.dtype} {chunk.codes.shape}")
    with_text = [c.text is not None for c in chunks]
    if any(with_text) and not all(with_text):
        raise ValueError(f"{path}: either every row has a text or none has")
    flat = np.concatenate([c.codes.reshape(-1) for c in chunks]) if chunks else np.zeros(0, np.uint16)
    offsets = np.cumsum([0] + [c.codes.size for c in chunks]).astype(np.int32)
    columns = {
        "clip_id": pa.array([c.clip_id for c in chunks], pa.string()),
        "chunk_index": pa.array([c.chunk_index for c in chunks], pa.int32()),
        "num_frames": pa.array([c.num_frames for c in chunks], pa.int32()),
        "codes": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint16())),
    }
    if chunks and all(with_text):
        columns["text"] = pa.array([c.text for c in chunks], pa.string())
    table = pa.table(columns, schema=TEXT_SCHEMA if "text" in columns else SCHEMA)
    table = table.replace_schema_metadata(
        {f"{META_PREFIX}{k}".encode(): json.dumps(v).encode() for k, v in sorted(metadata.items())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_shards(folder: Path, chunks: Iterable[Chunk], metadata: dict[str, Any], shard_chunks: int) -> int:
    """Write ``chunks`` into ``folder/shard-00000.parquet ...`` with at most ``shard_chunks`` rows each; return the
    number of shards (at least one, possibly empty, so a reader always finds the metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    count, batch = 0, []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == shard_chunks:
            write_shard(folder / shard_name(count), batch, metadata)
            count, batch = count + 1, []
    if batch or count == 0:
        write_shard(folder / shard_name(count), batch, metadata)
        count += 1
    return count


def shard_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such shard file or folder")
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{path}: folder holds no .parquet shards")
    return files


def read_metadata(file: Path) -> dict[str, Any]:
    """JSON-decoded ``hybridlm.*`` metadata of one shard (keys keep the ``hybridlm.`` prefix, as in the file)."""
    try:
        raw = pq.read_schema(file).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{file}: not a readable Parquet shard ({exc})") from exc
    meta = {k.decode(): json.loads(v) for k, v in raw.items() if k.decode().startswith(META_PREFIX)}
    missing = [k for k in REQUIRED_META if META_PREFIX + k not in meta]
    if missing:
        raise ValueError(f"{file}: not a hybridlm token shard: metadata lacks {', '.join(META_PREFIX + k for k in missing)}")
    return meta


def iter_shard(file: Path) -> Iterator[Chunk]:
    meta = read_metadata(file)
    n_q = int(meta[META_PREFIX + "num_codebooks"])
    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{file}: not a readable Parquet shard ({exc})") from exc
    schema = table.schema.remove_metadata()
    if not (schema.equals(SCHEMA) or schema.equals(TEXT_SCHEMA)):
        raise ValueError(f"{file}: schema {schema} differs from the token shard schema (with or without text)")
    texts = table.column("text").to_pylist() if "text" in schema.names else [None] * table.num_rows
    codes = table.column("codes").combine_chunks()
    flat = codes.values.to_numpy(zero_copy_only=False)
    offsets = codes.offsets.to_numpy()
    for row, (clip_id, index, frames, text) in enumerate(zip(table.column("clip_id").to_pylist(),
                                                             table.column("chunk_index").to_pylist(),
                                                             table.column("num_frames").to_pylist(), texts)):
        values = flat[offsets[row]:offsets[row + 1]]
        if values.size != n_q * frames:
            raise ValueError(f"{file}: row {row} ({clip_id}#{index}) has {values.size} codes, "
                             f"expected {n_q} x {frames}")
        yield Chunk(clip_id, index, values.reshape(n_q, frames).copy(), text)


def read_shards(path: Path) -> tuple[list[Chunk], dict[str, Any]]:
    """All chunks of a shard file or a folder of shards, and their metadata (identical across shards or an error)."""
    files = shard_files(path)
    chunks: list[Chunk] = []
    meta: dict[str, Any] | None = None
    for file in files:
        file_meta = read_metadata(file)
        if meta is not None and file_meta != meta:
            diff = sorted(k for k in set(meta) | set(file_meta) if meta.get(k) != file_meta.get(k))
            raise ValueError(f"{file}: metadata differs from {files[0].name} in {', '.join(diff)}")
        meta = file_meta
        chunks.extend(iter_shard(file))
    assert meta is not None
    return chunks, meta
