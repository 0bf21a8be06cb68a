"""hybridlm.ops.norms: RMSNorm (plain and SiLU-gated) and the q/k L2 normalisation with hand-written backwards.

The forward must be the same bits as the composed reference ops (what the model ran before; sampling and the loss
are unchanged). The gradients round differently from autograd's, so they are checked against the exact maths:
fp64 gradcheck, and in fp32/bf16 against fp64 gradients, where they must be at least about as close as autograd's
own gradients of the reference. Each check is shown to fail for a backward with one term left out.
"""

from __future__ import annotations

import pytest
import torch

from hybridlm.ops import norms
from hybridlm.ops.norms import l2_normalize, l2_normalize_reference, rms_norm, rms_norm_reference

EPS = 1e-5


def rms_inputs(dtype: torch.dtype, gated: bool, seed: int = 0, shape=(2, 33, 3, 24)):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator) * 3
    weight = 1 + torch.randn(shape[-1], generator=generator) * 0.5  # the gain stays fp32, as under autocast
    weight = weight.to(torch.promote_types(dtype, torch.float32))
    gate = torch.randn(shape, generator=generator) * 2 if gated else None
    probe = torch.randn(shape, generator=generator)
    return x.to(dtype), weight, None if gate is None else gate.to(dtype), probe.to(dtype)


def grads(fn, x, weight, gate, probe):
    """Output and gradients (x, weight[, gate]) of ``fn`` at fresh leaves holding these values."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight) + (() if gate is None else (gate,))]
    out = fn(leaves[0], leaves[1], EPS, *leaves[2:])
    out.backward(probe)
    return out, [leaf.grad for leaf in leaves]


def relative_errors(got: list[torch.Tensor], exact: list[torch.Tensor]) -> list[float]:
    return [float((a.double() - b).norm() / b.norm()) for a, b in zip(got, exact)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gated", [False, True])
def test_rms_norm_forward_is_the_references_bits(dtype, gated):
    x, weight, gate, _ = rms_inputs(dtype, gated)
    ours = rms_norm(x.requires_grad_(), weight, EPS, gate)
    assert ours.dtype == dtype and torch.equal(ours, rms_norm_reference(x, weight, EPS, gate))
    with torch.no_grad():  # the no-grad path (decoding) gives the same
        assert torch.equal(rms_norm(x, weight, EPS, gate), ours)


def test_l2_normalize_forward_is_the_references_bits():
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 17, 3, 16, generator=torch.Generator().manual_seed(1)).to(dtype).requires_grad_()
        ours = l2_normalize(x, 1e-6)
        assert ours.dtype == dtype and torch.equal(ours, l2_normalize_reference(x, 1e-6))


@pytest.mark.parametrize("gated", [False, True])
def test_rms_norm_gradcheck(gated):
    x, weight, gate, _ = rms_inputs(torch.float64, gated, shape=(2, 5, 6))
    leaves = [t.requires_grad_() for t in (x, weight) + (() if gate is None else (gate,))]
    assert torch.autograd.gradcheck(lambda *t: rms_norm(t[0], t[1], EPS, *t[2:]), leaves)


def test_l2_normalize_gradcheck_including_a_row_below_eps():
    x = torch.randn(3, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x[1, 2] *= 0.01  # norm below eps (0.5 here, far from every row's norm): the forward divides by eps there
    assert x.norm(dim=-1).lt(0.5).sum() == 1 and x.norm(dim=-1).min() < 0.1
    assert torch.autograd.gradcheck(lambda t: l2_normalize(t, 0.5), [x.requires_grad_()])


def test_gradcheck_fails_for_a_wrong_backward(monkeypatch):
    """The control: the RMSNorm backward without the term through the mean of squares is caught."""
    x, weight, gate, _ = rms_inputs(torch.float64, True, shape=(2, 5, 6))
    original = norms._RMSNorm.backward

    def no_mean_term(ctx, grad):
        d_x, d_weight, d_gate, _ = original(ctx, grad)
        _, weight, gate, silu_gate, rstd = ctx.saved_tensors
        return grad * silu_gate * weight * rstd, d_weight, d_gate, None

    monkeypatch.setattr(norms._RMSNorm, "backward", staticmethod(no_mean_term))
    leaves = [t.requires_grad_() for t in (x, weight, gate)]
    assert not torch.autograd.gradcheck(lambda *t: rms_norm(t[0], t[1], EPS, t[2]), leaves, raise_exception=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gated", [False, True])
def test_rms_norm_gradients_are_as_close_to_fp64_as_autograds(dtype, gated, monkeypatch):
    x, weight, gate, probe = rms_inputs(dtype, gated, seed=3)
    _, exact = grads(rms_norm_reference, x.double(), weight.double(), None if gate is None else gate.double(),
                     probe.double())
    _, ours = grads(rms_norm, x, weight, gate, probe)
    _, autograds = grads(rms_norm_reference, x, weight, gate, probe)
    # Within the input dtype's rounding, and no worse than autograd's (bf16: the gradient is rounded to bf16 once
    # here, several times by autograd's bf16 ops; fp32: both at rounding level).
    ulp = {torch.float32: 1e-6, torch.bfloat16: 8e-3}[dtype]
    for name, ours_error, theirs_error in zip(("x", "weight", "gate"), relative_errors(ours, exact),
                                              relative_errors(autograds, exact)):
        assert ours_error < ulp and ours_error <= 1.5 * theirs_error + 1e-6, (name, ours_error, theirs_error)

    # Control: the gain's gradient without the gate factor is far outside that tolerance.
    original = norms._RMSNorm.backward

    def wrong_weight_grad(ctx, grad):
        d_x, _, d_gate, _ = original(ctx, grad)
        x, _, _, _, rstd = ctx.saved_tensors
        return d_x, (grad * x * rstd).flatten(0, -2).sum(0), d_gate, None

    monkeypatch.setattr(norms._RMSNorm, "backward", staticmethod(wrong_weight_grad))
    _, wrong = grads(rms_norm, x, weight, gate, probe)
    assert (relative_errors(wrong, exact)[1] > 10 * ulp) == gated


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_l2_normalize_gradients_are_as_close_to_fp64_as_autograds(dtype):
    generator = torch.Generator().manual_seed(4)
    x, probe = torch.randn(2, 40, 3, 16, generator=generator).to(dtype), torch.randn(2, 40, 3, 16).to(dtype)

    def grad_of(fn, values):
        leaf = values.detach().clone().requires_grad_()
        fn(leaf, 1e-6).backward(probe.to(values.dtype))
        return leaf.grad

    exact = grad_of(l2_normalize_reference, x.double())
    ours, theirs = grad_of(l2_normalize, x), grad_of(l2_normalize_reference, x)
    ours_error, theirs_error = relative_errors([ours, theirs], [exact, exact])
    ulp = {torch.float32: 1e-6, torch.bfloat16: 8e-3}[dtype]
    assert ours_error < ulp and ours_error <= 1.5 * theirs_error + 1e-6, (ours_error, theirs_error)
    # Control: the gradient without the projection onto the sphere (d_x = g / ||x||) is far off.
    wrong = probe.double() / x.double().norm(dim=-1, keepdim=True)
    assert relative_errors([wrong], [exact])[0] > 10 * ulp


def test_bad_shapes_are_refused():
    x = torch.zeros(2, 5, 8)
    with pytest.raises(ValueError, match="weight"):
        rms_norm(x, torch.ones(7), EPS)
    with pytest.raises(ValueError, match="gate"):
        rms_norm(x, torch.ones(8), EPS, torch.zeros(2, 5, 7))
