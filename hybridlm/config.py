"""The schema of every params.yaml section, in one place: ``SECTIONS`` maps each section name to its schema.

Why one module: the stages, the library code they call and the tests all read the same sections; keeping every
schema here (one ``<Section>Params`` pydantic dataclass per section made by ``params_section``, each key's range in
its type next to its default, see hybridlm/params.py) means a section is defined once and a misspelled section name (``tokenise:``) is caught by
:func:`load_params` before any stage runs. The one exception to the naming is ``model``, whose schema is
``hybridlm.model.ModelConfig``: the model is built from it, so it lives with the model and is imported only when a
stage asks for it (keeping torch out of the data stages).

One source of defaults: a schema's defaults are params.yaml's values (tests/test_params.py compares every key), and
sections that share a meaning share field *types* (``Seed``, ``Device``, ``Temperature``), never defaults. Adding a
key is one line here (``name: Type = default``, a comment saying what it means) plus its line in params.yaml.
Adding a section: write its class here, add it to ``SECTIONS``, add the section to params.yaml and list it under
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
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args

from pydantic import AfterValidator, Field, model_validator

from hybridlm.params import Float, Int, ParamError, Str, one_of, params_section, parse_section, read_params_file

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

CODEC_FRAME_RATE = 75  # EnCodec 24 kHz: 24,000 / 320; checked against the loaded codec by ChunkRule.from_seconds


# ------------------------------------------------------------------------------------------- shared field types
# A key's type carries its range; sections that share a meaning share the type, each with its own default.
def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        raise ValueError("must be auto, cpu, cuda or cuda:K (K = a GPU index)")
    return value


Device = Annotated[Str, AfterValidator(_device)]  # what resolve_device accepts
Precision = Literal["auto", "bf16", "fp32"]  # hybridlm/training/precision.py: bf16 autocast or fp32
PRECISIONS: tuple[str, ...] = get_args(Precision)
Positive = Annotated[Int, Field(ge=1)]
Count = Annotated[Int, Field(ge=0)]
def _seed(value: int) -> int:
    # torch.Generator.manual_seed takes [-2^63, 2^64 - 1]; numpy's default_rng any non-negative integer.
    if not 0 <= value <= 2**64 - 1:
        raise ValueError("must be in 0 .. 2^64 - 1 (18446744073709551615), the seeds torch's generators take")
    return value


Seed = Annotated[Int, AfterValidator(_seed)]
Fraction = Annotated[Float, Field(ge=0.0, lt=1.0)]  # a probability or share that cannot be all
PositiveFloat = Annotated[Float, Field(gt=0.0)]
Steps = list[Positive]  # checkpoint steps to keep or read; [] = every checkpoint where a stage reads them
# Sampling. Below 1e-3 a temperature divides logits past float32's range (then NaN probabilities); above 100 the
# draw is uniform noise. A guidance scale above 100 overflows the same way; 1 = plain conditional, 0 = no text.
Temperature = Annotated[Float, Field(ge=1e-3, le=100.0)]
CfgScale = Annotated[Float, Field(ge=0.0, le=100.0)]
TopK = Positive  # >= the codebook size = the full distribution
# Length of sampled audio: LJ Speech's longest clip is 10.1 s and the decoder's context ~13.5 s; 60 s is far past
# anything the models learned, and keeps the sampler's buffers small (1e9 s would allocate terabytes).
MAX_SAMPLE_SECONDS = 60.0
SampleSeconds = Annotated[Float, Field(gt=0.0, le=MAX_SAMPLE_SECONDS)]


# ---------------------------------------------------------------------------------------------------------------- data
def _sha256(value: str) -> str:
    if value and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError('must be 64 hex digits or ""')
    return value


@params_section("data.synthetic")
class SyntheticParams:
    """``data.synthetic``: size and shape of the generated corpus (used only when ``data.source`` is synthetic)."""

    clips: Annotated[Int, Field(ge=1, le=100_000)] = 40
    seed: Seed = 0
    # >= 0.5 s: room for the leading silence and a word of the text-driven audio (hybridlm/data/synthetic.py)
    min_seconds: Annotated[Float, Field(ge=0.5, le=60.0)] = 1.2
    max_seconds: Annotated[Float, Field(ge=0.5, le=60.0)] = 10.1
    # Clips 0, n, 2n, ... are long ones, 8.1-9.5 s: the unconditional path's 8 s chunking needs some. 0 = none.
    long_every: Count = 3

    @model_validator(mode="after")
    def _lengths(self) -> SyntheticParams:
        if self.max_seconds < self.min_seconds:
            raise ParamError(
                f"params.yaml: 'data.synthetic.max_seconds' ({self.max_seconds}) must be >= "
                f"'data.synthetic.min_seconds' ({self.min_seconds})"
            )
        return self


@params_section("data")
class DataParams:
    """``data``: where the corpus comes from, the archive's SHA-256 ("" = unchecked), the synthetic corpus' shape."""

    source: Annotated[Str, Field(min_length=1)] = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
    sha256: Annotated[Str, AfterValidator(_sha256)] = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)


SampleRate = Annotated[Int, Field(ge=8_000, le=192_000)]


@params_section("resample")
class ResampleParams:
    """``resample``: target rate, what the inputs must be, resampler quality, and the bad-file policy."""

    sample_rate: SampleRate = 24_000
    source_sample_rate: SampleRate = 22_050
    quality: Literal["HQ", "VHQ"] = "VHQ"
    on_bad_file: Literal["fail", "skip"] = "fail"


@params_section("tokenize")
class TokenizeParams:
    """``tokenize``: codec weights and bandwidth, the chunk rule, shard size. No batch size: chunks are encoded one
    at a time so that their codes cannot depend on it (hybridlm.data.codec.encode_pieces says why)."""

    weights: Literal["pretrained", "random"] = "pretrained"
    model_id: Annotated[Str, Field(min_length=1)] = "facebook/encodec_24khz"
    bandwidth: Annotated[Float, one_of(1.5, 3.0, 6.0, 12.0, 24.0)] = 6.0
    chunk_seconds: Annotated[Float, Field(gt=0.0, le=3600.0)] = 8.0
    min_tail_seconds: Annotated[Float, Field(ge=0.0)] = 2.0
    shard_chunks: Positive = 2000

    @model_validator(mode="after")
    def _chunks(self) -> TokenizeParams:
        frames = self.chunk_seconds * CODEC_FRAME_RATE
        if abs(frames - round(frames)) > 1e-6:
            raise ParamError(f"params.yaml: 'tokenize.chunk_seconds' ({self.chunk_seconds}) must be a whole number of "
                             f"EnCodec frames (1/{CODEC_FRAME_RATE} s), e.g. 8.0 = 600 frames")
        if self.min_tail_seconds > self.chunk_seconds:
            raise ParamError(f"params.yaml: 'tokenize.min_tail_seconds' ({self.min_tail_seconds}) must be <= "
                             f"'tokenize.chunk_seconds' ({self.chunk_seconds})")
        return self


@params_section("split")
class SplitParams:
    """``split``: fraction of clips held out for validation, the seed of the draw, rows per output shard."""

    val_fraction: Fraction = 0.05
    seed: Seed = 1234
    shard_chunks: Positive = 2000


@params_section("sentences")
class SentencesParams:
    """``sentences``: one row per clip for text-conditioned training (hybridlm/data/sentences.py).

    ``max_frames`` 1014 = a 1024-step context less the 8-step delay, BOS and EOS; LJ Speech's longest clip is 758
    frames (10.1 s). A longer clip fails the stage or, with ``on_too_long: skip``, is left out and counted."""

    max_frames: Positive = 1014
    on_too_long: Literal["fail", "skip"] = "fail"
    shard_rows: Positive = 2000


@params_section("align")
class AlignParams:
    """``align``: the flat-start Viterbi aligner (hybridlm/data/aligner.py) that gives the text-to-speech model its
    frames per text id."""

    codebooks: Positive = 3  # codebooks 0..codebooks-1 make each id's emissions
    smoothing: PositiveFloat = 0.1  # add-k counts of each id's code categoricals
    max_rounds: Positive = 10  # Viterbi + refit rounds, if paths keep changing


# ------------------------------------------------------------------------------------------------------------ training
class TrainingRules:
    """What ``train`` and ``tts_train`` share beyond their field types: the rules between keys and the steps saved.
    Each section lists its own keys and defaults (params.yaml's values; tests/test_params.py compares them)."""

    @model_validator(mode="after")
    def _schedule(self) -> Any:
        key = self.SECTION  # type: ignore[attr-defined]  (params_section sets it)
        if self.decay_steps <= self.warmup_steps:
            raise ParamError(
                f"params.yaml: '{key}.decay_steps' ({self.decay_steps}) must be > '{key}.warmup_steps' "
                f"({self.warmup_steps}): the cosine decay runs from the end of warmup to decay_steps"
            )
        if len(set(self.save_steps)) != len(self.save_steps):
            raise ParamError(f"params.yaml: '{key}.save_steps' has duplicates: {list(self.save_steps)}")
        return self

    def checkpoint_steps(self) -> list[int]:
        """The steps this run saves: `save_steps` up to `steps`, plus `steps` itself."""
        return sorted({s for s in self.save_steps if s <= self.steps} | {self.steps})


Beta = Fraction  # AdamW's moment decays and the EMA decay: [0, 1)


@params_section("train")
class TrainParams(TrainingRules):
    """``train``: optimisation and checkpointing. Only the fields in hybridlm.training.checkpoint.TRAJECTORY_EXEMPT
    may change without restarting the trajectory: every other field shapes the weights at every step."""

    steps: Positive = 1800
    save_steps: Steps = Field(default_factory=lambda: [1800, 7400, 12000])
    batch_size: Positive = 24
    grad_accum: Positive = 1
    lr: PositiveFloat = 1e-3
    warmup_steps: Count = 200
    decay_steps: Positive = 12000
    min_lr_ratio: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.1
    weight_decay: Annotated[Float, Field(ge=0.0)] = 0.1
    beta1: Beta = 0.9
    beta2: Beta = 0.95
    grad_clip: PositiveFloat = 1.0
    ema_decay: Beta = 0.999
    eval_every: Positive = 200
    seed: Seed = 0
    device: Device = "auto"
    precision: Precision = "auto"
    # torchrun processes per node (hybridlm/training/distributed.py); batch_size stays the global batch
    nproc_per_node: Positive = 1


@params_section("evaluate")
class EvaluateParams:
    """``evaluate``: which checkpoints, the batch size in whole chunks, the device and precision."""

    batch_size: Positive = 16
    steps: Steps = Field(default_factory=list)  # [] = every checkpoint
    device: Device = "auto"
    # fp32 by default: the metrics then compare across machines and runs whatever precision each trained in.
    precision: Precision = "fp32"


@params_section("render")
class RenderParams:
    """``render``: which checkpoints, how many samples of how long, the sampling settings and seed, the device and
    precision."""

    steps: Steps = Field(default_factory=list)  # [] = every checkpoint
    samples: Positive = 3
    seconds: SampleSeconds = 8.0
    temperature: Temperature = 1.0
    top_k: TopK = 250
    seed: Seed = 0
    device: Device = "auto"
    precision: Precision = "auto"  # samples are random draws: bf16 noise is harmless


# ------------------------------------------------------------------------------------------------------ text-to-speech
@params_section("tts_train")
class TtsTrainParams(TrainingRules):
    """``tts_train``: the text-conditioned fine-tune. Every ``train`` key (same meaning and type, own values), plus
    the unconditional checkpoint it starts from, the text dropout that classifier-free guidance needs and the
    decoder input dropout that makes the model read (hybridlm.training.batching.hidden_frames)."""

    # train's keys first, in train's order: checkpoints pickle the section in field order (provenance), so the
    # order is part of their bytes.
    steps: Positive = 8000
    save_steps: Steps = Field(default_factory=lambda: [2000, 4000, 8000])
    batch_size: Positive = 24
    grad_accum: Positive = 1
    lr: PositiveFloat = 5e-4
    warmup_steps: Count = 200
    decay_steps: Positive = 8000
    min_lr_ratio: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.1
    weight_decay: Annotated[Float, Field(ge=0.0)] = 0.1
    beta1: Beta = 0.9
    beta2: Beta = 0.95
    grad_clip: PositiveFloat = 1.0
    ema_decay: Beta = 0.999
    eval_every: Positive = 500
    seed: Seed = 0
    device: Device = "auto"
    precision: Precision = "auto"
    nproc_per_node: Positive = 1
    # A checkpoint file of the unconditional run, or a folder of them (its latest step): its decoder weights (EMA)
    # are loaded, the text encoder and cross-attention start fresh. Read by dvc.yaml, which templates it into the
    # train_tts cmd (--init-from) and deps. No default: a pipeline path, which params.yaml (and so dvc.yaml) names.
    init_from: Annotated[Str, Field(min_length=1)] = Field(kw_only=True)
    text_dropout: Fraction = 0.1  # P(a training row loses its text)
    # P(a frame of the decoder's input is shown as PAD); the targets keep it. Against the copy-previous-frame shortcut.
    input_dropout: Fraction = 0.3


@params_section("tts_evaluate")
class TtsEvaluateParams:
    """``tts_evaluate``: like ``evaluate``, on the val sentences, with their text, without it and with a wrong text
    of the same shape (hybridlm.wrong_text), drawn from ``wrong_text_seed``."""

    batch_size: Positive = 16
    steps: Steps = Field(default_factory=list)  # [] = every TTS checkpoint
    device: Device = "auto"
    precision: Precision = "fp32"
    wrong_text_seed: Seed = 0


@params_section("tts_render")
class TtsRenderParams:
    """``tts_render``: what the text-to-speech gallery reads aloud and how it samples."""

    steps: Steps = Field(default_factory=list)  # [] = every TTS checkpoint
    # The first N val transcripts (held out): all are read and scored (duration r, EOS rate, reading error), the
    # first page_val_sentences of them (at most all) are shown on the page.
    val_sentences: Count = 32
    page_val_sentences: Count = 3
    texts: list[Str] = Field(default_factory=lambda: [
        "The prisoner was taken to the court on the following morning.",
        "Printing, in the only sense with which we are at present concerned, differs from most arts.",
    ])  # extra prompts, read by every checkpoint
    max_seconds: SampleSeconds = 12.0  # length guard when no EOS is sampled
    cfg_scale: CfgScale = 3.0  # classifier-free guidance; 1 = plain conditional
    temperature: Temperature = 1.0
    top_k: TopK = 250
    seed: Seed = 0
    device: Device = "auto"
    precision: Precision = "auto"

    @model_validator(mode="after")
    def _something_to_read(self) -> TtsRenderParams:
        if not self.val_sentences and not self.texts:
            raise ParamError("params.yaml: 'tts_render' has nothing to read: set 'tts_render.val_sentences' >= 1 or "
                             "list prompts in 'tts_render.texts'")
        empty = [i for i, t in enumerate(self.texts) if not t.strip()]
        if empty:
            raise ParamError(f"params.yaml: 'tts_render.texts[{empty[0]}]' is empty")
        return self


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
    """The schema of section ``name`` (importing it if it is registered lazily)."""
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
    """A :data:`Device` value -> a torch device: ``auto`` = cuda when available, else cpu. A malformed name, or
    cuda (``cuda:K``) without that GPU, is a parameter error naming ``key`` (``tokenize --device``,
    ``render.device``)."""
    import torch  # here, not at the top: the data stages validate params without importing torch

    try:
        _device(name)
    except ValueError as exc:
        raise ParamError(f"'{key}' {exc}, got {name!r}") from None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ParamError(f"'{key}' is {name} but there is no such CUDA device "
                             f"({torch.cuda.device_count()} available; use auto or cpu)")
    return torch.device(name)
