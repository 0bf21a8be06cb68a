"""What the text-to-speech stages share: the sentence shards with their text ids, the warm-start checkpoint, and the
text vocabulary a checkpoint carries.

Why here: train_tts, evaluate_tts, render_tts and `hybridlm say` must read sentences, encode text and refuse a
checkpoint without text conditioning in exactly the same way; each error names the file or param at fault.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from hybridlm.data.aligner import frames_per_id, read_alignments
from hybridlm.data.shards import Chunk
from hybridlm.delay import DelayPattern
from hybridlm.model import ModelConfig
from hybridlm.params import ParamError
from hybridlm.text import VERSION, TextVocab, normalize
from hybridlm.training.batching import delayed_sequences
from hybridlm.params import params_hash
from hybridlm.training.checkpoint import (check_compatible, data_hash, hash_files, list_checkpoints,
                                          load_checkpoint)
from hybridlm.training.splits import read_split

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


def resolve_init(init_from: Path) -> Path:
    """``tts_train.init_from`` as a checkpoint file: a folder means its latest checkpoint."""
    path = Path(init_from)
    if path.is_dir():
        return list(list_checkpoints(path).values())[-1]
    if not path.is_file():
        raise FileNotFoundError(f"params.yaml: 'tts_train.init_from' is {init_from!r}: no such checkpoint file or "
                                f"folder (run the train stage first)")
    return path


def tts_data_hash(init_from: Path, root: Path, alignments: Path) -> str:
    """What a text-to-speech trajectory trains from: the sentence shards, their alignments and the warm-start
    checkpoint's bytes."""
    files = {"init": resolve_init(init_from), **{side: Path(alignments) / f"{side}.jsonl" for side in ("train", "val")}}
    return params_hash({"sentences": data_hash(root), "files": hash_files(files)})


def warm_start(init_from: Path, config: ModelConfig) -> tuple[dict, str]:
    """(EMA weights, source) of the unconditional checkpoint ``init_from``, checked to hold this decoder. The EMA
    weights, because they are what the unconditional evaluate and render stages report on."""
    path = resolve_init(init_from)
    state = load_checkpoint(path)
    text = state["model_config"].get("text") or {}
    if text.get("layers"):
        raise ValueError(f"{path}: 'tts_train.init_from' must be an unconditional checkpoint (the train stage's); "
                         f"this one is text-conditioned (text encoder of {text['layers']} layers: a train_tts "
                         f"checkpoint?)")
    # The decoder only: the text section is the one thing a warm start does not take from the checkpoint.
    decoder = {key: value for key, value in state["model_config"].items() if key != "text"}
    check_compatible({**state, "model_config": decoder}, path,
                     {key: value for key, value in dataclasses.asdict(config).items() if key != "text"})
    weights = dict(state["model"])
    weights.update({name: value.to(weights[name].dtype) for name, value in state["ema"]["shadow"].items()})
    return weights, f"{path} (step {state['step']})"


def checkpoint_vocab(state: dict[str, Any], path: Path) -> TextVocab:
    """The text vocabulary stored with a text-to-speech checkpoint; a checkpoint without one is refused."""
    if "text_vocab" not in state or not state["model_config"].get("text", {}).get("layers"):
        raise ValueError(f"{path}: a checkpoint without text conditioning (an unconditional run's?); it cannot "
                         f"read text. Use a checkpoint of the train_tts stage")
    return TextVocab.from_dict(state["text_vocab"])


def encode_prompt(vocab: TextVocab, text: str, where: str) -> list[int]:
    """Text ids of a prompt to read aloud; an empty prompt or characters outside the vocabulary are errors naming
    ``where`` and the characters (a model cannot say what it never learned to read)."""
    ids = vocab.encode(text)
    if not ids:
        normalized = normalize(text)  # empty, or (phonemes) only marks that espeak does not voice
        raise ValueError(f"{where}: the text {text!r} has nothing to read: after normalisation it is {normalized!r}"
                         + (f", which has no {vocab.frontend}" if normalized else ""))
    unknown = vocab.unknown(text)
    if unknown:
        chars = ", ".join(f"{ch!r} x{n}" for ch, n in sorted(unknown.items()))
        raise ValueError(f"{where}: characters outside the text vocabulary ({vocab.version}: "
                         f"{''.join(vocab.symbols)!r}): {chars}; spell them out as words")
    return ids
