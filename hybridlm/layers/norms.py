"""RMSNorm and the GDN layers' gated per-head output norm."""

from __future__ import annotations

import torch
from torch import nn

from hybridlm.ops.norms import rms_norm

NORM_EPS = 1e-6  # block and QK RMSNorms


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (bf16 sums of squares lose too much); hybridlm.ops.norms has the
    autograd function (a hand-written backward) and its reference."""

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
