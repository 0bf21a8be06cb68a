"""The Gated DeltaNet token mixer (projections, short causal conv, the gated delta rule of hybridlm.ops.gated_delta),
its constant-size decoding cache, and the pre-norm GDN block."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.mlp import SwiGLU
from hybridlm.layers.projection import derived, project
from hybridlm.layers.norms import GatedRMSNorm, RMSNorm
from hybridlm.ops.causal_conv import causal_conv_silu
from hybridlm.ops.gated_delta import gated_delta_rule, gated_delta_step

if TYPE_CHECKING:
    from hybridlm.model import ModelConfig

GDN_NORM_EPS = 1e-5  # per-head gated output norm of the GDN layers
L2_EPS = 1e-6  # q/k L2 normalisation in the GDN layers


@dataclass
class GDNCache:
    """One GDN layer's whole past in constant size: the last ``conv_size - 1`` conv inputs ``[B, conv_size - 1,
    channels]`` and the recurrent state ``[B, H, K, V]`` (fp32)."""

    conv: torch.Tensor
    state: torch.Tensor


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
        if cache is not None and steps == 1 and not torch.is_grad_enabled():
            return self._decode_step(x, cache)
        qkv, gate, decay_in, beta_in = self._project(x)
        history = qkv.new_zeros(batch, self.conv_size - 1, self.conv_channels) if cache is None else cache.conv
        if cache is not None:  # the last conv_size - 1 inputs
            cache.conv = torch.cat([history.to(qkv.dtype), qkv], dim=1)[:, steps:].clone()  # not a view of the cat
        qkv = causal_conv_silu(qkv, history, self.conv.weight[:, 0].to(qkv.dtype))
        q, k, v = qkv.split([h * kd, h * kd, h * vd], dim=-1)
        q = F.normalize(q.reshape(batch, steps, h, kd), dim=-1, eps=L2_EPS)
        k = F.normalize(k.reshape(batch, steps, h, kd), dim=-1, eps=L2_EPS)
        v = v.reshape(batch, steps, h, vd)
        log_decay, beta = self._gates(decay_in, beta_in)
        # A single decode step is one recurrence step: the token-loop backend is exact and O(1) there on any device.
        backend = "torch_recurrent" if cache is not None and steps == 1 else self.backend
        out, state = gated_delta_rule(
            q, k, v, log_decay, beta, scale=kd**-0.5,
            initial_state=None if cache is None else cache.state,
            output_final_state=cache is not None, backend=backend,
        )
        if cache is not None:
            cache.state = state
        out = self.o_norm(out, gate.reshape(batch, steps, h, vd))
        return project(self, out.reshape(batch, steps, h * vd), "o_proj")

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All six input projections as one GEMM (the parameters stay separate, as in transformers): the conv's
        q, k, v channels, the output gate, the decay and the write-strength inputs."""
        projected = project(self, x, "q_proj", "k_proj", "v_proj", "g_proj", "a_proj", "b_proj")
        h = self.n_heads
        return projected.split([self.conv_channels, h * self.value_dim, h, h], dim=-1)

    def _gates(self, decay_in: torch.Tensor, beta_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-decay g = -exp(A_log) * softplus(a + dt_bias) (fp32) and the write strength beta."""
        beta = torch.sigmoid(beta_in)
        if self.neg_eigval:
            beta = beta * 2.0
        return -self.A_log.float().exp() * F.softplus(decay_in.float() + self.dt_bias.float()), beta

    def _decode_step(self, x: torch.Tensor, cache: GDNCache) -> torch.Tensor:
        """One decode step (``x [B, 1, d]``, no gradients): the forward's maths with a third of its ops, since a
        batch-1 step is bound by per-op overhead. The conv is one product with the window of the last
        ``conv_size`` inputs (its taps kept in the compute dtype, :func:`hybridlm.layers.projection.derived`), whose
        last ``conv_size - 1`` rows become the history; q and k are normalised in one call; the recurrence is
        :func:`hybridlm.ops.gated_delta.gated_delta_step`, whose fp32 output goes to the gated norm uncast. In
        fp32 it matches the forward within rounding (the taps are summed in another order); in bf16 the conv sums
        in fp32 and q, k, v and the recurrence's output skip bf16 round trips, so it is closer to the fp32
        forward."""
        batch = x.shape[0]
        h, kd, vd = self.n_heads, self.key_dim, self.value_dim
        qkv, gate, decay_in, beta_in = self._project(x)
        window = torch.cat([cache.conv.to(qkv.dtype), qkv], dim=1)  # [B, conv_size, channels]
        cache.conv = window[:, 1:].clone()  # not a view: a compiled step's guards would check the window
        taps = derived(self, "conv taps", [self.conv.weight], lambda w, dtype: w[0][:, 0].t().contiguous().to(dtype))
        qkv = F.silu((window * taps).sum(1, dtype=torch.float32))  # the recurrence runs in fp32 anyway
        qk = F.normalize(qkv[:, : 2 * h * kd].view(batch, 2 * h, kd), dim=-1, eps=L2_EPS)
        log_decay, beta = self._gates(decay_in[:, 0], beta_in[:, 0].float())
        out, cache.state = gated_delta_step(qk[:, :h], qk[:, h:], qkv[:, 2 * h * kd :].view(batch, h, vd), log_decay,
                                            beta, cache.state, scale=kd**-0.5)
        out = self.o_norm(out, gate.view(batch, h, vd))
        return project(self, out.view(batch, 1, h * vd), "o_proj")


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

    def new_cache(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> GDNCache:
        """Zero conv history and state: what the full forward assumes before step 0."""
        gdn = self.gdn
        return GDNCache(
            conv=torch.zeros(batch_size, gdn.conv_size - 1, gdn.conv_channels, device=device, dtype=dtype),
            state=torch.zeros(batch_size, gdn.n_heads, gdn.key_dim, gdn.value_dim, device=device,
                              dtype=torch.float32),
        )


def mixing_flops(config: ModelConfig) -> float:
    """Training FLOPs per delayed step of the gated delta rule's state updates and reads (beyond the matmul
    weights)."""
    return 18.0 * config.n_heads * config.gdn_key_dim * config.gdn_value_dim
