"""RMSNorm and the GDN layers' gated per-head output norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-6  # block and QK RMSNorms


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., D]`` RMS-normalised over D in fp32 (bf16 sums of squares lose too much), times ``weight [D]``, in
    ``x``'s dtype; with ``gate`` then times ``silu(gate)``.

    Under autograd the composed ops, differentiated by autograd. A hand-written fused backward was measured 1-6%
    faster per bf16 training step and as close to fp64 gradients, but it changed the training step's rounding and
    with it the demo's sampled readings (reading error 0.20 -> 0.78): docs/performance.md. Without gradients
    (evaluation, decoding) torch's one-op ``F.rms_norm``: the same bits (tests/test_model.py), fewer ops for a decode
    step, and no casts when the input is already fp32.
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    if torch.is_grad_enabled():
        xc = x.to(compute)
        out = (xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute)).to(x.dtype)
    elif x.dtype == weight.dtype == compute:
        out = F.rms_norm(x, weight.shape, weight, eps)
    else:
        out = F.rms_norm(x.to(compute), weight.shape, weight.to(compute), eps).to(x.dtype)
    return out if gate is None else (out.to(compute) * F.silu(gate.to(compute))).to(x.dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * weight (:func:`rms_norm`)."""

    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(RMSNorm):
    """Per-head output norm of the GDN layers: RMSNorm over the value dim, then times SiLU(gate)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return rms_norm(x, self.weight, self.eps, gate)
