"""`hybridlm evaluate_tts`: EMA val cross-entropy of every text-to-speech checkpoint, with the text, without it and
with a wrong text of the same shape.

Output ``details``, one entry per checkpoint plus "final", as the evaluate stage's does:
    {"step_N": {"step": N, "with_text": {loss, ppl, targets, per_codebook}, "without_text": {...},
                "wrong_text": {...}, "conditioning_gap": without - with, "content_gap": wrong - with,
                "content_gap_per_codebook": {"cb0": ..., ...}, "oracle_content_gap": ...,
                "oracle_content_gap_per_codebook": {...}}, ..., "final": {...}}
The val sentences are whole clips from their BOS to their EOS (EOS counts as a target). "without_text" is the same
model with every text dropped, the branch classifier-free guidance mixes in: the conditioning gap, in nats per
target, is how much the model uses the text at all (about 0 = it ignores it). But a model that only counts the
characters earns most of that gap. "wrong_text" replaces every letter (phoneme) by one of another sound class,
keeping length, spaces and punctuation (hybridlm.wrong_text, seed `tts_evaluate.wrong_text_seed`): the content gap
is what the model gains from *which* letters the text says, i.e. from reading it (about 0 = it only counts).
Every text is read through the align stage's frames per id (``alignments``/val.jsonl; the wrong text keeps them).
"oracle_*": the same content gap when the model reads with the TRUE alignment (``alignments``/val_oracle.jsonl,
the synthetic corpus only; null elsewhere): the cap the aligner's accuracy allows.
Output ``metrics`` (the DVC metrics): per checkpoint only the content gap, overall and on codebook 0
(hybridlm/headline.py). Deterministic: fp32 by default, fixed order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from tqdm import tqdm

from hybridlm.config import resolve_device, section
from hybridlm.data.aligner import ORACLE
from hybridlm.data.sentence_reader import read_durations, read_sentences, sentence_pattern, text_vocab
from hybridlm.headline import write_results
from hybridlm.interface import Input, Output
from hybridlm.model import with_text
from hybridlm.training.checkpoint import ema_model, load_checkpoint, select_checkpoints, validate_checkpoints
from hybridlm.training.evaluation import EvalResult, evaluate_sequences
from hybridlm.training.precision import resolve_precision
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
    model_config = with_text(section(params, "model"), section(params, "tts_model"))
    cfg = section(params, "tts_evaluate")
    device = resolve_device(cfg.device, "tts_evaluate.device")
    precision = resolve_precision(cfg.precision, device, "tts_evaluate.precision")
    checkpoints = select_checkpoints(checkpoints, cfg.steps, "tts_evaluate.steps")
    validate_checkpoints(checkpoints, dataclasses.asdict(model_config),
                         tts_data_hash(init_from, sentences, alignments))
    rows, _, sequences, texts = read_sentences(sentences, "val", model_config)
    durations = read_durations(alignments, "val", rows, texts)  # the wrong text keeps them: only ids are swapped
    # The true alignment (synthetic corpus only, written by the align stage): the oracle cap of the content gap.
    oracle = (read_durations(alignments, ORACLE, rows, texts) if (Path(alignments) / f"{ORACLE}.jsonl").is_file()
              else None)
    wrong = wrong_texts(texts, text_vocab(model_config), cfg.wrong_text_seed)
    pattern = sentence_pattern(model_config)
    results = {}
    for step, path in tqdm(checkpoints.items(), desc="evaluate_tts", unit="ckpt"):
        model = ema_model(load_checkpoint(path), model_config, device)
        def loss(ids, frames):
            return evaluate_sequences(model, sequences, pattern, cfg.batch_size, device, precision=precision,
                                      texts=ids, durations=frames)

        right, without, swapped = loss(texts, durations), loss(None, None), loss(wrong, durations)
        entry = {
            "step": step, "with_text": right.as_dict(), "without_text": without.as_dict(),
            "wrong_text": swapped.as_dict(), "conditioning_gap": without.loss - right.loss,
            **content_gap(right, swapped), **{f"oracle_{k}": None for k in content_gap(right, swapped)}}
        if oracle is not None:
            entry.update({f"oracle_{k}": v for k, v in content_gap(loss(texts, oracle), loss(wrong, oracle)).items()})
        results[f"step_{step}"] = entry
        tqdm.write(f"evaluate_tts: step {step}: EMA val loss {right.loss:.4f} with the text, {without.loss:.4f} "
                   f"without (gap {without.loss - right.loss:+.4f} nats), {swapped.loss:.4f} with a wrong text "
                   f"(content gap {swapped.loss - right.loss:+.4f}, codebook 0 "
                   f"{swapped.per_codebook[0] - right.per_codebook[0]:+.4f}"
                   + ("" if oracle is None else f"; with the true alignment {entry['oracle_content_gap']:+.4f}, "
                      f"codebook 0 {entry['oracle_content_gap_per_codebook']['cb0']:+.4f}") + ")")
    results["final"] = results[f"step_{max(checkpoints)}"]
    write_results(metrics, details, results, HEADLINE)


def content_gap(right: EvalResult, wrong: EvalResult) -> dict:
    """Val loss with the wrong text minus with the right one, overall and per codebook (nats per target)."""
    return {"content_gap": wrong.loss - right.loss,
            "content_gap_per_codebook": {f"cb{q}": w - r for q, (w, r) in
                                         enumerate(zip(wrong.per_codebook, right.per_codebook))}}
