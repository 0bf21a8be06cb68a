"""EMA val cross-entropy of every checkpoint: the one implementation of the evaluate and evaluate_tts stages,
parameterised by whether the checkpoints are text-conditioned (a :class:`ValSet` with texts or without).

Unconditional (evaluate): the split's val chunks, each from its own BOS; an entry holds the loss, perplexity,
targets and per-codebook CE. Text-conditioned (evaluate_tts): the val sentences, whole clips from BOS to EOS (EOS
counts as a target), each read through the align stage's frames per text id; an entry holds the loss with the
text, without it (every text dropped: the branch classifier-free guidance mixes in) and with a wrong text of the
same shape (hybridlm.wrong_text: every letter swapped for one of another sound class, lengths kept), and the gaps:
conditioning = without - with (how much the model uses the text at all; but a model that only counts characters
earns most of it), content = wrong - with (what it gains from *which* letters the text says: from reading it).
``oracle_*``: the content gap read through the TRUE alignment (``alignments``/val_oracle.jsonl, synthetic corpus
only; null elsewhere), the cap the aligner's accuracy allows.

Both: one entry per checkpoint plus "final" (the last one), so `dvc metrics diff` lines up the same step across
runs; deterministic (fixed order, fp32 by default so the numbers compare across machines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from hybridlm.delay import DelayPattern
from hybridlm.results.trained import Trained
from hybridlm.training.evaluation import EvalResult, evaluate_sequences

Loss = Callable[[Sequence[Sequence[int]] | None, Sequence[Sequence[int]] | None], EvalResult]


@dataclass(frozen=True)
class ValSet:
    """What the checkpoints are scored on: delayed sequences in ``pattern``; for text-conditioned checkpoints also
    the text ids, their frames per id, the same-shape wrong texts and (synthetic corpus) the true frames per id."""

    sequences: list[np.ndarray]
    pattern: DelayPattern
    texts: list[list[int]] | None = None
    durations: list[list[int]] | None = None
    wrong: list[list[int]] | None = None
    oracle: list[list[int]] | None = None




def evaluate_checkpoints(trained: Trained, val: ValSet, batch_size: int, name: str) -> dict[str, Any]:
    """``{"step_N": entry, ..., "final": entry}`` for every checkpoint of ``trained``; ``name`` labels the log."""
    results = {}
    for step, _, model in tqdm(trained.models(), total=len(trained.checkpoints), desc=name, unit="ckpt"):
        def loss(texts=None, durations=None, model=model) -> EvalResult:
            return evaluate_sequences(model, val.sequences, val.pattern, batch_size, trained.device,
                                      precision=trained.precision, texts=texts, durations=durations)

        entry, line = _unconditional(loss) if val.texts is None else _conditioned(loss, val)
        results[f"step_{step}"] = {"step": step, **entry}
        tqdm.write(f"{name}: step {step}: {line}")
    results["final"] = results[f"step_{max(trained.checkpoints)}"]
    return results


def _unconditional(loss: Loss) -> tuple[dict[str, Any], str]:
    result = loss(None, None)
    return result.as_dict(), f"EMA val loss {result.loss:.4f}, ppl {result.ppl:.2f} ({result.targets:,} tokens)"


def _conditioned(loss: Loss, val: ValSet) -> tuple[dict[str, Any], str]:
    right, without, swapped = loss(val.texts, val.durations), loss(None, None), loss(val.wrong, val.durations)
    gap = content_gap(right, swapped)
    entry = {"with_text": right.as_dict(), "without_text": without.as_dict(), "wrong_text": swapped.as_dict(),
             "conditioning_gap": without.loss - right.loss, **gap, **{f"oracle_{k}": None for k in gap}}
    if val.oracle is not None:
        entry.update({f"oracle_{k}": v for k, v in
                      content_gap(loss(val.texts, val.oracle), loss(val.wrong, val.oracle)).items()})
    line = (f"EMA val loss {right.loss:.4f} with the text, {without.loss:.4f} without (gap "
            f"{without.loss - right.loss:+.4f} nats), {swapped.loss:.4f} with a wrong text (content gap "
            f"{swapped.loss - right.loss:+.4f}, codebook 0 {swapped.per_codebook[0] - right.per_codebook[0]:+.4f}"
            + ("" if val.oracle is None else f"; with the true alignment {entry['oracle_content_gap']:+.4f}, "
               f"codebook 0 {entry['oracle_content_gap_per_codebook']['cb0']:+.4f}") + ")")
    return entry, line


def content_gap(right: EvalResult, wrong: EvalResult) -> dict[str, Any]:
    """Val loss with the wrong text minus with the right one, overall and per codebook (nats per target)."""
    return {"content_gap": wrong.loss - right.loss,
            "content_gap_per_codebook": {f"cb{q}": w - r for q, (w, r) in
                                         enumerate(zip(wrong.per_codebook, right.per_codebook))}}
