"""`hybridlm say "Any sentence." --checkpoint PATH --out speech.wav`: one sentence read aloud by a text-to-speech
checkpoint, outside the pipeline.

Why a separate command: the gallery reads fixed prompts; a user wants to type their own. It uses the checkpoint's own
model config and text vocabulary (no params.yaml needed) and the codec its shards were made with; the WAV is
written atomically. The text is normalised as the training transcripts were (hybridlm.text.normalize: "1963" ->
"nineteen sixty-three", "$5" -> "five dollars"). Errors name what is wrong: a bad option (:class:`SayOptions`,
checked before the checkpoint is even read), a text with nothing to read after normalisation (the message shows the
normalised text), characters outside the vocabulary, a checkpoint without text conditioning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import torch
from pydantic import ValidationError, model_validator

from hybridlm.atomic import atomic_path
from hybridlm.config import MAX_SAMPLE_SECONDS, CfgScale, Device, SampleSeconds, Seed, Temperature, TopK, resolve_device
from hybridlm.data.codec import shard_codec
from hybridlm.model import config_from_dict
from hybridlm.params import SCHEMA_CONFIG, ParamError, phrase
from hybridlm.prompts import checkpoint_vocab, encode_prompt
from hybridlm.results.gallery import write_wav
from hybridlm.sampling import speak
from hybridlm.text import normalize
from hybridlm.training.checkpoint import ema_model, load_checkpoint

# The fastest reading in LJ Speech is 22.7 characters per second (LJ029-0167: 42 characters of normalised transcript
# in 1.85 s; the median of the 13,100 clips is 15.2), measured from ../shared/ljspeech-meta (durations.tsv, and the
# normalised column of metadata.csv). 25 is a generous upper bound: a text longer than 25 characters per second of
# --max-seconds cannot be read aloud within it by a model trained on LJ Speech, so it would be cut off.
MAX_CHARS_PER_SECOND = 25.0


@pydantic.dataclasses.dataclass(frozen=True, config=SCHEMA_CONFIG)
class SayOptions:
    """The options of `hybridlm say`, with the types (and so the ranges) of the tts_render keys they mirror."""

    text: str
    checkpoint: Path
    out: Path
    cfg_scale: CfgScale = 3.0
    seed: Seed = 0
    temperature: Temperature = 1.0
    top_k: TopK = 250
    max_seconds: SampleSeconds = 12.0
    device: Device = "auto"

    @model_validator(mode="after")
    def _fits(self) -> SayOptions:
        if self.out.is_dir():
            raise ParamError(f"say: --out {self.out} is a directory; give a file name (e.g. {self.out / 'speech.wav'})")
        above = next((p for p in self.out.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise ParamError(f"say: --out {self.out}: {above} is a file, so nothing can be written under it")
        chars = len(normalize(self.text))  # as LJ's normalised transcripts were counted
        needs = chars / MAX_CHARS_PER_SECOND
        if needs > self.max_seconds:
            fix = ("split it into shorter texts" if needs > MAX_SAMPLE_SECONDS
                   else f"raise --max-seconds to at least {needs:.1f} (at most {MAX_SAMPLE_SECONDS:g}) or split it")
            raise ParamError(f"say: the text has {chars} characters (normalised); even at {MAX_CHARS_PER_SECOND:g} characters per "
                             f"second (faster than any LJ Speech reading) it needs {needs:.1f} s, more than "
                             f"--max-seconds {self.max_seconds:g}: {fix}")
        return self


def check_options(**options: Any) -> SayOptions:
    """Validate `say`'s options; the error names the option (``--cfg-scale``) and what is wrong."""
    try:
        return pydantic.TypeAdapter(SayOptions).validate_python(options)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ParamError):
            raise cause from None
        option = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "say"
        raise ParamError(f"say: {option} {phrase(err)}") from None


def say(text: str, checkpoint: Path, out: Path, *, cfg_scale: float = 3.0, seed: int = 0, temperature: float = 1.0,
        top_k: int = 250, max_seconds: float = 12.0, device: str = "auto") -> tuple[float, bool]:
    """Write ``text`` read by ``checkpoint`` to ``out``; returns (seconds, whether the model ended it with EOS)."""
    opts = check_options(text=text, checkpoint=checkpoint, out=out, cfg_scale=cfg_scale, seed=seed,
                         temperature=temperature, top_k=top_k, max_seconds=max_seconds, device=device)
    dev = resolve_device(opts.device, "--device")
    state = load_checkpoint(opts.checkpoint)
    vocab = checkpoint_vocab(state, opts.checkpoint)
    ids = encode_prompt(vocab, opts.text, "say")
    config = config_from_dict(state["model_config"])
    model = ema_model(state, config, dev)
    codec = shard_codec(state["codec"], dev)
    frame_rate = int(state["codec"]["hybridlm.frame_rate"])
    generator = torch.Generator(dev).manual_seed(opts.seed)
    codes, ended = speak(model, torch.tensor([ids], device=dev), max(1, round(opts.max_seconds * frame_rate)),
                               opts.temperature, opts.top_k, generator, opts.cfg_scale)
    audio = codec.decode(codes[0][None].to(dev)).cpu().numpy()[0]
    with atomic_path(opts.out) as tmp:
        write_wav(tmp, audio, codec.sample_rate)
    return codes[0].shape[-1] / frame_rate, ended[0]
