"""The SwiGLU MLP of every block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridlm.layers.projection import project


class SwiGLU(nn.Module):
    """down(SiLU(gate(x)) * up(x)), no biases."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = project(self, x, "gate_proj", "up_proj").chunk(2, dim=-1)  # one GEMM
        return project(self, F.silu(gate) * up, "down_proj")
