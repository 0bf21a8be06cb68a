"""Guided attention (Tachibana et al. 2018, "Efficiently trainable text-to-speech ... with guided attention"): a
training-only penalty on cross-attention weights that lie far from the diagonal of the text-audio plane.

Why: a cross-attention reader must first learn *where* in the text each audio frame is, and until it does, the
text is no help, so nothing pulls it there. Measured on the demo's synthetic sentences (docs/tts.md): without the
penalty the conditioned model used its text by about 1e-4 nats per target after hundreds of steps; with it, by
0.02-0.07. Reading is roughly monotonic and roughly even in time, so weight on text position ``n`` of ``N`` at
audio frame ``t`` of ``T`` costs ``1 - exp(-(n/N - t/T)^2 / (2 g^2))`` (``g`` = ``width``): nothing on the diagonal,
nearly 1 far from it. It only shapes training; sampling never uses ``T``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def diagonal_penalty(frames: torch.Tensor, text_lengths: torch.Tensor, steps: int, text_len: int,
                     width: float) -> torch.Tensor:
    """``[B, steps, text_len]`` cost of each (step, character): 0 on the diagonal of row b's ``frames[b]`` x
    ``text_lengths[b]`` plane, rising towards 1 off it; 0 outside the row's real steps and characters."""
    t = torch.arange(steps, device=frames.device, dtype=torch.float32)[None, :, None] / frames[:, None, None]
    n = torch.arange(text_len, device=frames.device, dtype=torch.float32)[None, None, :] / text_lengths[:, None, None]
    cost = 1.0 - torch.exp(-((n - t) ** 2) / (2.0 * width**2))
    inside = (t < 1.0) & (n < 1.0)
    return cost * inside


def guided_attention_loss(alignments: Sequence[torch.Tensor], frames: torch.Tensor, text_lengths: torch.Tensor,
                          width: float, normaliser: float) -> torch.Tensor:
    """Mean over cross-attention layers and heads of the attention mass off the diagonal, summed over the rows'
    real steps and divided by ``normaliser`` (the global count of steps with text: the same total under any data
    parallel split). ``alignments``: each cross-attention's weights ``[B, heads, S, L]``; ``frames [B]``: steps that
    carry a target per row (frames + EOS; rows without text count 0 and add nothing); ``text_lengths [B]``."""
    if not alignments:
        raise ValueError("guided_attention_loss: no cross-attention weights (a model without text conditioning?)")
    has_text = (frames > 0) & (text_lengths > 0)
    frames = frames.clamp(min=1).float()
    _, _, steps, text_len = alignments[0].shape
    penalty = diagonal_penalty(frames, text_lengths.clamp(min=1).float(), steps, text_len, width)
    penalty = penalty * has_text[:, None, None]
    total = sum((weights.float() * penalty[:, None]).sum() / weights.shape[1] for weights in alignments)
    return total / (len(alignments) * max(normaliser, 1.0))
