"""The trained checkpoints as the stages after training open them: one prelude for evaluate, evaluate_tts, render
and render_tts.

Why one: each of those stages used to resolve its device and precision, select and check its checkpoints and merge
the EMA weights on its own, and the copies drifted (the EMA weights were merged in two ways; the curves came from
the last saved checkpoint on one page and from the last selected one on the other). Here, once: the device and
precision resolved and named by their params key (``render.device``), every selected checkpoint validated before
any work (a foreign or corrupt file found late wastes all the work before it), the EMA weights by
:func:`hybridlm.training.checkpoint.ema_model` (the one merge, hybridlm.training.ema.with_averaged). The codec
that decodes them is hybridlm.data.codec.shard_codec, always deterministic.

Which history the curves come from, one rule for both results pages: the last *saved* checkpoint's, whatever
``steps`` selects. Every checkpoint stores the logged history up to its step, so the last saved one holds the whole
run; a selection that skips it would otherwise draw a truncated run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from hybridlm.config import resolve_device
from hybridlm.model import HybridLM, ModelConfig
from hybridlm.training.checkpoint import (ema_model, list_checkpoints, load_checkpoint, select_checkpoints,
                                         validate_checkpoints)
from hybridlm.training.precision import resolve_precision


class CheckpointOptions(Protocol):
    """The keys every stage after training reads from its params section (render, tts_evaluate, ...)."""

    device: str
    precision: str
    steps: list[int]


@dataclass(frozen=True)
class Trained:
    """The selected, validated checkpoints of one run, with the device and precision to use them in."""

    config: ModelConfig
    folder: Path
    checkpoints: dict[int, Path]  # {step: path}, in step order
    device: torch.device
    precision: str  # resolved: bf16 or fp32

    def models(self) -> Iterator[tuple[int, dict[str, Any], HybridLM]]:
        """``(step, checkpoint state, EMA model in eval mode on the device)`` for each selected checkpoint."""
        for step, path in self.checkpoints.items():
            state = load_checkpoint(path)
            yield step, state, ema_model(state, self.config, self.device)

    def history(self) -> list[dict[str, float]]:
        """The whole run's logged history: the last saved checkpoint's (see the module docstring)."""
        saved = list_checkpoints(self.folder)
        return load_checkpoint(saved[max(saved)])["history"]


def open_trained(folder: Path, config: ModelConfig, cfg: CheckpointOptions, key: str,
                 data_hash: str | None = None) -> Trained:
    """The checkpoints of ``cfg.steps`` (all when empty) in ``folder``, each checked to hold ``config`` (and, given
    ``data_hash``, to be trained on that data); errors name ``key``'s params (``key.device``, ``key.steps``) or the
    checkpoint file."""
    device = resolve_device(cfg.device, f"{key}.device")
    precision = resolve_precision(cfg.precision, device, f"{key}.precision")
    selected = select_checkpoints(folder, cfg.steps, f"{key}.steps")
    validate_checkpoints(selected, dataclasses.asdict(config), data_hash)
    return Trained(config, Path(folder), selected, device, precision)
