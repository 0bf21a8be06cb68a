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
Autocast (bf16 training) is switched off inside the torch backends (forward and backward): autocast would run
their matmuls in bf16, i.e. the decays, the triangular solve and the state hand-off, which accumulate over the
whole sequence, and in-place products into fp32 buffers would fail outright. fla does the same (fp32 state and
decay, bf16 only in the dot products it can afford).
Decay factors are only ever formed as exp of a non-positive number: exp(G_t - G_i) for t >= i (the difference is
masked to -inf *before* the exp for t < i, so a strongly decaying chunk, g ~ -20 per token, can never overflow to
inf and poison gradients with inf * 0), exp(G_t) and exp(G_C - G_i). Forms like k_i exp(-G_i) are never used.
Padding (T not a multiple of C) appends tokens with k = v = q = 0, g = 0, beta = 0, which leave the state untouched.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from hybridlm.interface import StageFailure

BACKENDS = ("auto", "torch_chunk", "torch_recurrent", "fla_chunk")
DEFAULT_CHUNK_SIZE = 32  # measured on 2 CPU cores: 32 beats 64 (fewer CxC flops) and 16 (longer state loop)
_FLA_INSTALL_HINT = "install it with `pip install hybridlm[cuda]` (flash-linear-attention, needs CUDA + Triton)"


def _no_autocast(device: torch.device):
    """A context in which ``device``'s autocast is off (the torch backends compute in fp32; see Numerics)."""
    return torch.autocast(device.type, enabled=False)


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
    with _no_autocast(q.device):
        for q_t, k_t, v_t, decay_t, beta_t in steps:
            out, state = _token(state, q_t, k_t, v_t, decay_t, beta_t)
            outs.append(out)
    o = torch.stack(outs, dim=1).to(v.dtype)  # [B, T, H, V]
    return o, (state if output_final_state else None)


def _token(state: torch.Tensor, q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, decay_t: torch.Tensor,
           beta_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence, all fp32 (scale already in ``q_t``): ``q_t, k_t [B, H, K]``, ``v_t [B, H, V]``,
    ``decay_t = exp(g_t), beta_t [B, H]`` -> (``o_t [B, H, V]``, the new state). Out of place: autograd saves
    the states. The products are the ``bmm`` that ``k_t.unsqueeze(-2) @ state`` dispatches to, called directly
    (the same bits, without matmul's expand / reshape bookkeeping: a decode step is overhead-bound)."""
    rows, key_dim, value_dim = -1, state.shape[-2], state.shape[-1]
    state = state * decay_t[..., None, None]
    predicted = torch.bmm(k_t.reshape(rows, 1, key_dim), state.view(rows, key_dim, value_dim))  # S^T k
    error = (v_t - predicted.view(v_t.shape)) * beta_t.unsqueeze(-1)
    state = state + k_t.unsqueeze(-1) * error.unsqueeze(-2)
    out = torch.bmm(q_t.reshape(rows, 1, key_dim), state.view(rows, key_dim, value_dim))
    return out.view(v_t.shape), state


def gated_delta_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                     state: torch.Tensor, *, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step, all fp32: ``q, k [B, H, K]`` (L2-normalised), ``v [B, H, V]``, ``g, beta [B, H]`` and
    the carried ``state [B, H, K, V]`` -> (``o [B, H, V]``, the next state). The token loop's arithmetic for
    T = 1, the same bits as :func:`recurrent_gated_delta_rule` (tests/test_gated_delta.py), without its per-call
    stacking, unbinding and casts of the time axis: a decode step is overhead-bound (a few us per op), and this
    is about a third of the token loop's ops at T = 1. The output stays fp32 for the gated norm that follows.
    """
    if any(x.dtype != torch.float32 for x in (q, k, v, g, beta, state)):
        raise ValueError("gated_delta_step: q, k, v, g, beta and state must all be fp32")
    with _no_autocast(q.device):
        return _token(state, q * scale, k, v, g.exp(), beta)


# ----------------------------------------------------------------------------------------------------------------
# Our chunked WY form
# ----------------------------------------------------------------------------------------------------------------
def _to_chunks(x: torch.Tensor, size: int, chunks: int) -> torch.Tensor:
    """[B, T, H, *] (any float dtype) -> a new contiguous fp32 tensor [N, B*H, C, *], the tail zero-padded.

    Why chunk-major ([N, ...] first): the sequential loops then read and write ``buf[n]``, a contiguous block, so
    ``baddbmm_`` / ``out=`` work in place with no hidden copies; the chunk-parallel matmuls just see N*B*H matrices.
    One strided copy does the cast and the transpose (measured ~4x faster than reshaping a permuted view).
    """
    batch, length, heads = x.shape[:3]
    rest = tuple(x.shape[3:])
    if chunks * size != length:  # padded tail: zero tokens leave the state untouched and get zero gradients
        x = torch.nn.functional.pad(x, (0, 0) * (len(rest) + 1) + (0, chunks * size - length))
    out = torch.empty((chunks, batch, heads, size) + rest, dtype=torch.float32, device=x.device)
    out.copy_(x.unflatten(1, (chunks, size)).permute(1, 0, 3, 2, *range(4, x.dim() + 1)))
    return out.flatten(1, 2)


def _from_chunks(x: torch.Tensor, batch: int, heads: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of ``_to_chunks``: [N, B*H, C, *] -> [B, T, H, *] in ``dtype`` (padding dropped)."""
    chunks, size = x.shape[0], x.shape[2]
    rest = tuple(x.shape[3:])
    out = torch.empty((batch, chunks * size, heads) + rest, dtype=dtype, device=x.device)
    out.unflatten(1, (chunks, size)).copy_(x.unflatten(1, (batch, heads)).permute(1, 0, 3, 2, *range(4, x.dim() + 1)))
    return out if chunks * size == length else out[:, :length]


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) as a batched matmul: no full-size temporary (fresh large buffers cost page faults here)."""
    return torch.matmul(a.unsqueeze(-2), b.unsqueeze(-1)).view(a.shape[:-1])


class _ChunkGatedDelta(torch.autograd.Function):
    """The chunked WY form with a hand-derived backward; inputs and outputs in the public [B, T, H, *] layout.

    Why a custom backward: autograd's version of this graph spends most of its time on bookkeeping (per-matrix
    copies inside the batched triangular solve, cat/split and broadcast gradients), not on the matmuls. Here the
    backward is the transposed computation written out. Parity with the token loop's autograd gradients is tested.
    Not twice differentiable.

    Internally every tensor is fp32, chunk-major [N, B*H, C, *] (see ``_to_chunks``); per chunk (batch dims
    dropped) with G the in-chunk cumulative log-decay, gamma = exp(G), to_end = exp(G_C - G), delta = exp(G_C) and
    D[t, i] = exp(G_t - G_i) for i <= t (0 above the diagonal):

        M  = (K K^T * D) strictly lower,  A = diag(beta) M,  T = (I + A)^-1
        U  = T diag(beta) V,  Wk = T diag(beta gamma) K,  P = Q K^T * D,  Qg = diag(gamma) Q,  Ke = diag(to_end) K
        loop over chunks n:  W_n = U_n - Wk_n S_n,  O_n = Qg_n S_n + P_n W_n,  S_{n+1} = delta_n S_n + Ke_n^T W_n

    Everything above the loop is batched over all chunks at once. Inside the loops (forward and backward) go only
    the products that touch a state S_n or its gradient: they run on [B*H, C, *] blocks that stay in cache, which
    measured faster than stacking all N states ([N, B*H, K, V], the largest buffer) for batched products after the
    loop (a large fresh buffer costs page faults on every call, and the batched products read it from memory).
    """

    @staticmethod
    def forward(ctx, q, k, v, g, beta, initial_state, scale: float, chunk_size: int):
        with _no_autocast(q.device):
            return _ChunkGatedDelta._forward(ctx, q, k, v, g, beta, initial_state, scale, chunk_size)

    @staticmethod
    def backward(ctx, d_o, d_final):
        with _no_autocast(d_final.device if d_o is None else d_o.device):
            return _ChunkGatedDelta._backward(ctx, d_o, d_final)

    @staticmethod
    def _forward(ctx, q, k, v, g, beta, initial_state, scale: float, chunk_size: int):
        batch, length, heads, key_dim = k.shape
        value_dim = v.shape[-1]
        size = min(chunk_size, length)
        chunks = -(-length // size)
        dtypes = (q.dtype, k.dtype, v.dtype, g.dtype, beta.dtype)  # gradients go back in the input dtypes
        q = _to_chunks(q, size, chunks).mul_(scale)
        k = _to_chunks(k, size, chunks)
        v = _to_chunks(v, size, chunks)
        g = _to_chunks(g.unsqueeze(-1), size, chunks).squeeze(-1)  # [N, BH, C]
        beta = _to_chunks(beta.unsqueeze(-1), size, chunks).squeeze(-1)

        cum = g.cumsum(-1)  # G_t within each chunk
        gate = cum.exp()  # exp(G_t) <= 1
        chunk_decay = gate[..., -1].contiguous()  # exp(G_C): [N, BH]
        to_end = (cum[..., -1:] - cum).exp_()  # exp(G_C - G_i) <= 1
        # exp(G_t - G_i) for i <= t, exactly 0 above the diagonal; masked *before* the exp so it never overflows.
        upper = torch.ones(size, size, dtype=torch.bool, device=q.device).triu_(1)
        decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill_(upper, float("-inf")).exp_()

        lower = torch.matmul(k, k.mT).mul_(decay)  # M = K K^T * D; its diagonal is zeroed next
        lower.diagonal(dim1=-2, dim2=-1).zero_()
        eye = torch.eye(size, dtype=q.dtype, device=q.device)
        # T = (I + diag(beta) M)^-1. The explicit inverse (one batched LAPACK call) is reused twice here and once,
        # transposed, in backward; measured faster than solving against the right-hand sides each time.
        inverse = torch.linalg.solve_triangular(lower * beta.unsqueeze(-1), eye.expand_as(lower), upper=False,
                                                unitriangular=True)
        # U = T diag(beta) V and Wk = T diag(beta gate) K: scale the C x C matrix's columns, not the wider V and K.
        inverse_beta = inverse * beta.unsqueeze(-2)
        w_all = torch.matmul(inverse_beta, v)  # U now; W after the loop (updated in place)
        wk = torch.matmul(inverse_beta.mul_(gate.unsqueeze(-2)), k)
        scores = torch.matmul(q, k.mT).mul_(decay)  # P
        q_gated = q * gate.unsqueeze(-1)
        k_to_end = k * to_end.unsqueeze(-1)

        # The sequential part: hand the state from chunk to chunk.
        state = q.new_zeros(batch * heads, key_dim, value_dim)
        if initial_state is not None:
            state.copy_(initial_state.reshape(state.shape))
        states = [state]  # states[n] enters chunk n; kept per chunk (small, cache-resident blocks)
        o = torch.empty_like(w_all)
        for n in range(chunks):
            w_all[n].baddbmm_(wk[n], state, alpha=-1)  # W_n = U_n - Wk_n S_n
            torch.bmm(q_gated[n], state, out=o[n]).baddbmm_(scores[n], w_all[n])  # O_n = Qg_n S_n + P_n W_n
            state = torch.baddbmm(state * chunk_decay[n, :, None, None], k_to_end[n].mT, w_all[n])
            states.append(state)  # S_{n+1} = delta S_n + Ke_n^T W_n

        ctx.save_for_backward(q, k, v, beta, gate, to_end, chunk_decay, decay, lower, scores, inverse, wk,
                              q_gated, k_to_end, w_all, *states[:-1])
        ctx.meta = (batch, heads, length, scale, dtypes, None if initial_state is None else initial_state.dtype)
        return _from_chunks(o, batch, heads, length, dtypes[2]), state.view(batch, heads, key_dim, value_dim)

    @staticmethod
    def _backward(ctx, d_o, d_final):
        (q, k, v, beta, gate, to_end, chunk_decay, decay, lower, scores, inverse, wk, q_gated, k_to_end, w_all,
         *states) = ctx.saved_tensors
        batch, heads, length, scale, dtypes, state_dtype = ctx.meta
        chunks, size = q.shape[0], q.shape[2]
        if d_o is None:
            d_o = torch.zeros_like(w_all)
        else:
            d_o = _to_chunks(d_o, size, chunks)

        # Reverse loop over chunks with dS = gradient of the state leaving chunk n:
        #   dW_n = P_n^T dO_n + Ke_n dS,   dS <- delta_n dS + Qg_n^T dO_n - Wk_n^T dW_n.
        # UT transform, X = T R: dR = T^T dX. With dU = dW and dWk = -dW S^T this gives dR1 = T^T dW (R1 =
        # diag(beta) V) and dR2 = -dR1 S^T (R2 = diag(beta gate) K). Every product with S_n or dS is done here,
        # on cache-resident per-chunk blocks, so no [N, K, V] stack of states is ever materialised.
        dw = torch.matmul(scores.mT, d_o)
        d_r1 = torch.empty_like(dw)
        neg_d_r2 = torch.empty_like(k)
        d_q_gated = torch.empty_like(k)
        d_k_to_end = torch.empty_like(k)
        d_chunk_decay = torch.empty_like(chunk_decay)
        flat = (states[0].shape[0], 1, -1)
        d_state = states[0].new_zeros(states[0].shape) if d_final is None else d_final.reshape(states[0].shape)
        for n in reversed(range(chunks)):
            state = states[n]
            dw_n = dw[n].baddbmm_(k_to_end[n], d_state)
            torch.bmm(w_all[n], d_state.mT, out=d_k_to_end[n])
            torch.bmm(state.view(flat), d_state.view(flat).mT, out=d_chunk_decay[n].view(-1, 1, 1))
            torch.bmm(inverse[n].mT, dw_n, out=d_r1[n])
            torch.bmm(d_o[n], state.mT, out=d_q_gated[n])
            torch.bmm(d_r1[n], state.mT, out=neg_d_r2[n])
            d_state = torch.baddbmm(d_state * chunk_decay[n, :, None, None], q_gated[n].mT, d_o[n])
            d_state.baddbmm_(wk[n].mT, dw_n, alpha=-1)

        # d(I + A) = -(dR1 U^T + dR2 Wk^T) = -dR1 (U - Wk S)^T = -dR1 W^T: one C x V x C product instead of two.
        d_a = torch.matmul(d_r1, w_all.mT).tril_(-1).neg_()
        d_scores = torch.matmul(d_o, w_all.mT)

        beta_gate = beta * gate
        neg_r2_k = _rowdot(neg_d_r2, k)
        d_beta = _rowdot(d_a, lower) + _rowdot(d_r1, v) - gate * neg_r2_k
        d_v = d_r1.mul_(beta.unsqueeze(-1))
        d_lower = d_a.mul_(beta.unsqueeze(-1))

        # Gradient w.r.t. the cumulative log-decay G: every decay factor is exp of a difference of G's, so
        # d/dG of X * exp(...) is +-(dX * X) summed over the right axis.
        e = d_lower * lower + d_scores * scores
        d_cum = e.sum(-1) - e.sum(-2) + _rowdot(d_q_gated, q_gated) - beta_gate * neg_r2_k
        f = _rowdot(d_k_to_end, k_to_end)
        d_cum -= f
        d_cum[..., -1] += f.sum(-1) + chunk_decay * d_chunk_decay
        d_g = d_cum.flip(-1).cumsum(-1).flip(-1)

        d_kk = d_lower.mul_(decay)
        d_qk = d_scores.mul_(decay)
        d_q = torch.matmul(d_qk, k).addcmul_(d_q_gated, gate.unsqueeze(-1)).mul_(scale)
        d_k = torch.matmul(d_kk + d_kk.mT, k)
        d_k.flatten(0, 1).baddbmm_(d_qk.flatten(0, 1).mT, q.flatten(0, 1))
        d_k.addcmul_(neg_d_r2, beta_gate.unsqueeze(-1), value=-1).addcmul_(d_k_to_end, to_end.unsqueeze(-1))

        q_dtype, k_dtype, v_dtype, g_dtype, beta_dtype = dtypes
        d_init = None
        if state_dtype is not None:
            d_init = d_state.view(batch, heads, *d_state.shape[1:]).to(state_dtype)
        return (_from_chunks(d_q, batch, heads, length, q_dtype), _from_chunks(d_k, batch, heads, length, k_dtype),
                _from_chunks(d_v, batch, heads, length, v_dtype),
                _from_chunks(d_g.unsqueeze(-1), batch, heads, length, g_dtype).squeeze(-1),
                _from_chunks(d_beta.unsqueeze(-1), batch, heads, length, beta_dtype).squeeze(-1),
                d_init, None, None)


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
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    o, state = _ChunkGatedDelta.apply(q, k, v, g, beta, initial_state, scale, chunk_size)
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


class BackendParityError(StageFailure):
    """A Gated DeltaNet backend disagrees with the reference (or returns NaN/inf) on the start-up self-check."""


def check_backend_parity(backend: str, device: torch.device | str, *, atol: float | None = None,
                         bf16: bool = False) -> float:
    """Start-up self-check: run ``backend`` and the token-loop reference on a small random input and compare.

    Why: a broken kernel stack (some torch/Triton/GPU combinations) returns NaNs or wrong numbers silently; a
    second of checking at start-up beats a wasted training run. Forward outputs, final state and the gradients of
    q, k, v, g, beta are compared, each as max |difference| / max(1, max |reference|) (gradients reach ~10 here).
    Returns the largest such difference; raises BackendParityError on a mismatch.
    ``bf16``: check it the way bf16 training calls it: q, k, v, beta in bf16 (as the bf16 projections deliver them),
    under bf16 autocast; the reference gets the same rounded inputs in fp32, so only the backend's own error and
    its bf16 output rounding remain. Default tolerance: 1e-4 for the fp32 torch backends, 2e-2 for fla (its kernels
    use TF32/bf16 dots), 2e-2 whenever
    ``bf16`` (values rounded to bf16's 8 significant bits: ~4e-3 relative each).
    """
    resolved = resolve_backend(backend, device)
    if atol is None:
        atol = 2e-2 if bf16 else 2e-2 if resolved == "fla_chunk" else 1e-4
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
    if bf16:  # g stays fp32: the model computes the log-decay in fp32
        q, k, v, beta = (x.to(torch.bfloat16) for x in (q, k, v, beta))

    def run(impl: Callable, dev: torch.device | str, dtype: torch.dtype | None) -> list[torch.Tensor]:
        inputs = [x.to(dev, dtype if dtype is not None else x.dtype).requires_grad_() for x in (q, k, v, g, beta)]
        with torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=dtype is None and bf16):
            o, final = impl(*inputs, initial_state=state0.to(dev), output_final_state=True)
            loss = (o.float() * probe_o.to(dev)).sum() + (final * probe_s.to(dev)).sum()
        grads = torch.autograd.grad(loss, inputs)
        return [t.detach().float().cpu() for t in (o, final, *grads)]

    got = run(_IMPLEMENTATIONS[resolved], device, None)
    want = run(recurrent_gated_delta_rule, "cpu", torch.float32)
    names = ("output", "final_state", "grad q", "grad k", "grad v", "grad g", "grad beta")
    worst = 0.0
    for name, a, b in zip(names, got, want):
        if not torch.isfinite(a).all():
            raise BackendParityError(f"gated_delta backend {resolved!r} on {device} produced non-finite {name}; "
                               "the kernel stack is broken (try backend 'torch_chunk')")
        err = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
        worst = max(worst, err)
        if err > atol:
            raise BackendParityError(f"gated_delta backend {resolved!r} on {device} disagrees with the reference: "
                               f"max |diff| of {name} = {err:.3g} (relative to max(1, max |reference|)) > {atol:g} "
                               "(try backend 'torch_chunk')")
    return worst
