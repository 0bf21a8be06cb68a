"""The hybrid LM: parameter budget, config validation, causality, cached decoding, sampling, loss, param groups.

All numerical comparisons run in fp32 on CPU with tiny configs (except the parameter-count tests, which build the
default 21.9M model once). Tolerances: "unchanged" past logits within 1e-6 absolute (the chunked GDN kernel adds
exact zeros for future tokens, so only matmul reassociation can differ); cached step-by-step vs full forward within
1e-5 absolute (measured ~3e-7; chunked WY form vs token loop in the GDN layers, SDPA with vs without a cache).
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hybridlm.delay import DelayPattern
from hybridlm.layers.attention import AttentionBlock
from hybridlm.layers.gated_deltanet import GDNBlock
from hybridlm.model import (
    HybridLM,
    ModelConfig,
    no_decay_parameter_names,
    parameter_groups,
)
from hybridlm.ops.cross_entropy import codebook_cross_entropy
from hybridlm.config import load_params, section
from hybridlm.params import ParamError, parse_section
from hybridlm.sampling import generate

REPO = Path(__file__).resolve().parents[1]
GDN_LAYER, ATTN_LAYER, EMBED_AND_HEADS = 2_074_476, 1_574_144, 6_309_888


def tiny(schedule: str = "LA", **overrides) -> HybridLM:
    torch.manual_seed(0)
    config = dict(schedule=schedule, d_model=32, d_ff=48, n_heads=4, n_kv_heads=2, gdn_key_dim=8, gdn_value_dim=12,
                  context=64, gdn_backend="torch_chunk")
    return HybridLM(ModelConfig(**{**config, **overrides})).eval()


def random_tokens(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 1027, (batch, 8, steps), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- budget
def test_default_parameter_count_is_the_reference_21_9m():
    config = section(load_params(REPO / "params.yaml"), "model")
    assert config == ModelConfig()  # params.yaml's model section is the reference run
    model = HybridLM(config)
    counts = model.parameter_counts()
    assert model.num_parameters() == 21_905_416
    assert sum(counts.values()) == 21_905_416
    assert counts["embeddings"] + counts["heads"] == EMBED_AND_HEADS
    assert counts["final norm"] == 384
    for i, letter in enumerate("LLLALLLA"):
        assert counts[f"layer {i} ({letter})"] == (GDN_LAYER if letter == "L" else ATTN_LAYER)


def test_schedule_builds_the_layers_and_pure_attention_variant():
    assert ModelConfig().layer_types == ("gdn",) * 3 + ("attention",) + ("gdn",) * 3 + ("attention",)
    with torch.device("meta"):
        hybrid = HybridLM(ModelConfig())
        attention_only = HybridLM(ModelConfig(schedule="AAAAAAAA"))
    assert [type(layer) for layer in hybrid.layers] == [GDNBlock] * 3 + [AttentionBlock] + [GDNBlock] * 3 + [
        AttentionBlock]
    assert all(isinstance(layer, AttentionBlock) for layer in attention_only.layers)
    assert attention_only.num_parameters() == 8 * ATTN_LAYER + EMBED_AND_HEADS + 384
    assert tiny("LLA").config.layer_types == ("gdn", "gdn", "attention")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"schedule": "LLXA"}, r"'model\.schedule' must be a non-empty string of L .* got 'LLXA'"),
        ({"schedule": ""}, r"'model\.schedule'"),
        ({"d_model": 100}, r"'model\.d_model' \(100\) must be divisible by 'model\.n_heads' \(6\)"),
        ({"n_kv_heads": 4}, r"'model\.n_heads' \(6\) must be divisible by 'model\.n_kv_heads' \(4\)"),
        ({"d_model": 42}, r"'model\.d_model' / 'model\.n_heads' = 7 must be even"),
        ({"d_model": 0}, r"'model\.d_model' must be >= 1, got 0"),
        ({"context": 8}, r"'model\.context' \(8\) must exceed 'model\.num_codebooks' \(8\)"),
        ({"gdn_backend": "cuda"}, r"'model\.gdn_backend' must be one of"),
        ({"gdn_neg_eigval": "yes"}, r"'model\.gdn_neg_eigval' must be true or false"),
        ({"n_layers": 8}, r"unknown key 'model\.n_layers'"),
    ],
)
def test_config_errors_name_the_key(override, message):
    raw = {**load_params(REPO / "params.yaml")["model"], **override}
    with pytest.raises(ParamError, match=message):
        parse_section(ModelConfig, {"model": raw}, "model")


def test_odd_head_dim_is_fine_without_attention_layers():
    assert ModelConfig(schedule="LLLL", d_model=42).head_dim == 7


# ---------------------------------------------------------------------------------------------------- causality
@pytest.mark.parametrize("schedule", ["L", "A", "LA"])
def test_changing_future_steps_never_changes_past_logits(schedule):
    model = tiny(schedule)
    tokens = random_tokens(2, 80)  # 80 > the GDN chunk size (64): crosses a chunk boundary
    cut = 70
    changed = tokens.clone()
    changed[..., cut:] = random_tokens(2, 80 - cut, seed=1)
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, :, :cut], before[:, :, :cut], atol=1e-6, rtol=0)
    assert (after[:, :, cut] - before[:, :, cut]).abs().max() > 1e-3  # the change itself is seen


# ---------------------------------------------------------------------------------------------------- cache
@pytest.mark.parametrize("schedule", ["LALL", "AL"])
def test_cached_decoding_matches_the_full_forward(schedule):
    model = tiny(schedule)
    tokens = random_tokens(2, 23)
    with torch.no_grad():
        full = model(tokens)
        # All steps one at a time.
        cache = model.new_cache(2)
        steps = [model(tokens[..., t : t + 1], cache) for t in range(23)]
        assert cache.length == 23
        torch.testing.assert_close(torch.cat(steps, dim=2), full, atol=1e-5, rtol=0)
        # Prefill 9 steps, 4 single steps, prefill 5 more on top of the cache (masked, offset RoPE), then steps.
        cache = model.new_cache(2)
        pieces = [model(tokens[..., :9], cache)]
        pieces += [model(tokens[..., t : t + 1], cache) for t in range(9, 13)]
        pieces.append(model(tokens[..., 13:18], cache))
        pieces += [model(tokens[..., t : t + 1], cache) for t in range(18, 23)]
        torch.testing.assert_close(torch.cat(pieces, dim=2), full, atol=1e-5, rtol=0)


def test_gdn_cache_is_constant_size_and_kv_cache_grows():
    model = tiny("LA")
    cache = model.new_cache(3)
    with torch.no_grad():
        model(random_tokens(3, 7), cache)
        model(random_tokens(3, 1), cache)
    gdn, kv = cache.layers
    assert gdn.conv.shape == (3, 3, 4 * (8 + 8 + 12)) and gdn.state.shape == (3, 4, 8, 12)
    assert gdn.state.dtype == torch.float32
    assert kv.k.shape == kv.v.shape == (3, 2, 8, 8)


def test_forward_rejects_bad_tokens_and_cache():
    model = tiny("LA")
    with pytest.raises(ValueError, match=r"tokens must be \[batch, 8, steps >= 1\], got \(2, 7, 5\)"):
        model(torch.zeros(2, 7, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 1027\), got \[1027, 1027\]"):
        model(torch.full((1, 8, 3), 1027))
    with pytest.raises(ValueError, match="must be int64/int32"):
        model(torch.zeros(1, 8, 3))
    with pytest.raises(ValueError, match="cache is for batch size 2, tokens have 1"):
        model(torch.zeros(1, 8, 3, dtype=torch.long), model.new_cache(2))


# ---------------------------------------------------------------------------------------------------- sampling
def test_generate_shape_range_and_determinism():
    model = tiny("LA")
    out = generate(model, 6, batch_size=3, generator=torch.Generator().manual_seed(0))
    again = generate(model, 6, batch_size=3, generator=torch.Generator().manual_seed(0))
    other = generate(model, 6, batch_size=3, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, 8, 6) and out.dtype == torch.long
    assert int(out.min()) >= 0 and int(out.max()) < 1024
    assert torch.equal(out, again)
    assert not torch.equal(out, other)


def test_generate_never_emits_special_ids_even_when_they_dominate():
    model = tiny("LA")

    def favour_specials(module, inputs, output):  # +1e4 on PAD/BOS/EOS logits [B, 8, S, 1027] of every codebook
        output[..., 1024:] += 1e4
        return output

    model.register_forward_hook(favour_specials)
    for temperature in (1.0, 0.0):
        out = generate(model, 4, batch_size=2, temperature=temperature, generator=torch.Generator().manual_seed(0))
        assert int(out.max()) < 1024 and int(out.min()) >= 0


def test_greedy_generation_follows_the_delay_pattern_of_the_full_forward():
    """Greedy codes must be the argmax of the full forward at exactly the delayed positions that hold them."""
    model = tiny("LAL")
    codes = generate(model, 5, batch_size=2, temperature=0.0)
    pattern = DelayPattern()
    delayed = pattern.build(codes)
    with torch.no_grad():
        logits = model(delayed[..., :-1])
    targets = delayed[..., 1:]
    mask = pattern.target_mask(targets)
    assert torch.equal(logits[..., :1024].argmax(-1)[mask], targets[mask])
    top1 = generate(model, 5, batch_size=2, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(top1, codes)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sample_codes_draws_from_the_softmax_over_the_top_k(temperature):
    """The inverse-CDF draw (hybridlm.sampling.sample_codes): 40,000 rows of the same logits give each of the top 4
    codes at its softmax(logits / T) probability within 0.01 (3 standard errors are <= 0.0075) and never a
    code outside them; uniform over the top 4 (the control) is at least 0.05 off; the same seed, the same draw."""
    from hybridlm.sampling import sample_codes

    logits = torch.tensor([0.0, 2.0, -1.0, 1.5, 0.5, -3.0, 1.0, 0.2])
    rows = logits.expand(40_000, -1)
    codes = sample_codes(rows, temperature, 4, torch.Generator().manual_seed(0))
    top = [1, 3, 6, 4]
    expected = torch.zeros(8)
    expected[top] = (logits[top] / temperature).softmax(0)
    frequencies = torch.bincount(codes, minlength=8).float() / len(codes)
    torch.testing.assert_close(frequencies, expected, atol=0.01, rtol=0)
    assert frequencies[[0, 2, 5, 7]].sum() == 0
    assert (expected[top] - 0.25).abs().max() > 0.05
    assert torch.equal(codes, sample_codes(rows, temperature, 4, torch.Generator().manual_seed(0)))


def test_generate_rejects_bad_arguments():
    model = tiny("L")
    with pytest.raises(ValueError, match="num_frames and batch_size must be >= 1"):
        generate(model, 0)
    with pytest.raises(ValueError, match="temperature >= 0 and top_k >= 1"):
        generate(model, 2, top_k=0)


# ---------------------------------------------------------------------------------------------------- loss
def test_codebook_cross_entropy_matches_a_hand_computation():
    torch.manual_seed(0)
    vocab = 4 + 3  # codebook_size 4 -> ids 4, 5, 6 are PAD/BOS/EOS
    logits = torch.randn(2, 3, 5, vocab)
    targets = torch.tensor([
        [[0, 1, 4, 2, 3], [5, 4, 4, 1, 1], [6, 3, 3, 3, 0]],
        [[1, 1, 1, 4, 4], [2, 4, 0, 0, 4], [4, 4, 4, 4, 2]],
    ])
    valid = DelayPattern(3, 4).target_mask(targets)
    mean, per_codebook = codebook_cross_entropy(logits, targets, valid)
    expected = []
    for q in range(3):
        terms = [-torch.log_softmax(logits[b, q, s], -1)[targets[b, q, s]]
                 for b in range(2) for s in range(5) if targets[b, q, s] < 4]
        expected.append(sum(terms) / len(terms))
    expected = torch.stack(expected)
    torch.testing.assert_close(per_codebook, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mean, expected.mean(), atol=1e-6, rtol=1e-6)  # codebooks weigh equally
    # Logits at special-id targets carry no loss.
    shifted = logits.clone()
    shifted[targets >= 4] += 100 * torch.randn(vocab)
    torch.testing.assert_close(codebook_cross_entropy(shifted, targets, valid)[1], per_codebook)


def test_codebook_cross_entropy_on_delayed_rows_ignores_pad_and_bos():
    pattern = DelayPattern()
    delayed = pattern.build(torch.randint(0, 1024, (2, 8, 6), generator=torch.Generator().manual_seed(0)))
    inputs, targets = delayed[..., :-1], delayed[..., 1:]
    logits = torch.zeros(2, 8, inputs.shape[-1], 1027)
    logits[..., 1024:] = 50.0  # confident in special ids: would be a huge loss if PAD/BOS targets counted
    mean, per_codebook = codebook_cross_entropy(logits, targets, pattern.target_mask(targets))
    uniform_over_codes = torch.log(torch.tensor(1024.0) + 3 * torch.exp(torch.tensor(50.0)))
    torch.testing.assert_close(per_codebook, uniform_over_codes.expand(8), atol=1e-4, rtol=0)
    logits[..., :1024] = 0.0
    logits[..., 1024:] = -1e9
    torch.testing.assert_close(codebook_cross_entropy(logits, targets, pattern.target_mask(targets))[0], torch.log(torch.tensor(1024.0)))


def test_codebook_cross_entropy_errors():
    with pytest.raises(ValueError, match=r"logits must be \[B, n_q, S, vocab\]"):
        codebook_cross_entropy(torch.zeros(2, 8, 5, 1027), torch.zeros(2, 8, 4, dtype=torch.long),
                               torch.ones(2, 8, 4, dtype=torch.bool))
    targets = torch.zeros(1, 2, 3, dtype=torch.long)
    targets[0, 1] = 1024
    with pytest.raises(ValueError, match=r"codebook\(s\) \[1\] have no valid targets"):
        codebook_cross_entropy(torch.zeros(1, 2, 3, 1027), targets, DelayPattern(2).target_mask(targets))


def test_loss_backward_reaches_every_parameter():
    model = tiny("LA").train()
    delayed = DelayPattern().build(torch.randint(0, 1024, (2, 8, 10), generator=torch.Generator().manual_seed(0)))
    loss, _ = codebook_cross_entropy(model(delayed[..., :-1]), delayed[..., 1:],
                                     DelayPattern().target_mask(delayed[..., 1:]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------- init, groups
def test_gdn_gate_init_ranges():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig(schedule="LLLL", d_model=64, n_heads=64, n_kv_heads=1, gdn_key_dim=2,
                                 gdn_value_dim=2, d_ff=8))
    a_log = torch.cat([layer.gdn.A_log for layer in model.layers]).detach()
    dt = F.softplus(torch.cat([layer.gdn.dt_bias for layer in model.layers])).detach()
    assert a_log.exp().min() > 0 and a_log.exp().max() <= 16 and a_log.exp().mean().sub(8).abs() < 1.5
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert dt.log().mean().sub((torch.tensor(1e-3).log() + torch.tensor(0.1).log()) / 2).abs() < 0.4


def test_parameter_groups_skip_decay_on_gains_gates_and_embeddings():
    model = tiny("LA")
    skip = no_decay_parameter_names(model)
    assert {"embed.weight", "norm.weight", "layers.0.gdn.A_log", "layers.0.gdn.dt_bias", "layers.0.gdn.o_norm.weight",
            "layers.0.gdn_norm.weight", "layers.1.attn.q_norm.weight", "layers.1.attn_norm.weight"} <= skip
    assert not {"heads.weight", "layers.0.gdn.q_proj.weight", "layers.0.gdn.conv.weight",
                "layers.1.attn.o_proj.weight", "layers.1.mlp.down_proj.weight"} & skip
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) == len(skip)


# ---------------------------------------------------------------------------------------------------- info
def test_info_prints_schedule_and_counts(capsys):
    from hybridlm.stages import info

    info.run(load_params(REPO / "params.yaml"))
    out = capsys.readouterr().out
    assert "schedule: L L L A L L L A" in out
    assert "21,905,416  (21.9M)" in out
    assert out.count("2,074,476") == 6 and out.count("1,574,144") == 2 and out.count("3,154,944") == 2


def test_no_grad_weight_cache_follows_every_weight_change():
    """project() keeps stacked (and, for decode steps, transposed) weights on the module without gradients; an
    optimizer step, load_state_dict (how EMA weights come in) and autocast must each give the fresh weights' result,
    never the cached copy's."""
    from hybridlm.layers.mlp import SwiGLU

    torch.manual_seed(0)
    mlp = SwiGLU(16, 24)

    def reference(x):  # F.linear on the current weights, no cache
        gate, up = F.linear(x, mlp.gate_proj.weight), F.linear(x, mlp.up_proj.weight)
        return F.linear(F.silu(gate) * up, mlp.down_proj.weight)

    one, many = torch.randn(2, 1, 16), torch.randn(2, 5, 16)

    def check():
        with torch.no_grad():
            for x in (one, many):  # the decode layout (S = 1) and the stacked one (S > 1)
                torch.testing.assert_close(mlp(x), reference(x), rtol=1e-5, atol=1e-6)

    check()
    with torch.no_grad():
        cached = mlp(one)
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.5)
    mlp(many).square().sum().backward()
    optimizer.step()
    check()
    with torch.no_grad():
        assert not torch.allclose(mlp(one), cached)  # the step did change the output the cache would have given
    state = {k: torch.randn_like(v) for k, v in mlp.state_dict().items()}
    mlp.load_state_dict(state)
    check()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 copy, after the fp32 one
        out, expected = mlp(one), reference(one)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=0, atol=2e-2 * expected.abs().max().item())


def test_bf16_decode_projection_is_the_plain_product_bit_for_bit_under_1_and_2_threads():
    """A bf16 decode step multiplies by oneDNN's packed weight copy where oneDNN has bf16 (layers.projection._decode_gemv):
    the same bits as ``x @ W^T`` in bf16, whatever the thread count, and a module holding that copy still deep-copies
    (the copy starts without it)."""
    import copy

    from hybridlm.layers.mlp import SwiGLU
    from hybridlm.layers.projection import _onednn_bf16, project

    torch.manual_seed(0)
    mlp = SwiGLU(64, 96)
    x = torch.randn(5, 1, 64)
    stacked = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).bfloat16()
    expected = x.bfloat16() @ stacked.t()
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                outs.append(project(mlp, x, "gate_proj", "up_proj"))
    finally:
        torch.set_num_threads(before)
    layouts = {layout for _, layout in mlp._stacked_weights}
    assert layouts == ({"packed"} if _onednn_bf16() else {"transposed"})
    assert all(out.dtype == torch.bfloat16 and torch.equal(out, expected) for out in outs)
    assert not torch.equal(outs[0], x.bfloat16() @ stacked[:, torch.randperm(64)].t())  # the control: bits differ
    copied = copy.deepcopy(mlp)
    assert copied._stacked_weights == {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(copied(x), mlp(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norms_without_gradients_give_the_training_forward_bits(dtype):
    """Without gradients RMSNorm (and the gated norm built on it) runs torch's F.rms_norm: the same bits as the
    composed ops training differentiates, in fp32 and bf16, under autocast too; a wrong eps (the control) differs."""
    from hybridlm.layers.norms import GatedRMSNorm, RMSNorm

    torch.manual_seed(0)
    norm, gated = RMSNorm(96), GatedRMSNorm(96, eps=1e-5)
    for module in (norm, gated):
        module.weight.data.normal_()
    x, gate = (torch.randn(3, 5, 96) * 3).to(dtype), torch.randn(3, 5, 96).to(dtype)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            trained = norm(x), gated(x, gate)
            with torch.no_grad():
                assert torch.equal(norm(x), trained[0]) and torch.equal(gated(x, gate), trained[1])
                assert norm(x).dtype == dtype
    norm.eps = 1e-3
    with torch.no_grad():
        assert not torch.equal(norm(x), trained[0])


def test_cached_attention_on_cpu_keeps_fp32_under_bf16_autocast():
    """A CPU decode step attends in the cache's fp32 (CPU's bf16 one-query attention is the slow kernel): the
    cache stays fp32 under bf16 autocast and the steps stay within bf16 rounding of the fp32 forward; a cache made
    in bf16 keeps bf16 (the dtype follows the cache, not autocast)."""
    model = tiny("A")
    tokens = random_tokens(2, 6)
    with torch.no_grad():
        full = model(tokens)
        for dtype in (torch.float32, torch.bfloat16):
            cache = model.new_cache(2, dtype=dtype)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                steps = torch.cat([model(tokens[..., t : t + 1], cache) for t in range(6)], dim=2).float()
            assert cache.layers[0].k.dtype == cache.layers[0].v.dtype == dtype
            assert (steps - full).abs().max() < 0.05 * full.abs().max()
