"""Causal GQA self-attention with QK-norm and RoPE, its KV cache, and the post-norm attention block (OLMo 2/3)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.mlp import SwiGLU
from hybridlm.layers.projection import project
from hybridlm.layers.norms import RMSNorm

if TYPE_CHECKING:
    from hybridlm.model import ModelConfig


def apply_rope(x: torch.Tensor, offset: int, theta: float) -> torch.Tensor:
    """Rotary position embedding on ``x [B, H, S, D]`` at positions ``offset ..`` (rotate-half pairing: dim i pairs
    with i + D/2).

    Pair i rotates by angle ``position * theta^(-2i/D)``; positions are absolute, so a cached decode step passes
    its true position (cache length) and gets exactly the rotation the full-sequence forward used.
    """
    half = x.shape[-1] // 2
    cos, sin = _rope_table(offset + x.shape[-2], half, theta, x.device)
    cos, sin = cos[offset : offset + x.shape[-2]], sin[offset : offset + x.shape[-2]]  # [S, D/2]
    x32 = x.float()
    x1, x2 = x32[..., :half], x32[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


_ROPE_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _rope_table(length: int, half: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the RoPE angles of positions ``0 .. n - 1`` (n >= ``length``), ``[n, half]`` fp32, built
    once per (half, theta, device) and grown by doubling: a decode step rebuilt them for its one position (nine
    ops of its ~60). Each row is computed alone (position x frequency), so a row's bits do not depend on n."""
    key = (half, theta, str(device))
    table = _ROPE_TABLES.get(key)
    if table is None or table[0].shape[0] < length:
        n = max(length, 2 * table[0].shape[0] if table is not None else 1024)
        inv_freq = theta ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
        angles = torch.arange(n, device=device).to(torch.float32)[:, None] * inv_freq[None, :]
        table = _ROPE_TABLES[key] = (angles.cos(), angles.sin())
    return table


@dataclass
class KVCache:
    """Keys and values of all past steps of one attention layer: ``[B, n_kv_heads, steps, head_dim]`` (post-RoPE)."""

    k: torch.Tensor
    v: torch.Tensor


class Attention(nn.Module):
    """Causal GQA self-attention with QK-norm over the whole projected q and k, and RoPE."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.rope_theta = config.rope_theta
        d = config.d_model
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        self.q_norm = RMSNorm(self.n_heads * self.head_dim)
        self.k_norm = RMSNorm(self.n_kv_heads * self.head_dim)

    def forward(self, x: torch.Tensor, offset: int, cache: KVCache | None) -> torch.Tensor:
        batch, steps, _ = x.shape
        q_width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = project(self, x, "q_proj", "k_proj", "v_proj").split(
            [q_width, kv_width, kv_width], dim=-1)  # one GEMM for the three projections
        q = self.q_norm(q).view(batch, steps, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_norm(k).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, offset, self.rope_theta), apply_rope(k, offset, self.rope_theta)
        if cache is None:  # no past: the plain causal mask (flash kernel on CUDA)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            out = self._attend_cached(q, k, v, cache)
        return project(self, out.transpose(1, 2).reshape(batch, steps, self.n_heads * self.head_dim), "o_proj")


    def _attend_cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Attention of ``q [B, H, S, D]`` over the cached past and this call's ``k, v``, which join the cache.

        On a CPU the cache keeps its own dtype (fp32, from :meth:`AttentionBlock.new_cache`) and attention runs in
        it, autocast or not: CPU's bf16 SDPA for one query was the slower kernel by far (1 thread, 6 query heads
        over 2 key heads, 160 keys: 101 us in bf16, 17 us in fp32; the same within 2e-3). The keys and values in
        it are the bf16-rounded ones. On a GPU the cache follows ``k``'s dtype (flash kernels want bf16).
        """
        dtype = cache.k.dtype if q.device.type == "cpu" else k.dtype
        k = cache.k = torch.cat([cache.k.to(dtype), k.to(dtype)], dim=2)
        v = cache.v = torch.cat([cache.v.to(dtype), v.to(dtype)], dim=2)
        total, steps = k.shape[2], q.shape[2]
        mask = None
        if steps > 1:  # query i sits at absolute position total - steps + i
            query_pos = torch.arange(total - steps, total, device=q.device)
            mask = torch.arange(total, device=q.device)[None, :] <= query_pos[:, None]
        in_fp32 = dtype == torch.float32 and torch.is_autocast_enabled(q.device.type)  # autocast would cast to bf16
        with torch.autocast(q.device.type, enabled=False) if in_fp32 else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q.to(dtype), k, v, attn_mask=mask, enable_gqa=True)


class AttentionBlock(nn.Module):
    """h = x + norm(attn(x)); h = h + norm(mlp(h))  (post-norm: the norms sit on the branch outputs)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn = Attention(config)
        self.attn_norm = RMSNorm(config.d_model)
        self.mlp = SwiGLU(config.d_model, config.d_ff)
        self.mlp_norm = RMSNorm(config.d_model)

    def forward(self, x: torch.Tensor, offset: int, cache: KVCache | None) -> torch.Tensor:
        h = x + self.attn_norm(self.attn(x, offset, cache))
        return h + self.mlp_norm(self.mlp(h))

    def new_cache(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> KVCache:
        """No past yet: keys and values of 0 steps."""
        attn = self.attn
        empty = torch.zeros(batch_size, attn.n_kv_heads, 0, attn.head_dim, device=device, dtype=dtype)
        return KVCache(k=empty, v=empty.clone())


def check_config(config: ModelConfig) -> str | None:
    """What an attention layer needs of the config beyond its field limits (None: nothing wrong)."""
    if config.head_dim % 2:
        return f"'model.d_model' / 'model.n_heads' = {config.head_dim} must be even (RoPE rotates pairs)"
    return None


def mixing_flops(config: ModelConfig) -> float:
    """Training FLOPs per delayed step of the attention itself (scores and weighted values over the context; the
    projections are counted with every matmul weight)."""
    return 6.0 * config.n_heads * config.head_dim * config.context
