"""RMSNorm and the GDN layers' gated per-head output norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-6  # block and QK RMSNorms


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (bf16 sums of squares lose too much)."""

    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # evaluation, decoding: torch's one op, the same bits (tests/test_model.py)
            return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(x.dtype)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class GatedRMSNorm(RMSNorm):
    """Per-head output norm of the GDN layers: RMSNorm over the value dim, then times SiLU(gate)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (super().forward(x).float() * F.silu(gate.float())).to(x.dtype)
