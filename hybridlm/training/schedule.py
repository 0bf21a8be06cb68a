"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr_ratio * lr` over a fixed horizon.

Why a fixed horizon (`train.decay_steps`) and not `train.steps`: a pilot run of 1,800 steps and a full run of
12,000 steps must take *the same* step s, so the pilot's checkpoints are exactly the full run's early checkpoints and
extending a run (`dvc exp run -S train.steps=12000`) continues it instead of starting a different one. After the
horizon the rate stays at the floor.
"""

from __future__ import annotations

import math


def learning_rate(step: int, *, lr: float, warmup_steps: int, decay_steps: int, min_lr_ratio: float) -> float:
    """Rate for optimizer update number ``step`` (0-based: the first update is step 0)."""
    if step < 0:
        raise ValueError(f"learning_rate: step must be >= 0, got {step}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    floor = lr * min_lr_ratio
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
