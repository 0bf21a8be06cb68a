"""The gated delta rule (Gated DeltaNet's token mixer): one op, several backends, fla layout [B, T, H, K].

Per head the state S is a K x V matrix; for every token t (q_t, k_t already L2-normalised by the caller):

    S <- exp(g_t) S                              (gated decay, g_t <= 0 is a log-decay)
    S <- S + beta_t k_t (v_t - S^T k_t)^T        (delta rule: write the prediction error of v_t)
    o_t = S^T (scale q_t)

Backends
--------
- ``torch_recurrent``: the token loop above, written directly from the math. The reference for parity tests, and
  the O(1)-per-token decoding step (call it with T = 1 and the carried state).
- ``torch_chunk``: our chunked WY form in plain PyTorch (any device; differentiable, with a hand-derived backward:
  autograd's bookkeeping dominated the CPU profile). This is what CPU training and CI run.
- ``fla_chunk``: flash-linear-attention's Triton chunk kernel (CUDA only, imported lazily; ``pip install
  hybridlm[cuda]``). It takes the same ``scale`` / ``initial_state`` / ``output_final_state`` arguments and keeps
  the state in fp32 internally.
- ``auto``: ``fla_chunk`` for CUDA tensors when fla imports, else ``torch_chunk``.

Why the chunk form is exact (not an approximation)
--------------------------------------------------
Split the sequence into chunks of C tokens and let S_0 be the state entering a chunk. Inside the chunk let
G_t = g_1 + ... + g_t (cumulative log-decay, so the total decay from token i to token t >= i is exp(G_t - G_i)).
Write each update as S_t = exp(g_t) S_{t-1} + k_t w_t^T with w_t = beta_t (v_t - exp(g_t) S_{t-1}^T k_t). Unrolling,

    S_t = exp(G_t) S_0 + sum_{i <= t} exp(G_t - G_i) k_i w_i^T,

and substituting that into the definition of w_t gives a *linear* system for the C rows of W:

    w_t + sum_{i < t} beta_t exp(G_t - G_i) (k_t . k_i) w_i = beta_t v_t - beta_t exp(G_t) S_0^T k_t,

i.e. (I + A) W = diag(beta) V - diag(beta exp(G)) K S_0 with A strictly lower triangular. Solving it once per chunk
(a unit-lower-triangular solve: the "UT transform") gives W = U - Wk S_0 with U = (I + A)^-1 diag(beta) V and
Wk = (I + A)^-1 diag(beta exp(G)) K, both independent of S_0, so they are computed for all chunks at once. Then

    o_t   = exp(G_t) S_0^T (scale q_t) + sum_{i <= t} exp(G_t - G_i) (scale q_t . k_i) w_i
    S_C   = exp(G_C) S_0 + sum_i exp(G_C - G_i) k_i w_i^T.

Every step is an identity of the recurrence, so the result equals the token loop up to float rounding (measured
~1e-7 on outputs in fp32). Only the state hand-off between chunks is sequential: T / C small matmuls.

Numerics
--------
All chunk arithmetic and the state are fp32 whatever the input dtype; the output is cast back to ``v.dtype``.
Decay factors are only ever formed as exp of a non-positive number: exp(G_t - G_i) for t >= i (the difference is
masked to -inf *before* the exp for t < i, so a strongly decaying chunk, g ~ -20 per token, can never overflow to
inf and poison gradients with inf * 0), exp(G_t) and exp(G_C - G_i). Forms like k_i exp(-G_i) are never used.
Padding (T not a multiple of C) appends tokens with k = v = q = 0, g = 0, beta = 0, which leave the state untouched.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

BACKENDS = ("auto", "torch_chunk", "torch_recurrent", "fla_chunk")
DEFAULT_CHUNK_SIZE = 32  # measured on 2 CPU cores: 32 beats 64 (fewer CxC flops) and 16 (longer state loop)
_FLA_INSTALL_HINT = "install it with `pip install hybridlm[cuda]` (flash-linear-attention, needs CUDA + Triton)"


# ----------------------------------------------------------------------------------------------------------------
# Reference: the token loop
# ----------------------------------------------------------------------------------------------------------------
def recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token gated delta rule, straight from the recurrence (fp32 state).

    O(T) sequential steps of O(K V) work each: slow for training, but the exact reference and the right tool for
    decoding one token at a time (T = 1 with ``initial_state`` = the cached state).
    """
    batch, length, heads, key_dim = k.shape
    value_dim = v.shape[-1]
    scale = key_dim**-0.5 if scale is None else scale
    f32 = torch.float32
    if initial_state is None:
        state = q.new_zeros(batch, heads, key_dim, value_dim, dtype=f32)
    else:
        state = initial_state.to(f32)
    # unbind over time (not indexing): autograd then stacks the per-step gradients once, instead of scattering
    # each step's gradient into a zero tensor of the full size (O(T^2) memory traffic).
    steps = zip((q.to(f32) * scale).unbind(1), k.to(f32).unbind(1), v.to(f32).unbind(1), g.to(f32).exp().unbind(1),
                beta.to(f32).unbind(1))
    outs = []
    for q_t, k_t, v_t, decay_t, beta_t in steps:  # q_t, k_t: [B, H, K]; v_t: [B, H, V]; decay_t, beta_t: [B, H]
        state = state * decay_t[..., None, None]
        predicted = (k_t.unsqueeze(-2) @ state).squeeze(-2)  # S^T k: [B, H, V]
        error = (v_t - predicted) * beta_t.unsqueeze(-1)
        state = state + k_t.unsqueeze(-1) * error.unsqueeze(-2)
        outs.append((q_t.unsqueeze(-2) @ state).squeeze(-2))
    o = torch.stack(outs, dim=1).to(v.dtype)  # [B, T, H, V]
    return o, (state if output_final_state else None)


# ----------------------------------------------------------------------------------------------------------------
# Our chunked WY form
# ----------------------------------------------------------------------------------------------------------------
class _ChunkGatedDelta(torch.autograd.Function):
    """The chunked WY form on chunked fp32 tensors [B, H, N, C, *], with a hand-derived backward.

    Why a custom backward: autograd's version of this graph spends most of its time on bookkeeping (per-matrix
    copies inside the batched triangular solve, cat/split and broadcast gradients), not on the matmuls. Here the
    backward is the transposed computation written out: one reverse loop over chunks for the state gradient and
    batched matmuls for everything else. Parity with the token loop's autograd gradients is tested.
    Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, beta, state):
        size = q.shape[-2]
        ones = torch.ones(size, size, dtype=torch.bool, device=q.device)
        cum = g.cumsum(-1)  # G_t within each chunk
        # exp(G_t - G_i) for i <= t, exactly 0 above the diagonal; masked before the exp so it never overflows.
        decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~ones.tril(), float("-inf")).exp()
        gate = cum.exp()  # exp(G_t) <= 1
        kk = k @ k.transpose(-1, -2)
        lower = (kk * decay).tril(-1)  # M; the UT matrix is I + diag(beta) M
        eye = torch.eye(size, dtype=q.dtype, device=q.device)
        inverse = torch.linalg.solve_triangular(lower * beta.unsqueeze(-1), eye.expand_as(lower), upper=False,
                                                unitriangular=True)  # T = (I + diag(beta) M)^-1
        beta_gate = beta * gate
        u = inverse @ (v * beta.unsqueeze(-1))
        wk = inverse @ (k * beta_gate.unsqueeze(-1))
        qk = q @ k.transpose(-1, -2)
        scores = qk * decay
        q_gated = q * gate.unsqueeze(-1)
        to_end = (cum[..., -1:] - cum).exp()  # exp(G_C - G_i)
        k_to_end = k * to_end.unsqueeze(-1)
        chunk_decay = cum[..., -1].exp()  # exp(G_C): [B, H, N]

        # The only sequential part: hand the state from chunk to chunk.
        states, errors = [], []
        for u_n, wk_n, kt_n, d_n in zip(u.unbind(2), wk.unbind(2), k_to_end.transpose(-1, -2).unbind(2),
                                        chunk_decay.unbind(2)):
            w = torch.baddbmm(u_n.flatten(0, 1), wk_n.flatten(0, 1), state.flatten(0, 1), alpha=-1).view_as(u_n)
            states.append(state)
            errors.append(w)
            state = torch.baddbmm((state * d_n[..., None, None]).flatten(0, 1), kt_n.flatten(0, 1),
                                  w.flatten(0, 1)).view_as(state)
        entering = torch.stack(states, dim=2)  # [B, H, N, K, V]
        w_all = torch.stack(errors, dim=2)  # [B, H, N, C, V]
        o = q_gated @ entering + scores @ w_all
        ctx.save_for_backward(q, k, v, beta, gate, decay, kk, lower, qk, scores, inverse, u, wk, to_end,
                              chunk_decay, entering, w_all)
        return o, state

    @staticmethod
    def backward(ctx, d_o, d_final):
        (q, k, v, beta, gate, decay, kk, lower, qk, scores, inverse, u, wk, to_end, chunk_decay, entering,
         w_all) = ctx.saved_tensors
        q_gated = q * gate.unsqueeze(-1)
        k_to_end = k * to_end.unsqueeze(-1)
        d_o = d_o.contiguous() if d_o is not None else torch.zeros_like(u)
        d_state = d_final if d_final is not None else torch.zeros_like(entering[:, :, 0])
        # Parts of dW_n and dS_n that do not depend on later chunks, batched.
        dw_local = scores.transpose(-1, -2) @ d_o  # [B, H, N, C, V]
        ds_local = q_gated.transpose(-1, -2) @ d_o  # [B, H, N, K, V]
        d_leaving, d_errors = [], []
        for n in reversed(range(u.shape[2])):
            dw = dw_local[:, :, n] + k_to_end[:, :, n] @ d_state
            d_leaving.append(d_state)
            d_errors.append(dw)
            d_state = (ds_local[:, :, n] + d_state * chunk_decay[:, :, n, None, None]
                       - wk[:, :, n].transpose(-1, -2) @ dw)
        d_leaving = torch.stack(d_leaving[::-1], dim=2)  # gradient of the state leaving chunk n
        dw = torch.stack(d_errors[::-1], dim=2)

        d_q_gated = d_o @ entering.transpose(-1, -2)
        d_scores = d_o @ w_all.transpose(-1, -2)
        d_k_to_end = w_all @ d_leaving.transpose(-1, -2)
        d_chunk_decay = (entering * d_leaving).sum((-1, -2))
        # UT transform: X = T R  =>  dR = T^T dX,  d(I + A) = -dR X^T (strictly lower part).
        inverse_t = inverse.transpose(-1, -2)
        d_rv = inverse_t @ dw  # R1 = diag(beta) V, dU = dW
        d_rk = -(inverse_t @ (dw @ entering.transpose(-1, -2)))  # R2 = diag(beta gate) K, dWk = -dW S^T
        d_a = -(d_rv @ u.transpose(-1, -2) + d_rk @ wk.transpose(-1, -2)).tril(-1)
        d_lower = d_a * beta.unsqueeze(-1)
        d_beta = (d_a * lower).sum(-1) + (d_rv * v).sum(-1)
        rk_k = (d_rk * k).sum(-1)
        d_beta = d_beta + gate * rk_k

        d_kk = d_lower * decay
        d_sd = d_scores * decay
        d_q = d_sd @ k + d_q_gated * gate.unsqueeze(-1)
        d_k = ((d_kk + d_kk.transpose(-1, -2)) @ k + d_sd.transpose(-1, -2) @ q
               + d_rk * (beta * gate).unsqueeze(-1) + d_k_to_end * to_end.unsqueeze(-1))
        d_v = d_rv * beta.unsqueeze(-1)

        # Gradient w.r.t. the cumulative log-decay G, then back through the cumsum.
        e = (d_lower * kk + d_scores * qk) * decay  # d/dG of exp(G_t - G_i) terms
        d_cum = e.sum(-1) - e.sum(-2) + (d_q_gated * q_gated).sum(-1) + beta * gate * rk_k
        f = (d_k_to_end * k_to_end).sum(-1)
        d_cum = d_cum - f
        d_cum[..., -1] += f.sum(-1) + chunk_decay * d_chunk_decay
        d_g = d_cum.flip(-1).cumsum(-1).flip(-1)
        return d_q, d_k, d_v, d_g, d_beta, d_state


def chunk_gated_delta_rule_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked gated delta rule in pure PyTorch (exact; see the module docstring for the derivation).

    Everything that does not depend on the incoming state (decays, the triangular solve, the intra-chunk q.k
    scores) is batched over all chunks; only the state hand-off runs as a loop over T / chunk_size chunks.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_gated_delta_rule_torch: chunk_size must be >= 1, got {chunk_size}")
    batch, length, heads, key_dim = k.shape
    value_dim = v.shape[-1]
    scale = key_dim**-0.5 if scale is None else scale
    f32 = torch.float32
    size = min(chunk_size, length)
    pad = -length % size
    chunks = (length + pad) // size

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        # [B, T, H, *] -> contiguous [B, H, N, C, *] in fp32, padding the tail with zeros (a no-op token).
        x = x.to(f32)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        x = x.transpose(1, 2).contiguous()
        return x.view(x.shape[0], x.shape[1], chunks, size, *x.shape[3:])

    if initial_state is None:
        initial_state = q.new_zeros(batch, heads, key_dim, value_dim, dtype=f32)
    o, state = _ChunkGatedDelta.apply(to_chunks(q) * scale, to_chunks(k), to_chunks(v),
                                      to_chunks(g.unsqueeze(-1)).squeeze(-1), to_chunks(beta.unsqueeze(-1)).squeeze(-1),
                                      initial_state.to(f32))
    o = o.reshape(batch, heads, chunks * size, value_dim)[:, :, :length].transpose(1, 2).to(v.dtype)
    return o, (state if output_final_state else None)


# ----------------------------------------------------------------------------------------------------------------
# flash-linear-attention (CUDA)
# ----------------------------------------------------------------------------------------------------------------
def _import_fla() -> Callable:
    """Import fla's chunk kernel, or raise an ImportError that says how to get it."""
    try:
        module = importlib.import_module("fla.ops.gated_delta_rule")
    except Exception as exc:  # ImportError, or a broken triton install failing at import time
        raise ImportError(f"gated_delta backend 'fla_chunk' needs flash-linear-attention: {_FLA_INSTALL_HINT} "
                          f"(import failed: {exc})") from exc
    return module.chunk_gated_delta_rule


def fla_available() -> bool:
    """True when fla's Gated DeltaNet kernels import (they still need CUDA tensors to run)."""
    try:
        _import_fla()
    except ImportError:
        return False
    return True


def fla_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fla's Triton chunk kernel (same layout and arguments; fla applies ``scale`` and keeps the state in fp32)."""
    if q.device.type != "cuda":
        raise ValueError(f"gated_delta backend 'fla_chunk' runs on CUDA tensors only, got device {q.device}; "
                         "use backend 'torch_chunk' (or 'auto') on this device")
    kernel = _import_fla()
    if initial_state is not None:
        initial_state = initial_state.to(torch.float32)
    o, final = kernel(q, k, v, g.to(torch.float32), beta, scale=k.shape[-1] ** -0.5 if scale is None else scale,
                      initial_state=initial_state, output_final_state=output_final_state)
    return o.to(v.dtype), (final.to(torch.float32) if output_final_state else None)


_IMPLEMENTATIONS: dict[str, Callable] = {
    "torch_recurrent": recurrent_gated_delta_rule,
    "torch_chunk": chunk_gated_delta_rule_torch,
    "fla_chunk": fla_chunk,
}


# ----------------------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------------------
def resolve_backend(name: str, device: torch.device | str) -> str:
    """Map a backend name (``auto`` included) to the concrete backend used on ``device``, or raise a clear error.

    ``auto`` picks ``fla_chunk`` on CUDA when fla imports, else ``torch_chunk``. Naming ``fla_chunk`` explicitly
    off CUDA, or without fla installed, is an error rather than a silent fallback: the user asked for that kernel.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown gated_delta backend {name!r}; choose one of {', '.join(BACKENDS)}")
    device_type = torch.device(device).type
    if name == "auto":
        return "fla_chunk" if device_type == "cuda" and fla_available() else "torch_chunk"
    if name == "fla_chunk":
        if device_type != "cuda":
            raise ValueError(f"gated_delta backend 'fla_chunk' needs a CUDA device, got {device_type!r}; "
                             "use 'torch_chunk' or 'auto'")
        _import_fla()  # raises ImportError with the install hint
    return name


def _check_shapes(q, k, v, g, beta, initial_state) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"gated_delta: q and k must both be [B, T, H, K], got q {tuple(q.shape)}, k {tuple(k.shape)}")
    batch, length, heads, key_dim = k.shape
    if length < 1:
        raise ValueError(f"gated_delta: sequence length T must be >= 1, got q {tuple(q.shape)}")
    if v.dim() != 4 or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"gated_delta: v must be [B, T, H, V] = [{batch}, {length}, {heads}, V], got {tuple(v.shape)}")
    for name, x in (("g", g), ("beta", beta)):
        if x.shape != k.shape[:3]:
            raise ValueError(f"gated_delta: {name} must be [B, T, H] = {tuple(k.shape[:3])}, got {tuple(x.shape)}")
    expected = (batch, heads, key_dim, v.shape[-1])
    if initial_state is not None and tuple(initial_state.shape) != expected:
        raise ValueError(f"gated_delta: initial_state must be [B, H, K, V] = {expected}, "
                         f"got {tuple(initial_state.shape)}")


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule with the chosen backend.

    q, k: [B, T, H, K] (L2-normalised by the caller); v: [B, T, H, V]; g: [B, T, H] log-decay (<= 0);
    beta: [B, T, H] (after sigmoid, possibly x2); scale defaults to K ** -0.5 and is applied to q here.
    Returns o [B, T, H, V] in v.dtype and, when ``output_final_state``, the state [B, H, K, V] in fp32.
    """
    _check_shapes(q, k, v, g, beta, initial_state)
    impl = _IMPLEMENTATIONS[resolve_backend(backend, q.device)]
    return impl(q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state)


def check_backend_parity(backend: str, device: torch.device | str, *, atol: float | None = None) -> float:
    """Start-up self-check: run ``backend`` and the token-loop reference on a small random input and compare.

    Why: a broken kernel stack (some torch/Triton/GPU combinations) returns NaNs or wrong numbers silently; a
    second of checking at start-up beats a wasted training run. Forward outputs, final state and the gradients of
    q, k, v, g, beta are compared. Returns the largest absolute difference; raises RuntimeError on a mismatch.
    The default tolerance is 1e-4 for the fp32 torch backends and 2e-2 for fla (its kernels use TF32/bf16 dots).
    """
    resolved = resolve_backend(backend, device)
    if atol is None:
        atol = 2e-2 if resolved == "fla_chunk" else 1e-4
    generator = torch.Generator().manual_seed(0)
    batch, length, heads, key_dim, value_dim = 2, 80, 2, 16, 32  # T not a multiple of the chunk size

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    q = torch.nn.functional.normalize(rand(batch, length, heads, key_dim), dim=-1)
    k = torch.nn.functional.normalize(rand(batch, length, heads, key_dim), dim=-1)
    v = rand(batch, length, heads, value_dim)
    g = torch.nn.functional.logsigmoid(rand(batch, length, heads) + 2.0)
    beta = 2.0 * torch.sigmoid(rand(batch, length, heads))
    state0 = rand(batch, heads, key_dim, value_dim) * 0.1
    probe_o = rand(batch, length, heads, value_dim)
    probe_s = rand(batch, heads, key_dim, value_dim)

    def run(impl: Callable, dev: torch.device | str) -> list[torch.Tensor]:
        inputs = [x.to(dev).requires_grad_() for x in (q, k, v, g, beta)]
        o, final = impl(*inputs, initial_state=state0.to(dev), output_final_state=True)
        loss = (o.float() * probe_o.to(dev)).sum() + (final * probe_s.to(dev)).sum()
        grads = torch.autograd.grad(loss, inputs)
        return [t.detach().float().cpu() for t in (o, final, *grads)]

    got = run(_IMPLEMENTATIONS[resolved], device)
    want = run(recurrent_gated_delta_rule, "cpu")
    names = ("output", "final_state", "grad q", "grad k", "grad v", "grad g", "grad beta")
    worst = 0.0
    for name, a, b in zip(names, got, want):
        if not torch.isfinite(a).all():
            raise RuntimeError(f"gated_delta backend {resolved!r} on {device} produced non-finite {name}; "
                               "the kernel stack is broken (try backend 'torch_chunk')")
        err = (a - b).abs().max().item()
        worst = max(worst, err)
        if err > atol:
            raise RuntimeError(f"gated_delta backend {resolved!r} on {device} disagrees with the reference: "
                               f"max |diff| of {name} = {err:.3g} > {atol:g} (try backend 'torch_chunk')")
    return worst
