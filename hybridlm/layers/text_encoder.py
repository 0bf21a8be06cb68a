"""The bidirectional text encoder of the text-to-speech model, with its duration predictor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.init import INIT_STD
from hybridlm.layers.mlp import SwiGLU
from hybridlm.layers.norms import RMSNorm

if TYPE_CHECKING:
    from hybridlm.model import TextConfig

TEXT_PAD_ID = 0  # text id 0 pads a batch of texts; a row of pads only = no text (hybridlm.text agrees)


def sinusoid_positions(length: int, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[length, dim]`` sine/cosine absolute positions (first half sin, second half cos), scaled to INIT_STD.

    Why absolute positions in the text encoder: cross-attention has to find *where* in the text the audio is, and a
    bidirectional encoder has no causal mask to count positions from. Why the scale: at 1 the positions would drown
    the N(0, INIT_STD) character embeddings (50x larger) at the start of training.
    """
    half = dim // 2
    inv_freq = 10000.0 ** (-torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    out = torch.zeros(length, dim, device=device)
    out[:, :half], out[:, half : 2 * half] = angles.sin(), angles.cos()
    return out * INIT_STD


class TextEncoderBlock(nn.Module):
    """Pre-norm bidirectional transformer block: h = x + attn(norm(x)) over the non-pad positions; h + mlp(norm(h))."""

    def __init__(self, text: TextConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = text.n_heads, text.d_model // text.n_heads
        self.attn_norm = RMSNorm(text.d_model)
        self.qkv_proj = nn.Linear(text.d_model, 3 * text.d_model, bias=False)
        self.o_proj = nn.Linear(text.d_model, text.d_model, bias=False)
        self.mlp_norm = RMSNorm(text.d_model)
        self.mlp = SwiGLU(text.d_model, text.d_ff)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv_proj(self.attn_norm(x)).view(batch, length, 3, self.n_heads, self.head_dim).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=attend)
        h = x + self.o_proj(out.transpose(1, 2).reshape(batch, length, width))
        return h + self.mlp(self.mlp_norm(h))


class TextEncoder(nn.Module):
    """Character ids ``[B, L]`` (TEXT_PAD_ID = padding) -> states ``[B, L, text.d_model]`` and the mask of real ids.

    Bidirectional: every character sees the whole sentence (its neighbours decide how it sounds). A row with no
    text at all attends over its pads, so its states stay finite; the cross-attention ignores such rows.

    ``duration`` predicts each id's log(1 + frames) from its state and id (FastSpeech 2): what places the pointer when
    sampling, so that the length and the end of a reading follow the text. It reads detached states, so its loss
    trains the predictor alone and never competes with reading (as Glow-TTS's; measured on the demo, letting it
    train the encoder took the content gap from 0.026 to 0.001); its last layer has the model's one bias (the mean
    log duration).
    """

    def __init__(self, text: TextConfig) -> None:
        super().__init__()
        self.vocab_size = text.vocab_size
        self.embed = nn.Embedding(text.vocab_size, text.d_model)
        self.layers = nn.ModuleList(TextEncoderBlock(text) for _ in range(text.layers))
        self.norm = RMSNorm(text.d_model)
        self.duration_embed = nn.Embedding(text.vocab_size, text.d_model)
        self.duration = nn.Sequential(nn.Linear(text.d_model, text.d_model, bias=False), nn.SiLU(),
                                      nn.Linear(text.d_model, 1))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.ndim != 2 or ids.shape[1] < 1 or ids.dtype not in (torch.long, torch.int32):
            raise ValueError(f"TextEncoder: text must be int64/int32 ids [batch, length >= 1], got "
                             f"{ids.dtype} {tuple(ids.shape)}")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"TextEncoder: text ids must lie in [0, {self.vocab_size}) (tts_model.vocab_size), "
                             f"got [{low}, {high}]")
        mask = ids != TEXT_PAD_ID
        attend = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]
        x = self.embed(ids) + sinusoid_positions(ids.shape[1], self.embed.embedding_dim, ids.device).to(
            self.embed.weight.dtype)
        for layer in self.layers:
            x = layer(x, attend)
        return self.norm(x), mask

    def log_durations(self, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` predicted log(1 + frames) of each id, from the encoder ``states`` (detached: context) plus the
        predictor's own embedding of the id (what the id alone says: measured on the demo, the detached states
        alone left the duration loss at ~0.4 and the readings off their text)."""
        return self.duration(states.detach() + self.duration_embed(ids)).squeeze(-1)
