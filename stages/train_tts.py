"""`hybridlm train_tts`: the text-conditioned fine-tune, from the unconditional run's checkpoint (warm start).

Reads model + tts_model (the model) and tts_train (every train key, plus text_dropout and input_dropout; its
init_from is templated into this stage's cmd as ``--init-from``); trains on ``sentences`` (one row per clip, ending
in EOS, with its text) and ``alignments`` (the align stage's frames per text id: where the model reads). The same
loop, resume store and outputs as `hybridlm train` (hybridlm/training/driver.py), under the paths dvc.yaml gives;
the metrics add the val loss with the text dropped and the gap. The warm-start checkpoint's content hash is part of
the trajectory key, like the data: another starting point never resumes this run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.config import TtsTrainParams, section
from hybridlm.data.sentence_reader import read_durations, read_sentences, sentence_pattern, text_vocab
from hybridlm.interface import Input, Output
from hybridlm.model import ModelConfig, with_text
from hybridlm.training.batching import SentenceRows
from hybridlm.training.driver import Outputs, TrainData, train_with
from hybridlm.training.warm_start import tts_data_hash, warm_start


def run(params: dict, *,
        sentences: Annotated[Path, Input("Sentence shards folder ({train,val}/, with the text column) to read.")],
        alignments: Annotated[Path, Input("The align stage's folder ({train,val}.jsonl: frames per text id) to "
                                          "read.")],
        init_from: Annotated[Path, Input("Unconditional checkpoint to start from, or a folder of them (its latest "
                                         "step).")],
        checkpoints: Annotated[Path, Output("Folder to write step-NNNNNN.pt checkpoints to.")],
        live: Annotated[Path, Output("DVCLive folder to write the per-step curves to.")],
        metrics: Annotated[Path, Output("JSON metrics to write (final losses with and without text, data "
                                        "summary).")],
        timing: Annotated[Path, Output("JSON timing to write (tokens/s, resume point, device).")]) -> None:
    """Fine-tune the text-conditioned model from an unconditional checkpoint (warm start); resumes where it can."""
    model_config = with_text(section(params, "model"), section(params, "tts_model"))
    cfg = section(params, "tts_train")
    train_with(model_config, cfg, "tts_train",
               lambda: _sentence_data(model_config, cfg, sentences, alignments, init_from),
               Outputs(checkpoints, live, metrics, timing, command="train_tts"))


def _sentence_data(config: ModelConfig, cfg: TtsTrainParams, sentences: Path, alignments: Path,
                   init_from: Path) -> TrainData:
    train_rows, meta, _, texts = read_sentences(sentences, "train", config)
    val_rows, _, val_sequences, val_texts = read_sentences(sentences, "val", config)
    init = warm_start(init_from, config)
    rows = SentenceRows(train_rows, texts, read_durations(alignments, "train", train_rows, texts),
                        sentence_pattern(config), cfg.seed, cfg.text_dropout, cfg.input_dropout)
    summary = (f"train_tts: {len(train_rows)} sentences ({len(val_sequences)} val), positions with a target "
               f"{rows.target_fraction:.2%}; text dropout {cfg.text_dropout:g}, input dropout "
               f"{cfg.input_dropout:g}; warm start from {init[1]}")
    vocab = text_vocab(config)
    return TrainData(rows, val_sequences, meta, tts_data_hash(init_from, sentences, alignments), summary,
                     {"target_fraction": rows.target_fraction, "train_sentences": len(train_rows)},
                     {"val_texts": val_texts, "val_durations": read_durations(alignments, "val", val_rows, val_texts),
                      "init": init, "extra_state": {"text_vocab": vocab.to_dict()}})
