"""Sampling from HybridLM: unconditional generation, reading a text aloud, and classifier-free guidance.

One delayed step at a time with the model's cache (HybridLM.new_cache: constant-size GDN states, growing attention
keys/values, the text's cross-attention values computed once). Step 0 is BOS for every codebook; at step t the
model's logits give one code per codebook, and :meth:`hybridlm.delay.DelayPattern.step_ids` decides which of them
the pattern keeps (a code where codebook q holds a frame, EOS / PAD elsewhere). Codes are drawn from the code
logits only (special ids can never be sampled; EOS is offered explicitly when reading a text), with temperature
(0 = greedy) and top-k.
"""

from __future__ import annotations

import torch

from hybridlm.delay import DelayPattern
from hybridlm.layers.text_encoder import TEXT_PAD_ID
from hybridlm.model import HybridLM


@torch.no_grad()
def generate(model: HybridLM, num_frames: int, batch_size: int = 1, temperature: float = 1.0, top_k: int = 250,
             generator: torch.Generator | None = None, compile: bool = False) -> torch.Tensor:
    """Sample ``[B, n_q, num_frames]`` codes unconditionally. ``generator`` (on the model's device) makes the draw
    reproducible. ``compile``: decode with :func:`hybridlm.compiled.compiled_forward` (faster per step after a
    compile; other codes than the eager step's)."""
    if num_frames < 1 or batch_size < 1:
        raise ValueError(f"generate: num_frames and batch_size must be >= 1, got {num_frames}, {batch_size}")
    seq, _ = _sample(model, num_frames, batch_size, temperature, top_k, generator, None, None, 1.0,
                     stop_on_eos=False, compile=compile)
    return DelayPattern(model.config.num_codebooks, model.config.codebook_size).revert(seq)


@torch.no_grad()
def speak(model: HybridLM, text: torch.Tensor, max_frames: int, temperature: float = 1.0, top_k: int = 250,
          generator: torch.Generator | None = None, cfg_scale: float = 1.0, compile: bool = False
          ) -> tuple[list[torch.Tensor], list[bool]]:
    """Read ``text [B, L]`` aloud: per row, codes ``[n_q, T_b]`` up to the EOS the model samples, and whether it
    sampled one (False: stopped by the ``max_frames`` guard).

    The pointer follows the duration predictor (HybridLM.predict_durations: the path
    hybridlm.layers.cross_attention.text_pointer takes). EOS may be sampled only once the pointer has passed the
    last id (a reading cannot end before its text; before that the EOS logit is masked); the model then reads "end
    of text" and samples the EOS itself, so the EOS rate says whether the model ends where its text does rather
    than running on to ``max_frames``.

    Codebook 0 may sample EOS (from frame 1 on); once it has, the other codebooks finish that frame's delayed
    codes and take their EOS steps from the pattern, and the row is done. ``cfg_scale`` != 1 mixes logits
    with classifier-free guidance: ``uncond + cfg_scale * (cond - uncond)``, the unconditional branch being the
    same rows with the text dropped (batched with the conditional ones); 1 is plain conditional sampling.
    ``compile`` as in :func:`generate`.
    """
    if max_frames < 1:
        raise ValueError(f"speak: max_frames must be >= 1, got {max_frames}")
    if cfg_scale < 0:
        raise ValueError(f"speak: cfg_scale must be >= 0, got {cfg_scale}")
    seq, ends = _sample(model, max_frames, text.shape[0], temperature, top_k, generator, text,
                        model.predict_durations(text), cfg_scale, stop_on_eos=True, compile=compile)
    pattern = DelayPattern(model.config.num_codebooks, model.config.codebook_size, eos=True)
    codes = [pattern.revert(seq[b, :, : pattern.num_steps(int(end))]) for b, (end, _) in enumerate(ends)]
    return codes, [bool(sampled) for _, sampled in ends]


def _sample(model: HybridLM, max_frames: int, batch_size: int, temperature: float, top_k: int,
            generator: torch.Generator | None, text: torch.Tensor | None, durations: torch.Tensor | None,
            cfg_scale: float, stop_on_eos: bool, compile: bool) -> tuple[torch.Tensor, list[tuple[int, bool]]]:
    """The decoding loop behind :func:`generate` (fixed length) and :func:`speak` (until EOS).

    Returns the delayed sequences ``[B, n_q, steps]`` and per row (frames, ended by a sampled EOS). Rows that
    are done keep receiving PAD steps until every row is; those steps are cut off by the callers.
    """
    cfg = model.config
    if temperature < 0 or top_k < 1:
        raise ValueError(f"generate: need temperature >= 0 and top_k >= 1, got {temperature}, {top_k}")
    pattern = DelayPattern(cfg.num_codebooks, cfg.codebook_size, eos=stop_on_eos)
    device = model.heads.weight.device
    total = pattern.num_steps(max_frames)
    seq = torch.full((batch_size, cfg.num_codebooks, total), pattern.pad_id, dtype=torch.long, device=device)
    seq[..., 0] = pattern.bos_id
    guided = text is not None and cfg_scale != 1.0
    if guided:  # rows B.. are the same prompts without text: one batched forward gives both branches
        text = torch.cat([text, torch.full_like(text, TEXT_PAD_ID)])
        durations = torch.cat([durations, torch.zeros_like(durations)])
    cache = model.new_cache(batch_size * (2 if guided else 1), device, text=text, durations=durations)
    forward = model
    if compile:
        from hybridlm.compiled import compiled_forward  # only here: importing the compiler takes ~1 s

        forward = compiled_forward(model)
    text_ends = None if cache.ends is None else cache.ends[:batch_size, -1]  # frames the text lasts, per row
    # ends[b]: frames of row b once known (-1 until codebook 0 samples EOS); fixed without EOS.
    ends = torch.full((batch_size,), -1 if stop_on_eos else max_frames, dtype=torch.long, device=device)
    sampled_eos = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for t in range(1, total):
        step = seq[..., t - 1 : t]
        logits = forward(torch.cat([step, step]) if guided else step, cache)[:, :, -1]
        if guided:
            cond, uncond = logits.float().chunk(2)
            logits = uncond + cfg_scale * (cond - uncond)
        choices = logits[..., : cfg.codebook_size]
        if stop_on_eos:  # column codebook_size = EOS: only codebook 0 may choose it, and not as the first frame
            eos = torch.full_like(choices[..., :1], float("-inf"))
            if t > 1:
                eos[:, 0] = logits[:, 0, pattern.eos_id : pattern.eos_id + 1]
            if text_ends is not None:  # with a text, not before the pointer has read all of it
                eos[~(t - 1 + cfg.text.pointer_early >= text_ends)] = float("-inf")
            choices = torch.cat([choices, eos], dim=-1)
        codes = sample_codes(choices, temperature, top_k, generator)
        if stop_on_eos:
            chose = (codes[:, 0] == cfg.codebook_size) & (ends < 0)
            sampled_eos |= chose
            ends = torch.where(chose | ((ends < 0) & (t - 1 == max_frames)), t - 1, ends)
        seq[..., t] = pattern.step_ids(t, codes, ends)
        if stop_on_eos and bool((ends >= 0).all()) and t + 1 >= pattern.num_steps(int(ends.max())):
            break  # every row's last step (a fixed length ends with the loop)
    return seq, [(int(e), bool(s)) for e, s in zip(ends, sampled_eos)]


def sample_codes(logits: torch.Tensor, temperature: float, top_k: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of ``logits [..., codes]``: greedy at temperature 0, else softmax(logits / T) over the top k.

    The draw is by inverse CDF: one uniform number per row, located in the cumulative probabilities of the k
    candidates (best first). Why not ``torch.multinomial``: it draws an exponential number per *code* (8 x 1024
    per step), 180 us of a ~10 ms batch-1 step on this project's CPU, against 55 us for top-k, softmax, cumsum and
    one search (1 thread). Exactly k candidates are kept (ties at the k-th logit are cut by topk's order).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    values, ids = (logits.float() / temperature).topk(min(top_k, logits.shape[-1]), dim=-1)
    cumulative = values.softmax(dim=-1).cumsum_(dim=-1)
    uniform = torch.rand(ids.shape[:-1] + (1,), generator=generator, device=ids.device)
    # The first candidate whose cumulative probability exceeds u * total (total ~ 1 but not exactly, in fp32):
    # a candidate of probability 0 never does, and the clamp guards the last place against rounding.
    chosen = torch.searchsorted(cumulative, uniform * cumulative[..., -1:], right=True).clamp_(max=ids.shape[-1] - 1)
    return ids.gather(-1, chosen).squeeze(-1)
