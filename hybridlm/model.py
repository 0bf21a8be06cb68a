"""The hybrid Gated DeltaNet + attention language model over EnCodec codes (OLMo-hybrid layer definitions).

Read top to bottom: config -> cache -> model (embeddings, forward) -> optimizer helpers. The layers it
composes live in hybridlm.layers (attention, Gated DeltaNet, MLP and norms, text encoder, cross-attention; which
schedule letter builds which: hybridlm.layers.registry); sampling from it lives in hybridlm.sampling.

Why a hybrid: Gated DeltaNet (GDN) layers keep a fixed-size K x V state per head, so decoding costs O(1) per step
and training is linear in length; a few softmax-attention layers (every 4th, and the last) restore exact recall.
Defaults (params.yaml ``model:``) reproduce the reference run: ``L L L A L L L A``, d_model 384, 21,905,416
parameters.

Token layout: ``tokens[b, q, s]`` is the delayed sequence of :mod:`hybridlm.delay` (8 codebooks x steps, ids
0..1023 codes, 1024 PAD, 1025 BOS, 1026 EOS). The input at step s is the *sum* of 8 per-codebook embeddings; each
codebook has its own 1027-way output head; ``logits[b, q, s]`` predicts ``tokens[b, q, s + 1]``.

Text conditioning (``config.text.layers > 0``, the text-to-speech stages): a small bidirectional text encoder over
character ids, a duration predictor on its states, and after the decoder layers in ``text.cross_attention_layers`` a
gated cross-attention that reads through a hard monotonic pointer: at each step it sees exactly one text id, the one
sounding ``text.pointer_early`` frames ahead (from the aligner's frames per id in training, from the duration
predictor when sampling), or an "end of text" state once the text is over. The cross-attention output projections
start at 0, so a freshly built conditioned model computes exactly what the same decoder computes without text,
which is what lets it start from an unconditional checkpoint (warm start) and what classifier-free guidance uses as
its "no text" branch: an empty (all-pad) text row switches the cross-attention off for that row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch import nn

from hybridlm.delay import NUM_SPECIAL
from hybridlm.layers.cross_attention import CrossAttention, CrossCache, pointer_weights, text_pointer
from hybridlm.layers.init import init_normal
from hybridlm.layers.projection import project
from hybridlm.layers.norms import RMSNorm
from hybridlm.layers.registry import LAYER_KINDS, describe, layer_kind
from hybridlm.layers.text_encoder import TextEncoder
from hybridlm.params import Bool, Float, Int, ParamError, Str, params_section, parse_section



# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------
TEXT_PARTS = ("text_encoder.", "cross_attention.")  # state-dict prefixes of the text-conditioning weights


@params_section("tts_model")
class TextConfig:
    """Text conditioning (params.yaml ``tts_model:``, ``ModelConfig.text``). ``layers: 0`` = none: the model is
    then the unconditional model, parameter for parameter (:data:`NO_TEXT`, the ``model:`` default)."""

    layers: Annotated[Int, Field(ge=0)] = 4  # text encoder blocks; 0 = no text conditioning
    d_model: Annotated[Int, Field(ge=1)] = 256  # text encoder width
    n_heads: Annotated[Int, Field(ge=1)] = 4  # text encoder self-attention heads
    d_ff: Annotated[Int, Field(ge=1)] = 1024
    vocab_size: Annotated[Int, Field(ge=3)] = 64  # text ids < this (pad 0, unk 1, characters)
    # The pointer shows the text id sounding this many frames ahead: onsets are where the text is needed, and a
    # codec's codes change a few frames after the sound does.
    pointer_early: Annotated[Int, Field(ge=0)] = 2
    frontend: Literal["chars", "phonemes"] = "chars"  # text units: characters, or espeak-ng IPA (hybridlm.text)
    # Decoder layers (0-based) followed by a cross-attention into the text; null = the attention (A) layers.
    cross_attention_layers: list[Annotated[Int, Field(ge=0)]] | None = None

    @model_validator(mode="after")
    def _heads(self) -> TextConfig:
        if self.d_model % self.n_heads:
            raise ParamError(f"params.yaml: 'tts_model.d_model' ({self.d_model}) must be divisible by "
                             f"'tts_model.n_heads' ({self.n_heads})")
        return self


NO_TEXT = TextConfig(layers=0)  # the unconditional model's text section (checkpoints store it as it is)


@params_section("model")
class ModelConfig:
    """params.yaml ``model:``. Field limits live in the types; rules between keys in ``_check``."""

    schedule: Str = "LLLALLLA"  # one letter per layer (hybridlm.layers.registry): L = Gated DeltaNet, A = attention
    d_model: Annotated[Int, Field(ge=1)] = 384
    d_ff: Annotated[Int, Field(ge=1)] = 1024
    n_heads: Annotated[Int, Field(ge=1)] = 6  # attention query heads; also the GDN head count
    n_kv_heads: Annotated[Int, Field(ge=1)] = 2
    gdn_key_dim: Annotated[Int, Field(ge=1)] = 48
    gdn_value_dim: Annotated[Int, Field(ge=1)] = 96
    gdn_conv_size: Annotated[Int, Field(ge=1)] = 4
    gdn_neg_eigval: Bool = True  # beta in (0, 2) instead of (0, 1): lets the state transition flip signs
    gdn_backend: Literal["auto", "fla_chunk", "torch_chunk", "torch_recurrent"] = "auto"
    rope_theta: Annotated[Float, Field(gt=0)] = 10000.0
    num_codebooks: Annotated[Int, Field(ge=1)] = 8
    codebook_size: Annotated[Int, Field(ge=1)] = 1024
    context: Annotated[Int, Field(ge=2)] = 1024  # delayed steps per training row
    text: TextConfig = NO_TEXT  # set from tts_model: by the text-to-speech stages

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not self.schedule or not set(self.schedule) <= set(LAYER_KINDS):
            raise ParamError(
                f"params.yaml: 'model.schedule' must be a non-empty string of {describe()} letters, one "
                f"per layer, got {self.schedule!r}"
            )
        if self.d_model % self.n_heads:
            raise ParamError(
                f"params.yaml: 'model.d_model' ({self.d_model}) must be divisible by 'model.n_heads' ({self.n_heads})"
            )
        if self.n_heads % self.n_kv_heads:
            raise ParamError(
                f"params.yaml: 'model.n_heads' ({self.n_heads}) must be divisible by 'model.n_kv_heads' "
                f"({self.n_kv_heads})"
            )
        for letter in dict.fromkeys(self.schedule):  # each kind's own rules
            if (error := layer_kind(letter).check_config(self)) is not None:
                raise ParamError(f"params.yaml: {error}")
        if self.context <= self.num_codebooks:
            raise ParamError(
                f"params.yaml: 'model.context' ({self.context}) must exceed 'model.num_codebooks' "
                f"({self.num_codebooks}) so that a training row holds at least one frame"
            )
        if self.text.layers:
            self._check_text()
        return self

    def _check_text(self) -> None:
        text, section = self.text, "tts_model"
        listed = text.cross_attention_layers
        if listed is not None:
            bad = [i for i in listed if not 0 <= i < len(self.schedule)]
            if not listed or bad or len(set(listed)) != len(listed):
                raise ParamError(
                    f"params.yaml: '{section}.cross_attention_layers' must be distinct decoder layer indices in "
                    f"[0, {len(self.schedule) - 1}] (schedule {self.schedule}), or null for the attention layers; "
                    f"got {listed}"
                )

    @property
    def cross_layers(self) -> tuple[int, ...]:
        """Decoder layers followed by a cross-attention: the listed ones, else the attention layers (the last layer
        when the schedule has none); () without text conditioning."""
        if not self.text.layers:
            return ()
        if self.text.cross_attention_layers is not None:
            return tuple(sorted(self.text.cross_attention_layers))
        attention = tuple(i for i, kind in enumerate(self.layer_types) if kind == "attention")
        return attention or (len(self.schedule) - 1,)

    @property
    def layer_types(self) -> tuple[str, ...]:
        """Each layer's kind by name (``"gdn"``, ``"attention"``, ...: hybridlm.layers.registry), from the schedule."""
        return tuple(layer_kind(c).name for c in self.schedule)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + NUM_SPECIAL


def with_text(config: ModelConfig, text: TextConfig) -> ModelConfig:
    """The text-to-speech model: the ``model:`` decoder plus the ``tts_model:`` section, which must enable text."""
    if not text.layers:
        raise ParamError("params.yaml: 'tts_model.layers' must be >= 1 for the text-to-speech stages (0 would "
                         "train a model that ignores the text)")
    return dataclasses.replace(config, text=text)


def config_from_dict(raw: dict) -> ModelConfig:
    """A ModelConfig from its ``dataclasses.asdict`` form (as checkpoints store it), nested text section included."""
    return parse_section(ModelConfig, {"model": raw}, "model")


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ModelCache:
    """Per-layer caches (each block's own, from its ``new_cache``) for ``batch_size`` rows, plus the number of steps
    already consumed (the RoPE offset). ``forward`` updates it. ``cross`` holds the text values per cross-attention
    layer (empty: no text), ``ends [B, text_len]`` the frame at which each text id ends (the pointer's path)."""

    layers: list
    batch_size: int
    length: int = 0
    cross: dict[int, CrossCache] = field(default_factory=dict)
    ends: torch.Tensor | None = None


class Readout(NamedTuple):
    """What the forward returns when asked for more than its logits / hidden states ``out``: ``alignments
    [cross-attention layers, B, S, L]`` (each one's weights, in layer order) and ``log_durations [B, L]``, each None
    unless asked for."""

    out: torch.Tensor
    alignments: torch.Tensor | None
    log_durations: torch.Tensor | None


class HybridLM(nn.Module):
    """Summed codebook embeddings -> schedule of GDN / attention blocks -> final RMSNorm -> one head per codebook."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n_q, vocab, d = config.num_codebooks, config.vocab_size, config.d_model
        # The 8 per-codebook tables live in one Embedding (row q * vocab + id), so the lookup is a single gather.
        self.embed = nn.Embedding(n_q * vocab, d)
        self.layers = nn.ModuleList(layer_kind(letter).block(config) for letter in config.schedule)
        self.norm = RMSNorm(d)
        # The 8 untied heads (384 -> 1027 each, no bias) as one Linear with 8 * 1027 outputs: identical maths,
        # one matmul.
        self.heads = nn.Linear(d, n_q * vocab, bias=False)
        self.register_buffer("codebook_offsets", torch.arange(n_q) * vocab, persistent=False)
        init_normal(self)
        if config.text.layers:  # built and drawn after the decoder: same seed, same decoder weights as without text
            self.text_encoder = TextEncoder(config.text)
            self.cross_attention = nn.ModuleDict({str(i): CrossAttention(config) for i in config.cross_layers})
            init_normal(self.text_encoder)
            init_normal(self.cross_attention)
            for cross in self.cross_attention.values():  # a zero residual at init (see CrossAttention)
                nn.init.zeros_(cross.o_proj.weight)
            nn.init.zeros_(self.text_encoder.duration[-1].bias)

    def load_decoder_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Warm start: an unconditional model's weights (``state``, from ``source``) into this model's decoder; the
        text encoder and cross-attentions keep their fresh init (zero output projections: the result computes exactly what the
        unconditional model computes). Anything but exactly the text parts missing is an error naming ``source``."""
        fresh = {k for k in self.state_dict() if k.startswith(TEXT_PARTS)}
        foreign = sorted(k for k in state if k.startswith(TEXT_PARTS))
        if foreign:
            raise ValueError(f"{source}: already has text-conditioning weights ({foreign[0]}, ...); a warm start "
                             f"takes an unconditional checkpoint")
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ValueError(f"{source}: its weights do not fit this decoder: {exc}") from exc
        if set(missing) != fresh or unexpected:
            wrong = sorted(set(missing) - fresh) + sorted(unexpected)
            raise ValueError(f"{source}: its weights do not match this decoder (differs at {wrong[:5]})")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component, in model order (``hybridlm info`` prints this; the values sum to the total)."""
        counts = {"embeddings": self.embed.weight.numel()}
        for i, (letter, layer) in enumerate(zip(self.config.schedule, self.layers)):
            counts[f"layer {i} ({letter})"] = sum(p.numel() for p in layer.parameters())
        counts["final norm"] = self.norm.weight.numel()
        counts["heads"] = self.heads.weight.numel()
        if self.config.text.layers:
            counts["text encoder"] = sum(p.numel() for p in self.text_encoder.parameters())
            for i, cross in self.cross_attention.items():
                counts[f"cross-attention after layer {i}"] = sum(p.numel() for p in cross.parameters())
        return counts

    def new_cache(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, text: torch.Tensor | None = None,
                  durations: torch.Tensor | None = None) -> ModelCache:
        """An empty cache (zero conv history and state = what the full forward assumes before step 0). With ``text``
        (ids ``[batch_size, L]``) and its ``durations`` (frames per id, the pointer's path) the text is encoded and
        every cross-attention's values computed here, once."""
        weight = self.heads.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        layers = [layer.new_cache(batch_size, device, dtype) for layer in self.layers]
        if text is None:
            return ModelCache(layers=layers, batch_size=batch_size)
        cross, ends, _ = self.text_memories(text.to(device), durations, batch_size)
        return ModelCache(layers=layers, batch_size=batch_size, cross=cross, ends=ends.to(device))

    def text_memories(self, text: torch.Tensor, durations: torch.Tensor | None, batch_size: int
                      ) -> tuple[dict[int, CrossCache], torch.Tensor, torch.Tensor]:
        """Encode ``text [B, L]``: each cross-attention's values ``{decoder layer: CrossCache}``, the frame where
        each id ends (from ``durations [B, L]``, frames per id) and the predicted log(1 + frames) per id."""
        self._require_text()
        if text.shape[0] != batch_size:
            raise ValueError(f"HybridLM: text has batch size {text.shape[0]}, tokens/cache have {batch_size}")
        if durations is None or durations.shape != text.shape or durations.dtype not in (torch.long, torch.int32):
            raise ValueError(f"HybridLM: a text needs its durations (int frames per id, shape {tuple(text.shape)}), "
                             f"got {None if durations is None else (durations.dtype, tuple(durations.shape))}")
        if bool((durations < 0).any()):
            raise ValueError("HybridLM: durations must be >= 0 frames")
        states, mask = self.text_encoder(text)
        memories = {int(i): cross.memory(states, mask) for i, cross in self.cross_attention.items()}
        ends = (durations.to(text.device) * mask).cumsum(dim=1)
        return memories, ends, self.text_encoder.log_durations(states, text)

    def _require_text(self) -> None:
        if not self.config.text.layers:
            raise ValueError("HybridLM: this model has no text conditioning (tts_model.layers is 0); it cannot "
                             "take a text")

    @torch.no_grad()
    def predict_durations(self, text: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` frames per id of ``text [B, L]`` from the duration predictor (rounded, >= 1; 0 at pads): the
        pointer's path when reading a text aloud."""
        self._require_text()
        states, mask = self.text_encoder(text)
        frames = torch.expm1(self.text_encoder.log_durations(states, text).float()).round().clamp(min=1)
        return frames.long() * mask

    def forward(self, tokens: torch.Tensor, cache: ModelCache | None = None, *, heads: bool = True,
                text: torch.Tensor | None = None, durations: torch.Tensor | None = None,
                return_alignments: bool = False, return_log_durations: bool = False
                ) -> torch.Tensor | Readout:
        """``tokens [B, n_q, S]`` (delayed ids) -> ``logits [B, n_q, S, vocab]``.

        Without a cache: the full causal forward (training). With a cache: continues after ``cache.length`` steps
        (prefill with S > 1 or one decode step with S = 1) and advances the cache in place. ``heads=False`` returns
        the final-normed hidden states ``[B, S, d]`` instead: training feeds them to
        hybridlm.ops.cross_entropy.heads_cross_entropy, which applies the heads chunk by chunk (a flag rather than a
        second method so that a DDP wrapper still sees the forward).
        ``text [B, L]``: ids to condition on, with ``durations [B, L]`` (frames per id: where the pointer reads;
        cached decoding takes both in :meth:`new_cache` instead); no text, or an all-pad row, is the decoder alone.
        ``return_alignments`` / ``return_log_durations`` (with a text): return a :class:`Readout` instead, with the
        cross-attentions' weights and / or the duration predictor's log(1 + frames) per id (training's duration
        loss).
        """
        cfg = self.config
        if tokens.ndim != 3 or tokens.shape[1] != cfg.num_codebooks or tokens.shape[2] < 1:
            raise ValueError(f"HybridLM: tokens must be [batch, {cfg.num_codebooks}, steps >= 1], "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(f"HybridLM: tokens must be int64/int32 ids, got {tokens.dtype}")
        if not torch.compiler.is_compiling():  # a compiled decode step's ids come from the sampler (a host read
            # would split its graph); one pass and one op, not two (a decode step is op-bound)
            low, high = (int(end) for end in tokens.aminmax())
            if low < 0 or high >= cfg.vocab_size:
                raise ValueError(f"HybridLM: token ids must lie in [0, {cfg.vocab_size}), got [{low}, {high}]")
        batch, _, steps = tokens.shape
        if cache is not None and cache.batch_size != batch:
            raise ValueError(f"HybridLM: cache is for batch size {cache.batch_size}, tokens have {batch}")
        if text is not None and cache is not None:
            raise ValueError("HybridLM: with a cache, pass the text to new_cache (its keys/values are cached once)")
        if (return_alignments or return_log_durations) and text is None:
            raise ValueError("HybridLM: alignments and log durations come from a text; pass text= and durations=")
        offset = 0 if cache is None else cache.length
        memories, pointer, predicted = {}, None, None
        if text is not None:
            memories, ends, predicted = self.text_memories(text, durations, batch)
        elif cache is not None and cache.cross:
            memories, ends = cache.cross, cache.ends
        if memories:
            pointer = text_pointer(ends, offset, steps, self.config.text.pointer_early)
        x = self.embed(tokens + self.codebook_offsets[None, :, None]).sum(dim=1)  # [B, S, d]
        for i, layer in enumerate(self.layers):
            x = layer(x, offset, None if cache is None else cache.layers[i])
            if i in memories:
                x = self.cross_attention[str(i)](x, memories[i], pointer)
        if cache is not None:
            cache.length += steps
        out = self.norm(x)
        if heads:
            out = project(self, out, "heads").view(batch, steps, cfg.num_codebooks, cfg.vocab_size).transpose(1, 2)
        if not (return_alignments or return_log_durations):
            return out
        alignments = None
        if return_alignments:  # every cross-attention reads through the same pointer
            weights = pointer_weights(pointer, text.shape[1]).to(x.dtype)
            alignments = weights.expand(len(memories), *weights.shape)
        return Readout(out, alignments, predicted if return_log_durations else None)


# ----------------------------------------------------------------------------------------------------------------
# Optimizer helpers
# ----------------------------------------------------------------------------------------------------------------
def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameters AdamW must not decay: every vector (norm gains, A_log, dt_bias, the duration predictor's one
    bias) and the embeddings.

    Why: decaying a gain or A_log/dt_bias pulls them toward 0, i.e. toward "no signal" / "no decay", which is a
    change of function, not a regulariser. Embeddings are excluded as in OLMo 2: each row only gets gradient when its
    code occurs, so decay would shrink rare codes' rows toward 0 between uses. Projection matrices, the output
    heads and the conv filters are decayed.
    """
    return {name for name, p in model.named_parameters()
            if p.ndim < 2 or name.startswith(("embed.", "text_encoder.embed.", "text_encoder.duration_embed."))}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW param groups: ``weight_decay`` on matrices, 0 on :func:`no_decay_parameter_names`."""
    skip = no_decay_parameter_names(model)
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if n not in skip], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n in skip], "weight_decay": 0.0},
    ]
