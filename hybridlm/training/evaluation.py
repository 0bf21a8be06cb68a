"""Validation cross-entropy of a model over whole chunks: overall, per codebook, and perplexity = exp(CE).

Each chunk is evaluated as its own sequence from its BOS step (no packing), so the number describes what a sample
sees: a fresh utterance with no context. Sums of per-token losses are accumulated over the split and divided once,
so the result does not depend on the batch size beyond float rounding. Runs with the model in eval mode, in the
given precision (the evaluate stage defaults to fp32; the loss itself is always fp32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hybridlm.delay import DelayPattern
from hybridlm.ops.cross_entropy import heads_cross_entropy
from hybridlm.training.batching import eval_batches, pad_texts
from hybridlm.training.precision import autocast


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean over codebooks of each codebook's mean CE (nats); codebooks have equal target counts
    per_codebook: list[float]
    targets: int  # scored tokens (all codebooks)

    @property
    def ppl(self) -> float:
        return math.exp(self.loss)

    def as_dict(self) -> dict:
        return {
            "loss": self.loss,
            "ppl": self.ppl,
            "targets": self.targets,
            "per_codebook": {f"cb{q}": ce for q, ce in enumerate(self.per_codebook)},  # CE; PPL = exp of it
        }


@torch.no_grad()
def evaluate_sequences(model: nn.Module, sequences: Sequence[np.ndarray], pattern: DelayPattern, batch_size: int,
                       device: torch.device, *, precision: str,
                       texts: Sequence[Sequence[int]] | None = None,
                       durations: Sequence[Sequence[int]] | None = None) -> EvalResult:
    """CE of ``model`` on delayed chunk sequences (see batching.delayed_sequences); with ``texts`` (one id list per
    sequence) and their ``durations`` (frames per id, where the pointer reads) each is conditioned on its text, and
    EOS targets count where ``pattern`` has them. The two travel apart so that a caller can swap the ids for a
    wrong text of the same shape and keep the durations (the content gap)."""
    if (texts is None) != (durations is None) or (texts is not None and [len(t) for t in texts] != [
            len(d) for d in durations]):
        raise ValueError("evaluate: texts need their durations, one per id")
    if not sequences:
        raise ValueError("evaluate: the validation split has no chunks")
    was_training = model.training
    model.eval()
    sums = torch.zeros(pattern.num_codebooks, dtype=torch.float64)
    counts = torch.zeros(pattern.num_codebooks, dtype=torch.int64)
    try:
        for indices, batch in eval_batches(sequences, pattern, batch_size):
            batch = batch.to(device)
            inputs, targets = batch[..., :-1], batch[..., 1:]
            conditioning = {} if texts is None else {
                "text": pad_texts([texts[i] for i in indices]).to(device),
                "durations": pad_texts([durations[i] for i in indices]).to(device)}
            valid = pattern.target_mask(targets)
            with autocast(precision, device):
                hidden = model(inputs, heads=False, **conditioning)
                _, per_codebook = heads_cross_entropy(hidden, model.heads.weight, targets, valid)
            n = valid.sum(dim=(0, 2)).cpu()
            sums += per_codebook.double().cpu() * n
            counts += n
    finally:
        model.train(was_training)
    per_codebook = (sums / counts).tolist()
    return EvalResult(loss=float(np.mean(per_codebook)), per_codebook=per_codebook, targets=int(counts.sum()))
