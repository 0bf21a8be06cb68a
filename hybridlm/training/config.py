"""The `train:`, `evaluate:` and `render:` sections of params.yaml as validated dataclasses.

Why here and not in the stage modules: the training loop, the evaluator and the sampler are library code that tests
call directly, and they take these objects. Limits sit next to the defaults they guard (see hybridlm/params.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from hybridlm.params import ParamError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and checkpointing. Only `steps`, `save_steps` and `eval_every` may change without restarting
    the trajectory (see TRAJECTORY_EXEMPT): every other field shapes the weights at every step."""

    steps: int = field(default=1800, metadata={"min": 1})
    save_steps: list[int] = field(default_factory=lambda: [1800, 7400, 12000], metadata={"min": 1})
    batch_size: int = field(default=24, metadata={"min": 1})
    grad_accum: int = field(default=1, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"gt": 0})
    warmup_steps: int = field(default=200, metadata={"min": 0})
    decay_steps: int = field(default=12000, metadata={"min": 1})
    min_lr_ratio: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=0.1, metadata={"min": 0.0})
    beta1: float = field(default=0.9, metadata={"min": 0.0, "lt": 1.0})
    beta2: float = field(default=0.95, metadata={"min": 0.0, "lt": 1.0})
    grad_clip: float = field(default=1.0, metadata={"gt": 0})
    ema_decay: float = field(default=0.999, metadata={"min": 0.0, "lt": 1.0})
    eval_every: int = field(default=200, metadata={"min": 1})
    seed: int = field(default=0, metadata={"min": 0})
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        if self.decay_steps <= self.warmup_steps:
            raise ParamError(
                f"params.yaml: 'train.decay_steps' ({self.decay_steps}) must be > 'train.warmup_steps' "
                f"({self.warmup_steps}): the cosine decay runs from the end of warmup to decay_steps"
            )
        if len(set(self.save_steps)) != len(self.save_steps):
            raise ParamError(f"params.yaml: 'train.save_steps' has duplicates: {list(self.save_steps)}")

    def checkpoint_steps(self) -> list[int]:
        """The steps this run saves: `save_steps` up to `steps`, plus `steps` itself."""
        return sorted({s for s in self.save_steps if s <= self.steps} | {self.steps})


# Fields that only say how far to go and where to stop / log along the way: changing them continues the same run.
TRAJECTORY_EXEMPT = ("steps", "save_steps", "eval_every", "device")


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = field(default=16, metadata={"min": 1})
    steps: list[int] = field(default_factory=list, metadata={"min": 1})  # [] = every checkpoint
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class RenderConfig:
    steps: list[int] = field(default_factory=list, metadata={"min": 1})  # [] = every checkpoint
    samples: int = field(default=3, metadata={"min": 1})
    seconds: float = field(default=8.0, metadata={"gt": 0})
    temperature: float = field(default=1.0, metadata={"gt": 0})
    top_k: int = field(default=250, metadata={"min": 1})  # >= codebook_size = the full distribution
    seed: int = field(default=0, metadata={"min": 0})
    device: Literal["auto", "cpu", "cuda"] = "auto"


def trajectory_params(model: dict, train: TrainConfig, device_type: str) -> dict:
    """What shapes the weights at every step: the model section, the train section minus TRAJECTORY_EXEMPT, and
    the device type actually used (bf16 autocast on CUDA vs fp32 on CPU give different trajectories)."""
    kept = {k: v for k, v in dataclasses.asdict(train).items() if k not in TRAJECTORY_EXEMPT}
    return {"model": dict(model), "train": kept, "device_type": device_type}


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a parameter error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError(f"params.yaml: '{key}' is cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(name)
