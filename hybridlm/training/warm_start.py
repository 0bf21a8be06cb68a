"""The text-to-speech fine-tune's starting point: the unconditional checkpoint it warm-starts from, and the data
hash that ties a text-to-speech trajectory to that checkpoint and to its sentences and alignments.

Why the checkpoint's bytes are part of the data hash: another starting point must never resume this run (nor pass
evaluate_tts's check that the checkpoints were trained on these inputs).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hybridlm.model import ModelConfig
from hybridlm.params import params_hash
from hybridlm.training.checkpoint import (check_compatible, data_hash, hash_files, list_checkpoints,
                                          load_checkpoint)
from hybridlm.training.ema import with_averaged


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
    return with_averaged(state["model"], state["ema"]["shadow"]), f"{path} (step {state['step']})"
