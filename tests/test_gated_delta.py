"""Parity of the Gated DeltaNet backends with the token-loop reference (outputs, final state and all gradients).

Tolerances (fp32): outputs/states atol 1e-5, gradients atol 1e-4 + rtol 1e-4. Measured differences are ~1e-7
(outputs) and ~1e-6 (gradients); a wrong term in the chunk algebra gives errors of order 1e-1.
"""

from __future__ import annotations

import pytest
import torch

from hybridlm.bench.kernels import run_benchmark
from hybridlm.ops.gated_delta import (
    BACKENDS,
    BackendParityError,
    check_backend_parity,
    chunk_gated_delta_rule_torch,
    gated_delta_rule,
    gated_delta_step,
    recurrent_gated_delta_rule,
    resolve_backend,
)

OUT_TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-4, "rtol": 1e-4}
NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def make_inputs(batch=2, length=50, heads=2, key_dim=16, value_dim=24, *, decay="normal", neg_eigen=True, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    q = torch.nn.functional.normalize(rand(batch, length, heads, key_dim), dim=-1)
    k = torch.nn.functional.normalize(rand(batch, length, heads, key_dim), dim=-1)
    v = rand(batch, length, heads, value_dim)
    if decay == "strong":  # g down to about -20 per step
        g = -torch.rand(batch, length, heads, generator=gen) * 20.0
    else:
        g = torch.nn.functional.logsigmoid(rand(batch, length, heads) + 2.0)
    beta = torch.sigmoid(rand(batch, length, heads)) * (2.0 if neg_eigen else 1.0)
    state = rand(batch, heads, key_dim, value_dim) * 0.5
    return [q, k, v, g, beta, state]


def run_with_grads(fn, inputs, seed=1, **kwargs):
    """Output, final state and the gradients of a random linear functional of both, w.r.t. all inputs."""
    xs = [x.clone().requires_grad_() for x in inputs]
    o, final = fn(*xs[:5], initial_state=xs[5], output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen)).sum() + (final * torch.randn(final.shape, generator=gen)).sum()
    loss.backward()
    return o.detach(), final.detach(), {name: x.grad for name, x in zip(NAMES, xs)}


def assert_parity(inputs, **chunk_kwargs):
    o_ref, s_ref, g_ref = run_with_grads(recurrent_gated_delta_rule, inputs)
    o, s, grads = run_with_grads(chunk_gated_delta_rule_torch, inputs, **chunk_kwargs)
    torch.testing.assert_close(o, o_ref, **OUT_TOL)
    torch.testing.assert_close(s, s_ref, **OUT_TOL)
    for name in NAMES:
        assert torch.isfinite(grads[name]).all(), name
        torch.testing.assert_close(grads[name], g_ref[name], **GRAD_TOL, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize(
    "length, chunk_size, decay, neg_eigen",
    [
        (64, 16, "normal", True),  # T a multiple of the chunk size
        (50, 16, "normal", True),  # T not a multiple: internal padding
        (10, 16, "normal", False),  # T < chunk size, beta in (0, 1)
        (1, 16, "normal", True),  # T = 1
        (70, 32, "strong", True),  # g down to -20 per step: decay ratios must never overflow
    ],
)
def test_chunk_matches_recurrent(length, chunk_size, decay, neg_eigen):
    assert_parity(make_inputs(length=length, decay=decay, neg_eigen=neg_eigen), chunk_size=chunk_size)


def test_default_chunk_size_and_scale():
    inputs = make_inputs(length=130, key_dim=32)
    assert_parity(inputs)  # default chunk size (T=130 is not a multiple), scale K^-0.5
    o_ref, _, _ = run_with_grads(recurrent_gated_delta_rule, inputs, scale=0.3)
    o, _, _ = run_with_grads(chunk_gated_delta_rule_torch, inputs, scale=0.3)
    torch.testing.assert_close(o, o_ref, **OUT_TOL)


@pytest.mark.parametrize("fn", [recurrent_gated_delta_rule, chunk_gated_delta_rule_torch])
def test_carried_state_equals_one_run(fn):
    q, k, v, g, beta, state = make_inputs(length=90)
    o_full, s_full = fn(q, k, v, g, beta, initial_state=state, output_final_state=True)
    cut = 37
    o1, s1 = fn(q[:, :cut], k[:, :cut], v[:, :cut], g[:, :cut], beta[:, :cut], initial_state=state,
                output_final_state=True)
    o2, s2 = fn(q[:, cut:], k[:, cut:], v[:, cut:], g[:, cut:], beta[:, cut:], initial_state=s1,
                output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_full, **OUT_TOL)
    torch.testing.assert_close(s2, s_full, **OUT_TOL)


def test_step_by_step_decoding_equals_full_run():
    q, k, v, g, beta, _ = make_inputs(length=12)
    o_full, s_full = chunk_gated_delta_rule_torch(q, k, v, g, beta, output_final_state=True)
    state, outs = None, []
    for t in range(12):
        o_t, state = gated_delta_rule(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], g[:, t:t + 1],
                                      beta[:, t:t + 1], initial_state=state, output_final_state=True,
                                      backend="torch_recurrent")
        outs.append(o_t)
    torch.testing.assert_close(torch.cat(outs, dim=1), o_full, **OUT_TOL)
    torch.testing.assert_close(state, s_full, **OUT_TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_is_the_token_loop_bit_for_bit(dtype):
    """gated_delta_step (the decoder's one-token step) carries the state through 6 steps with exactly the token
    loop's bits, outputs (fp32, the loop's before its cast to v's dtype) and states, for q, k, v given in fp32 or
    bf16 (the step takes them cast to fp32, as the loop casts them); it refuses other dtypes."""
    q, k, v, g, beta, state = (x.to(dtype) if i < 3 else x for i, x in enumerate(make_inputs(length=6)))
    ref_state, step_state = state, state
    with pytest.raises(ValueError, match="must all be fp32"):
        gated_delta_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0].bfloat16(), state, scale=0.3)
    for t in range(6):
        args = [x[:, t].float() for x in (q, k, v, g, beta)]
        ref_out, ref_state = recurrent_gated_delta_rule(*(x[:, t : t + 1] for x in (q, k, v, g, beta)), scale=0.3,
                                                        initial_state=ref_state, output_final_state=True)
        if t == 3:  # the control: a step from the initial state, not the carried one, is caught
            assert not torch.equal(gated_delta_step(*args, state, scale=0.3)[0].to(dtype), ref_out[:, 0])
        out, step_state = gated_delta_step(*args, step_state, scale=0.3)
        assert out.dtype == torch.float32 and step_state.dtype == torch.float32
        assert torch.equal(out.to(dtype), ref_out[:, 0]) and torch.equal(step_state, ref_state)


def test_no_state_means_zero_state_and_none_returned():
    q, k, v, g, beta, state = make_inputs(length=20)
    o, final = gated_delta_rule(q, k, v, g, beta, backend="torch_chunk")
    assert final is None
    o_zero, _ = gated_delta_rule(q, k, v, g, beta, initial_state=torch.zeros_like(state), backend="torch_chunk")
    torch.testing.assert_close(o, o_zero)
    o_nonzero, _ = gated_delta_rule(q, k, v, g, beta, initial_state=state, backend="torch_chunk")
    assert (o_nonzero - o).abs().max() > 1e-2  # the state is really used


def test_dtypes_output_follows_v_state_is_fp32():
    q, k, v, g, beta, state = make_inputs(length=20)
    o, final = gated_delta_rule(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, beta.bfloat16(),
                                initial_state=state, output_final_state=True, backend="torch_chunk")
    assert o.dtype == torch.bfloat16 and final.dtype == torch.float32
    o_ref, _ = recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state)
    torch.testing.assert_close(o.float(), o_ref, atol=5e-2, rtol=5e-2)


def test_resolve_backend_and_errors():
    assert resolve_backend("auto", "cpu") == "torch_chunk"
    assert resolve_backend("torch_recurrent", torch.device("cpu")) == "torch_recurrent"
    with pytest.raises(ValueError, match="unknown gated_delta backend 'flash'.*torch_chunk"):
        resolve_backend("flash", "cpu")
    with pytest.raises(ValueError, match="fla_chunk.*CUDA"):
        resolve_backend("fla_chunk", "cpu")
    assert set(BACKENDS) == {"auto", "torch_chunk", "torch_recurrent", "fla_chunk"}


def test_shape_errors_name_the_argument():
    q, k, v, g, beta, state = make_inputs(length=8)
    with pytest.raises(ValueError, match="beta must be"):
        gated_delta_rule(q, k, v, g, beta[:, :4])
    with pytest.raises(ValueError, match="initial_state must be"):
        gated_delta_rule(q, k, v, g, beta, initial_state=state[..., :3])
    with pytest.raises(ValueError, match="v must be"):
        gated_delta_rule(q, k, v[:, :3], g, beta)
    with pytest.raises(ValueError, match="sequence length T must be >= 1"):
        gated_delta_rule(q[:, :0], k[:, :0], v[:, :0], g[:, :0], beta[:, :0])


@pytest.mark.parametrize("backend", ["auto", "torch_chunk", "torch_recurrent"])
def test_start_up_parity_check_passes_on_cpu(backend):
    assert check_backend_parity(backend, "cpu") < 1e-4


def test_start_up_parity_check_catches_a_broken_backend(monkeypatch):
    from hybridlm.ops import gated_delta

    def broken(*args, **kwargs):
        o, s = chunk_gated_delta_rule_torch(*args, **kwargs)
        return o * float("nan"), s

    monkeypatch.setitem(gated_delta._IMPLEMENTATIONS, "torch_chunk", broken)
    with pytest.raises(BackendParityError, match="'torch_chunk' on cpu produced non-finite output"):
        check_backend_parity("torch_chunk", "cpu")


def test_benchmark_prints_a_row_per_backend(capsys):
    rows = run_benchmark(batch=1, length=40, heads=2, key_dim=8, value_dim=8, repeats=1, device="cpu")
    names = [row["name"] for row in rows]
    assert names[:2] == ["torch_recurrent", "torch_chunk"]
    out = capsys.readouterr().out
    assert "fwd+bwd ms" in out and "torch_chunk" in out
    assert all(row["max_abs_diff"] < 1e-5 and row["fwd_bwd_ms"] > 0 for row in rows)
    with pytest.raises(ValueError, match="length must be >= 1"):
        run_benchmark(length=0, device="cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fla_chunk_matches_torch_chunk_on_cuda():
    pytest.importorskip("fla", reason="flash-linear-attention not installed (pip install hybridlm[cuda])")
    inputs = [x.cuda() for x in make_inputs(length=100, key_dim=48, value_dim=96)]
    o_ref, s_ref, g_ref = run_with_grads(chunk_gated_delta_rule_torch, inputs)
    o, s, grads = run_with_grads(lambda *a, **kw: gated_delta_rule(*a, backend="fla_chunk", **kw), inputs)
    tol = {"atol": 2e-2, "rtol": 2e-2}  # fla's fp32 path uses TF32 dots
    torch.testing.assert_close(o, o_ref, **tol)
    torch.testing.assert_close(s, s_ref, **tol)
    for name in NAMES:
        torch.testing.assert_close(grads[name], g_ref[name], **tol, msg=lambda m: f"grad {name}: {m}")
    assert check_backend_parity("fla_chunk", "cuda") < 2e-2

