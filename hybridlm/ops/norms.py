"""The model's norms as autograd functions with hand-written backwards, each beside its reference (the composed ops
autograd differentiated before): RMSNorm, optionally gated by SiLU (the GDN output norm), and the L2 normalisation
of the GDN queries and keys.

    rms_norm:      y = x / sqrt(mean(x^2) + eps) * weight            [* silu(gate)]
    l2_normalize:  y = x / max(||x||, eps)                           (over the last dim)

Why: left to autograd, each composed norm saved fp32 copies of its input and of the normalised values, and its
backward was about ten elementwise passes per op of the forward (casts, the broadcast products of the mean, the
pow's and the division's gradients), most of them on bf16 tensors, whose elementwise ops are slow on CPU: forward +
backward cost 10x the forward alone (RMSNorm at [2, 1024, 384] on one core: 0.5 ms forward, 5 ms with backward).
Here the forward is the reference's ops in the reference's order (the same bits, so sampling and the loss are
unchanged), only the input (in its own dtype) and the per-row statistic are saved, and the backward is the closed
form in fp32:

    x_hat = x * rstd,  g_w = g * weight:   dx = rstd * (g_w - x_hat * mean(g_w * x_hat)),  dweight = sum(g * x_hat)
    gated (g -> g * silu(gate) above):     dgate = g * x_hat * weight * silu'(gate)
    u = x / ||x||:                         dx = (g - u * sum(g * u)) / ||x||

The gradients round differently from autograd's (fewer roundings, none in bf16): tests/test_norm_ops.py checks
them against fp64 (gradcheck) and finds them at least as close to the fp64 gradients as autograd's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for bf16/fp16/fp32 inputs (bf16 sums of squares lose too much), fp64 for fp64 (gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float,
                       gate: torch.Tensor | None = None) -> torch.Tensor:
    """The composed ops (what RMSNorm and GatedRMSNorm computed under autograd before :func:`rms_norm`)."""
    compute = _compute_dtype(x)
    xc = x.to(compute)
    out = (xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute)).to(x.dtype)
    if gate is None:
        return out
    return (out.to(compute) * F.silu(gate.to(compute))).to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    # Casts are separate ops: a mixed-dtype product (bf16 times fp32) measured slower than the cast plus a
    # same-dtype product on CPU (bf16 RMSNorm backward at [2, 1024, 384], one core: 3.4 against 2.6 ms).
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor | None, eps: float) -> torch.Tensor:
        compute = _compute_dtype(x)
        xc = x.to(compute)
        rstd = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)
        out = (xc * rstd).mul_(weight.to(compute)).to(x.dtype)
        gate_c = silu_gate = None
        if gate is not None:  # the reference rounds the norm to x's dtype before the gate: so does this
            gate_c = gate.to(compute)
            silu_gate = F.silu(gate_c)
            out = out.to(compute).mul_(silu_gate).to(x.dtype)
        ctx.gate_dtype = None if gate is None else gate.dtype
        ctx.save_for_backward(x, weight, gate_c, silu_gate, rstd)  # both fp32 gates kept: re-making them cost more
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, gate_c, silu_gate, rstd = ctx.saved_tensors
        compute = rstd.dtype
        weight_c = weight.to(compute)
        x_hat = x.to(compute).mul_(rstd) if x.dtype != compute else x * rstd
        g = grad.to(compute)
        g_x_hat = g * x_hat  # the gradient of the gain, per row
        d_gate = None
        if gate_c is not None:
            if ctx.needs_input_grad[2]:
                d_gate = torch.ops.aten.silu_backward(g_x_hat * weight_c, gate_c).to(ctx.gate_dtype)
            g = g * silu_gate
            g_x_hat.mul_(silu_gate)
        d_weight = g_x_hat.flatten(0, -2).sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        d_x = None
        if ctx.needs_input_grad[0]:
            dot = g_x_hat.mul_(weight_c).mean(-1, keepdim=True)  # mean(g_w * x_hat)
            d_x = (g * weight_c).addcmul_(x_hat, dot, value=-1).mul_(rstd).to(x.dtype)
        return d_x, d_weight, d_gate, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., D]`` RMS-normalised over D in fp32, times ``weight [D]``, in ``x``'s dtype; with ``gate`` (x's
    shape) then times ``silu(gate)``. The same values as :func:`rms_norm_reference`; without gradients (evaluation,
    decoding) torch's one-op ``F.rms_norm`` computes them (the same bits: tests/test_model.py, tests/test_norm_ops.py)."""
    if weight.shape != x.shape[-1:] or (gate is not None and gate.shape != x.shape):
        raise ValueError(f"rms_norm: need weight [D] and gate like x [..., D]; got x {tuple(x.shape)}, weight "
                         f"{tuple(weight.shape)}, gate {None if gate is None else tuple(gate.shape)}")
    if not torch.is_grad_enabled():
        compute = _compute_dtype(x)
        if x.dtype == weight.dtype == compute:  # no casts to dispatch (a decode step is op-bound)
            out = F.rms_norm(x, weight.shape, weight, eps)
        else:
            out = F.rms_norm(x.to(compute), weight.shape, weight.to(compute), eps).to(x.dtype)
        return out if gate is None else out.to(compute).mul_(F.silu(gate.to(compute))).to(x.dtype)
    return _RMSNorm.apply(x, weight, gate, eps)


def l2_normalize_reference(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The composed ops (what the GDN layer called for its queries and keys before :func:`l2_normalize`)."""
    return F.normalize(x, dim=-1, eps=eps)


class _L2Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.eps = eps
        ctx.save_for_backward(x)
        return F.normalize(x, dim=-1, eps=eps)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        compute = _compute_dtype(x)
        xc = x.to(compute)
        norm = torch.linalg.vector_norm(xc, dim=-1, keepdim=True)
        denom = norm.clamp_min(ctx.eps)
        u = xc.div_(denom) if x.dtype != compute else xc / denom
        g = grad.to(compute)
        # Below eps the forward divides by the constant eps: no gradient through the norm.
        dot = (g * u).sum(-1, keepdim=True).mul_(norm > ctx.eps)
        d_x = (g - u.mul_(dot)).div_(denom)
        return d_x.to(x.dtype), None


def l2_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / max(||x||, eps)`` over the last dim, as ``F.normalize(x, dim=-1, eps=eps)`` computes it (which also
    runs it when no gradient is needed)."""
    if not torch.is_grad_enabled():
        return l2_normalize_reference(x, eps)
    return _L2Normalize.apply(x, eps)
