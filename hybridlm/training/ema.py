"""Exponential moving average of the weights, kept in fp32 beside the model.

Why: the averaged weights are smoother than the last iterate and usually give a lower validation loss; evaluate and
render use them. The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates so that a short run
(or the start of a long one) is not dominated by the random initial weights: with decay 0.999 and no warm-up, the
average after 40 steps would still be 96% initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


def with_averaged(weights: dict[str, torch.Tensor], shadow: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` (a state dict) with the averaged parameters ``shadow`` in place of its own: the one place EMA
    weights are merged (the in-training val loss, evaluate, render, `say` and the text-to-speech warm start).

    Why no cast here: ``load_state_dict`` copies each tensor into its parameter and casts there, once; a second cast
    on the way (as the warm start once made) is a place where the paths could round differently.
    """
    return {**weights, **shadow}


def ema_decay_at(updates: int, decay: float) -> float:
    """Effective decay for the update that follows ``updates`` earlier updates."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA:
    """Shadow copy of a model's floating-point parameters: ``shadow <- d * shadow + (1 - d) * param``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().to(torch.float32).clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - ema_decay_at(self.updates, self.decay)
        params = dict(model.named_parameters())
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach().float() for n in names], weight)
        self.updates += 1

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged weights in place of the parameters (buffers as they are)."""
        return with_averaged(model.state_dict(), self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model's parameters (differs at: {sorted(missing)[:5]})")
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.updates = int(state["updates"])
