"""`hybridlm evaluate_tts`: EMA val cross-entropy of every text-to-speech checkpoint, with the text, without it and
with a wrong text of the same shape.

Output ``details``, one entry per checkpoint plus "final", as the evaluate stage's does:
    {"step_N": {"step": N, "with_text": {loss, ppl, targets, per_codebook}, "without_text": {...},
                "wrong_text": {...}, "conditioning_gap": without - with, "content_gap": wrong - with,
                "content_gap_per_codebook": {"cb0": ..., ...}, "oracle_content_gap": ...,
                "oracle_content_gap_per_codebook": {...}}, ..., "final": {...}}
What the numbers mean (the gaps, the wrong text, the oracle), and the implementation, shared with evaluate:
hybridlm/results/val_metrics.py. The wrong texts are drawn with seed `tts_evaluate.wrong_text_seed`; every text is
read through ``alignments``/val.jsonl, the oracle through ``alignments``/val_oracle.jsonl where present.
Output ``metrics`` (the DVC metrics): per checkpoint only the content gap, overall and on codebook 0
(hybridlm/headline.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.config import section
from hybridlm.data.aligner import ORACLE
from hybridlm.data.sentence_reader import read_durations, read_sentences, sentence_pattern, text_vocab
from hybridlm.headline import write_results
from hybridlm.interface import Input, Output
from hybridlm.model import ModelConfig, with_text
from hybridlm.results.trained import open_trained
from hybridlm.results.val_metrics import ValSet, evaluate_checkpoints
from hybridlm.training.warm_start import tts_data_hash
from hybridlm.wrong_text import wrong_texts

HEADLINE = ("content_gap", "content_gap_per_codebook.cb0")  # per checkpoint, in `metrics`


def run(params: dict, *,
        checkpoints: Annotated[Path, Input("Text-to-speech checkpoint folder to read.")],
        sentences: Annotated[Path, Input("Sentence shards folder to read (val/ is evaluated).")],
        alignments: Annotated[Path, Input("The align stage's folder: val.jsonl gives the frames per text id read "
                                          "with; val_oracle.jsonl, where present, the true ones (the oracle cap).")],
        init_from: Annotated[Path, Input("The checkpoint train_tts started from (part of its data identity).")],
        metrics: Annotated[Path, Output("JSON metrics to write (the content gap per checkpoint, overall and on "
                                        "codebook 0).")],
        details: Annotated[Path, Output("JSON to write every number per checkpoint (val loss with, without and "
                                        "with a wrong text; the gaps): the results page reads it.")]) -> None:
    """EMA val cross-entropy of every text-to-speech checkpoint, with and without the text."""
    config = with_text(section(params, "model"), section(params, "tts_model"))
    cfg = section(params, "tts_evaluate")
    trained = open_trained(checkpoints, config, cfg, "tts_evaluate", tts_data_hash(init_from, sentences, alignments))
    val = _val_set(sentences, alignments, config, cfg.wrong_text_seed)
    write_results(metrics, details, evaluate_checkpoints(trained, val, cfg.batch_size, "evaluate_tts"), HEADLINE)


def _val_set(sentences: Path, alignments: Path, config: ModelConfig, wrong_text_seed: int) -> ValSet:
    """The text-conditioned val set: ``sentences``/val with their texts, read through ``alignments``/val.jsonl
    (the wrong texts keep those frames: only ids are swapped), and the true alignment where the align stage wrote
    one (synthetic corpus)."""
    rows, _, sequences, texts = read_sentences(sentences, "val", config)
    oracle = (read_durations(alignments, ORACLE, rows, texts) if (Path(alignments) / f"{ORACLE}.jsonl").is_file()
              else None)
    return ValSet(sequences, sentence_pattern(config), texts, read_durations(alignments, "val", rows, texts),
                  wrong_texts(texts, text_vocab(config), wrong_text_seed), oracle)
