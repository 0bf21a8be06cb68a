"""Text conditioning in the model: config, parameter budget, exact identity at init / warm start, padding, the
pointer's path, cached decoding with text, EOS stopping, classifier-free guidance, the duration predictor, and a
model-level proof that the text is used.

Tolerances as in test_model.py: "exactly" means torch.equal (the output projections are 0, so the cross-attention
adds exact zeros); cached vs full forward within 1e-5 absolute.
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from hybridlm.delay import DelayPattern
from hybridlm.layers.text_encoder import TEXT_PAD_ID
from hybridlm.model import (
    HybridLM,
    NO_TEXT,
    ModelConfig,
    TextConfig,
    config_from_dict,
    no_decay_parameter_names,
    parameter_groups,
    with_text,
)
from hybridlm.ops.cross_entropy import codebook_cross_entropy
from hybridlm.config import load_params, section
from hybridlm.params import ParamError
from hybridlm.sampling import speak

REPO = Path(__file__).resolve().parents[1]
TINY = dict(d_model=32, d_ff=48, n_heads=4, n_kv_heads=2, gdn_key_dim=8, gdn_value_dim=12, context=64,
            gdn_backend="torch_chunk")
TEXT = TextConfig(layers=2, d_model=24, n_heads=2, d_ff=40, vocab_size=40, pointer_early=1)


def tiny(schedule: str = "LA", text: TextConfig | None = TEXT, seed: int = 0, **overrides) -> HybridLM:
    torch.manual_seed(seed)
    config = ModelConfig(schedule=schedule, **{**TINY, **overrides}, text=text or NO_TEXT)
    return HybridLM(config).eval()


def open_gates(model: HybridLM, value: float = 0.7) -> HybridLM:
    """A conditioned model whose cross-attentions contribute (as after training): gate and output projection set."""
    with torch.no_grad():
        for cross in model.cross_attention.values():
            cross.gate.fill_(value)
            torch.nn.init.normal_(cross.o_proj.weight, std=0.1)
    return model


def texts(*rows: list[int]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [TEXT_PAD_ID] * (width - len(r)) for r in rows])


def frames(text: torch.Tensor, n: int = 2) -> torch.Tensor:
    """Durations for ``text``: ``n`` frames per id, 0 at the pads."""
    return (text != TEXT_PAD_ID).long() * n


def read(model: HybridLM, tokens: torch.Tensor, text: torch.Tensor, **kwargs) -> torch.Tensor:
    """The model's logits for ``tokens`` read against ``text`` at 2 frames per id."""
    return model(tokens, text=text, durations=frames(text), **kwargs)


def random_tokens(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 1027, (batch, 8, steps), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- config
def test_default_model_is_unchanged_and_tts_adds_reported_parameters():
    params = load_params(REPO / "params.yaml")
    base = section(params, "model")
    assert base.text == NO_TEXT and base.cross_layers == ()
    with torch.device("meta"):
        assert HybridLM(base).num_parameters() == 21_905_416
        tts = HybridLM(dataclasses.replace(base, text=TextConfig(layers=4)))
    counts = tts.parameter_counts()
    assert sum(counts.values()) == tts.num_parameters()
    assert tts.config.cross_layers == (3, 7)  # default: after the two attention layers
    # 4 blocks at d 256 (qkv 3*256^2, o 256^2, SwiGLU 3*256*1024, 2 norms) + 64x256 embedding + final norm
    # + the duration predictor (its own 64x256 id embedding, 256^2, then 256 -> 1 with its bias)
    block = 4 * 256 * 256 + 3 * 256 * 1024 + 2 * 256
    assert counts["text encoder"] == 4 * block + 64 * 256 + 256 + 64 * 256 + 256 * 256 + 257  # vocab 64
    # cross-attention: the end-of-text state 256; v 256->384; o 384^2; gate 1
    assert counts["cross-attention after layer 3"] == counts["cross-attention after layer 7"] == (
        256 + 256 * 384 + 384 * 384 + 1)
    assert tts.num_parameters() - 21_905_416 == counts["text encoder"] + 2 * counts["cross-attention after layer 3"]


@pytest.mark.parametrize("text, message", [
    ({"d_model": 30, "n_heads": 4}, r"'tts_model\.d_model' \(30\) must be divisible by 'tts_model"),
    ({"pointer_early": -1}, r"'tts_model\.pointer_early' must be >= 0"),
    ({"cross_attention_layers": [2]}, r"'tts_model\.cross_attention_layers' must be distinct .*\[0, 1\].*got \[2\]"),
    ({"cross_attention_layers": []}, r"cross_attention_layers"),
    ({"cross_attention_layers": [0, 0]}, r"cross_attention_layers"),
    ({"vocab_size": 2}, r"'tts_model\.vocab_size' must be >= 3"),
    ({"layers": -1}, r"'tts_model\.layers' must be >= 0"),
])
def test_text_config_errors_name_the_key(text, message):
    """Construction validates (a config built in code too), and rules with the decoder are checked with it."""
    with pytest.raises(ParamError, match=message):
        ModelConfig(schedule="LA", **TINY, text=TextConfig(**{"layers": 1, **text}))


def test_tts_model_section_and_checkpoint_form():
    params = load_params(REPO / "params.yaml")
    base = section(params, "model")
    with pytest.raises(ParamError, match="'tts_model.layers' must be >= 1"):
        with_text(base, section({"tts_model": {"layers": 0}}, "tts_model"))
    with pytest.raises(ParamError, match=r"unknown key 'tts_model\.width'"):
        section({"tts_model": {"layers": 2, "width": 3}}, "tts_model")
    config = with_text(base, section({"tts_model": {"layers": 2, "cross_attention_layers": [0, 7]}}, "tts_model"))
    assert config.cross_layers == (0, 7) and config.d_model == 384
    assert config_from_dict(dataclasses.asdict(config)) == config  # as checkpoints store it
    assert ModelConfig(schedule="LLL", text=TextConfig(layers=1)).cross_layers == (2,)  # no A layer: the last


# ---------------------------------------------------------------------------------------------------- identity at init
def test_at_init_the_conditioned_model_is_the_unconditional_model_exactly():
    plain, cond = tiny("LAL", text=None), tiny("LAL")
    # Same seed, same decoder weights: the text parts are drawn after the decoder.
    for name, value in plain.state_dict().items():
        assert torch.equal(cond.state_dict()[name], value), name
    tokens, text = random_tokens(2, 20), texts([3, 4, 5], [7, 8, 9, 10, 11])
    with torch.no_grad():
        expected = plain(tokens)
        assert torch.equal(read(cond, tokens, text), expected)
        assert torch.equal(cond(tokens), expected)


def test_warm_start_gives_the_unconditional_checkpoints_logits_exactly():
    plain = tiny("LA", text=None, seed=3)
    with torch.no_grad():  # a "trained" unconditional model: weights away from the init
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cond = tiny("LA", seed=11)
    fresh_text = {k: v.clone() for k, v in cond.state_dict().items() if k.startswith("text_encoder.")}
    cond.load_decoder_state(plain.state_dict(), "uncond.pt")
    for name, value in fresh_text.items():
        assert torch.equal(cond.state_dict()[name], value)  # the new parts keep their fresh init
    tokens, text = random_tokens(3, 15), texts([1, 2], [5, 6, 7, 8], [9])
    with torch.no_grad():
        assert torch.equal(read(cond, tokens, text), plain(tokens))


def test_warm_start_errors_name_the_source():
    cond = tiny("LA")
    with pytest.raises(ValueError, match="other.pt: already has text-conditioning weights"):
        cond.load_decoder_state(tiny("LA").state_dict(), "other.pt")
    with pytest.raises(ValueError, match="wide.pt: its weights do not fit this decoder"):
        cond.load_decoder_state(tiny("LA", text=None, d_model=64).state_dict(), "wide.pt")
    with pytest.raises(ValueError, match=r"deep.pt: its weights do not match this decoder .*layers\.2"):
        cond.load_decoder_state(tiny("LAL", text=None).state_dict(), "deep.pt")


# ---------------------------------------------------------------------------------------------------- with open gates
def test_text_changes_logits_and_empty_text_is_the_decoder_alone():
    model = open_gates(tiny("LA"))
    tokens = random_tokens(2, 12)
    with torch.no_grad():
        a = read(model, tokens, texts([3, 4, 5], [3, 4, 5]))
        b = read(model, tokens, texts([3, 4, 5], [6, 4, 5]))
        none = model(tokens)
        dropped = read(model, tokens, texts([3, 4, 5], [TEXT_PAD_ID]))
    assert torch.equal(a[0], b[0]) and (a[1] - b[1]).abs().max() > 1e-3  # bidirectional: one char moves all steps
    assert torch.equal(dropped[1], none[1]) and torch.equal(dropped[0], a[0])


def test_the_pointer_reads_one_id_at_a_time_early_and_then_the_end():
    model = open_gates(tiny("LAA", text=dataclasses.replace(TEXT, cross_attention_layers=[1, 2])))
    text, durations = texts([3, 4, 5], [6, 7, 8]), torch.tensor([[2, 3, 1], [1, 0, 2]])
    with torch.no_grad():
        logits, weights, log_durations = model(random_tokens(2, 9), text=text, durations=durations,
                                               return_alignments=True)
    assert weights.shape == (2, 2, 9, 3) and torch.equal(weights[0], weights[1]) and log_durations is None
    with torch.no_grad():
        assert torch.equal(logits, model(random_tokens(2, 9), text=text, durations=durations))
    # pointer_early 1: position s reads the id sounding in frame s + 1; past the last id, nothing (the end state)
    read_at = [row.argmax(-1).tolist() if row.sum() else None for row in weights[0][0]]
    assert read_at == [0, 1, 1, 1, 2, None, None, None, None]
    # an id of 0 frames is passed over
    assert [row.argmax(-1).item() if row.sum() else None for row in weights[0][1]][:3] == [2, 2, None]
    assert torch.all(weights[0].sum(-1) <= 1)
    with pytest.raises(ValueError, match="alignments and log durations come from a text"):
        model(random_tokens(2, 9), return_alignments=True)


def test_text_padding_does_not_change_anything():
    model = open_gates(tiny("LA"))
    tokens = random_tokens(2, 10)
    with torch.no_grad():
        short = read(model, tokens, texts([3, 4, 5], [6, 7]))
        padded = read(model, tokens, torch.cat([texts([3, 4, 5], [6, 7]), torch.zeros(2, 4, dtype=torch.long)], 1))
    torch.testing.assert_close(padded, short, atol=1e-6, rtol=0)


def test_causal_with_text():
    model = open_gates(tiny("LA"))
    tokens, text = random_tokens(2, 30), texts([3, 4, 5, 6], [7, 8])
    changed = tokens.clone()
    changed[..., 20:] = random_tokens(2, 10, seed=1)
    with torch.no_grad():
        before, after = read(model, tokens, text), read(model, changed, text)
    torch.testing.assert_close(after[:, :, :20], before[:, :, :20], atol=1e-6, rtol=0)


@pytest.mark.parametrize("schedule", ["LA", "AL"])
def test_cached_decoding_with_text_matches_the_full_forward(schedule):
    model = open_gates(tiny(schedule))
    tokens, text = random_tokens(2, 17), texts([3, 4, 5, 6], [7, 8])
    with torch.no_grad():
        full = read(model, tokens, text)
        cache = model.new_cache(2, text=text, durations=frames(text))
        assert sorted(cache.cross) == list(model.config.cross_layers)
        pieces = [model(tokens[..., :6], cache)] + [model(tokens[..., t : t + 1], cache) for t in range(6, 17)]
    torch.testing.assert_close(torch.cat(pieces, dim=2), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="pass the text to new_cache"):
        model(tokens[..., :1], model.new_cache(2), text=text, durations=frames(text))


def test_text_errors():
    model, plain = tiny("LA"), tiny("LA", text=None)
    tokens = random_tokens(2, 4)
    with pytest.raises(ValueError, match=r"text ids must lie in \[0, 40\) \(tts_model.vocab_size\), got \[0, 40\]"):
        read(model, tokens, texts([3, 40], [4]))
    with pytest.raises(ValueError, match="text has batch size 1, tokens/cache have 2"):
        read(model, tokens, texts([3]))
    with pytest.raises(ValueError, match="this model has no text conditioning"):
        read(plain, tokens, texts([3], [4]))
    with pytest.raises(ValueError, match=r"a text needs its durations \(int frames per id, shape \(2, 2\)\)"):
        model(tokens, text=texts([3, 5], [4]))
    with pytest.raises(ValueError, match="durations must be >= 0 frames"):
        model(tokens, text=texts([3], [4]), durations=torch.tensor([[1], [-1]]))


def test_gradients_reach_every_parameter_and_text_parts_skip_decay_where_they_should():
    model = open_gates(tiny("LA")).train()
    delayed = DelayPattern(eos=True).build(torch.randint(0, 1024, (2, 8, 10)))
    pattern = DelayPattern(eos=True)
    text = texts([3, 4], [5, 6, 7])
    logits, _, predicted = read(model, delayed[..., :-1], text, return_log_durations=True)
    loss, _ = codebook_cross_entropy(logits, delayed[..., 1:], valid=pattern.target_mask(delayed[..., 1:]))
    (loss + predicted.pow(2).mean()).backward()  # 2 frames per id < 10 frames: the end state is read too
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    skip = no_decay_parameter_names(model)
    assert {"text_encoder.embed.weight", "cross_attention.1.gate", "text_encoder.duration.2.bias",
            "text_encoder.duration_embed.weight"} <= skip
    assert "cross_attention.1.v_proj.weight" not in skip
    assert sum(len(g["params"]) for g in parameter_groups(model, 0.1)) == len(list(model.parameters()))
    # At init (adding exact zeros) the output projection already learns: a zero gate would leave every
    # cross-attention weight but itself without gradient, the deadlock CrossAttention's docstring measures.
    fresh = tiny("LA").train()
    codebook_cross_entropy(read(fresh, delayed[..., :-1], text), delayed[..., 1:],
                           valid=pattern.target_mask(delayed[..., 1:]))[0].backward()
    assert fresh.cross_attention["1"].o_proj.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- speak
def favour_eos_after(model: HybridLM, frames: dict[int, int]):
    """Make codebook 0 choose EOS once row b has produced ``frames[b]`` frames (a hook on the model's logits)."""
    state = {"step": 0}

    def hook(module, inputs, output):  # output: logits [B, 8, S, 1027]
        state["step"] += 1
        for b, n in frames.items():
            if state["step"] > n:  # decode step t = state["step"]: codebook 0 predicts frame t - 1
                output[b, 0, -1, 1026] += 1e4
        return output

    return model.register_forward_hook(hook)


def test_speak_stops_at_eos_per_row_and_at_the_guard():
    model = open_gates(tiny("LA"))
    handle = favour_eos_after(model, {0: 3, 1: 7})
    codes, ended = speak(model, texts([3, 4], [5, 6, 7], [8]), max_frames=12, generator=torch.Generator().manual_seed(0))
    handle.remove()
    assert [c.shape for c in codes] == [(8, 3), (8, 7), (8, 12)]
    assert ended == [True, True, False]
    assert all(int(c.min()) >= 0 and int(c.max()) < 1024 for c in codes)


def test_speak_samples_eos_only_once_the_pointer_has_read_the_text():
    model = open_gates(tiny("LA"))  # pointer_early 1
    with torch.no_grad():  # 4 frames per id
        model.text_encoder.duration[-1].bias.fill_(math.log(5.0))
        model.text_encoder.duration[-1].weight.zero_()
    text = texts([3, 4], [5, 6, 7])
    assert model.predict_durations(text).tolist() == [[4, 4, 0], [4, 4, 4]]
    handle = favour_eos_after(model, {0: 0, 1: 0})  # EOS as soon as it is allowed
    codes, ended = speak(model, text, max_frames=20, generator=torch.Generator().manual_seed(0))
    handle.remove()
    # frame f is predicted where the pointer reads frame f + 1: the text ends at frame 8 (12), so EOS at frame 7 (11)
    assert [c.shape[-1] for c in codes] == [7, 11] and ended == [True, True]


def reference_greedy(model: HybridLM, text: torch.Tensor, frames: int, cfg_scale: float) -> torch.Tensor:
    """Greedy guided decoding with full forwards (no cache), for a fixed number of frames (no EOS allowed)."""
    pattern = DelayPattern(eos=True)
    seq = torch.full((text.shape[0], 8, 1), pattern.bos_id)
    durations = model.predict_durations(text)  # the pointer's path when reading aloud
    for t in range(1, pattern.num_steps(frames)):
        with torch.no_grad():
            cond = model(seq, text=text, durations=durations)[:, :, -1]
            uncond = model(seq)[:, :, -1]
        mixed = uncond + cfg_scale * (cond - uncond)
        step = mixed[..., :1024].argmax(-1)
        frame = t - 1 - torch.arange(8)
        step = torch.where((frame >= 0) & (frame < frames), step,
                           torch.where(frame == frames, pattern.eos_id, pattern.pad_id))
        seq = torch.cat([seq, step[..., None]], dim=-1)
    return pattern.revert(seq)


def block_eos(model: HybridLM):
    def hook(module, inputs, output):  # output: logits [B, 8, S, 1027]
        output[..., 1026] = -1e9
        return output

    return model.register_forward_hook(hook)


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_speak_with_guidance_equals_a_reference_decoder(cfg_scale):
    model = open_gates(tiny("LA"), 1.5)
    text = texts([3, 4, 5], [9, 10])
    handle = block_eos(model)
    codes, ended = speak(model, text, max_frames=6, temperature=0.0, cfg_scale=cfg_scale)
    expected = reference_greedy(model, text, 6, cfg_scale)
    handle.remove()
    assert ended == [False, False]
    assert torch.equal(torch.stack(codes), expected)


def test_cfg_scale_one_is_plain_conditional_and_prompts_differ():
    model = open_gates(tiny("LA"), 1.5)
    with torch.no_grad():  # 4 frames per id: the pointer stays on the text over the 8 frames read
        model.text_encoder.duration[-1].bias.fill_(math.log(5.0))
    text = texts([3, 4, 5], [20, 21, 22, 23])
    handle = block_eos(model)
    seeded = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain, _ = speak(model, text, max_frames=8, generator=seeded())
    again, _ = speak(model, text, max_frames=8, generator=seeded(), cfg_scale=1.0)
    guided, _ = speak(model, text, max_frames=8, generator=seeded(), cfg_scale=3.0)
    swapped, _ = speak(model, text.flip(0), max_frames=8, generator=seeded())
    handle.remove()
    assert all(torch.equal(a, b) for a, b in zip(plain, again))
    assert not all(torch.equal(a, b) for a, b in zip(plain, guided))
    greedy, _ = speak(model, text, max_frames=8, temperature=0.0)
    assert not torch.equal(greedy[0], greedy[1])  # same start, different text: different speech


def test_speak_rejects_bad_arguments_and_unconditional_models():
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        speak(tiny("L"), texts([3]), max_frames=0)
    with pytest.raises(ValueError, match="cfg_scale must be >= 0"):
        speak(tiny("L"), texts([3]), max_frames=2, cfg_scale=-1)
    with pytest.raises(ValueError, match="this model has no text conditioning"):
        speak(tiny("L", text=None), texts([3]), max_frames=2)


# ---------------------------------------------------------------------------------------------------- the text is used
@pytest.fixture
def one_thread():
    """Tiny matmuls on a shared machine: one thread is ~10x faster than oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_tiny_conditioned_model_learns_to_use_the_text(one_thread):
    """Codes that are a function of the text: the one character of each example sets all codes of its 3 frames.

    Without the text, codebook 0 of the first frame is a guess among 12 (ln 12 nats over 4 targets: 3 frames +
    EOS), so the best possible gap, averaged over 8 codebooks, is ln(12) / 4 / 8 = 0.078 nats. After 120 steps
    (20% text dropout, as CFG training) the gap must be more than half of that; it measured 0.071.
    """
    gen = torch.Generator().manual_seed(0)
    table = torch.randint(0, 1024, (12, 8), generator=gen)  # character -> one frame of 8 codes
    pattern = DelayPattern(eos=True)
    model = tiny("LA", text=dataclasses.replace(TEXT, vocab_size=14)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def batch(n: int):
        chars = torch.randint(0, 12, (n, 1), generator=gen)
        delayed = pattern.build(torch.stack([table[c].repeat_interleave(3, dim=0).T for c in chars]))
        return delayed, chars + 2  # text ids 2..13 (0 pad, 1 unk)

    def loss_of(delayed, text):
        targets = delayed[..., 1:]
        conditioning = {} if text is None else {"text": text, "durations": frames(text, 3)}
        return codebook_cross_entropy(model(delayed[..., :-1], **conditioning), targets,
                                      valid=pattern.target_mask(targets))[0]

    for _ in range(120):
        delayed, text = batch(16)
        drop = torch.rand(16, generator=gen) < 0.2
        loss = loss_of(delayed, text.masked_fill(drop[:, None], TEXT_PAD_ID))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    delayed, text = batch(64)
    with torch.no_grad():
        with_text, without = loss_of(delayed, text), loss_of(delayed, None)
    assert without - with_text > 0.04, (float(with_text), float(without))


def test_info_reports_what_text_conditioning_adds(capsys):
    from hybridlm.stages import info

    info.run(load_params(REPO / "params.yaml"))
    out = capsys.readouterr().out
    assert "21,905,416  (21.9M)" in out  # the unconditional model as before
    assert "pointer cross-attention (2 frames early) after decoder layers 3, 7" in out
    assert "added                             4,787,203  -> 26,692,619 (26.7M)" in out
