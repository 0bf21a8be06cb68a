"""The hybrid Gated DeltaNet + attention language model over EnCodec codes (OLMo-hybrid layer definitions).

One file, read top to bottom: config -> norms/MLP -> attention block -> Gated DeltaNet block -> cache -> model
(embeddings, forward, generate) -> loss and optimizer helpers.

Why a hybrid: Gated DeltaNet (GDN) layers keep a fixed-size K x V state per head, so decoding costs O(1) per step
and training is linear in length; a few softmax-attention layers (every 4th, and the last) restore exact recall.
Defaults (params.yaml ``model:``) reproduce the reference run: ``L L L A L L L A``, d_model 384, 21,905,416
parameters.

Token layout: ``tokens[b, q, s]`` is the delayed sequence of :mod:`hybridlm.delay` (8 codebooks x steps, ids
0..1023 codes, 1024 PAD, 1025 BOS, 1026 EOS). The input at step s is the *sum* of 8 per-codebook embeddings; each
codebook has its own 1027-way output head; ``logits[b, q, s]`` predicts ``tokens[b, q, s + 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.delay import NUM_SPECIAL, DelayPattern
from hybridlm.ops.gated_delta import gated_delta_rule
from hybridlm.params import ParamError, check_limits

NORM_EPS = 1e-6  # block and QK RMSNorms
GDN_NORM_EPS = 1e-5  # per-head gated output norm of the GDN layers
L2_EPS = 1e-6  # q/k L2 normalisation in the GDN layers
INIT_STD = 0.02  # every Linear and the embeddings start as N(0, 0.02)
LAYER_KINDS = {"L": "gdn", "A": "attention"}


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """params.yaml ``model:``. Field limits live in the metadata; cross-field rules in ``__post_init__``."""

    schedule: str = "LLLALLLA"  # one letter per layer: L = Gated DeltaNet, A = attention
    d_model: int = field(default=384, metadata={"min": 1})
    d_ff: int = field(default=1024, metadata={"min": 1})
    n_heads: int = field(default=6, metadata={"min": 1})  # attention query heads; also the GDN head count
    n_kv_heads: int = field(default=2, metadata={"min": 1})
    gdn_key_dim: int = field(default=48, metadata={"min": 1})
    gdn_value_dim: int = field(default=96, metadata={"min": 1})
    gdn_conv_size: int = field(default=4, metadata={"min": 1})
    gdn_neg_eigval: bool = True  # beta in (0, 2) instead of (0, 1): lets the state transition flip signs
    gdn_backend: Literal["auto", "fla_chunk", "torch_chunk", "torch_recurrent"] = "auto"
    rope_theta: float = field(default=10000.0, metadata={"gt": 0})
    num_codebooks: int = field(default=8, metadata={"min": 1})
    codebook_size: int = field(default=1024, metadata={"min": 1})
    context: int = field(default=1024, metadata={"min": 2})  # delayed steps per training row

    def __post_init__(self) -> None:
        # parse_section checks the limits already; repeating them here also guards configs built in code
        # (tests, checkpoints), and then the rules that involve several keys.
        for f in fields(self):
            check_limits(f.metadata, getattr(self, f.name), f"model.{f.name}")
        bad = sorted(set(self.schedule) - set(LAYER_KINDS))
        if not self.schedule or bad:
            raise ParamError(
                f"params.yaml: 'model.schedule' must be a non-empty string of L (Gated DeltaNet) and A (attention) "
                f"letters, one per layer, got {self.schedule!r}"
            )
        if self.d_model % self.n_heads:
            raise ParamError(
                f"params.yaml: 'model.d_model' ({self.d_model}) must be divisible by 'model.n_heads' ({self.n_heads})"
            )
        if self.n_heads % self.n_kv_heads:
            raise ParamError(
                f"params.yaml: 'model.n_heads' ({self.n_heads}) must be divisible by 'model.n_kv_heads' "
                f"({self.n_kv_heads})"
            )
        if "A" in self.schedule and self.head_dim % 2:
            raise ParamError(
                f"params.yaml: 'model.d_model' / 'model.n_heads' = {self.head_dim} must be even (RoPE rotates pairs)"
            )
        if self.context <= self.num_codebooks:
            raise ParamError(
                f"params.yaml: 'model.context' ({self.context}) must exceed 'model.num_codebooks' "
                f"({self.num_codebooks}) so that a training row holds at least one frame"
            )

    @property
    def layer_types(self) -> tuple[str, ...]:
        """``"gdn"`` or ``"attention"`` per layer, from the schedule string."""
        return tuple(LAYER_KINDS[c] for c in self.schedule)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + NUM_SPECIAL


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (bf16 sums of squares lose too much)."""

    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class GatedRMSNorm(RMSNorm):
    """Per-head output norm of the GDN layers: RMSNorm over the value dim, then times SiLU(gate)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (super().forward(x).float() * F.silu(gate.float())).to(x.dtype)


class SwiGLU(nn.Module):
    """down(SiLU(gate(x)) * up(x)), no biases."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding on ``x [B, H, S, D]`` (rotate-half pairing: dim i pairs with i + D/2).

    Pair i rotates by angle ``position * theta^(-2i/D)``; positions are absolute, so a cached decode step passes
    its true position (cache length) and gets exactly the rotation the full-sequence forward used.
    """
    half = x.shape[-1] // 2
    inv_freq = theta ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [S, D/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float()[..., :half], x.float()[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Cache for incremental decoding
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class KVCache:
    """Keys and values of all past steps of one attention layer: ``[B, n_kv_heads, steps, head_dim]`` (post-RoPE)."""

    k: torch.Tensor
    v: torch.Tensor


@dataclass
class GDNCache:
    """One GDN layer's whole past in constant size: the last ``conv_size - 1`` conv inputs ``[B, channels,
    conv_size - 1]`` and the recurrent state ``[B, H, K, V]`` (fp32)."""

    conv: torch.Tensor
    state: torch.Tensor


@dataclass
class ModelCache:
    """Per-layer caches plus the number of steps already consumed (the RoPE offset). ``forward`` updates it."""

    layers: list[KVCache | GDNCache]
    length: int = 0

    @property
    def batch_size(self) -> int:
        first = self.layers[0]
        return (first.k if isinstance(first, KVCache) else first.state).shape[0]


# ----------------------------------------------------------------------------------------------------------------
# Attention block (post-norm, as OLMo 2/3)
# ----------------------------------------------------------------------------------------------------------------
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
        q = self.q_norm(self.q_proj(x)).view(batch, steps, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_norm(self.k_proj(x)).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, steps, self.n_kv_heads, self.head_dim).transpose(1, 2)
        positions = torch.arange(offset, offset + steps, device=x.device)
        q, k = apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta)
        if cache is not None:
            k = cache.k = torch.cat([cache.k.to(k.dtype), k], dim=2)
            v = cache.v = torch.cat([cache.v.to(v.dtype), v], dim=2)
        total = k.shape[2]
        if total == steps:  # no past: the plain causal mask (flash kernel on CUDA)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:  # past in the cache: query i sits at absolute position total - steps + i
            mask = None
            if steps > 1:
                query_pos = torch.arange(total - steps, total, device=x.device)
                mask = torch.arange(total, device=x.device)[None, :] <= query_pos[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, steps, self.n_heads * self.head_dim))


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


# ----------------------------------------------------------------------------------------------------------------
# Gated DeltaNet block (pre-norm)
# ----------------------------------------------------------------------------------------------------------------
class GatedDeltaNet(nn.Module):
    """The GDN token mixer: projections, short causal conv, then the gated delta rule (hybridlm.ops.gated_delta).

    Per head: q, k in R^K (L2-normalised), v in R^V, write strength beta = sigmoid(b) (x2 with negative
    eigenvalues), log-decay g = -exp(A_log) * softplus(a + dt_bias) <= 0 (fp32), and the output gated-normed with
    SiLU(g_proj(x)) before o_proj.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.key_dim, self.value_dim = config.n_heads, config.gdn_key_dim, config.gdn_value_dim
        self.conv_size, self.neg_eigval, self.backend = config.gdn_conv_size, config.gdn_neg_eigval, config.gdn_backend
        d, h = config.d_model, self.n_heads
        self.q_proj = nn.Linear(d, h * self.key_dim, bias=False)
        self.k_proj = nn.Linear(d, h * self.key_dim, bias=False)
        self.v_proj = nn.Linear(d, h * self.value_dim, bias=False)
        self.g_proj = nn.Linear(d, h * self.value_dim, bias=False)  # output gate
        self.a_proj = nn.Linear(d, h, bias=False)  # decay input
        self.b_proj = nn.Linear(d, h, bias=False)  # write-strength input
        self.conv_channels = h * (2 * self.key_dim + self.value_dim)
        # One depthwise conv over the concatenated [q, k, v] channels (= three separate depthwise convs).
        self.conv = nn.Conv1d(self.conv_channels, self.conv_channels, self.conv_size, groups=self.conv_channels,
                              bias=False)
        # A = exp(A_log) ~ U(0, 16) sets each head's decay rate; dt ~ logU(1e-3, 0.1) its time step via dt_bias.
        a = torch.empty(h).uniform_(0, 16).clamp_(min=1e-4)  # clamp: U(0,16) could return exactly 0 -> log = -inf
        self.A_log = nn.Parameter(a.log())
        dt = torch.exp(torch.empty(h).uniform_(math.log(1e-3), math.log(0.1))).clamp_(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.o_norm = GatedRMSNorm(self.value_dim, eps=GDN_NORM_EPS)
        self.o_proj = nn.Linear(h * self.value_dim, d, bias=False)

    def forward(self, x: torch.Tensor, cache: GDNCache | None) -> torch.Tensor:
        batch, steps, _ = x.shape
        h, kd, vd = self.n_heads, self.key_dim, self.value_dim
        qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1).transpose(1, 2)  # [B, C, S]
        history = qkv.new_zeros(batch, self.conv_channels, self.conv_size - 1) if cache is None else cache.conv
        padded = torch.cat([history.to(qkv.dtype), qkv], dim=-1)  # causal: step s sees steps s-3..s
        if cache is not None:
            cache.conv = padded[..., padded.shape[-1] - (self.conv_size - 1):].clone()  # not a view of padded
        qkv = F.silu(self._depthwise_conv(padded)).transpose(1, 2)
        q, k, v = qkv.split([h * kd, h * kd, h * vd], dim=-1)
        q = F.normalize(q.reshape(batch, steps, h, kd), dim=-1, eps=L2_EPS)
        k = F.normalize(k.reshape(batch, steps, h, kd), dim=-1, eps=L2_EPS)
        v = v.reshape(batch, steps, h, vd)
        beta = torch.sigmoid(self.b_proj(x))
        if self.neg_eigval:
            beta = beta * 2.0
        log_decay = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        # A single decode step is one recurrence step: the token-loop backend is exact and O(1) there on any device.
        backend = "torch_recurrent" if cache is not None and steps == 1 else self.backend
        out, state = gated_delta_rule(
            q, k, v, log_decay, beta, scale=kd**-0.5,
            initial_state=None if cache is None else cache.state,
            output_final_state=cache is not None, backend=backend,
        )
        if cache is not None:
            cache.state = state
        out = self.o_norm(out, self.g_proj(x).view(batch, steps, h, vd))
        return self.o_proj(out.reshape(batch, steps, h * vd))


    def _depthwise_conv(self, padded: torch.Tensor) -> torch.Tensor:
        """out[:, c, s] = sum_j weight[c, j] * padded[:, c, s + j]  (padded: [B, C, S + conv_size - 1]).

        A decode step uses the explicit sum over the conv_size taps: on CPU, F.conv1d's oneDNN path costs ~50 ms
        per call here even for one step (over 1000x the work), while the sum is microseconds. Longer inputs use
        F.conv1d (faster from a few hundred steps on; cuDNN on GPU). The cached-decoding test checks both agree.
        """
        if padded.shape[-1] - (self.conv_size - 1) <= self.conv_size:
            return torch.einsum("bcsk,ck->bcs", padded.unfold(-1, self.conv_size, 1), self.conv.weight[:, 0])
        return F.conv1d(padded, self.conv.weight, groups=self.conv_channels)


class GDNBlock(nn.Module):
    """h = x + gdn(norm(x)); h = h + mlp(norm(h))  (pre-norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gdn_norm = RMSNorm(config.d_model)
        self.gdn = GatedDeltaNet(config)
        self.mlp_norm = RMSNorm(config.d_model)
        self.mlp = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x: torch.Tensor, offset: int, cache: GDNCache | None) -> torch.Tensor:
        h = x + self.gdn(self.gdn_norm(x), cache)
        return h + self.mlp(self.mlp_norm(h))


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------
class HybridLM(nn.Module):
    """Summed codebook embeddings -> schedule of GDN / attention blocks -> final RMSNorm -> one head per codebook."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n_q, vocab, d = config.num_codebooks, config.vocab_size, config.d_model
        # The 8 per-codebook tables live in one Embedding (row q * vocab + id), so the lookup is a single gather.
        self.embed = nn.Embedding(n_q * vocab, d)
        self.layers = nn.ModuleList(
            GDNBlock(config) if kind == "gdn" else AttentionBlock(config) for kind in config.layer_types
        )
        self.norm = RMSNorm(d)
        # The 8 untied heads (384 -> 1027 each, no bias) as one Linear with 8 * 1027 outputs: identical maths,
        # one matmul.
        self.heads = nn.Linear(d, n_q * vocab, bias=False)
        self.register_buffer("codebook_offsets", torch.arange(n_q) * vocab, persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component, in model order (``hybridlm info`` prints this; the values sum to the total)."""
        counts = {"embeddings": self.embed.weight.numel()}
        for i, (letter, layer) in enumerate(zip(self.config.schedule, self.layers)):
            counts[f"layer {i} ({letter})"] = sum(p.numel() for p in layer.parameters())
        counts["final norm"] = self.norm.weight.numel()
        counts["heads"] = self.heads.weight.numel()
        return counts

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> ModelCache:
        """An empty cache (zero conv history and state = what the full forward assumes before step 0)."""
        weight = self.heads.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        cfg, layers = self.config, []
        for layer in self.layers:
            if isinstance(layer, GDNBlock):
                gdn = layer.gdn
                layers.append(GDNCache(
                    conv=torch.zeros(batch_size, gdn.conv_channels, gdn.conv_size - 1, device=device, dtype=dtype),
                    state=torch.zeros(batch_size, gdn.n_heads, gdn.key_dim, gdn.value_dim, device=device,
                                      dtype=torch.float32),
                ))
            else:
                empty = torch.zeros(batch_size, cfg.n_kv_heads, 0, cfg.head_dim, device=device, dtype=dtype)
                layers.append(KVCache(k=empty, v=empty.clone()))
        return ModelCache(layers=layers)

    def forward(self, tokens: torch.Tensor, cache: ModelCache | None = None, *, heads: bool = True) -> torch.Tensor:
        """``tokens [B, n_q, S]`` (delayed ids) -> ``logits [B, n_q, S, vocab]``.

        Without a cache: the full causal forward (training). With a cache: continues after ``cache.length`` steps
        (prefill with S > 1 or one decode step with S = 1) and advances the cache in place. ``heads=False`` returns
        the final-normed hidden states ``[B, S, d]`` instead: training feeds them to
        hybridlm.ops.cross_entropy.heads_cross_entropy, which applies the heads chunk by chunk (a flag rather than a
        second method so that a DDP wrapper still sees the forward).
        """
        cfg = self.config
        if tokens.ndim != 3 or tokens.shape[1] != cfg.num_codebooks or tokens.shape[2] < 1:
            raise ValueError(f"HybridLM: tokens must be [batch, {cfg.num_codebooks}, steps >= 1], "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(f"HybridLM: tokens must be int64/int32 ids, got {tokens.dtype}")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= cfg.vocab_size:
            raise ValueError(f"HybridLM: token ids must lie in [0, {cfg.vocab_size}), got [{low}, {high}]")
        batch, _, steps = tokens.shape
        if cache is not None and cache.batch_size != batch:
            raise ValueError(f"HybridLM: cache is for batch size {cache.batch_size}, tokens have {batch}")
        offset = 0 if cache is None else cache.length
        x = self.embed(tokens + self.codebook_offsets[None, :, None]).sum(dim=1)  # [B, S, d]
        for i, layer in enumerate(self.layers):
            x = layer(x, offset, None if cache is None else cache.layers[i])
        if cache is not None:
            cache.length += steps
        hidden = self.norm(x)
        if not heads:
            return hidden
        logits = self.heads(hidden).view(batch, steps, cfg.num_codebooks, cfg.vocab_size)
        return logits.transpose(1, 2)

    @torch.no_grad()
    def generate(self, num_frames: int, batch_size: int = 1, temperature: float = 1.0, top_k: int = 250,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``[B, n_q, num_frames]`` codes unconditionally, one delayed step at a time with the cache.

        Step 0 is BOS for every codebook. At step t, codebook q gets a sampled code where the delay pattern has one
        (frame t - 1 - q exists) and PAD elsewhere; codes are drawn from the 1024 code logits only (special ids can
        never be sampled), with temperature (0 = greedy) and top-k. ``generator`` (on the model's device) makes
        the draw reproducible.
        """
        cfg = self.config
        if num_frames < 1 or batch_size < 1:
            raise ValueError(f"generate: num_frames and batch_size must be >= 1, got {num_frames}, {batch_size}")
        if temperature < 0 or top_k < 1:
            raise ValueError(f"generate: need temperature >= 0 and top_k >= 1, got {temperature}, {top_k}")
        pattern = DelayPattern(cfg.num_codebooks, cfg.codebook_size)
        device = self.heads.weight.device
        total = pattern.num_steps(num_frames)
        code_at = pattern.code_mask(total, device)  # [n_q, steps]
        seq = torch.full((batch_size, cfg.num_codebooks, total), pattern.pad_id, dtype=torch.long, device=device)
        seq[..., 0] = pattern.bos_id
        cache = self.new_cache(batch_size, device)
        for t in range(1, total):
            logits = self(seq[..., t - 1 : t], cache)[:, :, -1, : cfg.codebook_size]
            codes = sample_codes(logits, temperature, top_k, generator)
            seq[..., t] = torch.where(code_at[:, t], codes, pattern.pad_id)
        return pattern.revert(seq)


def sample_codes(logits: torch.Tensor, temperature: float, top_k: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of ``logits [..., codes]``: greedy at temperature 0, else softmax(logits / T) over the top k."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])


# ----------------------------------------------------------------------------------------------------------------
# Loss and optimizer helpers
# ----------------------------------------------------------------------------------------------------------------
def codebook_target_counts(targets: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Valid targets (ids < codebook_size) per codebook of ``targets [B, n_q, S]``: the loss's normalisers."""
    return ((targets >= 0) & (targets < codebook_size)).sum(dim=(0, 2))


def codebook_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, codebook_size: int | None = None,
                           counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy per codebook over its valid targets (ids < codebook_size), and the mean over codebooks.

    ``logits [B, n_q, S, vocab]``, ``targets [B, n_q, S]``. PAD/BOS/EOS targets carry no loss. Averaging per
    codebook first (rather than over all valid tokens) weighs every codebook equally, which is also what the
    per-codebook report and perplexity exp(CE) describe. ``codebook_size`` defaults to vocab - 3 special ids.
    ``counts`` (``[n_q]``) replaces this batch's valid-target counts as the divisors: a data-parallel rank passes
    the global batch's (:func:`codebook_target_counts`), so that the ranks' losses add up to the global loss.
    Training and evaluation use the chunked hybridlm.ops.cross_entropy.heads_cross_entropy (no full logits); this
    is its reference, on materialised logits.
    """
    if logits.ndim != 4 or targets.shape != logits.shape[:3]:
        raise ValueError(f"codebook_cross_entropy: logits must be [B, n_q, S, vocab] and targets [B, n_q, S], got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    vocab = logits.shape[-1]
    codebook_size = vocab - NUM_SPECIAL if codebook_size is None else codebook_size
    valid = (targets >= 0) & (targets < codebook_size)
    counts = valid.sum(dim=(0, 2)) if counts is None else counts
    if bool((counts == 0).any()):
        raise ValueError(f"codebook_cross_entropy: codebook(s) {counts.eq(0).nonzero().flatten().tolist()} have no "
                         f"valid targets (all are special ids >= {codebook_size})")
    losses = F.cross_entropy(logits.float().reshape(-1, vocab), targets.masked_fill(~valid, -100).reshape(-1),
                             ignore_index=-100, reduction="none").view(targets.shape)
    per_codebook = losses.sum(dim=(0, 2)) / counts
    return per_codebook.mean(), per_codebook


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameters AdamW must not decay: every vector (norm gains, A_log, dt_bias; there are no biases) and the
    embeddings.

    Why: decaying a gain or A_log/dt_bias pulls them toward 0, i.e. toward "no signal" / "no decay", which is a
    change of function, not a regulariser. Embeddings are excluded as in OLMo 2: each row only gets gradient when its
    code occurs, so decay would shrink rare codes' rows toward 0 between uses. Projection matrices, the output
    heads and the conv filters are decayed.
    """
    return {name for name, p in model.named_parameters() if p.ndim < 2 or name.startswith("embed.")}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW param groups: ``weight_decay`` on matrices, 0 on :func:`no_decay_parameter_names`."""
    skip = no_decay_parameter_names(model)
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if n not in skip], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n in skip], "weight_decay": 0.0},
    ]
