"""`hybridlm info`: print the layer schedule and the parameter count of params.yaml's `model:` section, and what the
text-to-speech stages add to it (`tts_model:`).

Why: a `-S model.schedule=AAAAAAAA` comparison is only fair at a known parameter budget; this shows the budget
before any training starts. The model is built on the meta device, so no memory is allocated and no init runs.
"""

from __future__ import annotations

import torch

from hybridlm.config import section
from hybridlm.layers.registry import LAYER_KINDS, layer_kind
from hybridlm.model import HybridLM, with_text


def run(params: dict) -> None:
    """Print the model's layer schedule and parameter count for params.yaml's `model:` section."""
    config = section(params, "model")
    with torch.device("meta"):
        model = HybridLM(config)
    counts = model.parameter_counts()
    total = model.num_parameters()
    per_kind = ", ".join(f"{config.schedule.count(k.letter)} {k.display}" for k in LAYER_KINDS.values())
    letters = ", ".join(f"{k.letter} = {k.display}" for k in LAYER_KINDS.values())
    print(f"schedule: {' '.join(config.schedule)}  ({len(config.schedule)} layers: {per_kind}; {letters})")
    print(f"d_model {config.d_model}, d_ff {config.d_ff}, heads {config.n_heads} (kv {config.n_kv_heads}), "
          f"GDN head dims {config.gdn_key_dim}/{config.gdn_value_dim}, {config.num_codebooks} codebooks x "
          f"vocab {config.vocab_size}, GDN backend {config.gdn_backend}")
    labels = {name: (f"{name[:-1]}, {layer_kind(name[-2]).display})" if name.startswith("layer ") else name)
              for name in counts}
    width = max(len(label) for label in labels.values()) + 4
    for name, count in counts.items():
        print(f"  {labels[name]:<{width}}{count:>12,}")
    print(f"  {'total':<{width}}{total:>12,}  ({total / 1e6:.1f}M)")
    if "tts_model" in params:
        with torch.device("meta"):
            tts = HybridLM(with_text(config, section(params, "tts_model")))
        text = tts.config.text
        print(f"text-to-speech model (tts_model): text encoder {text.layers} layers at d {text.d_model} "
              f"({text.n_heads} heads, vocab {text.vocab_size}), pointer cross-attention ({text.pointer_early} frames "
              f"early) after "
              f"decoder layers {', '.join(map(str, tts.config.cross_layers))}")
        for name, count in tts.parameter_counts().items():
            if name not in counts:
                print(f"  {name:<{width}}{count:>12,}")
        added = tts.num_parameters() - total
        print(f"  {'added':<{width}}{added:>12,}  -> {tts.num_parameters():,} ({tts.num_parameters() / 1e6:.1f}M)")
