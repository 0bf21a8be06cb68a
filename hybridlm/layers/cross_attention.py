"""The pointer cross-attention from the decoder into the text encoder's states, and its per-prompt cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.projection import project

if TYPE_CHECKING:
    from hybridlm.model import ModelConfig


def text_pointer(ends: torch.Tensor, start: int, steps: int, early: int) -> torch.Tensor:
    """``[B, steps]``: the text position each decoder position ``start ..`` reads, from ``ends [B, L]`` (the frame
    at which each id ends: cumulative frames per id, pads adding 0).

    Delay pattern: input position ``s`` predicts codebook 0 of frame ``s`` (and codebook q of frame ``s - q``, which
    follows from the codes already heard), so it reads the id sounding in frame ``s + early``; ids of 0 frames are
    passed over; from the frame where the text ends on, position ``L`` ("end of text")."""
    frames = torch.arange(start, start + steps, device=ends.device) + early
    return torch.searchsorted(ends.contiguous(), frames.expand(ends.shape[0], -1).contiguous(), right=True)


@dataclass
class CrossCache:
    """One cross-attention's values over the text ``[B, text_len + 1, d_model]`` (the last one: "end of text"),
    computed once per prompt; ``has_text [B]`` is False for rows without text."""

    v: torch.Tensor
    has_text: torch.Tensor


def pointer_weights(pointer: torch.Tensor, text_len: int) -> torch.Tensor:
    """The pointer ``[B, S]`` as cross-attention weights ``[B, S, text_len]``: one-hot on the id read, all 0 once
    the text is over (position ``text_len``, the end state)."""
    return F.one_hot(pointer, text_len + 1)[..., :-1]


class CrossAttention(nn.Module):
    """x + tanh(gate) * o(v(text state at the pointer)): cross-attention whose weights are a hard monotonic pointer
    (1 on the id :func:`text_pointer` gives, 0 elsewhere), a gated residual that adds 0 at init.

    Why a pointer and not learned attention weights: measured on the demo (docs/tts.md), free attention, guided
    towards the diagonal or even supervised with the right character, did not find the character at this scale
    (the decoder's query would have to count the letters heard so far), while the pointer from the aligner read.
    Past the text's end the pointer shows ``end``, a learned text-space state: where EOS is sampled.

    Why the output projection ``o`` starts at 0 (HybridLM zeroes it) and the gate at 1: at step 0 the conditioned
    model is exactly the decoder it starts from, so a warm start loses nothing. A gate at 0 (as Flamingo) with a
    random ``o`` deadlocks at this scale: every cross-attention weight but the gate gets a zero gradient, and the
    gate's own gradient (the loss change along a random, text-blind direction) is noise, so it barely moves —
    measured on the demo sentences: gate -0.0008 after 100 steps at lr 0.01, text gap 1e-6 nats. With ``o`` at 0 its
    gradient is nonzero from step 0 and q/k/v follow as soon as it moves. Rows without
    text (``has_text`` False: dropped for classifier-free guidance) get no contribution, i.e. the plain decoder.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, text_d = config.d_model, config.text.d_model
        self.end = nn.Embedding(1, text_d)  # the text state shown once the text is over
        self.v_proj = nn.Linear(text_d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.gate = nn.Parameter(torch.ones(1))

    def memory(self, states: torch.Tensor, mask: torch.Tensor) -> CrossCache:
        """Values of the text states and of ``end`` after them (what generation computes once per prompt)."""
        end = self.end.weight[None].expand(states.shape[0], 1, -1).to(states.dtype)
        return CrossCache(v=self.v_proj(torch.cat([states, end], dim=1)), has_text=mask.any(dim=1))

    def forward(self, x: torch.Tensor, memory: CrossCache, pointer: torch.Tensor) -> torch.Tensor:
        """``pointer [B, S]``: the text position (``L`` = end) each step reads."""
        v = memory.v.to(x.dtype)
        out = project(self, v.gather(1, pointer[..., None].expand(-1, -1, v.shape[-1])), "o_proj")
        gate = torch.tanh(self.gate) * memory.has_text.to(x.dtype)[:, None, None]
        return x + gate.to(x.dtype) * out
