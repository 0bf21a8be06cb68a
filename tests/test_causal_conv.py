"""hybridlm.ops.causal_conv: the GDN conv + SiLU with its hand-written backward.

It must compute the same bits as the composed taps under autograd (what the model ran before it, so training
trajectories stay identical) and the same function as torch's depthwise conv1d (so the taps are the conv).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybridlm.ops.causal_conv import causal_conv_silu

CHANNELS = 24


def composed(x: torch.Tensor, history: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The taps as plain differentiable ops, left to autograd (the model's code before the custom function)."""
    steps = x.shape[1]
    padded = torch.cat([history.to(x.dtype), x], dim=1)
    out = padded[:, :steps] * weight[:, 0]
    for j in range(1, weight.shape[1]):
        out = out.addcmul(padded[:, j : j + steps], weight[:, j])
    return F.silu(out)


def run(fn, x0, history, conv_weight, probe, dtype):
    """Output, input gradient and conv-weight gradient of ``fn`` as the model calls it (weight cast from fp32)."""
    x = x0.detach().to(dtype, copy=True).requires_grad_()
    weight = conv_weight.clone().requires_grad_()
    out = fn(x, history.to(dtype), weight[:, 0].to(dtype))
    out.backward(probe.to(dtype))
    return out, x.grad, weight.grad


def inputs(steps: int, seed: int, taps: int = 4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, steps, CHANNELS, generator=generator)
    history = torch.randn(2, taps - 1, CHANNELS, generator=generator)
    conv_weight = torch.randn(CHANNELS, 1, taps, generator=generator) * 0.5
    probe = torch.randn(2, steps, CHANNELS, generator=generator)
    return x, history, conv_weight, probe


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 64])
def test_same_bits_as_autograd_of_the_composed_taps(dtype, steps):
    x, history, conv_weight, probe = inputs(steps, seed=steps)
    for zero_history in (True, False):  # training starts from zeros; a cache carries real inputs
        past = torch.zeros_like(history) if zero_history else history
        ours = run(causal_conv_silu, x, past, conv_weight, probe, dtype)
        theirs = run(composed, x, past, conv_weight, probe, dtype)
        for name, a, b in zip(("output", "input grad", "weight grad"), ours, theirs):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert torch.equal(a, b), f"{name} differs ({dtype}, steps {steps}, zero history {zero_history})"


def test_is_the_causal_depthwise_conv():
    x, history, conv_weight, probe = inputs(40, seed=7)
    x, history, conv_weight, probe = (t.double() for t in (x, history, conv_weight, probe))
    ours = run(causal_conv_silu, x, history, conv_weight, probe, torch.float64)
    x64, w64 = x.detach().clone().requires_grad_(), conv_weight.detach().clone().requires_grad_()
    padded = torch.cat([history, x64], dim=1).transpose(1, 2)
    reference = F.silu(F.conv1d(padded, w64, groups=CHANNELS).transpose(1, 2))
    reference.backward(probe)
    for a, b in zip(ours, (reference, x64.grad, w64.grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # a wrong tap order would not pass
    flipped = run(causal_conv_silu, x, history, conv_weight.flip(-1), probe, torch.float64)[0]
    assert not torch.allclose(flipped, reference)


def test_bad_shapes_are_refused():
    x = torch.zeros(2, 5, CHANNELS)
    with pytest.raises(ValueError, match="history"):
        causal_conv_silu(x, torch.zeros(2, 2, CHANNELS), torch.zeros(CHANNELS, 4))
    with pytest.raises(ValueError, match="weight"):
        causal_conv_silu(x, torch.zeros(2, 3, CHANNELS), torch.zeros(CHANNELS + 1, 4))
