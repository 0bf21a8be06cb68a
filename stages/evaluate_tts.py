"""`hybridlm evaluate_tts`: EMA val cross-entropy of every text-to-speech checkpoint, with and without the text.

Output ``metrics``, one entry per checkpoint plus "final", as the evaluate stage's does:
    {"step_N": {"step": N, "with_text": {loss, ppl, targets, per_codebook}, "without_text": {...},
                "conditioning_gap": without - with}, ..., "final": {...}}
The val sentences are whole clips from their BOS to their EOS (EOS counts as a target). "without_text" is the same
model with every text dropped, the branch classifier-free guidance mixes in: the gap, in nats per target, is how
much the model reads the text (about 0 = it ignores it). Deterministic: fp32 by default, fixed order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm import tqdm

from hybridlm.atomic import write_json
from hybridlm.config import resolve_device, section
from hybridlm.model import with_text
from hybridlm.training.checkpoint import ema_model, load_checkpoint, select_checkpoints, validate_checkpoints
from hybridlm.training.evaluation import evaluate_sequences
from hybridlm.training.precision import resolve_precision
from hybridlm.training.sentences import read_sentences, sentence_pattern, tts_data_hash

def run(params: dict, *, checkpoints: Path, sentences: Path, init_from: Path, metrics: Path) -> None:
    model_config = with_text(section(params, "model"), section(params, "tts_model"))
    cfg = section(params, "tts_evaluate")
    device = resolve_device(cfg.device, "tts_evaluate.device")
    precision = resolve_precision(cfg.precision, device, "tts_evaluate.precision")
    checkpoints = select_checkpoints(checkpoints, cfg.steps, "tts_evaluate.steps")
    validate_checkpoints(checkpoints, dataclasses.asdict(model_config), tts_data_hash(init_from, sentences))
    _, _, sequences, texts = read_sentences(sentences, "val", model_config)
    pattern = sentence_pattern(model_config)
    results = {}
    for step, path in tqdm(checkpoints.items(), desc="evaluate_tts", unit="ckpt"):
        model = ema_model(load_checkpoint(path), model_config, device)
        with_, without = (evaluate_sequences(model, sequences, pattern, cfg.batch_size, device, precision=precision,
                                             texts=t) for t in (texts, None))
        results[f"step_{step}"] = {"step": step, "with_text": with_.as_dict(), "without_text": without.as_dict(),
                                   "conditioning_gap": without.loss - with_.loss}
        tqdm.write(f"evaluate_tts: step {step}: EMA val loss {with_.loss:.4f} with the text, {without.loss:.4f} "
                   f"without (gap {without.loss - with_.loss:+.4f} nats)")
    results["final"] = results[f"step_{max(checkpoints)}"]
    write_json(metrics, results)
