"""`hybridlm say "Any sentence." --checkpoint PATH --out speech.wav`: one sentence read aloud by a text-to-speech
checkpoint, outside the pipeline.

Why a separate command: the gallery reads fixed prompts; a user wants to type their own. It uses the checkpoint's own
model config and text vocabulary (no params.yaml needed) and the codec its shards were made with; the WAV is
written atomically. The text is normalised as the training transcripts were (hybridlm.text.normalize: "1963" ->
"nineteen sixty-three", "$5" -> "five dollars"). Errors name what is wrong: a text with nothing to read after
normalisation (the message shows the normalised text), characters outside the vocabulary, a checkpoint without
text conditioning.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hybridlm.atomic import atomic_path
from hybridlm.config import resolve_device
from hybridlm.data.codec import load_codec
from hybridlm.model import config_from_dict
from hybridlm.training.checkpoint import ema_model, load_checkpoint
from hybridlm.training.gallery import write_wav
from hybridlm.training.sentences import checkpoint_vocab, encode_prompt


def say(text: str, checkpoint: Path, out: Path, *, cfg_scale: float = 3.0, seed: int = 0, temperature: float = 1.0,
        top_k: int = 250, max_seconds: float = 12.0, device: str = "auto") -> tuple[float, bool]:
    """Write ``text`` read by ``checkpoint`` to ``out``; returns (seconds, whether the model ended it with EOS)."""
    if temperature <= 0 or max_seconds <= 0 or cfg_scale < 0 or top_k < 1:
        raise ValueError(f"say: need --temperature > 0, --max-seconds > 0, --cfg-scale >= 0 and --top-k >= 1; got "
                         f"{temperature}, {max_seconds}, {cfg_scale}, {top_k}")
    state = load_checkpoint(checkpoint)
    vocab = checkpoint_vocab(state, checkpoint)
    ids = encode_prompt(vocab, text, "say")
    config = config_from_dict(state["model_config"])
    dev = resolve_device(device, "--device")
    model = ema_model(state, config, dev)
    meta = state["codec"]
    codec = load_codec(meta["hybridlm.weights"], meta["hybridlm.codec"], dev)
    frame_rate = int(meta["hybridlm.frame_rate"])
    generator = torch.Generator(dev).manual_seed(seed)
    codes, ended = model.speak(torch.tensor([ids], device=dev), max(1, round(max_seconds * frame_rate)), temperature,
                               top_k, generator, cfg_scale)
    audio = codec.decode(codes[0][None].to(dev)).cpu().numpy()[0]
    with atomic_path(out) as tmp:
        write_wav(tmp, audio, codec.sample_rate)
    return codes[0].shape[-1] / frame_rate, ended[0]
