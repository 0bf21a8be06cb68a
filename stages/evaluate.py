"""`hybridlm evaluate`: EMA-weight cross-entropy and perplexity on the whole val split for every checkpoint.

Output ``details`` (the results page reads it), one entry per checkpoint plus "final" (the last one):
    {"step_1800": {"step": 1800, "loss": .., "ppl": .., "targets": .., "per_codebook": {"cb0": CE, ..}},
     ..., "final": {...}}
and ``metrics`` (the DVC metrics), its headline: ``{"step_1800": {"loss": .., "ppl": ..}, ...}``, so that
`dvc metrics diff` lines up the same step across runs (hybridlm/headline.py).
Deterministic: fixed chunk order, each chunk from its own BOS, in `evaluate.precision` (default fp32, so that
the numbers compare across machines whatever precision the run trained in).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from tqdm import tqdm

from hybridlm.config import resolve_device, section
from hybridlm.data.split_reader import read_split
from hybridlm.delay import DelayPattern
from hybridlm.headline import write_results
from hybridlm.interface import Input, Output
from hybridlm.training.batching import delayed_sequences
from hybridlm.training.checkpoint import (data_hash, ema_model, load_checkpoint, select_checkpoints,
                                         validate_checkpoints)
from hybridlm.training.evaluation import evaluate_sequences
from hybridlm.training.precision import resolve_precision


HEADLINE = ("loss", "ppl")  # per checkpoint, in `metrics`; the rest is in `details`


def run(params: dict, *,
        checkpoints: Annotated[Path, Input("Checkpoint folder to read.")],
        split: Annotated[Path, Input("Split folder to read (val/ is evaluated).")],
        metrics: Annotated[Path, Output("JSON metrics to write (EMA val loss/PPL per checkpoint).")],
        details: Annotated[Path, Output("JSON to write every number per checkpoint (also per codebook, targets): "
                                        "the results page reads it.")]) -> None:
    """EMA validation cross-entropy and perplexity for every checkpoint."""
    model_config = section(params, "model")
    cfg = section(params, "evaluate")
    device = resolve_device(cfg.device, "evaluate.device")
    precision = resolve_precision(cfg.precision, device, "evaluate.precision")
    selected = select_checkpoints(checkpoints, cfg.steps, "evaluate.steps")
    validate_checkpoints(selected, dataclasses.asdict(model_config), data_hash(split))
    val_chunks, _ = read_split(split, "val", model_config)
    pattern = DelayPattern(model_config.num_codebooks, model_config.codebook_size)
    sequences = delayed_sequences(val_chunks, pattern)
    results = {}
    for step, path in tqdm(selected.items(), desc="evaluate", unit="ckpt"):
        state = load_checkpoint(path)
        model = ema_model(state, model_config, device)
        result = evaluate_sequences(model, sequences, pattern, cfg.batch_size, device, precision=precision)
        results[f"step_{step}"] = {"step": step, **result.as_dict()}
        tqdm.write(f"evaluate: step {step}: EMA val loss {result.loss:.4f}, ppl {result.ppl:.2f} "
                   f"({result.targets:,} tokens)")
    results["final"] = results[f"step_{max(selected)}"]
    write_results(metrics, details, results, HEADLINE)
