"""The same model built from transformers' OlmoHybridModel: the outside yardstick of `hybridlm bench --model`.

Why a peer: a speed number alone says little; the same architecture from a maintained implementation, timed in the
same process on the same inputs, says whether our code is fast. The peer has our summed codebook embeddings (its
``embed_tokens`` holds the 8 tables, row q * vocab + id, exactly like ours) and our 8 stacked heads, and exposes
the same ``forward(tokens, heads=...)`` / ``heads`` / ``config`` interface as HybridLM, so the training step, the loss and the
optimizer are literally the same code for both. ``copy_weights`` loads a HybridLM's weights into it; the parity
test (tests/test_peer.py) then checks both give the same hidden states, which also pins our architecture to
transformers' definition.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from hybridlm.layers.registry import layer_kind
from hybridlm.model import HybridLM, ModelConfig


def _olmo_hybrid_config(config: ModelConfig):
    from transformers import OlmoHybridConfig

    kinds = [layer_kind(letter) for letter in config.schedule]
    missing = sorted({kind.letter for kind in kinds if kind.peer_type is None})
    if missing:
        raise ValueError(f"TransformersPeer: transformers' OlmoHybridModel has no layer of kind {', '.join(missing)} "
                         f"(schedule {config.schedule})")
    layer_types = [kind.peer_type for kind in kinds]
    return OlmoHybridConfig(
        vocab_size=config.num_codebooks * config.vocab_size, hidden_size=config.d_model,
        intermediate_size=config.d_ff, num_hidden_layers=len(layer_types), num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, layer_types=layer_types, linear_num_key_heads=config.n_heads,
        linear_num_value_heads=config.n_heads, linear_key_head_dim=config.gdn_key_dim,
        linear_value_head_dim=config.gdn_value_dim, linear_conv_kernel_dim=config.gdn_conv_size,
        linear_allow_neg_eigval=config.gdn_neg_eigval, rms_norm_eps=1e-6, hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta}, tie_word_embeddings=False,
        pad_token_id=None, bos_token_id=None, eos_token_id=None, attn_implementation="sdpa",
    )


class TransformersPeer(nn.Module):
    """transformers' OlmoHybridModel with our embeddings and heads around it (fp32 weights, train mode)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from transformers import OlmoHybridModel
        from transformers.utils import logging as hf_logging

        self.config = config
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity(logging.ERROR)  # its "falling back to the PyTorch implementation" notices
        try:
            self.backbone = OlmoHybridModel(_olmo_hybrid_config(config))
        finally:
            hf_logging.set_verbosity(verbosity)
        self.heads = nn.Linear(config.d_model, config.num_codebooks * config.vocab_size, bias=False)
        self.register_buffer("codebook_offsets", torch.arange(config.num_codebooks) * config.vocab_size,
                             persistent=False)

    def forward(self, tokens: torch.Tensor, *, heads: bool = True) -> torch.Tensor:
        """``tokens [B, n_q, S]`` -> logits ``[B, n_q, S, vocab]``, or with ``heads=False`` the final-normed hidden
        states ``[B, S, d]`` (as HybridLM.forward)."""
        embeds = self.backbone.embed_tokens(tokens + self.codebook_offsets[None, :, None]).sum(dim=1)
        hidden = self.backbone(inputs_embeds=embeds, use_cache=False).last_hidden_state
        if not heads:
            return hidden
        batch, steps, _ = hidden.shape
        return self.heads(hidden).view(batch, steps, self.config.num_codebooks, -1).transpose(1, 2)


def _name_map(model: HybridLM) -> dict[str, str]:
    """Our parameter name -> the peer's, for every parameter."""
    names = {"embed.weight": "backbone.embed_tokens.weight", "norm.weight": "backbone.norm.weight",
             "heads.weight": "heads.weight"}
    for i, (letter, layer) in enumerate(zip(model.config.schedule, model.layers)):
        ours, theirs = f"layers.{i}.", f"backbone.layers.{i}."
        parts = layer_kind(letter).peer_names
        for name, _ in layer.named_parameters():
            prefix = next(p for p in parts if name.startswith(p))
            names[ours + name] = theirs + parts[prefix] + name[len(prefix):]
    return names


@torch.no_grad()
def copy_weights(model: HybridLM, peer: TransformersPeer) -> None:
    """Load ``model``'s weights into ``peer`` (same config), so both compute the same function."""
    theirs = dict(peer.named_parameters())
    mapping = _name_map(model)
    if set(mapping.values()) != set(theirs):
        raise ValueError(f"copy_weights: parameter sets differ: {sorted(set(theirs) ^ set(mapping.values()))}")
    for name, param in model.named_parameters():
        theirs[mapping[name]].copy_(param)

