"""The one registry of layer kinds: which ``model.schedule`` letter builds which block, and what the rest of the
project needs to know about that kind.

Everything that depends on the kind of a layer reads it from here: the config's schedule check, HybridLM's layer
stack and decoding caches, `hybridlm info`, the FLOPs of `hybridlm bench --model`, the transformers peer's layer
types and parameter names, and the training start-up's kernel check. Adding a kind (say a sliding-window attention
or a Mamba-2 block) is its module plus one :func:`register` call; tests/test_layer_registry.py does it with a toy
kind.

A block is built as ``block(config)`` from the ModelConfig, runs as ``forward(x [B, S, d], offset, cache)`` (offset:
the steps already consumed; cache: its own decoding cache or None) and makes that cache with
``new_cache(batch_size, device, dtype)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from hybridlm.layers import attention, gated_deltanet

if TYPE_CHECKING:
    from hybridlm.model import ModelConfig


@dataclass(frozen=True)
class LayerKind:
    """One kind of decoder layer."""

    letter: str  # its letter in model.schedule
    name: str  # ModelConfig.layer_types' word for it
    display: str  # how `hybridlm info` and error messages name it
    block: type[nn.Module]
    # Training FLOPs per delayed step beyond its weight matrices (the FLOPs/MFU of `hybridlm bench --model`).
    mixing_flops: Callable[[ModelConfig], float]
    # A config rule of this kind beyond the field limits: the error (without the "params.yaml: " prefix) or None.
    check_config: Callable[[ModelConfig], str | None] = lambda config: None
    uses_gdn_kernel: bool = False  # training checks the Gated DeltaNet kernel backend at start-up
    # transformers' OlmoHybrid layer type for the benchmark peer (None: the peer cannot build this kind), and our
    # block's parameter-name prefixes -> the peer's (under backbone.layers.<i>.).
    peer_type: str | None = None
    peer_names: dict[str, str] = field(default_factory=dict)


LAYER_KINDS: dict[str, LayerKind] = {}


def register(kind: LayerKind) -> LayerKind:
    """Make ``kind`` usable in ``model.schedule``; its letter must be one upper-case letter not yet taken."""
    if len(kind.letter) != 1 or not kind.letter.isupper() or kind.letter in LAYER_KINDS:
        raise ValueError(f"register: layer kind letter {kind.letter!r} must be one upper-case letter not already "
                         f"registered ({', '.join(LAYER_KINDS)})")
    LAYER_KINDS[kind.letter] = kind
    return kind


def unregister(letter: str) -> None:
    """Remove the kind registered under ``letter`` (a test's toy kind, after the test)."""
    del LAYER_KINDS[letter]


def layer_kind(letter: str) -> LayerKind:
    """The kind registered under ``letter``."""
    return LAYER_KINDS[letter]


def describe() -> str:
    """The registered letters in words, e.g. "L (Gated DeltaNet) and A (attention)"."""
    named = [f"{kind.letter} ({kind.display})" for kind in LAYER_KINDS.values()]
    return named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"


register(LayerKind(
    letter="L", name="gdn", display="Gated DeltaNet", block=gated_deltanet.GDNBlock,
    mixing_flops=gated_deltanet.mixing_flops, uses_gdn_kernel=True, peer_type="linear_attention",
    peer_names={"gdn_norm.": "input_layernorm.", "gdn.conv.": "linear_attn.conv1d.", "gdn.": "linear_attn.",
                "mlp_norm.": "post_attention_layernorm.", "mlp.": "mlp."},
))
register(LayerKind(
    letter="A", name="attention", display="attention", block=attention.AttentionBlock,
    mixing_flops=attention.mixing_flops, check_config=attention.check_config, peer_type="full_attention",
    peer_names={"attn_norm.": "post_attention_layernorm.", "attn.": "self_attn.",
                "mlp_norm.": "post_feedforward_layernorm.", "mlp.": "mlp."},
))
