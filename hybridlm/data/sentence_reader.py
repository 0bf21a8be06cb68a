"""Reading the sentence shards for a text-conditioned model: rows, delayed sequences with EOS, text ids, and the
frames per text id the align stage found.

Why one reader: train_tts, evaluate_tts, render_tts and align must read sentences and encode their text in exactly
the same way; each error names the file or param at fault (a split of another front end, shards that are not
sentence shards, alignments of other sentences).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hybridlm.data.aligner import frames_per_id, read_alignments
from hybridlm.data.shards import Chunk
from hybridlm.data.split_reader import read_split
from hybridlm.delay import DelayPattern
from hybridlm.model import ModelConfig
from hybridlm.params import ParamError
from hybridlm.text import VERSION, TextVocab
from hybridlm.training.batching import delayed_sequences


def sentence_pattern(config: ModelConfig) -> DelayPattern:
    """The delay pattern of whole sentences: with the EOS step."""
    return DelayPattern(config.num_codebooks, config.codebook_size, eos=True)


def text_vocab(config: ModelConfig) -> TextVocab:
    """The vocabulary of ``tts_model.frontend``, checked to fit ``tts_model.vocab_size``."""
    vocab = TextVocab.for_frontend(config.text.frontend)
    if len(vocab) > config.text.vocab_size:
        raise ParamError(f"params.yaml: 'tts_model.vocab_size' ({config.text.vocab_size}) is smaller than the text "
                         f"vocabulary ({len(vocab)} ids, {vocab.version})")
    return vocab


def read_sentences(root: Path, side: str, config: ModelConfig
                   ) -> tuple[list[Chunk], dict[str, Any], list[np.ndarray], list[list[int]]]:
    """Rows, shard metadata, delayed sequences (with EOS) and text ids of ``root/side``."""
    rows, meta = read_split(root, side, config)
    frontend = meta.get("hybridlm.text_frontend")
    if frontend != VERSION:
        raise ValueError(f"{Path(root) / side}: sentences made with text front end {frontend!r}, this code reads "
                         f"{VERSION!r}; re-run the sentences stage")
    missing = [row.clip_id for row in rows if row.text is None]
    if missing:
        raise ValueError(f"{Path(root) / side}: rows without a text column value (first: {missing[0]}); these are not "
                         f"sentence shards (run the sentences stage)")
    vocab = text_vocab(config)
    return rows, meta, delayed_sequences(rows, sentence_pattern(config)), vocab.encode_many([row.text for row in rows])


def read_durations(alignments: Path, side: str, rows: list[Chunk], texts: list[list[int]]) -> list[list[int]]:
    """Frames per text id of each sentence (the align stage's ``alignments/<side>.jsonl``, read as the model reads
    it: hybridlm.data.aligner.frames_per_id), in the order of ``rows``; a sentence missing there, or aligned to
    another number of ids, is an error naming the file (re-run the align stage)."""
    path = Path(alignments) / f"{side}.jsonl"
    paths = read_alignments(path)
    out = []
    for row, ids in zip(rows, texts):
        if row.clip_id not in paths or len(paths[row.clip_id].durations) != len(ids):
            raise ValueError(f"{path}: no alignment of {row.clip_id}'s {len(ids)} text ids; the alignments are not "
                             f"of these sentences or this front end (re-run the align stage)")
        out.append(frames_per_id(paths[row.clip_id]))
    return out
