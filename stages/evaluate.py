"""`hybridlm evaluate`: EMA-weight cross-entropy and perplexity on the whole val split for every checkpoint.

Output ``details`` (the results page reads it), one entry per checkpoint plus "final" (the last one):
    {"step_1800": {"step": 1800, "loss": .., "ppl": .., "targets": .., "per_codebook": {"cb0": CE, ..}},
     ..., "final": {...}}
and ``metrics`` (the DVC metrics), its headline: ``{"step_1800": {"loss": .., "ppl": ..}, ...}``, so that
`dvc metrics diff` lines up the same step across runs (hybridlm/headline.py).
Deterministic: fixed chunk order, each chunk from its own BOS, in `evaluate.precision` (default fp32, so that the
numbers compare across machines whatever precision the run trained in). The implementation, shared with
evaluate_tts: hybridlm/results/val_metrics.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from hybridlm.config import section
from hybridlm.data.split_reader import read_split
from hybridlm.delay import DelayPattern
from hybridlm.headline import write_results
from hybridlm.interface import Input, Output
from hybridlm.model import ModelConfig
from hybridlm.results.trained import open_trained
from hybridlm.results.val_metrics import ValSet, evaluate_checkpoints
from hybridlm.training.batching import delayed_sequences
from hybridlm.training.checkpoint import data_hash

HEADLINE = ("loss", "ppl")  # per checkpoint, in `metrics`; the rest is in `details`


def run(params: dict, *,
        checkpoints: Annotated[Path, Input("Checkpoint folder to read.")],
        split: Annotated[Path, Input("Split folder to read (val/ is evaluated).")],
        metrics: Annotated[Path, Output("JSON metrics to write (EMA val loss/PPL per checkpoint).")],
        details: Annotated[Path, Output("JSON to write every number per checkpoint (also per codebook, targets): "
                                        "the results page reads it.")]) -> None:
    """EMA validation cross-entropy and perplexity for every checkpoint."""
    config = section(params, "model")
    cfg = section(params, "evaluate")
    trained = open_trained(checkpoints, config, cfg, "evaluate", data_hash(split))
    results = evaluate_checkpoints(trained, _val_set(split, config), cfg.batch_size, "evaluate")
    write_results(metrics, details, results, HEADLINE)


def _val_set(split: Path, config: ModelConfig) -> ValSet:
    """The unconditional val set: ``split``/val's chunks."""
    chunks, _ = read_split(split, "val", config)
    pattern = DelayPattern(config.num_codebooks, config.codebook_size)
    return ValSet(delayed_sequences(chunks, pattern), pattern)
