"""The weight initialisation every layer shares: N(0, INIT_STD) for every Linear and Embedding."""

from __future__ import annotations

from torch import nn

INIT_STD = 0.02  # every Linear and the embeddings start as N(0, 0.02)


def init_normal(module: nn.Module) -> None:
    """Every Linear and Embedding weight in ``module`` as N(0, INIT_STD), in module order."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.normal_(sub.weight, mean=0.0, std=INIT_STD)
