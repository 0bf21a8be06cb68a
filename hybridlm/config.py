"""The schema of every params.yaml section, in one place: ``SECTIONS`` maps each section name to its dataclass.

Why one module: the stages, the library code they call and the tests all read the same sections; keeping every
schema here (one ``<Section>Params`` dataclass per section, limits next to the defaults they guard, see
hybridlm/params.py) means a section is defined once and a misspelled section name (``tokenise:``) is caught by
:func:`load_params` before any stage runs. The one exception to the naming is ``model``, whose schema is
``hybridlm.model.ModelConfig``: the model is built from it, so it lives with the model and is imported only when a
stage asks for it (keeping torch out of the data stages).

Adding a section: write its dataclass here, add it to ``SECTIONS``, add the section to params.yaml and list it under
the stage's ``params:`` in dvc.yaml. A stage reads it with ``section(params, "name")``. Schemas are named after the
section in CamelCase plus ``Params`` (``tts_train`` -> ``TtsTrainParams``), except the two model schemas, which the
model module defines (``model`` -> ModelConfig, ``tts_model`` -> TextConfig).

This module validates and nothing else (no torch at import time): it is one of the contract modules that
hybridlm/codegraph.py leaves out of the stages' code deps, so adding a section re-runs nothing.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from hybridlm.params import ParamError, parse_section, read_params_file

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

CODEC_FRAME_RATE = 75  # EnCodec 24 kHz: 24,000 / 320; checked against the loaded codec by ChunkRule.from_seconds


# ---------------------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SyntheticParams:
    """``data.synthetic``: size and shape of the generated corpus (used only when ``data.source`` is synthetic)."""

    clips: int = field(default=40, metadata={"min": 1, "max": 100_000})
    seed: int = field(default=0, metadata={"min": 0})
    # >= 0.5 s: room for the leading silence and a word of the text-driven audio (hybridlm/data/synthetic.py)
    min_seconds: float = field(default=1.2, metadata={"min": 0.5, "max": 60.0})
    max_seconds: float = field(default=10.1, metadata={"min": 0.5, "max": 60.0})
    # Clips 0, n, 2n, ... are long ones, 8.1-9.5 s: the unconditional path's 8 s chunking needs some. 0 = none.
    long_every: int = field(default=3, metadata={"min": 0})

    def __post_init__(self) -> None:
        if self.max_seconds < self.min_seconds:
            raise ParamError(
                f"params.yaml: 'data.synthetic.max_seconds' ({self.max_seconds}) must be >= "
                f"'data.synthetic.min_seconds' ({self.min_seconds})"
            )


@dataclass(frozen=True)
class DataParams:
    """``data``: where the corpus comes from, the archive's SHA-256 ("" = unchecked), the synthetic corpus' shape."""

    source: str = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
    sha256: str = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)

    def __post_init__(self) -> None:
        if not self.source:
            raise ParamError("params.yaml: 'data.source' must not be empty")
        if self.sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ParamError(f"params.yaml: 'data.sha256' must be 64 hex digits or \"\", got {self.sha256!r}")


@dataclass(frozen=True)
class ResampleParams:
    """``resample``: target rate, what the inputs must be, resampler quality, and the bad-file policy."""

    sample_rate: int = field(default=24_000, metadata={"min": 8_000, "max": 192_000})
    source_sample_rate: int = field(default=22_050, metadata={"min": 8_000, "max": 192_000})
    quality: Literal["HQ", "VHQ"] = "VHQ"
    on_bad_file: Literal["fail", "skip"] = "fail"


@dataclass(frozen=True)
class TokenizeParams:
    """``tokenize``: codec weights and bandwidth, the chunk rule, shard size. No batch size: chunks are encoded one
    at a time so that their codes cannot depend on it (hybridlm.data.codec.encode_pieces says why)."""

    weights: Literal["pretrained", "random"] = "pretrained"
    model_id: str = "facebook/encodec_24khz"
    bandwidth: float = field(default=6.0, metadata={"choices": [1.5, 3.0, 6.0, 12.0, 24.0]})
    chunk_seconds: float = field(default=8.0, metadata={"gt": 0.0})
    min_tail_seconds: float = field(default=2.0, metadata={"min": 0.0})
    shard_chunks: int = field(default=2000, metadata={"min": 1})

    def __post_init__(self) -> None:
        frames = self.chunk_seconds * CODEC_FRAME_RATE
        if abs(frames - round(frames)) > 1e-6:
            raise ParamError(f"params.yaml: 'tokenize.chunk_seconds' ({self.chunk_seconds}) must be a whole number of "
                             f"EnCodec frames (1/{CODEC_FRAME_RATE} s), e.g. 8.0 = 600 frames")
        if self.min_tail_seconds > self.chunk_seconds:
            raise ParamError(f"params.yaml: 'tokenize.min_tail_seconds' ({self.min_tail_seconds}) must be <= "
                             f"'tokenize.chunk_seconds' ({self.chunk_seconds})")


@dataclass(frozen=True)
class SplitParams:
    """``split``: fraction of clips held out for validation, the seed of the draw, rows per output shard."""

    val_fraction: float = field(default=0.05, metadata={"min": 0.0, "lt": 1.0})
    seed: int = field(default=1234, metadata={"min": 0})
    shard_chunks: int = field(default=2000, metadata={"min": 1})


@dataclass(frozen=True)
class SentencesParams:
    """``sentences``: one row per clip for text-conditioned training (hybridlm/data/sentences.py).

    ``max_frames`` 1014 = a 1024-step context less the 8-step delay, BOS and EOS; LJ Speech's longest clip is 758
    frames (10.1 s). A longer clip fails the stage or, with ``on_too_long: skip``, is left out and counted."""

    max_frames: int = field(default=1014, metadata={"min": 1})
    on_too_long: Literal["fail", "skip"] = "fail"
    shard_rows: int = field(default=2000, metadata={"min": 1})


@dataclass(frozen=True)
class AlignParams:
    """``align``: the flat-start Viterbi aligner (hybridlm/data/aligner.py) that gives the text-to-speech model its
    frames per text id."""

    codebooks: int = field(default=3, metadata={"min": 1})  # codebooks 0..codebooks-1 make each id's emissions
    smoothing: float = field(default=0.1, metadata={"gt": 0.0})  # add-k counts of each id's code categoricals
    max_rounds: int = field(default=10, metadata={"min": 1})  # Viterbi + refit rounds, if paths keep changing


# ------------------------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainParams:
    """``train``: optimisation and checkpointing. Only the fields in hybridlm.training.checkpoint.TRAJECTORY_EXEMPT
    may change without restarting the trajectory: every other field shapes the weights at every step."""

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
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # hybridlm/training/precision.py: bf16 autocast or fp32
    # torchrun processes per node (hybridlm/training/distributed.py); batch_size stays the global batch
    nproc_per_node: int = field(default=1, metadata={"min": 1})

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


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate``: which checkpoints, the batch size in whole chunks, the device and precision."""

    batch_size: int = field(default=16, metadata={"min": 1})
    steps: list[int] = field(default_factory=list, metadata={"min": 1})  # [] = every checkpoint
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # fp32 by default: the metrics then compare across machines and runs whatever precision each trained in.
    precision: Literal["auto", "bf16", "fp32"] = "fp32"


@dataclass(frozen=True)
class RenderParams:
    """``render``: which checkpoints, how many samples of how long, the sampling settings and seed, the device and
    precision."""

    steps: list[int] = field(default_factory=list, metadata={"min": 1})  # [] = every checkpoint
    samples: int = field(default=3, metadata={"min": 1})
    seconds: float = field(default=8.0, metadata={"gt": 0})
    temperature: float = field(default=1.0, metadata={"gt": 0})
    top_k: int = field(default=250, metadata={"min": 1})  # >= codebook_size = the full distribution
    seed: int = field(default=0, metadata={"min": 0})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # samples are random draws: bf16 noise is harmless


# ------------------------------------------------------------------------------------------------------ text-to-speech
@dataclass(frozen=True)
class TtsTrainParams(TrainParams):
    """``tts_train``: the text-conditioned fine-tune. Every ``train`` key (same meaning, own values), plus the
    unconditional checkpoint it starts from, the text dropout that classifier-free guidance needs and the
    guided-attention penalty that teaches the cross-attention where to read."""

    # A checkpoint file of the unconditional run, or a folder of them (its latest step): its decoder weights (EMA)
    # are loaded, the text encoder and cross-attention start fresh. Read by dvc.yaml, which templates it into the
    # train_tts cmd (--init-from) and deps; set in params.yaml.
    init_from: str = ""
    text_dropout: float = field(default=0.1, metadata={"min": 0.0, "lt": 1.0})  # P(a training row loses its text)
    # Weight of the guided-attention penalty (training/guided_attention.py: cross-attention mass off the text-audio
    # diagonal), 0 = off; and its width g, as a fraction of the text and of the audio.
    guided_attention: float = field(default=1.0, metadata={"min": 0.0})
    guided_attention_width: float = field(default=0.2, metadata={"gt": 0.0})


@dataclass(frozen=True)
class TtsEvaluateParams(EvaluateParams):
    """``tts_evaluate``: like ``evaluate``, on the val sentences, with and without their text."""


@dataclass(frozen=True)
class TtsRenderParams:
    """``tts_render``: what the text-to-speech gallery reads aloud and how it samples."""

    steps: list[int] = field(default_factory=list, metadata={"min": 1})  # [] = every TTS checkpoint
    val_sentences: int = field(default=3, metadata={"min": 0})  # the first N val transcripts (held out)
    texts: list[str] = field(default_factory=list)  # extra prompts, read by every checkpoint
    max_seconds: float = field(default=12.0, metadata={"gt": 0})  # length guard when no EOS is sampled
    cfg_scale: float = field(default=3.0, metadata={"min": 0.0})  # classifier-free guidance; 1 = plain conditional
    temperature: float = field(default=1.0, metadata={"gt": 0})
    top_k: int = field(default=250, metadata={"min": 1})
    seed: int = field(default=0, metadata={"min": 0})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def __post_init__(self) -> None:
        if not self.val_sentences and not self.texts:
            raise ParamError("params.yaml: 'tts_render' has nothing to read: set 'tts_render.val_sentences' >= 1 or "
                             "list prompts in 'tts_render.texts'")
        empty = [i for i, t in enumerate(self.texts) if not t.strip()]
        if empty:
            raise ParamError(f"params.yaml: 'tts_render.texts[{empty[0]}]' is empty")


# ------------------------------------------------------------------------------------------------------------ registry
# Section name -> schema: a dataclass, or "module:Class" for a schema imported only when that section is read.
SECTIONS: dict[str, type | str] = {
    "data": DataParams,
    "resample": ResampleParams,
    "tokenize": TokenizeParams,
    "split": SplitParams,
    "sentences": SentencesParams,
    "align": AlignParams,
    "model": "hybridlm.model:ModelConfig",
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "render": RenderParams,
    # The text-to-speech stages (train_tts, evaluate_tts, render_tts): model + tts_model (hybridlm.model.with_text).
    "tts_model": "hybridlm.model:TextConfig",
    "tts_train": TtsTrainParams,
    "tts_evaluate": TtsEvaluateParams,
    "tts_render": TtsRenderParams,
}


def schema(name: str) -> type:
    """The dataclass of section ``name`` (importing it if it is registered lazily)."""
    if name not in SECTIONS:
        raise ParamError(f"params.yaml: unknown section '{name}' (known sections: {', '.join(SECTIONS)})")
    entry = SECTIONS[name]
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        return getattr(importlib.import_module(module), cls)
    return entry


def section(params: dict[str, Any], name: str) -> Any:
    """The validated section ``name`` of a loaded params file: ``section(params, "train")`` -> TrainParams."""
    return parse_section(schema(name), params, name)


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    """Read a params file and refuse sections that no stage reads, naming them (with the closest known name)."""
    params = read_params_file(path)
    for name in params:
        if name not in SECTIONS:
            close = difflib.get_close_matches(str(name), list(SECTIONS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ParamError(f"{path}: unknown section '{name}'{hint} (known sections: {', '.join(SECTIONS)})")
    return params


def resolve_device(name: str, key: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a parameter error naming ``key``."""
    import torch  # here, not at the top: the data stages validate params without importing torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError(f"params.yaml: '{key}' is cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(name)
